# Shared helpers: the split plans (semantic validation of the config happens here, before any job runs).
from mibench.meta.plan import split_plans

PLANS = split_plans(config)
TEST_SPLITS = [name for name in PLANS if name.startswith("test")]


def shard_files(split):
    return [f"results/meta/{split}/shard-{i:04d}.parquet" for i in range(PLANS[split].n_shards)]


def meta_outputs():
    files = [path for split in PLANS for path in shard_files(split)]
    if "train" in PLANS and TEST_SPLITS:
        files.append("results/meta/splits-disjoint.json")
    return files
