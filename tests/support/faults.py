"""Helpers of the fault-injection tests: the fault-free reference, child processes running a part."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.benchmark import BenchmarkPlan
from mibench.runner import run_part
from tests.support.configs import GRID, REPO, TEST_MODULE, bench_config

#: Columns that describe where a run came from, not what it computed: the commit (it moves while a suite
#: runs against a live checkout) and the fingerprint of the whole config (a fault-free reference may differ in
#: unrelated keys, e.g. tracking). The job and code fingerprints are compared: they identify the computation.
CONTEXT_COLUMNS = ("seconds", "git_sha", "config_fingerprint")


def without_seconds(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in CONTEXT_COLUMNS if c in table.column_names])


def same_results(a: pa.Table, b: pa.Table) -> bool:
    """Equal in every column but timing and run context (the definition of 'identical' for estimates)."""
    return without_seconds(a).equals(without_seconds(b))


def faulty_entry(fault: str, seeds: list[int]) -> dict:
    return {"estimator": "faulty", "module": TEST_MODULE, "fault": fault, "seeds": seeds}


def grid_config(**bench) -> dict:
    """The GRID benchmark (3 parts of 5 cells) with short budgets: 0.2 s soft, 1 s hard, checkpoint every cell."""
    return bench_config(grid={**GRID, "estimators": ["corr"], "timeout_s": 0.2, **bench})


def plan_of(config: dict, name: str = "grid") -> BenchmarkPlan:
    return BenchmarkPlan.from_config(name, config)


def reference(monkeypatch, plan: BenchmarkPlan, label: str, entry: dict, part: int, where: Path, **kw) -> pa.Table:
    """The same part estimated with the test faults disarmed."""
    with monkeypatch.context() as m:
        m.setenv("MIBENCH_TEST_FAULTS", "off")
        return run_part(plan, label, entry, part, where / f"ref-{label}-{part}.parquet", **kw)


CHILD = """
import json, sys
import tests.support.estimators
from mibench.benchmark import BenchmarkPlan
from mibench.runner import run_part
config, bench, label, part, out, meta = json.loads(sys.argv[1])
run_part(BenchmarkPlan.from_config(bench, config), label, config["estimators"][label], part, out, meta_root=meta)
"""


def child(venv_env, config, label, part, out, *, bench="grid", meta="results/meta", wait=True):
    """run_part in a child process (the fault kills the process, not pytest)."""
    args = json.dumps([config, bench, label, part, str(out), str(meta)])
    cmd = [sys.executable, "-c", CHILD, args]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=venv_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, cwd=REPO, env=venv_env, capture_output=True, text=True, timeout=120)


def markers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(out.name + ".*"))
