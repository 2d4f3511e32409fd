"""A benchmark's results logged to MLflow: one run per (benchmark, estimator, identity), the fair ranking as metrics.

It reads plans, estimates and metrics, so it sits with the evaluation, above :mod:`mibench.tracking` (the store
and training runs, which the learned trainer uses) - the two never form a loop.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from mibench.evaluate.metrics import ALL, GROUP_COLUMNS
from mibench.tracking.store import TrackingError, client, experiment_id, flatten, metric_key, tracking_uri

OVERALL_METRICS = ("count", "errors", "timeouts", "mse", "bias", "mae", "mre", "median_seconds")


def run_metrics(metrics: pl.DataFrame, estimator: str) -> dict[str, float]:
    """Overall metrics plus per-family, per-split and per-(split, n-bin) MSE for one estimator.

    Every per-group MSE comes with its cell count (``<key>.n_cells``); the overall ``count`` is the number
    of cells behind ``mse``, ``bias``, ``mae``, ``mre`` and coverage.
    """
    rows = metrics.filter(pl.col("estimator") == estimator)
    out: dict[str, float] = {}

    def only(**fixed: str) -> pl.DataFrame:
        sub = rows
        for col in GROUP_COLUMNS:
            want = fixed.get(col, ALL)
            sub = sub.filter(pl.col(col) != ALL) if want == "*" else sub.filter(pl.col(col) == want)
        return sub

    def grouped(key: str, row: Mapping[str, Any]) -> None:
        if row["mse"] is not None:
            out[key] = float(row["mse"])
            out[f"{key}.n_cells"] = float(row["count"])

    overall = only()
    if overall.height:
        row = overall.row(0, named=True)
        for key, value in row.items():
            if (key in OVERALL_METRICS or key.startswith(("coverage_", "width_"))) and value is not None:
                out[key] = float(value)
    for row in only(family="*").iter_rows(named=True):
        grouped(metric_key("mse", "family", row["family"]), row)
    for row in only(split="*", n_bin="*").iter_rows(named=True):
        if row["split"] != "-":
            grouped(metric_key("mse", row["split"], row["n_bin"]), row)
    for row in only(n_bin="*").iter_rows(named=True):
        grouped(metric_key("mse", "n", row["n_bin"]), row)
    return out


def ranking_metrics(ranked: pl.DataFrame, own_metrics: pl.DataFrame | None, estimator: str) -> dict[str, float]:
    """``rank``, ``scored``, ``cells``, ``common_cells`` and the ``own.*`` metrics of one estimator."""
    out: dict[str, float] = {}
    sub = ranked.filter(pl.col("estimator") == estimator)
    if sub.height:
        row = sub.row(0, named=True)
        for key in ("rank", "scored", "cells", "common_cells", "errors", "timeouts"):
            if row.get(key) is not None:
                out[key] = float(row[key])
    if own_metrics is not None:
        for key, value in run_metrics(own_metrics, estimator).items():
            if key in OVERALL_METRICS or key.startswith(("coverage_", "width_")):
                out[f"own.{key}"] = value
    return out


#: Columns of estimates rows that are not part of a run's identity. Columns that do not make a run: timing, and provenance (a new commit or an edit elsewhere in the config that
#: leaves these results identical is the same run; the run is tagged with the provenance of its last logging).
IDENTITY_EXCLUDED_COLUMNS = (
    "seconds",
    "git_sha",
    "mibench_version",
    "job_fingerprint",
    "code_fingerprint",
    "config_fingerprint",
)


def estimates_digest(estimates: pl.DataFrame) -> str:
    """sha256 of estimates rows in sample order, without :data:`IDENTITY_EXCLUDED_COLUMNS`."""
    table = estimates.drop([c for c in IDENTITY_EXCLUDED_COLUMNS if c in estimates.columns]).sort("sample_id")
    digest = hashlib.sha256()
    digest.update(json.dumps(table.columns).encode())
    for row in table.iter_rows():
        digest.update(json.dumps(row, default=str, allow_nan=True).encode())
    return digest.hexdigest()


def run_key(
    plan_identity: Any, resolved: Mapping[str, Any], common_cells: Sequence[str], estimates: pl.DataFrame
) -> str:
    """The identity of a run: the benchmark's plan, the resolved estimator, the compared cells, the results."""
    parts = {
        "plan": plan_identity,
        "estimator": resolved,
        "common_cells": hashlib.sha256("\n".join(sorted(common_cells)).encode()).hexdigest(),
        "estimates": estimates_digest(estimates),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def resolved_hyperparameters(label: str, entry: Any) -> dict[str, Any]:
    """Every hyperparameter the estimator of a config entry runs with, defaults included, read from its
    ``Params`` (plus the registered ``estimator`` name, ``module``, a resolved ``bootstrap`` and, for
    wrappers like ``consistent``, the resolved ``inner`` entry). An entry that no longer resolves (a module
    gone since the run) records what was asked for."""
    from mibench.config import ConfigError
    from mibench.estimators import resolve_entry

    try:
        return resolve_entry(label, entry).entry_dict()
    except (ConfigError, ValueError):
        raw = entry.as_written() if hasattr(entry, "as_written") else dict(entry or {})
        return json.loads(json.dumps({"estimator": raw.get("estimator", label), **raw}, default=str))


def _find_run(c, exp: str, estimator: str, key: str):
    """The finished run with this identity, or None (an unfinished one, left by a crash, is deleted)."""
    runs = c.search_runs(
        [exp], filter_string=f"tags.`mibench.estimator` = '{estimator}' and tags.`mibench.run_key` = '{key}'"
    )
    found = None
    for run in runs:
        if run.info.status == "FINISHED" and found is None:
            found = run
        elif run.info.status != "FINISHED":
            c.delete_run(run.info.run_id)
    return found


def _log_artifacts(c, rid: str, artifacts: Mapping[str, str | os.PathLike]) -> None:
    """``{folder: path}``: a file goes to ``folder/<name>``, a folder's files to ``folder/``."""
    for folder, path in artifacts.items():
        path = Path(path)
        if path.is_dir():
            c.log_artifacts(rid, str(path), artifact_path=folder)
        elif path.exists():
            c.log_artifact(rid, str(path), artifact_path=folder)


def _default_run_key(values: Mapping[str, float], params: Mapping[str, Any]) -> str:
    """A run's identity when the caller gives none: its params and metrics without timing (a rerun that only
    took a different time is the same run)."""
    return hashlib.sha256(
        json.dumps([{k: v for k, v in values.items() if "seconds" not in k}, params], sort_keys=True).encode()
    ).hexdigest()[:20]


def _run_tags(
    benchmark: str, estimator: str, key: str, git_sha: str, config_hash: str, extra: Mapping[str, str]
) -> dict[str, str]:
    """The tags that find a run again (benchmark, estimator, run key) and its provenance, plus ``extra``."""
    return {
        "mibench.benchmark": benchmark,
        "mibench.estimator": estimator,
        "mibench.run_key": key,
        "mibench.git_sha": git_sha,
        "mibench.config_hash": config_hash,
        "mlflow.runName": estimator,
        **extra,
    }


def log_benchmark(
    benchmark: str,
    metrics: pl.DataFrame,
    estimator_params: Mapping[str, Mapping[str, Any]],
    grid_params: Mapping[str, Any],
    artifacts: Mapping[str, str | os.PathLike],
    *,
    extra_metrics: Mapping[str, Mapping[str, float]] | None = None,
    run_keys: Mapping[str, str] | None = None,
    tags: Mapping[str, Mapping[str, str]] | None = None,
    config_hash: str = "",
    git_sha: str = "",
    results_dir: str | os.PathLike = "results",
    uri: str | None = None,
) -> dict[str, str]:
    """Log one run per estimator of a benchmark; returns estimator -> run id. Raises :class:`TrackingError`.

    ``metrics``: the metrics table whose lines are logged (per estimator); ``extra_metrics`` are added per
    estimator; ``run_keys`` are the runs' identities (default: a hash of params and metrics without timing);
    ``artifacts``: ``{artifact folder: file or folder}``.
    """
    from mlflow.entities import Metric, Param, RunTag

    uri = uri or tracking_uri(results_dir)
    c = client(uri)
    try:
        exp = experiment_id(c, f"mibench/{benchmark}", uri, results_dir)
        run_ids: dict[str, str] = {}
        for estimator in sorted(metrics["estimator"].unique().to_list()):
            values = {**run_metrics(metrics, estimator), **(extra_metrics or {}).get(estimator, {})}
            params = {**flatten(estimator_params.get(estimator, {}), "estimator"), **flatten(grid_params, "grid")}
            key = (run_keys or {}).get(estimator) or _default_run_key(values, params)
            existing = _find_run(c, exp, estimator, key)
            if existing is not None:
                run_ids[estimator] = existing.info.run_id
                continue
            run_tags = _run_tags(benchmark, estimator, key, git_sha, config_hash, (tags or {}).get(estimator, {}))
            rid = c.create_run(exp, run_name=estimator, tags=run_tags).info.run_id
            c.log_batch(
                rid,
                metrics=[Metric(k, v, 0, 0) for k, v in sorted(values.items())],
                params=[Param(k, v) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in run_tags.items()],
            )
            _log_artifacts(c, rid, artifacts)
            c.set_terminated(rid)  # FINISHED marks a complete run: an interrupted one is redone next time
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


def plan_identity(config: Any, benchmark: str) -> dict[str, Any]:
    """What fixes a benchmark's cells and settings: its config entry (defaults filled in) and the meta splits
    it reads (``checkpoint_s``, which only paces checkpoints, is left out)."""
    from mibench.config import as_config

    config = as_config(config)
    bench = config.benchmarks[benchmark]
    splits = {s: config.split_config(s).model_dump(mode="json", exclude_none=True) for s in bench.splits or ()}
    return {"benchmark": bench.model_dump(mode="json", exclude_none=True, exclude={"checkpoint_s"}), "splits": splits}


def tracked_results(config: Mapping[str, Any], benchmark: str, results_dir: str | os.PathLike = "results") -> dict:
    """Everything :func:`log_benchmark` logs for one benchmark on disk (also what :func:`log_from_disk` logs).

    Raises ``ValueError`` for a benchmark the config does not define and ``FileNotFoundError`` when its
    results are not on disk, each naming what is missing.
    """
    from mibench.benchmark import BenchmarkPlan
    from mibench.config import as_config
    from mibench.evaluate.metrics import common_cells, compute_metrics, rank_estimators
    from mibench.evaluate.parts import planned_parts, read_planned_estimates
    from mibench.layout import figures_dir, result_path

    config = as_config(config)
    _check_defined(config, benchmark)
    root = Path(results_dir)
    metrics_path = result_path("metrics", benchmark, root)
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path}: no metrics for benchmark {benchmark!r}; run the workflow first")
    plan = BenchmarkPlan.from_config(benchmark, config)
    parts = [p for p in planned_parts(plan, root) if p.exists()]  # only planned parts (never orphans)
    if not parts:
        raise FileNotFoundError(f"{root / 'estimates' / benchmark}: no estimates for benchmark {benchmark!r}")
    estimates = read_planned_estimates(plan, parts)
    common = common_cells(estimates, plan.estimators)
    ranked = rank_estimators(estimates, plan.estimators, plan.levels, common=common)
    fair = compute_metrics(
        estimates.filter(pl.col("sample_id").is_in(common.implode())), plan.levels, plan.n_bins, plan.dim_bins
    )
    own = pl.read_parquet(metrics_path)
    entries = {e: config.estimators[e] for e in plan.estimators}
    resolved = {e: resolved_hyperparameters(e, entry) for e, entry in entries.items()}
    identity = plan_identity(config, benchmark)
    ids = common.to_list()
    per = {e: estimates.filter(pl.col("estimator") == e) for e in plan.estimators}
    tags = {e: _estimator_tags(ranked, e, per[e]) for e in plan.estimators}
    return {
        "metrics": fair.filter(pl.col("estimator").is_in(list(plan.estimators))),
        "estimator_params": resolved,
        "grid_params": grid_params(plan),
        "artifacts": {
            "metrics": metrics_path,
            "calibration": result_path("calibration", benchmark, root),
            "figures": figures_dir(benchmark, root),
        },
        "extra_metrics": {e: ranking_metrics(ranked, own, e) for e in plan.estimators},
        "run_keys": {e: run_key(identity, resolved[e], ids, per[e]) for e in plan.estimators},
        "tags": tags,
    }


