# One self-contained HTML report over every benchmark.


rule report:
    input:
        metrics=expand(layout.METRICS, benchmark=BENCHMARKS),
        figures=expand(layout.FIGURE, benchmark=BENCHMARKS, name=FIGURES),
        estimates=[path for name in BENCHMARKS for path in estimate_files(name)],
    output:
        layout.REPORT,
    log:
        "results/logs/report.log",
    params:
        job=lambda wc: {name: JOBS.evaluate(name)["fingerprint"] for name in BENCHMARKS},
        runtime=lambda wc: JOBS.evaluate_runtime(),
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/make_report.py"
