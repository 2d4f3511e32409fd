# One job per (benchmark, estimator, part of cells): a 100k-cell benchmark stays a DAG of a few thousand jobs.


rule estimate_part:
    input:
        unpack(estimate_inputs),
    output:
        "results/estimates/{benchmark}/{estimator}/part-{part}.parquet",
    log:
        "results/logs/estimate/{benchmark}/{estimator}/part-{part}.log",
    wildcard_constraints:
        part=r"\d{4}",
    params:
        entry=lambda wc: ESTIMATOR_ENTRIES.get(wc.estimator, {}),
    threads: 1
    resources:
        gpu=estimator_resource("gpu", 0),
        mem_mb=estimator_resource("mem_mb", 2000),
        runtime=estimator_resource("runtime", 60),
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/estimate_part.py"
