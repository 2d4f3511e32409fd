"""Shared fixtures: the repository root, a tiny config, and a PATH with the venv's tools."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
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
    # this checkout's package first, and the repo root so `module: tests.estimators_for_tests` imports
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MLFLOW_TRACKING_URI", None)
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


TEST_MODULE = "tests.estimators_for_tests"


def bench_config(tiny_meta: dict | None = None, **benchmarks) -> dict:
    """A config with the tiny meta splits, the test estimators, and the given benchmarks."""
    import copy

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


# ------------------------------------------------------------------------------------------- reliability ledger
#: What happened to a bad input or fault (docs/reliability.md counts them; the goals are 0 for the last three).
OUTCOMES = ("clear error", "right answer", "silently wrong", "traceback", "escape")


def pytest_collection_modifyitems(config, items) -> None:
    """Every test that takes the ``ledger`` fixture is a reliability case (``pytest -m reliability`` runs them)."""
    for item in items:
        if "ledger" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def ledger(request) -> Callable[..., None]:
    """Record one bad input or fault (a row of docs/reliability.md) in $MIBENCH_RELIABILITY_LOG, if set.

    Fields: ``fault`` (the case), ``injected`` (what was done), ``expected``, ``observed`` (the message or
    result actually seen), ``outcome`` (one of :data:`OUTCOMES`, decided from what was observed - record
    *before* asserting, so a failing case is counted as what it was), ``results_lost`` (completed result files
    changed or removed by the fault, measured), and optionally ``rerun_work``, ``identical`` (re-run equal to a
    fault-free run) and ``group``. Any other test file can use it: benchmarks/reliability_summary.py finds the
    tests that take this fixture.
    """

    def write(**record) -> None:
        outcome = record.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"ledger outcome {outcome!r} is not one of {OUTCOMES}")
        path = os.environ.get("MIBENCH_RELIABILITY_LOG")
        if not path:
            return
        record = {"test": request.node.nodeid, **record}
        with open(path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")

    return write


def attempt(call: Callable[[], object], errors: tuple[type[BaseException], ...], *names: str) -> tuple[str, str]:
    """Run ``call`` and classify what a user would see: (outcome, message).

    'clear error' if it raised one of ``errors`` whose message contains every one of ``names`` (the file, the
    sample, the setting it is about); 'traceback' for any other exception or a message that names nothing;
    'silently wrong' if it returned normally.
    """
    try:
        call()
    except errors as exc:
        message = str(exc)
        missing = [n for n in names if n not in message]
        return ("traceback" if missing else "clear error"), message
    except Exception as exc:  # an unexpected exception reaches the user as a traceback
        return "traceback", f"{type(exc).__name__}: {exc}"
    return "silently wrong", "no error"
