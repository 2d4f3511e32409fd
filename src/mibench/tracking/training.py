"""Training runs in MLflow: one run per training, per-step losses buffered; failures warn, never raise."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

from mibench.tracking.store import client, experiment_id, flatten, tracking_uri

#: the MLflow experiment of training runs (:class:`RunLogger`)
TRAIN_EXPERIMENT = "mibench/train"


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
