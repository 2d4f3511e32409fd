"""Metrics, calibration and figures of one benchmark (rule evaluate_benchmark): the plan in params.job."""

from pathlib import Path

from mibench.benchmark import BenchmarkPlan
from mibench.evaluate import evaluate_benchmark
from mibench.workflow import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    job = snakemake.params.job
    plan = BenchmarkPlan.from_config(job["benchmark"], job["config"])
    out = snakemake.output
    provenance = {**snakemake.params.runtime["provenance"], "evaluate_fingerprint": job["fingerprint"]}
    evaluate_benchmark(
        plan,
        snakemake.input,
        out.metrics,
        out.calibration,
        Path(out.figures[0]).parent,
        out.task_metrics,
        provenance=provenance,
    )
