"""Generate one meta-dataset shard (rule generate_shard): exactly the plan in params.job."""

from mibench.meta import SplitPlan, generate_shard
from mibench.workflow import rule_context

with rule_context(snakemake.log[0], snakemake.threads) as log:
    job = snakemake.params.job
    plan = SplitPlan.from_config(job["split"], job["plan"], job["shard_size"])
    path = generate_shard(plan, job["shard"], snakemake.output[0])
    log.info("wrote %s (job %s)", path, job["fingerprint"])
