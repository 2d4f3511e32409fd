"""Packaging, for real (slow): a fresh venv with the core dependencies only, and the workflow with torch and
mlflow absent from every process of the run (what `pip install 'mibench[workflow]'` gives).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from mibench.extras import EXTRAS
from tests.support.configs import GRID, REPO, write_config
from tests.support.packaging import (
    ABSENT,
    BLOCKED,
    MISSING,
    PYPROJECT,
    check_commands,
    check_part,
    run_commands,
    run_part_without_extras,
)


@pytest.mark.slow
def test_a_venv_with_only_the_core_dependencies(tmp_path) -> None:
    """What `pip install mibench` gives, and what a conda env of the workflow is (its dependencies, src/ on
    PYTHONPATH): no snakemake, mlflow or torch anywhere, and still every core command and a classical run."""
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *PYPROJECT["dependencies"]], check=True, timeout=600)
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO / "src"),  # as the Snakefile sets it for jobs
    }
    for module in BLOCKED:  # really absent, not blocked
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, env=env)
        assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr, module
    version = subprocess.run(
        [python, "-c", "import mibench; print(mibench.__version__)"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert version.stdout.strip() == PYPROJECT["version"]  # from pyproject.toml: the package is not installed
    check_commands(run_commands(python, env, [], REPO))
    check_part(run_part_without_extras(python, env, [], tmp_path))

    # installed (no extras): the console script, and pip agrees every core requirement is met
    subprocess.run([*pip, "--no-deps", "-e", str(REPO)], check=True, timeout=600)
    env.pop("PYTHONPATH")
    cli = str(venv / "bin" / "mibench")
    assert subprocess.run([cli, "--help"], capture_output=True, env=env, cwd=tmp_path).returncode == 0
    ui = subprocess.run([cli, "ui"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert (ui.returncode, ui.stderr.strip()) == (3, f"error: {MISSING[('ui',)]}")
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout
    assert re.search(
        r"^mibench\s",
        subprocess.run([python, "-m", "pip", "list"], capture_output=True, text=True, env=env).stdout,
        re.MULTILINE,
    )


@pytest.mark.slow
def test_the_workflow_without_torch_and_mlflow(tmp_path, venv_env) -> None:
    """With the `workflow` extra alone, a classical benchmark with tracking off runs; a job that needs torch fails
    naming the extra and writes nothing, so once torch is there a re-run does exactly the failed jobs."""
    site = tmp_path / "site"  # every Python process of the run (Snakemake, each job) loads this first
    site.mkdir()
    prelude = ABSENT.replace("json.loads(sys.argv[1])", json.dumps(sorted(EXTRAS["tracking"] + EXTRAS["learned"])))
    (site / "sitecustomize.py").write_text(prelude)
    config = {
        "estimators": {"ksg": {"k": 3}, "nce": {"estimator": "infonce", "steps": 5}},
        "benchmarks": {"grid": {**GRID, "estimators": ["ksg", "nce"]}},
        "tracking": {"enabled": False},
    }
    write_config(tmp_path / "config" / "config.yaml", config)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
    cmd += ["--directory", str(tmp_path), "--cores", "2", "--keep-going"]
    blocked_env = {**venv_env, "PYTHONPATH": os.pathsep.join([str(site), venv_env["PYTHONPATH"]])}
    proc = subprocess.run(cmd, env=blocked_env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "MissingExtraError: torch is not installed: pip install 'mibench[learned]'" in out, out[-3000:]
    parts = tmp_path / "results" / "estimates" / "grid"
    assert len(list((parts / "ksg").glob("part-*.parquet"))) == 3
    assert not (parts / "nce").exists() or not list((parts / "nce").glob("part-*.parquet*"))

    again = subprocess.run([*cmd, "-n", "--quiet", "rules"], env=venv_env, capture_output=True, text=True, timeout=600)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", again.stdout + again.stderr, re.MULTILINE))
    assert counts.get("estimate_part") == "3", again.stdout + again.stderr  # nce's three parts, not ksg's
    assert counts.get("evaluate_benchmark") == "1"
