"""What re-runs when: every kind of edit to the config or the code re-runs exactly the jobs it affects.

One real run of a small workflow, then each edit is checked with ``snakemake -n`` (the jobs it would run,
parsed from the dry-run) and, where the outputs matter, with a real re-run. Documented in docs/guide.md,
"What re-runs when".
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.support.commands import mibench, snakemake
from tests.support.configs import GRID, TEST_MODULE, bench_config, write_config

pytestmark = pytest.mark.slow

MY_ESTIMATOR = '''"""A test estimator living in the work directory (module: my_est)."""
import numpy as np

from mibench.estimators import ESTIMATORS, Estimate, Estimator, EstimatorParams, Field, register_estimator


class Shrunk(Estimator):
    name = "shrunk_corr"

    class Params(EstimatorParams):
        factor: float = Field(0.5, gt=0, description="Shrinks the estimate.")

    def estimate(self, x, y, *, seed):
        r = float(np.corrcoef(x[:, 0], y[:, 0])[0, 1])
        return Estimate(-0.5 * np.log(1 - r * r) * self.hp.factor)


if "shrunk_corr" not in ESTIMATORS:
    register_estimator(Shrunk)
'''


def config() -> dict:
    grid = copy.deepcopy(GRID)
    grid.update(estimators=["corr", "shrunk"], cells_per_job=2)  # 12 cells, 6 parts per estimator
    cfg = bench_config(grid=grid, mist={"splits": ["test_imd"], "estimators": ["corr", "shrunk"]})
    cfg["meta"]["splits"].pop("train")
    cfg["estimators"] = {
        "corr": cfg["estimators"]["corr"],
        "shrunk": {"estimator": "shrunk_corr", "module": "my_est"},
    }
    cfg["tracking"] = {"enabled": False}
    return cfg


def planned(workdir: Path, env: dict, repo: Path) -> dict[str, set[str]]:
    """rule -> the (first) output of each job a dry-run would run."""
    proc = snakemake(repo, workdir, env_for(workdir, env), "-n")
    out = proc.stdout + proc.stderr
    jobs: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=(?:localrule|rule) \w+:)", out):
        head = re.match(r"(?:localrule|rule) (\w+):", block)
        output = re.search(r"^\s+output: (.+)$", block, flags=re.M)
        if head and head.group(1) != "all":
            jobs.setdefault(head.group(1), set()).add(output.group(1).split(",")[0].strip() if output else "")
    return jobs


def record(ledger, fault: str, expected: dict, got: dict, injected: str) -> None:
    """A staleness case for docs/reliability.md: the right answer is exactly the expected jobs re-run; fewer is
    stale (silently wrong), more is wasted work (counted as a right answer only when equal)."""
    ledger(
        group="edits after a finished run (stale results)",
        fault=fault,
        injected=injected,
        expected="exactly the affected jobs re-run: " + ", ".join(f"{k} {len(v)}" for k, v in sorted(expected.items())),
        observed=", ".join(f"{k} {len(v)}" for k, v in sorted(got.items())) or "nothing re-runs",
        outcome="right answer" if got == expected else "silently wrong",
        results_lost=0,
    )


def parts(bench: str, label: str, idx) -> set[str]:
    return {f"results/estimates/{bench}/{label}/part-{i:04d}.parquet" for i in idx}


@pytest.fixture(scope="module")
def done(tmp_path_factory, repo, venv_env_module) -> Path:
    """A finished run of the small workflow (the state every edit starts from)."""
    work = tmp_path_factory.mktemp("rerun")
    (work / "my_est.py").write_text(MY_ESTIMATOR)
    write_config(work / "config" / "config.yaml", config())
    snakemake(repo, work, env_for(work, venv_env_module))
    return work


@pytest.fixture(scope="module")
def venv_env_module() -> dict:
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def env_for(work: Path, env: dict) -> dict:
    """The work directory first on PYTHONPATH: `module: my_est` is that directory's copy."""
    import os

    from tests.support.configs import REPO

    return {**env, "PYTHONPATH": os.pathsep.join([str(work), str(REPO / "src"), str(REPO)])}


@pytest.fixture
def work(done, tmp_path) -> Path:
    """A copy of the finished run (mtimes kept), so each edit starts from the same state."""
    copy_to = tmp_path / "w"
    shutil.copytree(done, copy_to, symlinks=True, copy_function=shutil.copy2)
    return copy_to


def edit_config(work: Path, change) -> None:
    path = work / "config" / "config.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


EVAL_GRID = {"evaluate_benchmark": {"results/metrics/grid.parquet"}}


def test_nothing_changed_nothing_runs(work, repo, venv_env_module, ledger) -> None:
    got = planned(work, venv_env_module, repo)
    record(ledger, "no edit", {}, got, "snakemake again after a finished run")
    assert got == {}


def test_a_comment_or_docstring_edit_in_an_estimator_reruns_nothing(work, repo, venv_env_module) -> None:
    path = work / "my_est.py"
    path.write_text(
        path.read_text().replace('"""A test estimator', '"""An edited docstring; a test estimator') + "# a comment\n"
    )
    assert planned(work, venv_env_module, repo) == {}


