"""MLflow logging, all in one place. MLflow is the run ledger; Parquet stays the source of truth.

* Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<results>/mlflow.db``; artifacts of the
  local store live in ``<results>/mlartifacts``.
* One experiment per benchmark (``mibench/<benchmark>``), one run per (benchmark, estimator) with params
  (hyperparameters, grid), metrics (MSE, bias, coverage, seconds, per-family and per-bin MSE), artifacts
  (figures, metrics Parquet) and tags (git sha, config hash). Logging the same results twice does not
  duplicate runs: a run is keyed by a hash of its metrics.
* A tracking failure never loses results: callers get :class:`TrackingError`, the Parquet files are
  already complete, and ``mibench log`` / a Snakemake re-run logs them later. HTTP retries are capped so an
  unreachable server fails fast instead of retrying for minutes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from mibench.evaluate.metrics import ALL, GROUP_COLUMNS

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

OVERALL_METRICS = ("count", "errors", "timeouts", "mse", "bias", "mae", "mre", "median_seconds")


class TrackingError(RuntimeError):
    """MLflow could not be reached or refused a write; results on disk are unaffected."""


def tracking_uri(results_dir: str | os.PathLike = "results") -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def _is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first use of a new sqlite store: concurrent creators crash while creating tables."""
    if not _is_local_sqlite(uri):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def client(uri: str):
    """An MlflowClient whose store is initialised (under a lock for sqlite)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    try:
        with _store_lock(uri):
            mlflow.set_tracking_uri(uri)
            c = MlflowClient(tracking_uri=uri)
            c.search_experiments(max_results=1)  # creates the sqlite tables once
        return c
    except Exception as exc:
        raise TrackingError(
            f"MLflow at {uri} is unreachable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


def experiment_id(c, name: str, uri: str, results_dir: str | os.PathLike = "results") -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if _is_local_sqlite(uri):
        location = (Path(results_dir).resolve() / "mlartifacts" / name.replace("/", "_")).as_uri()
    return c.create_experiment(name, artifact_location=location)


_KEY_CHARS = re.compile(r"[^0-9A-Za-z_\-. /]")


def metric_key(*parts: str) -> str:
    """MLflow keys allow letters, digits, _ - . space /; bin labels like '[10,100)' become '10-100'."""
    text = ".".join(p.strip("[]()").replace(",", "-") for p in parts)
    return _KEY_CHARS.sub("_", text)


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested params -> {'estimator.bootstrap.resamples': '100'} (MLflow params are flat strings)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return {prefix: text[:6000]}


def run_metrics(metrics: pl.DataFrame, estimator: str) -> dict[str, float]:
    """Overall metrics plus per-family, per-split and per-(split, n-bin) MSE for one estimator."""
    rows = metrics.filter(pl.col("estimator") == estimator)
    out: dict[str, float] = {}

    def only(**fixed: str) -> pl.DataFrame:
        sub = rows
        for col in GROUP_COLUMNS:
            want = fixed.get(col, ALL)
            sub = sub.filter(pl.col(col) != ALL) if want == "*" else sub.filter(pl.col(col) == want)
        return sub

    overall = only()
    if overall.height:
        row = overall.row(0, named=True)
        for key, value in row.items():
            if (key in OVERALL_METRICS or key.startswith(("coverage_", "width_"))) and value is not None:
                out[key] = float(value)
    for row in only(family="*").iter_rows(named=True):
        if row["mse"] is not None:
            out[metric_key("mse", "family", row["family"])] = float(row["mse"])
    for row in only(split="*", n_bin="*").iter_rows(named=True):
        if row["mse"] is not None and row["split"] != "-":
            out[metric_key("mse", row["split"], row["n_bin"])] = float(row["mse"])
    for row in only(n_bin="*").iter_rows(named=True):
        if row["mse"] is not None:
            out[metric_key("mse", "n", row["n_bin"])] = float(row["mse"])
    return out


def log_benchmark(
    benchmark: str,
    metrics: pl.DataFrame,
    estimator_params: Mapping[str, Mapping[str, Any]],
    grid_params: Mapping[str, Any],
    artifacts: list[str | os.PathLike],
    *,
    config_hash: str = "",
    git_sha: str = "",
    results_dir: str | os.PathLike = "results",
    uri: str | None = None,
) -> dict[str, str]:
    """Log one run per estimator of a benchmark; returns estimator -> run id. Raises :class:`TrackingError`."""
    from mlflow.entities import Metric, Param, RunTag

    uri = uri or tracking_uri(results_dir)
    c = client(uri)
    try:
        exp = experiment_id(c, f"mibench/{benchmark}", uri, results_dir)
        run_ids: dict[str, str] = {}
        for estimator in sorted(metrics["estimator"].unique().to_list()):
            values = run_metrics(metrics, estimator)
            params = {**flatten("estimator", estimator_params.get(estimator, {})), **flatten("grid", grid_params)}
            digest = hashlib.sha256(json.dumps([values, params], sort_keys=True).encode()).hexdigest()[:16]
            existing = c.search_runs(
                [exp],
                filter_string=f"tags.`mibench.estimator` = '{estimator}' and tags.`mibench.results_hash` = '{digest}'",
                max_results=1,
            )
            if existing:
                run_ids[estimator] = existing[0].info.run_id
                continue
            tags = {
                "mibench.benchmark": benchmark,
                "mibench.estimator": estimator,
                "mibench.results_hash": digest,
                "mibench.git_sha": git_sha,
                "mibench.config_hash": config_hash,
                "mlflow.runName": estimator,
            }
            run = c.create_run(exp, run_name=estimator, tags=tags)
            rid = run.info.run_id
            c.log_batch(
                rid,
                metrics=[Metric(k, v, 0, 0) for k, v in values.items()],
                params=[Param(k, v) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            for path in artifacts:
                path = Path(path)
                if path.is_dir():
                    c.log_artifacts(rid, str(path), artifact_path=path.name)
                elif path.exists():
                    c.log_artifact(rid, str(path))
            c.set_terminated(rid)
            run_ids[estimator] = rid
        return run_ids
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(
            f"logging benchmark {benchmark!r} to MLflow at {uri} failed: {type(exc).__name__}: {exc}"
        ) from exc


def grid_params(plan) -> dict[str, Any]:
    """What defines the cells of a benchmark, as MLflow params."""
    if plan.from_splits:
        grid: dict[str, Any] = {"splits": list(plan.splits), "cells": plan.n_cells}
    else:
        grid = {
            "n": list(plan.ns),
            "seeds": plan.seeds,
            "tasks": len(plan.tasks),
            "cells": plan.n_cells,
            "root_seed": plan.root_seed,
        }
    return {**grid, "levels": list(plan.levels), "timeout_s": plan.timeout_s}


def log_from_disk(
    config: Any,
    benchmark: str,
    results_dir: str | os.PathLike = "results",
    provenance: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Log a benchmark whose metrics are already on disk (``mibench log``, the track rule).

    Every hyperparameter is logged as the estimator resolves it, defaults included.
    """
    from mibench.benchmark import BenchmarkPlan
    from mibench.config import as_config, config_fingerprint
    from mibench.estimators import resolve_entry
    from mibench.provenance import git_sha

    root = Path(results_dir)
    metrics_path = root / "metrics" / f"{benchmark}.parquet"
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path}: no metrics for benchmark {benchmark!r}; run the workflow first")
    config = as_config(config)
    plan = BenchmarkPlan.from_config(benchmark, config)
    entries = {label: resolve_entry(label, config.estimators[label]).entry_dict() for label in plan.estimators}
    artifacts = [metrics_path, root / "calibration" / f"{benchmark}.parquet", root / "figures" / benchmark]
    return log_benchmark(
        benchmark,
        pl.read_parquet(metrics_path),
        entries,
        grid_params(plan),
        artifacts,
        config_hash=(provenance or {}).get("config_fingerprint") or config_fingerprint(config),
        git_sha=(provenance or {}).get("git_sha") or git_sha(),
        results_dir=root,
    )
