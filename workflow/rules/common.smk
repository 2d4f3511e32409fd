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


# -- benchmarks ------------------------------------------------------------------------------------
from mibench.benchmark import benchmark_plans
from mibench.evaluate.figures import FIGURES

BENCHMARKS = benchmark_plans(config)
ESTIMATOR_ENTRIES = {label: entry or {} for label, entry in (config.get("estimators") or {}).items()}
TRACKING = (config.get("tracking") or {}).get("enabled", True)
# hyperparameters whose values are files produced by other rules (trained models): DAG edges
FILE_HYPERPARAMETERS = ("checkpoint",)


def estimate_files(benchmark):
    plan = BENCHMARKS[benchmark]
    return [
        f"results/estimates/{benchmark}/{estimator}/part-{part:04d}.parquet"
        for estimator in plan.estimators
        for part in range(plan.n_parts)
    ]


def estimate_inputs(wildcards):
    plan = BENCHMARKS[wildcards.benchmark]
    entry = ESTIMATOR_ENTRIES.get(wildcards.estimator, {})
    return {
        "shards": plan.part_inputs(int(wildcards.part)),
        "models": [str(entry[key]) for key in FILE_HYPERPARAMETERS if key in entry],
    }


def estimator_wants_gpu(label):
    return int((ESTIMATOR_ENTRIES.get(label, {}).get("resources") or {}).get("gpu", 0)) > 0


def label_pattern(labels):
    """Regex matching exactly these estimator labels (none: a pattern that never matches)."""
    return "|".join(sorted(labels)) or "(?!x)x"


GPU_ESTIMATORS = label_pattern(label for label in ESTIMATOR_ENTRIES if estimator_wants_gpu(label))
CPU_ESTIMATORS = label_pattern(label for label in ESTIMATOR_ENTRIES if not estimator_wants_gpu(label))


def estimator_resource(name, default):
    def get(wildcards):
        return (ESTIMATOR_ENTRIES.get(wildcards.estimator, {}).get("resources") or {}).get(name, default)

    return get


def benchmark_outputs():
    files = [f"results/report/index.html"] if BENCHMARKS else []
    if TRACKING:
        files += [f"results/tracking/{name}.json" for name in BENCHMARKS]
    return files
