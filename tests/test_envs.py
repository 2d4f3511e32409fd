"""Conda environments: every rule names an env file that exists, and the env files agree with pyproject.toml.

Conda cannot run here (not installed, channels unreachable), so `--software-deployment-method conda` itself is
not exercised; these checks keep the files it would use correct (docs/cluster.md).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from .conftest import REPO

ENV_DIR = REPO / "workflow" / "envs"
ENV_FILES = sorted(ENV_DIR.glob("*.yaml"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def load_env(path: Path) -> tuple[list[str], list[str]]:
    """(conda dependencies, pip lines) of a conda env file."""
    env = yaml.safe_load(path.read_text())
    conda, pip = [], []
    for dep in env.get("dependencies", []):
        if isinstance(dep, dict):
            pip.extend(dep.get("pip", []))
        else:
            conda.append(str(dep))
    return conda, pip


def pip_requirements(pip_lines: list[str]) -> dict[str, Requirement]:
    """Named requirements of the pip section (options such as --extra-index-url and paths are skipped)."""
    reqs = {}
    for line in pip_lines:
        if line.startswith("-") or line.startswith(".") or "/" in line:
            continue
        req = Requirement(line)
        reqs[canonicalize_name(req.name)] = req
    return reqs


def project_paths(pip_lines: list[str]) -> list[str]:
    """Local paths the pip section installs (`-e ../..`, `../..`)."""
    paths = []
    for line in pip_lines:
        parts = line.split()
        if parts[0] in ("-e", "--editable"):
            paths.append(parts[1])
        elif parts[0].startswith("."):
            paths.append(parts[0])
    return paths


def pyproject_requirements() -> dict[str, Requirement]:
    reqs = (Requirement(r) for r in PYPROJECT["project"]["dependencies"])
    return {canonicalize_name(r.name): r for r in reqs}


@pytest.fixture(scope="module")
def rules():
    """The workflow's rules, parsed by Snakemake itself with the embedded default config."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    with SnakemakeApi(OutputSettings(quiet=True)) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(),
            storage_settings=StorageSettings(),
            snakefile=REPO / "workflow" / "Snakefile",
            workdir=REPO,
        )
        yield list(workflow._workflow.rules)


def requests_gpu(rule) -> bool:
    """True if the rule asks SLURM for a GPU (`gpu=N` or a `gres` naming gpu); callables count as asking."""
    if "gpu" in rule.resources:
        raw = rule.resources.get("gpu").raw
        if raw is None or str(raw) not in ("0", ""):
            return True
    if "gres" in rule.resources:
        raw = rule.resources.get("gres").raw
        return raw is None or "gpu" in str(raw)
    return False


def test_there_is_a_cpu_and_a_gpu_env() -> None:
    assert {p.name for p in ENV_FILES} >= {"cpu.yaml", "gpu.yaml"}


def test_every_rule_with_an_action_uses_an_existing_env_file(rules) -> None:
    checked = 0
    for rule in rules:
        if rule.norun:  # target rules such as `all` run nothing, so need no environment
            continue
        assert any((rule.shellcmd, rule.script, rule.notebook, rule.wrapper)), (
            f"rule {rule.name}: a `run:` block ignores `conda:`; move the code to workflow/scripts and use `script:`"
        )
        assert isinstance(rule.conda_env, str), f"rule {rule.name} has no `conda:` env file"
        env = (Path(rule.basedir) / rule.conda_env).resolve()
        assert env.is_file(), f"rule {rule.name}: conda env file {env} does not exist"
        assert env.parent == ENV_DIR, f"rule {rule.name}: conda env file {env} is not in {ENV_DIR}"
        expected = "gpu.yaml" if requests_gpu(rule) else None
        if expected:
            assert env.name == expected, f"rule {rule.name} requests a GPU but uses {env.name}, not gpu.yaml"
        checked += 1
    assert checked >= 2  # generate_shard and check_splits_disjoint at least


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_python_is_the_pyproject_floor(env_file) -> None:
    conda, _ = load_env(env_file)
    floor = re.fullmatch(r">=\s*(\d+\.\d+)", PYPROJECT["project"]["requires-python"].strip())
    assert floor, f"pyproject.toml requires-python {PYPROJECT['project']['requires-python']!r} is not '>=X.Y'"
    pythons = [d for d in conda if re.match(r"python\b", d)]
    assert pythons == [f"python={floor.group(1)}"], f"{env_file.name}: python pins {pythons}, want the floor"
    assert "pip" in conda, f"{env_file.name}: needs conda's pip for the pip section"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_installs_this_repository(env_file) -> None:
    _, pip = load_env(env_file)
    paths = project_paths(pip)
    assert len(paths) == 1, f"{env_file.name}: want exactly one local install of the project, got {paths}"
    # conda runs pip from the env file's folder: workflow/envs/ when created by hand, and
    # <workdir>/.snakemake/conda/ for Snakemake, which copies the file there first.
    for folder in (env_file.parent, REPO / ".snakemake" / "conda"):
        root = (folder / paths[0]).resolve()
        assert root == REPO, f"{env_file.name}: {paths[0]} from {folder} is {root}, not the repository"
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"] == "mibench"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_are_inside_the_pyproject_ranges(env_file) -> None:
    _, pip = load_env(env_file)
    env_reqs = pip_requirements(pip)
    project = pyproject_requirements()
    assert "torch" in env_reqs, f"{env_file.name}: pin torch explicitly (the project's heaviest dependency)"
    for name, req in env_reqs.items():
        pins = [s.version for s in req.specifier if s.operator == "=="]
        assert pins, f"{env_file.name}: {req} is not an exact pin"
        if name in project:
            allowed = project[name].specifier
            assert allowed.contains(pins[0], prereleases=True), (
                f"{env_file.name}: {req} is outside pyproject.toml's {project[name]}"
            )


def test_envs_and_makefile_pin_the_same_torch() -> None:
    makefile = (REPO / "Makefile").read_text()
    spec = re.search(r"^TORCH_SPEC \?= (\S+)$", makefile, re.MULTILINE)
    assert spec, "Makefile has no TORCH_SPEC line"
    make_torch = Requirement(spec.group(1)).specifier
    for env_file in ENV_FILES:
        env_torch = pip_requirements(load_env(env_file)[1])["torch"].specifier
        assert str(env_torch) == str(make_torch), f"{env_file.name} pins torch{env_torch}, Makefile {make_torch}"


def test_gpu_env_gets_the_cuda_build_and_cpu_env_the_cpu_build() -> None:
    _, gpu = load_env(ENV_DIR / "gpu.yaml")
    _, cpu = load_env(ENV_DIR / "cpu.yaml")
    assert not any("whl/cpu" in line for line in gpu), "gpu.yaml must not use the CPU-only torch index"
    assert "+cpu" not in str(pip_requirements(gpu)["torch"])
    assert any("download.pytorch.org/whl/cpu" in line for line in cpu), "cpu.yaml would download CUDA torch"


def test_pyproject_torch_range_admits_the_installed_torch() -> None:
    import torch

    allowed = SpecifierSet(str(pyproject_requirements()["torch"].specifier))
    assert allowed.contains(torch.__version__.split("+")[0])
