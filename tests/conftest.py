"""Shared fixtures: the repository root, a tiny config, and a PATH with the venv's tools."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.configs import REPO, TINY_META
from tests.support.reliability import OUTCOMES


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def venv_env() -> dict[str, str]:
    """Environment whose PATH starts with the interpreter's bin dir (snakemake, mibench)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # this checkout's package first, and the repo root so `module: tests.support.estimators` imports
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture
def tiny_config() -> dict:
    import copy

    return {"meta": copy.deepcopy(TINY_META)}


# ------------------------------------------------------------------------------------------- reliability ledger
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
