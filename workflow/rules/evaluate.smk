# Metrics, calibration and figures per benchmark; MLflow logging of the evaluated results.
# params.job: levels, bins, the planned parts and their fingerprints, the evaluation code (mibench.jobs).


rule evaluate_benchmark:
    input:
        lambda wc: estimate_files(wc.benchmark),
    output:
        metrics=layout.METRICS,
        calibration=layout.CALIBRATION,
        task_metrics=layout.TASK_METRICS,
        figures=[
            report(
                f"results/figures/{{benchmark}}/{name}.png",
                caption=f"../report/{name}.rst",
                category="{benchmark}",
            )
            for name in FIGURES
        ],
    log:
        "results/logs/evaluate/{benchmark}.log",
    params:
        job=lambda wc: JOBS.evaluate(wc.benchmark),
        runtime=lambda wc: JOBS.evaluate_runtime(),
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/evaluate_benchmark.py"


rule track_benchmark:
    input:
        metrics=layout.METRICS,
        estimates=lambda wc: estimate_files(wc.benchmark),  # run identities and the common-cells ranking
        calibration=layout.CALIBRATION,
        figures=[f"results/figures/{{benchmark}}/{name}.png" for name in FIGURES],
    output:
        layout.TRACKING,
    log:
        "results/logs/tracking/{benchmark}.log",
    params:
        job=lambda wc: {"evaluated": JOBS.evaluate(wc.benchmark)["fingerprint"]},
        runtime=lambda wc: JOBS.evaluate_runtime(),
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/track_benchmark.py"
