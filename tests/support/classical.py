"""Helpers of the classical-estimator tests."""

from __future__ import annotations

import numpy as np

from mibench.estimators import (
    make_estimator,
)
from mibench.tasks import TaskSpec

RHO06 = TaskSpec("multinormal", "dense", 1, 1, {"rho": 0.6})  # I = -½ log(1 - 0.36) = 0.2231


SPARSE33 = TaskSpec("multinormal", "sparse", 3, 3, {"k": 2, "strength": 0.7})  # I = -log(1 - 0.49) = 0.6733


INDEP22 = TaskSpec("multinormal", "sparse", 2, 2, {"k": 1, "strength": 0.0})  # I = 0


def mean_estimate(entry: dict, spec: TaskSpec, n: int, seeds: range) -> tuple[float, float]:
    """Mean estimate over samples with the given seeds, and the exact MI."""
    name = entry.pop("estimator")
    est = make_estimator(name, entry)
    task = spec.build()
    values = [est(*task.sample(n, seed), seed=seed).value for seed in seeds]
    return float(np.mean(values)), task.mi
