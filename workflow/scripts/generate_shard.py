"""Generate one meta-dataset shard (rule generate_shard)."""

from mibench.meta import SplitPlan, generate_shard
from mibench.workflow import rule_context

with rule_context(snakemake.log[0], snakemake.threads) as log:
    plan = SplitPlan.from_config(snakemake.wildcards.split, snakemake.params.split_config, snakemake.params.shard_size)
    path = generate_shard(plan, int(snakemake.wildcards.shard), snakemake.output[0])
    log.info("wrote %s", path)
