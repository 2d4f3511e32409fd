"""MLflow logging, all in one place. MLflow is the run ledger; Parquet stays the source of truth.

* Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<results>/mlflow.db``; artifacts of the
  local store live in ``<results>/mlartifacts``.
* One experiment per benchmark (``mibench/<benchmark>``), one run per (benchmark, estimator, identity):
  the identity (tag ``mibench.run_key``) hashes the benchmark's plan, the estimator's resolved
  hyperparameters, the cells the ranking compares on, and the estimator's estimates minus ``seconds``.
  Logging again, or re-estimating identical results, finds the run instead of adding one; changed results
  or settings add a run.
* Params: every resolved hyperparameter (defaults too, :func:`resolved_hyperparameters`) and the grid.
* Metrics: the fair comparison of :func:`mibench.evaluate.rank_estimators` (``rank`` within its group,
  ``scored`` of ``cells``, ``common_cells``) and, on the common cells, ``mse``, ``bias``, ``mae``, ``mre``,
  coverage and per-family/per-bin MSE, each per-group value with its cell count next to it
  (``mse.family.student`` and ``mse.family.student.n_cells``); ``own.*`` are over the estimator's own
  scored cells (not comparable between estimators with failures). Tag ``mibench.group`` says
  ``complete`` / ``with failures`` / ``no estimates``.
* Artifacts: ``metrics/<benchmark>.parquet``, ``calibration/<benchmark>.parquet``, ``figures/*.png``.
* Training runs (:class:`RunLogger`): experiment ``mibench/train``, one run per training (a resumed training
  continues its run), the model spec as params, per-step losses buffered and sent with ``log_batch`` every
  few seconds (one call per value costs ~65 ms), validation metrics, the checkpoint as artifacts.
  Tracking is a ledger, never a dependency: every failure warns and stops tracking, the checkpoint is
  always written first.
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
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from mibench.evaluate.metrics import ALL, GROUP_COLUMNS

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

#: the MLflow experiment of training runs (:class:`RunLogger`)
TRAIN_EXPERIMENT = "mibench/train"
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
    from mibench.extras import need

    need("tracking", "logging to MLflow")  # not "unreachable": MLflow is not installed here
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


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested params -> {'estimator.bootstrap.resamples': '100'} (MLflow params are flat strings).

    Keys are joined with dots under ``prefix``; lists and tuples become JSON, other values ``str``, at most
    6000 characters (MLflow's limit for a param value).
    """
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return {prefix: text[:6000]}


