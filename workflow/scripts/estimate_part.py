"""Estimate one part of a benchmark with one estimator (rule estimate_part)."""

from mibench.benchmark import BenchmarkPlan
from mibench.runner import run_part
from mibench.workflow import rule_context

with rule_context(snakemake.log[0], snakemake.threads, gpus=getattr(snakemake.resources, "gpu", 0)) as log:
    wc = snakemake.wildcards
    plan = BenchmarkPlan.from_config(wc.benchmark, snakemake.config)
    table = run_part(plan, wc.estimator, snakemake.params.entry, int(wc.part), snakemake.output[0])
    log.info(
        "%s/%s part %s: %s",
        wc.benchmark,
        wc.estimator,
        wc.part,
        table.group_by("status").aggregate([("status", "count")]).to_pylist(),
    )
