"""generate → estimate → evaluate → report → MLflow through Snakemake, and the MLflow-down path."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.support.commands import mibench, snakemake
from tests.support.configs import GRID, bench_config, write_config


@pytest.fixture
def workdir(tmp_path):
    config = bench_config(
        grid={**GRID, "estimators": ["corr", "broken", "slow"], "timeout_s": 0.5},
        mist={"splits": ["test_imd"], "estimators": ["corr"], "n_bins": [10, 15, 20]},
    )
    write_config(tmp_path / "config" / "config.yaml", config)
    return tmp_path


def test_pipeline_survives_mlflow_down_then_logs_on_rerun(repo, venv_env, workdir) -> None:
    down = {**venv_env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # nothing listens on port 9
    first = snakemake(repo, workdir, down, check=False)
    assert first.returncode != 0, "tracking must fail loudly when MLflow is unreachable"
    assert "unreachable" in first.stdout + first.stderr
    # the failed run still ends with the error/timeout rows per estimator (Snakefile onerror)
    assert "grid/broken  12 error(s), 0 timeout(s) of 12" in first.stdout, first.stdout[-2000:]
    assert "grid/slow    0 error(s), 12 timeout(s) of 12   e.g. CellTimeout" in first.stdout
    results = workdir / "results"
    # everything but the MLflow ledger is complete on disk
    assert (results / "report" / "index.html").exists()
    for bench in ("grid", "mist"):
        assert (results / "metrics" / f"{bench}.parquet").exists()
        assert not (results / "tracking" / f"{bench}.json").exists()
    estimates = pl.read_parquet(results / "estimates" / "grid" / "*" / "part-*.parquet")
    assert estimates.height == 3 * 12
    assert dict(estimates.group_by("estimator").agg(pl.col("status").unique().sort().str.join(",")).iter_rows()) == {
        "corr": "ok",
        "broken": "error",
        "slow": "timeout",
    }

    # MLflow back (default sqlite store): the re-run only logs, nothing is recomputed
    second = snakemake(repo, workdir, venv_env, "--summary")
    assert "track_benchmark" in second.stdout
    rerun = snakemake(repo, workdir, venv_env)
    jobs = rerun.stdout + rerun.stderr
    assert "track_benchmark" in jobs and "estimate_part" not in jobs and "evaluate_benchmark" not in jobs
    runs = json.loads((results / "tracking" / "grid.json").read_text())["runs"]
    assert set(runs) == {"corr", "broken", "slow"}

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["mibench/grid"])
    assert sorted(found["tags.mibench.estimator"]) == ["broken", "corr", "slow"]
    corr = found[found["tags.mibench.estimator"] == "corr"].iloc[0]
    assert corr["metrics.count"] == 12 and corr["params.grid.n"] == "[50, 200]"
    assert corr["metrics.mse"] < 0.05  # the Pearson plug-in is accurate on these near-Gaussian 1-D tasks
    assert corr["params.estimator.clip"] == "0.999999"  # a default: the entry sets no hyperparameter
    assert corr["metrics.rank"] == 1 and corr["metrics.scored"] == 12 and corr["tags.mibench.group"] == "complete"
    assert found[found["tags.mibench.estimator"] == "broken"].iloc[0]["metrics.errors"] == 12
    mist = mlflow.search_runs(experiment_names=["mibench/mist"]).iloc[0]
    assert "metrics.mse.test_imd.10-15" in mist.index

    # the CLI reads the same results; `mibench log` is idempotent
    out = mibench(
        venv_env,
        workdir,
        "query",
        "SELECT estimator, count(*) AS c FROM estimates WHERE status='ok' GROUP BY 1 ORDER BY 1",
        "-f",
        "csv",
    )
    assert out.stdout.splitlines() == ['"estimator","c"', '"corr",28']
    mibench(venv_env, workdir, "log")
    assert len(mlflow.search_runs(experiment_names=["mibench/grid"])) == 3
    where = mibench(venv_env, workdir, "where").stdout
    assert "report" in where and "mibench ui" in where
    flat = " ".join(where.split())  # rich wraps long titles
    assert "benchmark grid: 3 estimators, ranked by MSE on the 12 cells every estimator with estimates" in flat
    assert "12 of 12" in where and "0 of 12" in where
    assert "grid/broken  12 error(s)" in where and "grid/slow    0 error(s), 12 timeout(s)" in where
    top = " ".join(mibench(venv_env, workdir, "where", "--top", "1").stdout.split())
    assert "benchmark grid: top 2 of 3 estimators" in top  # one per group: corr; one of broken/slow


def test_dry_run_of_a_100k_cell_benchmark_plans_few_thousand_jobs(repo, venv_env, tmp_path) -> None:
    tasks = [
        {"entry": "multinormal-dense", "dims": [2, 2], "params": {"rho": r / 100}, "name": f"t{r}"} for r in range(50)
    ]
    config = bench_config(
        big={"tasks": tasks, "n": [100, 1000], "seeds": 1000, "cells_per_job": 100, "estimators": ["corr"]}
    )
    del config["meta"]  # a benchmark-only config (no meta-datasets) is valid
    write_config(tmp_path / "config" / "config.yaml", config)
    proc = snakemake(repo, tmp_path, venv_env, "-n", "--quiet", "rules")
    line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("estimate_part "))
    assert int(line.split()[-1]) == 50 * 2 * 1000 // 100
