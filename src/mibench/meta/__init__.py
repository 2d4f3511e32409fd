"""Meta-datasets: many samples of many distributions with known MI, stored as Parquet shards."""

from mibench.layout import SHARD_SCHEMA
from mibench.meta.generate import SplitOverlapError, check_disjoint, generate_shard, generate_split, shard_path
from mibench.meta.plan import PlannedSample, SplitPlan, sample_seed, split_plans
from mibench.meta.shards import ShardError, read_shard_meta, read_shards, shard_paths

__all__ = [
    "SHARD_SCHEMA",
    "PlannedSample",
    "ShardError",
    "SplitOverlapError",
    "SplitPlan",
    "check_disjoint",
    "generate_shard",
    "generate_split",
    "read_shard_meta",
    "read_shards",
    "sample_seed",
    "shard_path",
    "shard_paths",
    "split_plans",
]
