"""Estimate one part of a benchmark with one estimator (rule estimate_part): exactly the cells in params.job."""

from mibench.jobs import EstimateJob
from mibench.runner import run_part
from mibench.workflow import rule_context

with rule_context(snakemake.log[0], snakemake.threads, gpus=getattr(snakemake.resources, "gpu", 0)) as log:
    job = EstimateJob.from_params(snakemake.params.job, snakemake.params.runtime)
    table = run_part(job, job.label, job.entry, job.part, snakemake.output[0])
    log.info(
        "%s/%s part %s (job %s): %s",
        job.name,
        job.label,
        job.part,
        job.fingerprint,
        table.group_by("status").aggregate([("status", "count")]).to_pylist(),
    )
