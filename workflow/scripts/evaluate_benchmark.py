"""Metrics, calibration and figures of one benchmark (rule evaluate_benchmark)."""

from pathlib import Path

from mibench.benchmark import BenchmarkPlan
from mibench.evaluate import evaluate_benchmark
from mibench.workflow import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    plan = BenchmarkPlan.from_config(snakemake.wildcards.benchmark, snakemake.config)
    out = snakemake.output
    evaluate_benchmark(
        plan, snakemake.input, out.metrics, out.calibration, Path(out.figures[0]).parent, out.task_metrics
    )
