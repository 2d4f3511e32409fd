"""MLflow logging for training runs. Tracking is a ledger, never a dependency: every failure warns and stops
tracking, the checkpoint is always written first.

The store, its first-use lock and the artifact location come from :mod:`mibench.tracking` (the one place
for MLflow): ``sqlite:///results/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` is set, created under a file lock
because several processes creating a new sqlite store at once crash. Training runs go to the experiment
``mibench/train``; per-step losses are buffered and sent with ``log_batch`` every few seconds (one call per
value costs ~65 ms).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

EXPERIMENT = "mibench/train"


class RunLogger:
    """One MLflow run per training (resumed runs continue the same MLflow run)."""

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
            from mibench import tracking

            uri = tracking.tracking_uri()
            client = tracking.client(uri)
            experiment_id = tracking.experiment_id(client, EXPERIMENT, uri)
            if run_id is not None:
                try:
                    client.get_run(run_id)
                    client.update_run(run_id, status="RUNNING")
                except Exception:
                    run_id = None
            if run_id is None:
                run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
                run_id = run.info.run_id
                from mlflow.entities import Param

                items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
                for i in range(0, len(items), 100):
                    client.log_batch(run_id, params=items[i : i + 100])
            self.client, self.run_id = client, run_id
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


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b": value} for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
