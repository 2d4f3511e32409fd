"""Conda environments: every job gets an env file that exists and fits its GPU request, and the env files list
exactly the jobs' dependencies of pyproject.toml, pinned inside its ranges.

Conda cannot run here (not installed, channels unreachable), so `--software-deployment-method conda` itself is
not exercised; these checks keep the files it would use correct, and tests/packaging/test_install.py runs the library
the way such an env does: the dependencies installed, the package itself from src/ on PYTHONPATH
(docs/cluster.md).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.support.configs import REPO, write_config

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


def requirements(*extras: str) -> dict[str, Requirement]:
    """pyproject.toml's core dependencies plus those of ``extras``, by canonical name."""
    lines = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        lines += PYPROJECT["project"]["optional-dependencies"][extra]
    reqs = (Requirement(r) for r in lines)
    return {canonicalize_name(r.name): r for r in reqs}


#: What workflow jobs run: the library, the learned estimators and training (torch), MLflow logging.
JOB_EXTRAS = ("learned", "tracking")


def pyproject_requirements() -> dict[str, Requirement]:
    return requirements(*JOB_EXTRAS)


@pytest.fixture(scope="module")
def rules():
    """The workflow's rules, parsed by Snakemake itself with the embedded default config."""
    with parsed_workflow() as workflow:
        yield list(workflow.rules)


@contextlib.contextmanager
def parsed_workflow(configfile: Path | None = None, build_dag: bool = False):
    """Snakemake's Workflow of the Snakefile (with its DAG of every job for ``build_dag``), in this process.

    The Snakefile puts src/ first on this process's PYTHONPATH and sys.path; both are restored afterwards.
    """
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
        StorageSettings,
    )

    saved_path, saved_env = list(sys.path), os.environ.get("PYTHONPATH")
    configs = ConfigSettings(configfiles=[configfile]) if configfile else ConfigSettings()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, dryrun=True)) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(),
                config_settings=configs,
                storage_settings=StorageSettings(),
                snakefile=REPO / "workflow" / "Snakefile",
                workdir=REPO,
            )
            if not build_dag:
                yield workflow_api._workflow
                return
            workflow = workflow_api.dag(DAGSettings(forceall=True)).workflow_api._workflow
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
            workflow._build_dag()
            yield workflow
    finally:
        sys.path[:] = saved_path
        if saved_env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_env


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


def env_path(rule, spec) -> Path:
    """The env file a rule's ``conda:`` names (a string, or what its function returned for a job)."""
    if hasattr(spec, "file"):  # a job's CondaEnvFileSpec, already joined with the rule file's folder
        return Path(spec.file.get_path_or_uri(secret_free=True)).resolve()
    return (Path(rule.basedir) / str(spec)).resolve()


def test_every_rule_with_an_action_uses_an_existing_env_file(rules) -> None:
    checked = 0
    for rule in rules:
        if rule.norun:  # target rules such as `all` run nothing, so need no environment
            continue
        assert any((rule.shellcmd, rule.script, rule.notebook, rule.wrapper)), (
            f"rule {rule.name}: a `run:` block ignores `conda:`; move the code to workflow/scripts and use `script:`"
        )
        assert rule.conda_env is not None, f"rule {rule.name} has no `conda:` env file"
        if callable(rule.conda_env):  # chosen per job: test_each_job_gets_the_env_of_its_gpu_request
            continue
        env = env_path(rule, rule.conda_env)
        assert env.is_file(), f"rule {rule.name}: conda env file {env} does not exist"
        assert env.parent == ENV_DIR, f"rule {rule.name}: conda env file {env} is not in {ENV_DIR}"
        expected = "gpu.yaml" if requests_gpu(rule) else None
        if expected:
            assert env.name == expected, f"rule {rule.name} requests a GPU but uses {env.name}, not gpu.yaml"
        checked += 1
    assert checked >= 2  # generate_shard and check_splits_disjoint at least


#: A model on the CPU, one that wants a GPU, and an estimator that asks for one: every kind of job's env.
MIXED_DEVICES = {
    "models": {
        "on_cpu": {"preset": "tiny", "device": "cpu", "training": {"steps": 10}, "data": {"source": "generate"}},
        "on_gpu": {"preset": "tiny", "device": "auto", "training": {"steps": 10}, "data": {"source": "generate"}},
    },
    "estimators": {"ksg": {"k": 3}, "ksg_gpu": {"estimator": "ksg", "resources": {"gpu": 1}}},
}


