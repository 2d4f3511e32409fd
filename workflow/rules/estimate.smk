# One job per (benchmark, estimator, part of cells): a 100k-cell benchmark stays a DAG of a few thousand jobs.
# Estimators whose config entry sets `resources: {gpu: N}` run through estimate_part_gpu (GPU env, --gpus).


rule estimate_part:
    input:
        unpack(estimate_inputs),
    output:
        "results/estimates/{benchmark}/{estimator}/part-{part}.parquet",
    log:
        "results/logs/estimate/{benchmark}/{estimator}/part-{part}.log",
    wildcard_constraints:
        part=r"\d{4}",
        estimator=CPU_ESTIMATORS,
    params:
        entry=lambda wc: ESTIMATOR_ENTRIES.get(wc.estimator, {}),
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
