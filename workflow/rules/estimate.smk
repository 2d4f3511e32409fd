# One job per (benchmark, estimator, part of cells): a 100k-cell benchmark stays a DAG of a few thousand jobs.
# Estimators whose config entry sets `resources: {gpu: N}` run through estimate_part_gpu (GPU env, --gpus).
# params.job: the part's cells, the resolved estimator entry, budgets, code and checkpoint fingerprints.


rule estimate_part:
    input:
        unpack(estimate_inputs),
    output:
        layout.PART,
    log:
        "results/logs/estimate/{benchmark}/{estimator}/part-{part}.log",
    wildcard_constraints:
        part=r"\d{4}",
        estimator=CPU_ESTIMATORS,
    params:
        job=lambda wc: JOBS.estimate(wc.benchmark, wc.estimator, int(wc.part)),
        runtime=lambda wc: JOBS.estimate_runtime(wc.benchmark),
    threads: 1
    resources:
        mem_mb=estimator_resource("mem_mb", 2000),
        runtime=estimator_resource("runtime", 60),
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/estimate_part.py"


use rule estimate_part as estimate_part_gpu with:
    wildcard_constraints:
        part=r"\d{4}",
        estimator=GPU_ESTIMATORS,
    resources:
        gpu=estimator_resource("gpu", 1),
        mem_mb=estimator_resource("mem_mb", 8000),
        runtime=estimator_resource("runtime", 120),
    conda:
        "../envs/gpu.yaml"
