"""Packaging: the core dependencies are exactly what the library imports, the heavy parts are extras, and a
command that needs a missing extra says which one in one line (docs: README "Install").

Absence is made real: child interpreters get a finder (``ABSENT``) that answers ``import torch`` exactly as
Python does for a package that is not installed; tests/test_packaging_install.py (slow) installs a venv with the
core dependencies only and runs the workflow with torch and mlflow absent.
"""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mibench.extras import EXTRA_OF, EXTRAS, MissingExtraError, available, explain, need, require

from .conftest import GRID, REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
CORE = [Requirement(line) for line in PYPROJECT["dependencies"]]
OPTIONAL = {extra: [Requirement(line) for line in lines] for extra, lines in PYPROJECT["optional-dependencies"].items()}
#: every module an extra provides, made unimportable in the child interpreters below
BLOCKED = sorted(EXTRA_OF)


def canonical(reqs) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


def distributions(module: str) -> set[str]:
    """The installed distributions that provide top-level ``module`` (mlflow: mlflow, mlflow-skinny...)."""
    dists = metadata.packages_distributions().get(module)
    assert dists, f"no installed distribution provides {module!r}"
    return {canonicalize_name(d) for d in dists}


def requires(dist: str) -> set[str]:
    """Names of what ``dist`` requires (any marker)."""
    return {canonicalize_name(Requirement(r).name) for r in metadata.requires(dist) or []}


# ------------------------------------------------------------------------------------------- the metadata


def test_the_extras_table_matches_pyproject() -> None:
    """mibench.extras (which names the extra in error messages) and pyproject.toml name the same packages."""
    assert set(EXTRAS) == set(OPTIONAL) - {"all", "dev"}
    for extra, modules in EXTRAS.items():
        wanted = canonical(OPTIONAL[extra])
        assert len(modules) == len(wanted), extra
        for module in modules:
            assert distributions(module) & wanted, f"{extra}: {module} comes from none of {sorted(wanted)}"


def test_all_is_every_extra() -> None:
    (req,) = OPTIONAL["all"]
    assert canonicalize_name(req.name) == "mibench" and req.extras == set(EXTRAS)


