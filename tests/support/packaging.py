"""The packaging tests' harness: child interpreters in which the extras' modules are absent, and what they must print."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from mibench.extras import EXTRA_OF
from tests.support.configs import GRID, REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


CORE = [Requirement(line) for line in PYPROJECT["dependencies"]]


OPTIONAL = {extra: [Requirement(line) for line in lines] for extra, lines in PYPROJECT["optional-dependencies"].items()}


#: every module an extra provides, made unimportable in the child interpreters below
BLOCKED = sorted(EXTRA_OF)


#: Makes the modules named in the JSON of argv[1] absent for a child interpreter: a finder that answers as
#: Python does for a package that is not installed (``sys.modules[m] = None`` would also do, but libraries that
#: probe ``sys.modules`` for torch, such as scipy, then trip over the None).
ABSENT = r"""
import importlib.abc, json, sys
blocked = set(json.loads(sys.argv[1]))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
"""


#: Runs `mibench ARGV...` for each ARGV through the console entry point, with the extras absent.
HARNESS = (
    ABSENT
    + r"""
import contextlib, io
runs = json.loads(sys.argv[2])
from mibench.cli import main
results = []
for argv in runs:
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["mibench", *argv]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
print(json.dumps(sorted(m for m in blocked if m in sys.modules)))
"""
)


CORE_COMMANDS = [
    ["--help"],
    ["check", "--config", "config/config.yaml"],
    ["tasks"],
    ["estimators"],
    ["estimators", "infonce"],  # describing a torch estimator needs no torch
    ["config-schema"],
    ["consistency-check", "-e", "ksg", "--n", "500"],  # a classical estimator, end to end
]


MISSING = {
    ("ui",): "mibench ui needs mlflow, which is not installed: pip install 'mibench[tracking]'",
    ("log",): "mibench log needs mlflow, which is not installed: pip install 'mibench[tracking]'",
    ("train", "-m", "mist"): "mibench train needs torch, which is not installed: pip install 'mibench[learned]'",
    ("consistency-check", "-e", "infonce"): "torch is not installed: pip install 'mibench[learned]'",
}


def run_commands(python: str, env: dict[str, str], blocked: list[str], cwd: Path) -> list[dict]:
    runs = CORE_COMMANDS + [list(argv) for argv in MISSING]
    proc = subprocess.run(
        [python, "-c", HARNESS, json.dumps(blocked), json.dumps(runs)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    results, imported = json.loads(lines[-2]), json.loads(lines[-1])
    assert imported == []
    return results


def check_commands(results: list[dict]) -> None:
    for argv, result in zip(CORE_COMMANDS, results, strict=False):
        # consistency-check exits 1 when a check fails (its verdict), never 3 (missing extra)
        assert result["code"] in ((0, 1) if argv[0] == "consistency-check" else (0,)), (argv, result)
    assert "valid" in results[1]["out"] and "model mist" in results[1]["out"]
    assert "criteria" in results[len(CORE_COMMANDS) - 1]["out"]
    for expected, result in zip(MISSING.values(), results[len(CORE_COMMANDS) :], strict=True):
        assert result["code"] == 3, result
        assert result["err"].strip().splitlines() == [f"error: {expected}"], result["err"]  # one line, no traceback


#: run_part of a task grid with a classical and a torch estimator, the extras absent; prints what happened.
RUN_PART = (
    ABSENT
    + r"""
from pathlib import Path
config, out = json.loads(sys.argv[2]), Path(sys.argv[3])
from mibench.benchmark import BenchmarkPlan
from mibench.runner import run_part
plan = BenchmarkPlan.from_config("grid", config)
result = {}
for label in config["estimators"]:
    try:
        rows = run_part(plan, label, config["estimators"][label], 0, out / f"{label}.parquet").to_pylist()
        result[label] = [(r["status"], r["error"], r["mi_estimate"]) for r in rows]
    except ImportError as exc:
        result[label] = f"{type(exc).__name__}: {exc}"
    result[label + ".files"] = sorted(p.name for p in out.glob(f"{label}.parquet*"))
print(json.dumps(result))
"""
)


def run_part_without_extras(python: str, env: dict[str, str], blocked: list[str], tmp_path: Path) -> dict:
    config = {
        "estimators": {"ksg": {"k": 3}, "nce": {"estimator": "infonce", "steps": 5}},
        "benchmarks": {"grid": {**GRID, "estimators": ["ksg", "nce"]}},
    }
    proc = subprocess.run(
        [python, "-c", RUN_PART, json.dumps(blocked), json.dumps(config), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_part(result: dict) -> None:
    """The classical estimator scores every cell; the torch one fails the job, naming the extra, writing no rows
    (error rows would be final: a re-run after installing torch would not redo the part)."""
    assert result["ksg"] and all(status == "ok" and value is not None for status, _, value in result["ksg"])
    assert result["ksg.files"] == ["ksg.parquet"]
    assert result["nce"] == "MissingExtraError: torch is not installed: pip install 'mibench[learned]'"
    assert result["nce.files"] == []


#: KSG with `backend: auto` where it would pick torch (n > 256, 24 euclidean dims); prints (value, backend).
KSG = (
    ABSENT
    + r"""
import numpy as np
from mibench.estimators import build_estimator
rng = np.random.default_rng(0)
x = rng.normal(size=(600, 12))
y = 0.5 * x + rng.normal(size=(600, 12))
estimate = build_estimator("ksg", {"metric": "euclidean"}).estimate(x, y, seed=1)
print(json.dumps([estimate.value, estimate.extras["backend"]]))
try:
    build_estimator("ksg", {"backend": "torch"}).estimate(x, y, seed=1)
except ImportError as exc:
    print(json.dumps(f"{type(exc).__name__}: {exc}"))
"""
)
