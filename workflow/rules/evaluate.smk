# Metrics, calibration and figures per benchmark; MLflow logging of the evaluated results.


rule evaluate_benchmark:
    input:
        lambda wc: estimate_files(wc.benchmark),
    output:
        metrics="results/metrics/{benchmark}.parquet",
        calibration="results/calibration/{benchmark}.parquet",
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
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/evaluate_benchmark.py"


rule track_benchmark:
    input:
        metrics="results/metrics/{benchmark}.parquet",
        estimates=lambda wc: estimate_files(wc.benchmark),  # run identities and the common-cells ranking
        calibration="results/calibration/{benchmark}.parquet",
        figures=[f"results/figures/{{benchmark}}/{name}.png" for name in FIGURES],
    output:
        "results/tracking/{benchmark}.json",
    log:
        "results/logs/tracking/{benchmark}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/track_benchmark.py"