def test_each_job_gets_the_env_of_its_gpu_request(tmp_path) -> None:
    """Per job, from Snakemake's own DAG: a job that asks for a GPU runs in gpu.yaml, any other in cpu.yaml (a
    CPU-only model must not pull the multi-GB CUDA torch); train_model picks its env from the model's device."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["models"] = MIXED_DEVICES["models"]
    config["estimators"] = MIXED_DEVICES["estimators"]
    config["benchmarks"] = {
        name: {**bench, "estimators": ["ksg", "ksg_gpu"]} for name, bench in config["benchmarks"].items()
    }
    path = write_config(tmp_path / "mixed.yaml", config)
    with parsed_workflow(path, build_dag=True) as workflow:
        seen: dict[tuple[str, str], str] = {}
        for job in workflow.dag.jobs:
            if job.rule.norun:
                continue
            env = env_path(job.rule, job.conda_env_spec)
            assert env.is_file() and env.parent == ENV_DIR, f"{job}: conda env {env} is not a file in {ENV_DIR}"
            gpu = int(job.resources.get("gpu", 0) or 0)
            want = "gpu.yaml" if gpu else "cpu.yaml"
            assert env.name == want, f"job {job.rule.name} {dict(job.wildcards)} has gpu={gpu} but uses {env.name}"
            seen[(job.rule.name, job.wildcards.get("model", job.wildcards.get("estimator", "")))] = env.name
    assert seen[("train_model", "on_cpu")] == "cpu.yaml"
    assert seen[("train_model", "on_gpu")] == "gpu.yaml"
    assert seen[("estimate_part_gpu", "ksg_gpu")] == "gpu.yaml"
    assert seen[("estimate_part", "ksg")] == "cpu.yaml"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_python_is_the_pyproject_floor(env_file) -> None:
    conda, _ = load_env(env_file)
    floor = re.fullmatch(r">=\s*(\d+\.\d+)", PYPROJECT["project"]["requires-python"].strip())
    assert floor, f"pyproject.toml requires-python {PYPROJECT['project']['requires-python']!r} is not '>=X.Y'"
    pythons = [d for d in conda if re.match(r"python\b", d)]
    assert pythons == [f"python={floor.group(1)}"], f"{env_file.name}: python pins {pythons}, want the floor"
    assert "pip" in conda, f"{env_file.name}: needs conda's pip for the pip section"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_lists_exactly_the_jobs_dependencies(env_file) -> None:
    """Core dependencies + the `learned` and `tracking` extras, each named; nothing else (no snakemake: the
    script preamble brings Snakemake's modules; no install of the project: src/ comes on PYTHONPATH)."""
    _, pip = load_env(env_file)
    assert project_paths(pip) == [], f"{env_file.name}: installs a local path; the Snakefile puts src/ on PYTHONPATH"
    listed, wanted = set(pip_requirements(pip)), set(pyproject_requirements())
    assert listed == wanted, (
        f"{env_file.name}: missing {sorted(wanted - listed)}, not a dependency of the jobs {sorted(listed - wanted)}"
    )
    workflow = set(requirements("workflow")) - set(requirements())
    assert not listed & workflow


def test_cpu_and_gpu_envs_pin_the_same_versions() -> None:
    """Only the torch build differs: a GPU job and a CPU job compute with the same library versions."""
    cpu = pip_requirements(load_env(ENV_DIR / "cpu.yaml")[1])
    gpu = pip_requirements(load_env(ENV_DIR / "gpu.yaml")[1])
    assert {k: str(v) for k, v in cpu.items()} == {k: str(v) for k, v in gpu.items()}


def test_snakefile_puts_this_checkouts_src_first_for_jobs() -> None:
    """What makes `import mibench` work in a conda env holding only the dependencies: jobs inherit PYTHONPATH."""
    src = str(REPO / "src")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, ["/elsewhere", before]))
    try:
        with parsed_workflow():
            assert os.environ["PYTHONPATH"].split(os.pathsep)[:2] == [src, "/elsewhere"]
            assert sys.path[0] == src
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before
    assert os.environ.get("PYTHONPATH") == before


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


def set_resources_rules(text: str) -> set[str]:
    """Rule names under every `set-resources:` in ``text`` (YAML, Markdown with YAML blocks, commented examples)."""
    names: set[str] = set()
    block: int | None = None  # indentation of the `set-resources:` line we are under
    for raw in text.splitlines():
        line = raw[1:] if raw.startswith("#") else raw  # the profile's example is commented out
        indent = len(line) - len(line.lstrip())
        if re.fullmatch(r"\s*set-resources:\s*", line):
            block = indent
        elif block is not None and line.strip() and not line.lstrip().startswith("#"):
            if indent <= block or line.strip() == "```":
                block = None
            elif match := re.fullmatch(r"\s*([A-Za-z_]\w*):\s*(#.*)?", line):
                if indent == block + 2:
                    names.add(match.group(1))
    return names


@pytest.mark.parametrize("path", ["profiles/slurm/config.yaml", "docs/cluster.md"])
def test_rule_names_in_the_profile_and_its_docs_are_rules(rules, path) -> None:
    """`set-resources` keys are rule names; a renamed rule (train_mist -> train_model) must not leave stale ones."""
    names = set_resources_rules((REPO / path).read_text())
    assert "train_model" in names, f"{path}: no set-resources example for the GPU training rule found"
    unknown = names - {rule.name for rule in rules}
    assert not unknown, f"{path}: set-resources names rules that do not exist: {sorted(unknown)}"
