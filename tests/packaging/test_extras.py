"""Packaging: the core dependencies are exactly what the library imports, the heavy parts are extras, and a
command that needs a missing extra says which one in one line (docs: README "Install").

Absence is made real: child interpreters get a finder (``ABSENT``) that answers ``import torch`` exactly as
Python does for a package that is not installed; tests/packaging/test_install.py (slow) installs a venv with the
core dependencies only and runs the workflow with torch and mlflow absent.
"""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mibench.extras import EXTRAS, MissingExtraError, available, explain, need, require
from tests.support.configs import REPO
from tests.support.packaging import (
    BLOCKED,
    CORE,
    KSG,
    OPTIONAL,
    check_commands,
    check_part,
    run_commands,
    run_part_without_extras,
)


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


def test_core_commands_run_and_the_rest_name_their_extra(venv_env) -> None:
    check_commands(run_commands(sys.executable, venv_env, BLOCKED, REPO))


def test_an_estimate_job_without_torch_scores_classical_estimators_and_names_the_extra(venv_env, tmp_path) -> None:
    check_part(run_part_without_extras(sys.executable, venv_env, BLOCKED, tmp_path))


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