def _check_defined(config: Any, benchmark: str) -> None:
    """A benchmark the config does not define is a ValueError naming those it does (a typo, not missing files)."""
    defined = sorted(config.benchmarks)
    if benchmark not in defined:
        raise ValueError(
            f"benchmark {benchmark!r} is not defined under `benchmarks:` of the config "
            f"(defined: {', '.join(defined) or 'none'})"
        )


def _estimator_tags(ranked: pl.DataFrame, estimator: str, rows: pl.DataFrame) -> dict[str, str]:
    """An estimator's run tags from its ranking group and its estimates rows (devices, code and version), so a
    run shows where and by which code its numbers were made."""
    group = ranked.filter(pl.col("estimator") == estimator)["group"]
    devices = sorted({d for d in rows["device"].to_list() if d})
    return {
        "mibench.group": group[0] if group.len() else "",
        "mibench.device": ",".join(devices),
        # provenance of the rows (rows of one estimator share them unless parts were computed apart)
        **{
            f"mibench.{col}": ",".join(sorted({v for v in rows[col].to_list() if v}))
            for col in ("code_fingerprint", "mibench_version")
            if col in rows.columns
        },
    }


def log_from_disk(
    config: Any,
    benchmark: str,
    results_dir: str | os.PathLike = "results",
    provenance: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Log a benchmark whose results are already on disk (``mibench log``, the track rule).

    ``provenance`` (the workflow's: config fingerprint of the whole config, git commit) is tagged on the runs;
    without it the given config and the current checkout are recorded.
    """
    from mibench.config import as_config, config_fingerprint
    from mibench.provenance import git_sha

    config = as_config(config)
    logged = tracked_results(config, benchmark, results_dir)
    return log_benchmark(
        benchmark,
        logged.pop("metrics"),
        logged.pop("estimator_params"),
        logged.pop("grid_params"),
        logged.pop("artifacts"),
        **logged,
        config_hash=(provenance or {}).get("config_fingerprint") or config_fingerprint(config),
        git_sha=(provenance or {}).get("git_sha") or git_sha(),
        results_dir=results_dir,
    )
