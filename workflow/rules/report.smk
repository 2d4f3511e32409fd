# One self-contained HTML report over every benchmark.


rule report:
    input:
        metrics=expand("results/metrics/{benchmark}.parquet", benchmark=BENCHMARKS),
        figures=expand("results/figures/{benchmark}/{name}.png", benchmark=BENCHMARKS, name=FIGURES),
        estimates=[path for name in BENCHMARKS for path in estimate_files(name)],
    output:
        "results/report/index.html",
    log:
        "results/logs/report.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/make_report.py"
