"""MLflow runs of real results (run_part -> evaluate -> log_from_disk) in a real sqlite store.

One run per (benchmark, estimator, identity): logging again or re-estimating identical results (only `seconds`
differ) finds the run; a changed hyperparameter adds one. Every resolved hyperparameter is a param, defaults too;
metrics compare estimators on the cells all of them scored, with cell counts next to them; the metrics and
calibration tables are separate artifacts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.benchmark import BenchmarkPlan
from mibench.config import parse_config
from mibench.evaluate import evaluate_benchmark
from mibench.evaluate.mlflow_runs import log_from_disk, resolved_hyperparameters
from mibench.runner import run_part
from tests.support.configs import GRID, bench_config

LABELS = ("corr", "odd", "broken")


def estimate_and_evaluate(config: dict, results: Path, labels=LABELS) -> None:
    plan = BenchmarkPlan.from_config("grid", config)
    for label in labels:
        out = results / "estimates" / "grid" / label / "part-0000.parquet"
        run_part(plan, label, config["estimators"][label], 0, out)
    parts = sorted((results / "estimates" / "grid").glob("*/part-0000.parquet"))
    figures = results / "figures" / "grid"
    evaluate_benchmark(
        plan, parts, results / "metrics" / "grid.parquet", results / "calibration" / "grid.parquet", figures
    )


def runs_of(results: Path) -> list[dict]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    return (
        mlflow.search_runs(experiment_names=["mibench/grid"])
        .drop(columns=["start_time", "end_time"])
        .to_dict("records")
    )


@pytest.fixture
def config() -> dict:
    config = bench_config(grid={**GRID, "estimators": list(LABELS), "cells_per_job": 12})
    parse_config(config)  # valid; the tests keep and edit the plain data
    return config


def test_one_run_per_identity_every_hyperparameter_and_fair_metrics(config, tmp_path, monkeypatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    estimate_and_evaluate(config, results)
    first = log_from_disk(config, "grid", results)
    assert set(first) == set(LABELS)
    found = runs_of(results)
    assert len(found) == 3
    by = {r["tags.mibench.estimator"]: r for r in found}

    # every resolved hyperparameter: `corr` has no keys in its entry, yet its default is logged
    assert config["estimators"]["corr"].keys() == {"estimator", "module"}
    assert by["corr"]["params.estimator.clip"] == "0.999999"
    assert by["corr"]["params.estimator.estimator"] == "first_column_corr"
    assert by["odd"]["params.estimator.estimator"] == "fails_on_odd_seeds"

    # fair metrics: `odd` scored about half the cells; everyone is compared on those
    odd_ok = int(by["odd"]["metrics.scored"])
    assert 0 < odd_ok < 12 and by["odd"]["metrics.cells"] == 12
    assert by["corr"]["metrics.common_cells"] == odd_ok and by["corr"]["metrics.count"] == odd_ok
    assert by["corr"]["metrics.own.count"] == 12 and by["corr"]["metrics.scored"] == 12
    assert by["corr"]["tags.mibench.group"] == "complete" and by["corr"]["metrics.rank"] == 1
    assert by["odd"]["tags.mibench.group"] == "with failures" and by["odd"]["metrics.rank"] == 1
    assert by["broken"]["tags.mibench.group"] == "no estimates" and by["broken"]["metrics.scored"] == 0
    ns = [k for k in by["corr"] if k.startswith("metrics.mse.n.") and not k.endswith(".n_cells")]
    assert ns and all(f"{k}.n_cells" in by["corr"] for k in ns)
    assert sum(by["corr"][f"{k}.n_cells"] for k in ns) == odd_ok

    # metrics and calibration are two artifacts (both were `grid.parquet` at the root before)
    paths = {
        a.path
        for folder in ("metrics", "calibration")
        for a in mlflow.artifacts.list_artifacts(run_id=first["corr"], artifact_path=folder)
    }
    assert paths == {"metrics/grid.parquet", "calibration/grid.parquet"}
    figures = mlflow.artifacts.list_artifacts(run_id=first["corr"], artifact_path="figures")
    assert any(a.path.endswith("estimate_vs_true.png") for a in figures)

    # logging again, and re-estimating identical results (only `seconds` change): no new run
    assert log_from_disk(config, "grid", results) == first
    shutil.rmtree(results / "estimates")
    estimate_and_evaluate(config, results)
    assert log_from_disk(config, "grid", results) == first
    assert len(runs_of(results)) == 3

    # a changed hyperparameter is another configuration: a new run for that estimator only
    config["estimators"]["corr"]["clip"] = 0.99
    estimate_and_evaluate(config, results, labels=("corr",))
    changed = log_from_disk(config, "grid", results)
    assert changed["corr"] != first["corr"] and changed["odd"] == first["odd"]
    assert len(runs_of(results)) == 4


def test_an_interrupted_run_is_logged_again(config, tmp_path, monkeypatch) -> None:
    """A run left RUNNING by a crash mid-logging is not taken for the finished one: it is replaced."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    estimate_and_evaluate(config, results)
    first = log_from_disk(config, "grid", results)
    store = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    store.update_run(first["corr"], status="RUNNING")  # what a crash between create_run and set_terminated leaves
    again = log_from_disk(config, "grid", results)
    assert again["corr"] != first["corr"] and again["odd"] == first["odd"]
    assert store.get_run(first["corr"]).info.lifecycle_stage == "deleted"
    assert len(runs_of(results)) == 3


def test_resolved_hyperparameters_fill_defaults_bootstrap_and_inner() -> None:
    assert resolved_hyperparameters("ksg", None)["k"] == 3
    ksg10 = resolved_hyperparameters("ksg10", {"estimator": "ksg", "k": 10, "bootstrap": {"resamples": 20}})
    assert ksg10["estimator"] == "ksg" and ksg10["k"] == 10 and ksg10["algorithm"] == 1
    assert ksg10["bootstrap"] == {"resamples": 20, "levels": [0.5, 0.8, 0.9, 0.95]}
    cons = resolved_hyperparameters("c", {"estimator": "consistent", "inner": {"estimator": "ksg", "k": 5}})
    assert cons["max_gamma"] == 10 and cons["inner"]["k"] == 5 and cons["inner"]["algorithm"] == 1
    assert resolved_hyperparameters("mist", {"checkpoint": "m.safetensors"})["levels"] == [0.5, 0.8, 0.9, 0.95]
    assert resolved_hyperparameters("nope", {"x": 1}) == {"estimator": "nope", "x": 1}
