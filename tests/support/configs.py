"""The configs the tests build on: the repository root, tiny meta splits, the test estimators and a task grid."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

TINY_META = {
    "shard_size": 5,
    "splits": {
        "train": {
            "root_seed": 11,
            "count": 12,
            "mixture": ["multinormal-dense-base", "student-sparse-asinh", "additive_uniform-diag-base"],
            "n": {"low": 10, "high": 30},
            "dims": {"x": [1, 3], "y": [1, 3]},
        },
        "test_imd": {
            "root_seed": 12,
            "mixture": ["multinormal-dense-base", "categorical-line-base"],
            "n_grid": [10, 20],
            "replicates": 2,
            "distributions_per_entry": 2,
            "dims": {"x": [1, 3], "y": [1, 3]},
        },
    },
}


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


TEST_MODULE = "tests.support.estimators"


def bench_config(tiny_meta: dict | None = None, **benchmarks) -> dict:
    """A config with the tiny meta splits, the test estimators, and the given benchmarks."""
    return {
        "meta": copy.deepcopy(tiny_meta or TINY_META),
        "estimators": {
            "corr": {"estimator": "first_column_corr", "module": TEST_MODULE},
            "broken": {"estimator": "always_fails", "module": TEST_MODULE},
            "odd": {"estimator": "fails_on_odd_seeds", "module": TEST_MODULE},
            "slow": {"estimator": "sleepy", "module": TEST_MODULE, "seconds": 3},
            "nan": {"estimator": "returns_nan", "module": TEST_MODULE},
        },
        "benchmarks": benchmarks,
    }


GRID = {
    "tasks": [
        {"family": "multinormal", "structure": "dense", "dims": [1, 1], "params": {"rho": 0.6}},
        {"entry": "student-dense-asinh", "dims": [1, 2], "params": {"rho": 0.4, "df": 4}, "name": "t-asinh"},
        {"family": "additive_uniform", "structure": "diag", "dims": [1, 1], "params": {"epsilon": 0.3}},
    ],
    "n": [50, 200],
    "seeds": 2,
    "cells_per_job": 5,
}
