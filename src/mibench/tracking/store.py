"""The MLflow store: tracking URI, client with capped retries, experiments, params flattened for MLflow."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


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