def _closure(names: set[str]) -> set[str]:
    """The installed distributions ``names`` pull in, transitively (extras of dependencies not taken)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def test_the_core_pulls_in_no_extra() -> None:
    """`pip install mibench` installs no workflow engine, MLflow (Flask, SQLAlchemy, gunicorn...) or torch (a
    CUDA build on Linux), not even through a dependency of a dependency."""
    pulled = _closure(canonical(CORE))
    heavy = set().union(*(canonical(reqs) for extra, reqs in OPTIONAL.items() if extra in EXTRAS))
    assert not pulled & heavy, f"core dependencies pull in {sorted(pulled & heavy)}"
    assert "nvidia-cuda-runtime-cu12" not in pulled


def test_the_torch_range_admits_2_13() -> None:
    (torch,) = [r for r in OPTIONAL["learned"] if r.name == "torch"]
    assert torch.specifier.contains("2.13.0")


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_dependencies_are_what_the_library_imports() -> None:
    """Every third-party module src/mibench imports is declared (core, an extra, or shipped by a declared
    dependency itself, like pydantic_core), and every core dependency is imported (no dead `tqdm`)."""
    imported = set().union(*(_imports(p) for p in (REPO / "src" / "mibench").rglob("*.py")))
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("mibench", "__future__")}
    core = canonical(CORE)
    declared = core | set().union(*(canonical(reqs) for reqs in OPTIONAL.values()))
    for module in sorted(third_party):
        dists = distributions(module)
        shipped = any(dists & requires(d) for d in core)
        assert dists & declared or shipped, f"src/mibench imports {module} ({sorted(dists)}): declare it"
    used = set().union(*(distributions(m) for m in third_party))
    assert core <= used, f"declared but never imported by src/mibench: {sorted(core - used)}"


# --------------------------------------------------------------------------------------- the error helper


def test_a_missing_extra_is_named_in_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # exactly what Python does for an absent package
    assert not available("mlflow")
    with pytest.raises(MissingExtraError) as caught:
        require("mlflow", "mibench ui")
    assert str(caught.value) == "mibench ui needs mlflow, which is not installed: pip install 'mibench[tracking]'"
    assert caught.value.extra == "tracking" and isinstance(caught.value, ImportError)
    with pytest.raises(MissingExtraError, match=r"pip install 'mibench\[tracking\]'"):
        need("tracking", "logging to MLflow")
    need("learned", "anything")  # installed here: no error


def test_explain_translates_only_an_absent_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_absent_for_test", None)
    other = ModuleNotFoundError("No module named 'yaml_x'", name="yaml_x")
    assert explain(other) is other  # not an extra: the user's own module, say
    broken = ModuleNotFoundError("No module named 'torch._nope'", name="torch._nope")
    assert explain(broken) is broken  # torch is installed: a broken install keeps its own message
    plain = ValueError("x")
    assert explain(plain) is plain
    monkeypatch.setitem(sys.modules, "safetensors", None)
    missing = explain(ModuleNotFoundError("No module named 'safetensors.torch'", name="safetensors.torch"))
    assert isinstance(missing, MissingExtraError) and "mibench[learned]" in str(missing)


def test_the_cpu_device_needs_no_torch(monkeypatch) -> None:
    from mibench.devices import resolve_device

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delenv("MIBENCH_DEVICE", raising=False)
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(MissingExtraError, match=r"device 'cuda' needs torch.*mibench\[learned\]"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        resolve_device("tpu")  # a typo is reported as such, not as a missing torch
    assert resolve_device("auto") == "cpu"  # no torch, no CUDA
    monkeypatch.setenv("MIBENCH_DEVICE", "cpu")  # what a workflow job without a GPU sets
    assert resolve_device("auto") == "cpu"
    monkeypatch.setenv("MIBENCH_DEVICE", "cuda")
    with pytest.raises(MissingExtraError, match=r"device 'cuda' needs torch"):
        resolve_device("auto")


def test_a_rule_job_that_misses_an_extra_ends_with_the_extra(monkeypatch, tmp_path) -> None:
    from mibench.workflow import rule_context

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MIBENCH_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    log = tmp_path / "job.log"
    with pytest.raises(MissingExtraError, match=r"mlflow is not installed: pip install 'mibench\[tracking\]'"):
        with rule_context(log, 1):
            import mlflow  # noqa: F401
    assert "ModuleNotFoundError" in log.read_text()  # the log keeps the traceback
    logging.basicConfig(force=True)  # rule_context pointed logging at the (closed) log file


# ------------------------------------------------------------------------- commands without the extras

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


def test_core_commands_run_and_the_rest_name_their_extra(venv_env) -> None:
    check_commands(run_commands(sys.executable, venv_env, BLOCKED, REPO))


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


def test_an_estimate_job_without_torch_scores_classical_estimators_and_names_the_extra(venv_env, tmp_path) -> None:
    check_part(run_part_without_extras(sys.executable, venv_env, BLOCKED, tmp_path))


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


def test_ksg_auto_backend_gives_the_same_counts_without_torch(venv_env) -> None:
    """Without torch, `auto` takes the trees where it would have taken torch (exact counts either way)."""
    env = {**venv_env, "MIBENCH_DEVICE": "cpu"}
    runs = {}
    for blocked in ([], BLOCKED):
        proc = subprocess.run(
            [sys.executable, "-c", KSG, json.dumps(blocked)], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[bool(blocked)] = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    (with_torch,), (without, torch_backend) = runs[False], runs[True]  # backend: torch works where torch is
    assert (with_torch[1], without[1]) == ("torch", "tree")
    assert without[0] == pytest.approx(with_torch[0], rel=1e-12)
    assert (
        torch_backend
        == "MissingExtraError: KSG's torch backend needs torch, which is not installed: pip install 'mibench[learned]'"
    )