def test_editing_an_estimators_code_reruns_its_jobs_only(work, repo, venv_env_module, ledger) -> None:
    path = work / "my_est.py"
    path.write_text(path.read_text().replace("* self.hp.factor", "* self.hp.factor * 0.5"))
    jobs = planned(work, venv_env_module, repo)
    expected = {
        "estimate_part": parts("grid", "shrunk", range(6)) | parts("mist", "shrunk", range(4)),
        "evaluate_benchmark": {"results/metrics/grid.parquet", "results/metrics/mist.parquet"},
        "report": {"results/report/index.html"},
    }
    record(ledger, "an estimator's code edited (a new rule)", expected, jobs, "edit of the estimate() body")
    assert jobs["estimate_part"] == parts("grid", "shrunk", range(6)) | parts("mist", "shrunk", range(4))
    assert jobs["evaluate_benchmark"] == {"results/metrics/grid.parquet", "results/metrics/mist.parquet"}
    assert set(jobs) == {"estimate_part", "evaluate_benchmark", "report"}


def test_a_hyperparameter_edit_reruns_that_estimator_only(work, repo, venv_env_module) -> None:
    edit_config(work, lambda c: c["estimators"]["shrunk"].update(factor=0.25))
    jobs = planned(work, venv_env_module, repo)
    assert jobs["estimate_part"] == parts("grid", "shrunk", range(6)) | parts("mist", "shrunk", range(4))
    # writing out a default explicitly is no change at all
    edit_config(work, lambda c: c["estimators"]["shrunk"].update(factor=0.5))
    assert planned(work, venv_env_module, repo) == {}


def test_a_task_grid_edit_reruns_the_parts_holding_that_task(work, repo, venv_env_module, ledger) -> None:
    """Task 1 (t-asinh) holds cells 4..7 = parts 2 and 3 (2 cells per part)."""
    edit_config(work, lambda c: c["benchmarks"]["grid"]["tasks"][1]["params"].update(rho=0.5))
    jobs = planned(work, venv_env_module, repo)
    expected = {
        "estimate_part": parts("grid", "corr", (2, 3)) | parts("grid", "shrunk", (2, 3)),
        "evaluate_benchmark": {"results/metrics/grid.parquet"},
        "report": {"results/report/index.html"},
    }
    record(ledger, "a task's rho edited in a grid", expected, jobs, "config edit")
    assert jobs["estimate_part"] == parts("grid", "corr", (2, 3)) | parts("grid", "shrunk", (2, 3))
    assert jobs["evaluate_benchmark"] == {"results/metrics/grid.parquet"}
    snakemake(repo, work, env_for(work, venv_env_module))
    rows = pl.read_parquet(work / "results/estimates/grid/corr/part-0002.parquet")
    assert set(rows["task_params"]) == {'{"df":4,"rho":0.5}'}  # the new grid, not the stale one


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (lambda c: c["benchmarks"]["grid"].update(levels=[0.5, 0.9]), "levels"),
        (lambda c: c["benchmarks"]["grid"].update(n_bins=[10, 100, 500]), "n_bins"),
        (lambda c: c["benchmarks"]["grid"].update(dim_bins=[2, 3, 10]), "dim_bins"),
    ],
)
def test_scoring_edits_re_evaluate_only(work, repo, venv_env_module, change, what, ledger) -> None:
    edit_config(work, change)
    jobs = planned(work, venv_env_module, repo)
    record(ledger, f"{what} edited", {**EVAL_GRID, "report": {"results/report/index.html"}}, jobs, "config edit")
    assert jobs == {**EVAL_GRID, "report": {"results/report/index.html"}}, what


def test_repartitioning_reruns_the_grid_and_leaves_no_orphan_in_the_metrics(
    work, repo, venv_env_module, ledger
) -> None:
    edit_config(work, lambda c: c["benchmarks"]["grid"].update(cells_per_job=4))
    jobs = planned(work, venv_env_module, repo)
    expected = {
        "estimate_part": parts("grid", "corr", range(3)) | parts("grid", "shrunk", range(3)),
        "evaluate_benchmark": {"results/metrics/grid.parquet"},
        "report": {"results/report/index.html"},
    }
    record(ledger, "cells_per_job 2 -> 4", expected, jobs, "config edit")
    assert jobs["estimate_part"] == parts("grid", "corr", range(3)) | parts("grid", "shrunk", range(3))
    snakemake(repo, work, env_for(work, venv_env_module))
    metrics = pl.read_parquet(work / "results/metrics/grid.parquet").filter(
        (pl.col("split") == "ALL")
        & (pl.col("family") == "ALL")
        & (pl.col("n_bin") == "ALL")
        & (pl.col("dim_bin") == "ALL")
    )
    assert dict(zip(metrics["estimator"], metrics["count"], strict=True)) == {"corr": 12, "shrunk": 12}
    # parts 3..5 of the old partition are orphans: listed by `mibench where`, removed by `mibench clean`
    where = mibench(env_for(work, venv_env_module), work, "where").stdout
    assert "orphans" in where and "part-0005.parquet" in where
    dry = mibench(env_for(work, venv_env_module), work, "clean", "--orphans").stdout
    assert "would remove" in dry and (work / "results/estimates/grid/corr/part-0005.parquet").exists()
    mibench(env_for(work, venv_env_module), work, "clean", "--orphans", "--yes")
    assert not (work / "results/estimates/grid/corr/part-0005.parquet").exists()
    assert (work / "results/estimates/grid/corr/part-0002.parquet").exists()
    assert "orphans" not in mibench(env_for(work, venv_env_module), work, "where").stdout
    assert planned(work, venv_env_module, repo) == {}


