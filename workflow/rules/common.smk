# Shared helpers: the resolved plans (JOBS, checked before any job runs) and the input functions.
from pathlib import Path

from mibench import layout
from mibench.jobs import FILE_HYPERPARAMETERS
from mibench.evaluate.figures import FIGURES

RESOLVED = JOBS.resolved
PLANS = RESOLVED.splits
TEST_SPLITS = [name for name in PLANS if name.startswith("test")]
BENCHMARKS = RESOLVED.benchmarks
ESTIMATORS = RESOLVED.estimators
MODELS = RESOLVED.models
TRACKING = RESOLVED.config.tracking.enabled
# every trained model (rule all; estimators name a model's weights as their `checkpoint`)
MODEL_OUTPUTS = [str(path) for name in MODELS for path in layout.model_files(name)]


def shard_files(split):
    return [str(layout.shard_path("results/meta", split, i)) for i in range(PLANS[split].n_shards)]


def meta_outputs():
    files = [path for split in PLANS for path in shard_files(split)]
    if "train" in PLANS and TEST_SPLITS:
        files.append("results/meta/splits-disjoint.json")
    return files


def estimate_files(benchmark):
    plan = BENCHMARKS[benchmark]
    return [
        str(layout.part_path(benchmark, estimator, part))
        for estimator in plan.estimators
        for part in range(plan.n_parts)
    ]


def estimate_inputs(wildcards):
    """The shard a split part reads, and the checkpoint (weights + model.json) a learned estimator reads."""
    plan = BENCHMARKS[wildcards.benchmark]
    params = ESTIMATORS[wildcards.estimator].params
    models = []
    for key in FILE_HYPERPARAMETERS:
        if key in params:
            weights = str(params[key])
            models += [weights, str(Path(weights).with_suffix(".json"))]
    return {"shards": plan.part_inputs(int(wildcards.part)), "models": models}


def estimator_wants_gpu(label):
    return ESTIMATORS[label].entry.resources.gpu > 0


def label_pattern(labels):
    """Regex matching exactly these estimator labels (none: a pattern that never matches)."""
    return "|".join(sorted(labels)) or "(?!x)x"


GPU_ESTIMATORS = label_pattern(label for label in ESTIMATORS if estimator_wants_gpu(label))
CPU_ESTIMATORS = label_pattern(label for label in ESTIMATORS if not estimator_wants_gpu(label))


def estimator_resource(name, default):
    def get(wildcards):
        value = getattr(ESTIMATORS[wildcards.estimator].entry.resources, name)
        return value or default

    return get


def benchmark_outputs():
    files = [layout.REPORT] if BENCHMARKS else []
    if TRACKING:
        files += [layout.TRACKING.format(benchmark=name) for name in BENCHMARKS]
    return files
