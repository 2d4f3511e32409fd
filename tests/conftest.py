"""Shared fixtures: the repository root, a tiny config, and a PATH with the venv's tools."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def venv_env() -> dict[str, str]:
    """Environment whose PATH starts with the interpreter's bin dir (snakemake, mibench)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


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


@pytest.fixture
def tiny_config() -> dict:
    import copy

    return {"meta": copy.deepcopy(TINY_META)}


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