def test_dropping_a_benchmark_or_an_estimator_makes_orphans_not_silent_mixes(work, repo, venv_env_module) -> None:
    def drop(c: dict) -> None:
        c["benchmarks"].pop("mist")
        c["benchmarks"]["grid"]["estimators"] = ["corr"]

    edit_config(work, drop)
    jobs = planned(work, venv_env_module, repo)
    assert jobs == {**EVAL_GRID, "report": {"results/report/index.html"}}
    snakemake(repo, work, env_for(work, venv_env_module))
    report = (work / "results/report/index.html").read_text()
    assert "shrunk" not in report
    where = mibench(env_for(work, venv_env_module), work, "where").stdout
    assert "benchmark mist" in where and "estimator shrunk of benchmark grid" in where


def test_runtime_only_settings_rerun_nothing_and_budgets_rerun_the_estimates(
    work, repo, venv_env_module, ledger
) -> None:
    edit_config(work, lambda c: c["benchmarks"]["grid"].update(checkpoint_s=5))
    got = planned(work, venv_env_module, repo)
    record(ledger, "checkpoint_s edited (runtime only)", {}, got, "config edit")
    assert got == {}
    edit_config(work, lambda c: c["benchmarks"]["grid"].update(timeout_s=100))
    jobs = planned(work, venv_env_module, repo)
    assert jobs["estimate_part"] == parts("grid", "corr", range(6)) | parts("grid", "shrunk", range(6))


def test_a_split_edit_regenerates_its_shards_and_reruns_what_reads_them(work, repo, venv_env_module) -> None:
    edit_config(work, lambda c: c["meta"]["splits"]["test_imd"].update(replicates=3))
    jobs = planned(work, venv_env_module, repo)
    assert {p.split("/")[2] for p in jobs["generate_shard"]} == {"test_imd"}
    assert jobs["estimate_part"] >= parts("mist", "corr", range(4))
    assert not any("/grid/" in p for p in jobs["estimate_part"])
    assert jobs["evaluate_benchmark"] == {"results/metrics/mist.parquet"}


def test_rows_carry_provenance(work) -> None:
    rows = pl.read_parquet(work / "results/estimates/grid/corr/part-0000.parquet")
    assert rows["n"].dtype == pl.Int64
    for col in ("job_fingerprint", "code_fingerprint", "config_fingerprint", "git_sha", "mibench_version"):
        assert rows[col].null_count() == 0 and all(len(v) >= 5 for v in rows[col]), col
    params = yaml.safe_load(rows["estimator_params"][0])
    assert params["clip"] == 0.999999  # the resolved entry: defaults written out


def test_where_and_the_report_say_which_config_and_commit_they_reflect(work, venv_env_module) -> None:
    where = mibench(env_for(work, venv_env_module), work, "where").stdout
    assert re.search(r"grid reflects config/config.yaml \(fingerprint [0-9a-f]{12}\) at commit", where), where
    report = (work / "results/report/index.html").read_text()
    assert "config fingerprint" in report and "at commit" in report


def test_model_json_is_an_input_of_the_learned_estimate_jobs(tmp_path, repo, venv_env_module) -> None:
    """A retrained or edited model.json re-runs the MIST rows (dry-run of a config with a learned estimator)."""
    cfg = config()
    cfg["estimators"] = {"mist": {"checkpoint": "results/models/m/model.safetensors", "device": "cpu"}}
    cfg["benchmarks"] = {"mist": {"splits": ["test_imd"], "estimators": ["mist"]}}
    cfg["meta"]["splits"]["train"] = copy.deepcopy(bench_config()["meta"]["splits"]["train"])
    cfg["models"] = {"m": {"device": "cpu", "threads": 1, "training": {"steps": 3}, "data": {"validation_split": None}}}
    write_config(tmp_path / "config" / "config.yaml", cfg)
    out = snakemake(repo, tmp_path, env_for(tmp_path, venv_env_module), "-n").stdout
    block = next(b for b in out.split("\n\n") if "rule estimate_part:" in b)
    assert "results/models/m/model.json" in block and "results/models/m/model.safetensors" in block
    assert TEST_MODULE  # the grid's test module stays importable in this workdir