class RunLogger:
    """One MLflow run per training (resumed runs continue the same MLflow run); failures warn, never raise."""

    def __init__(self, enabled: bool = True, flush_seconds: float = 5.0) -> None:
        self.enabled = enabled
        self.flush_seconds = flush_seconds
        self.client = None
        self.run_id: str | None = None
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()

    def _fail(self, what: str, exc: BaseException) -> None:
        warnings.warn(f"MLflow tracking disabled ({what} failed: {exc}); training continues", stacklevel=3)
        self.enabled = False

    def start(self, run_name: str, params: Mapping[str, Any], run_id: str | None = None, tags=None) -> str | None:
        """Open (or reopen) the run and log params; returns the run id to store for resuming."""
        if not self.enabled:
            return None
        try:
            uri = tracking_uri()
            c = client(uri)
            exp = experiment_id(c, TRAIN_EXPERIMENT, uri)
            if run_id is not None:
                try:
                    c.get_run(run_id)
                    c.update_run(run_id, status="RUNNING")
                except Exception:
                    run_id = None
            if run_id is None:
                run = c.create_run(exp, run_name=run_name, tags=dict(tags or {}))
                run_id = run.info.run_id
                from mlflow.entities import Param

                items = [Param(k, v) for k, v in flatten(params).items()]
                for i in range(0, len(items), 100):
                    c.log_batch(run_id, params=items[i : i + 100])
            self.client, self.run_id = c, run_id
            return run_id
        except Exception as exc:
            self._fail("starting the run", exc)
            return None

    def log(self, metrics: Mapping[str, float], step: int, force: bool = False) -> None:
        if not self.enabled or self.client is None:
            return
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now_ms, int(step)) for k, v in metrics.items())
        if force or time.monotonic() - self._last_flush > self.flush_seconds or len(self._buffer) > 900:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or self.client is None or not self._buffer:
            return
        try:
            for i in range(0, len(self._buffer), 1000):
                self.client.log_batch(self.run_id, metrics=self._buffer[i : i + 1000])
        except Exception as exc:
            self._fail("logging metrics", exc)
        self._buffer = []
        self._last_flush = time.monotonic()

    def artifacts(self, paths: list[str | os.PathLike], folder: str = "model") -> None:
        if not self.enabled or self.client is None:
            return
        try:
            for path in paths:
                self.client.log_artifact(self.run_id, str(path), artifact_path=folder)
        except Exception as exc:
            self._fail("logging artifacts", exc)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        if not self.enabled or self.client is None:
            return
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as exc:
            self._fail("ending the run", exc)


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
            key = (run_keys or {}).get(estimator) or hashlib.sha256(
                json.dumps([{k: v for k, v in values.items() if "seconds" not in k}, params], sort_keys=True).encode()
            ).hexdigest()[:20]
            existing = _find_run(c, exp, estimator, key)
            if existing is not None:
                run_ids[estimator] = existing.info.run_id
                continue
            run_tags = {
                "mibench.benchmark": benchmark,
                "mibench.estimator": estimator,
                "mibench.run_key": key,
                "mibench.git_sha": git_sha,
                "mibench.config_hash": config_hash,
                "mlflow.runName": estimator,
                **(tags or {}).get(estimator, {}),
            }
            run = c.create_run(exp, run_name=estimator, tags=run_tags)
            rid = run.info.run_id
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

    config = as_config(config)
    defined = sorted(config.benchmarks)
    if benchmark not in defined:
        raise ValueError(
            f"benchmark {benchmark!r} is not defined under `benchmarks:` of the config "
            f"(defined: {', '.join(defined) or 'none'})"
        )
    root = Path(results_dir)
    metrics_path = root / "metrics" / f"{benchmark}.parquet"
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path}: no metrics for benchmark {benchmark!r}; run the workflow first")
    config = as_config(config)
    plan = BenchmarkPlan.from_config(benchmark, config)
    parts = [p for p in planned_parts(plan, root) if p.exists()]  # only planned parts (never orphans)
    if not parts:
        raise FileNotFoundError(f"{root / 'estimates' / benchmark}: no estimates for benchmark {benchmark!r}")
    estimates = read_planned_estimates(plan, parts)
    ranked = rank_estimators(estimates, plan.estimators, plan.levels)
    common = common_cells(estimates, plan.estimators)
    fair = compute_metrics(
        estimates.filter(pl.col("sample_id").is_in(common.implode())), plan.levels, plan.n_bins, plan.dim_bins
    )
    own = pl.read_parquet(metrics_path)
    entries = {e: config.estimators[e] for e in plan.estimators}
    resolved = {e: resolved_hyperparameters(e, entry) for e, entry in entries.items()}
    identity = plan_identity(config, benchmark)
    ids = common.to_list()
    per = {e: estimates.filter(pl.col("estimator") == e) for e in plan.estimators}
    tags = {}
    for e in plan.estimators:
        group = ranked.filter(pl.col("estimator") == e)["group"]
        devices = sorted({d for d in per[e]["device"].to_list() if d})
        tags[e] = {
            "mibench.group": group[0] if group.len() else "",
            "mibench.device": ",".join(devices),
            # provenance of the rows (rows of one estimator share them unless parts were computed apart)
            **{
                f"mibench.{col}": ",".join(sorted({v for v in per[e][col].to_list() if v}))
                for col in ("code_fingerprint", "mibench_version")
                if col in per[e].columns
            },
        }
    return {
        "metrics": fair.filter(pl.col("estimator").is_in(list(plan.estimators))),
        "estimator_params": resolved,
        "grid_params": grid_params(plan),
        "artifacts": {
            "metrics": metrics_path,
            "calibration": root / "calibration" / f"{benchmark}.parquet",
            "figures": root / "figures" / benchmark,
        },
        "extra_metrics": {e: ranking_metrics(ranked, own, e) for e in plan.estimators},
        "run_keys": {e: run_key(identity, resolved[e], ids, per[e]) for e in plan.estimators},
        "tags": tags,
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
