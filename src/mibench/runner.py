"""Run one estimator over one part of a benchmark and write the estimates Parquet (one row per cell).

Nothing already computed is lost:

* a cell that raises, returns a non-finite value, or exceeds the benchmark's ``timeout_s`` becomes a row
  with ``status = error | timeout`` and the message; the rest of the part completes;
* an estimator that cannot even be built (bad hyperparameters) yields an error row for every cell, and the
  job still succeeds, so the other estimators and the report go on;
* progress is checkpointed to ``<output>.partial`` every ``checkpoint_s`` seconds; a killed job resumes
  from it and recomputes only the missing cells.

Per-cell time limits use ``SIGALRM`` (main thread, POSIX): they interrupt Python code and sleeps, but a
single long C call (one huge KD-tree query) is only noticed when it returns; the job's Snakemake
``runtime`` resource is the hard limit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mibench import __version__
from mibench.benchmark import BenchmarkPlan, Cell
from mibench.estimators import Estimate, Estimator, build_estimator
from mibench.io import atomic_write_table
from mibench.tasks import canonical_json

QUANTILE_TYPE = pa.list_(pa.struct([("tau", pa.float64()), ("value", pa.float64())]))
ESTIMATES_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("estimator", pa.string()),
        ("estimator_params", pa.string()),
        ("sample_id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("family", pa.string()),
        ("structure", pa.string()),
        ("transform", pa.string()),
        ("task_params", pa.string()),
        ("dim_x", pa.int32()),
        ("dim_y", pa.int32()),
        ("n", pa.int32()),
        ("seed", pa.int64()),
        ("mi_true", pa.float64()),
        ("mi_estimate", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("ci_level", pa.float64()),
        ("quantiles", QUANTILE_TYPE),
        ("seconds", pa.float64()),
        ("device", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("extras", pa.string()),
        ("mibench_version", pa.string()),
        ("git_sha", pa.string()),
    ]
)
STATUSES = ("ok", "error", "timeout")


class CellTimeout(Exception):
    """A cell exceeded its time budget."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CellTimeout` in the block after ``seconds`` (no-op off the main thread or if None)."""
    if not seconds or seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise CellTimeout(f"exceeded the time budget of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@functools.cache
def git_sha() -> str:
    """Commit of the code that produced a result (env ``MIBENCH_GIT_SHA`` wins; 'unknown' outside git)."""
    if os.environ.get("MIBENCH_GIT_SHA"):
        return os.environ["MIBENCH_GIT_SHA"]
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0:
            return out.stdout.strip()
    return "unknown"


def _device(estimator: Estimator | None) -> str:
    inner = getattr(estimator, "inner", estimator)
    return str(getattr(inner, "device", "cpu"))


def _row(bench: str, label: str, params_json: str, cell: Cell, device: str) -> dict[str, Any]:
    spec = cell.spec
    return {
        "benchmark": bench,
        "estimator": label,
        "estimator_params": params_json,
        "sample_id": cell.sample_id,
        "task": cell.task,
        "split": cell.split,
        "family": spec.family,
        "structure": spec.structure,
        "transform": spec.transform,
        "task_params": spec.params_json,
        "dim_x": spec.dim_x,
        "dim_y": spec.dim_y,
        "n": cell.n,
        "seed": cell.seed,
        "mi_true": cell.mi,
        "mi_estimate": None,
        "ci_low": None,
        "ci_high": None,
        "ci_level": None,
        "quantiles": None,
        "seconds": 0.0,
        "device": device,
        "status": "error",
        "error": None,
        "extras": "{}",
        "mibench_version": __version__,
        "git_sha": git_sha(),
    }


def _json_safe(obj: Any) -> Any:
    try:
        return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    except (TypeError, ValueError):
        return str(obj)


def fill_result(row: dict[str, Any], result: Estimate | BaseException, seconds: float) -> dict[str, Any]:
    """Turn an estimate (or the exception in its place) into the row's result columns."""
    row["seconds"] = float(seconds)
    if isinstance(result, BaseException):
        row["status"] = "timeout" if isinstance(result, CellTimeout) else "error"
        row["error"] = f"{type(result).__name__}: {result}"[:2000]
        return row
    value = float(result.value)
    if not math.isfinite(value):
        row["status"], row["error"] = "error", f"estimator returned a non-finite value ({value})"
        return row
    row.update(status="ok", error=None, mi_estimate=value)
    if result.interval is not None:
        row["ci_low"], row["ci_high"] = map(float, result.interval)
        row["ci_level"] = float(result.level) if result.level is not None else None
    if result.quantiles:
        row["quantiles"] = [{"tau": float(t), "value": float(v)} for t, v in sorted(result.quantiles.items())]
    row["extras"] = json.dumps(_json_safe(dict(result.extras)), sort_keys=True)
    return row


def estimates_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=ESTIMATES_SCHEMA)


def _is_batched(estimator: Estimator) -> bool:
    return type(estimator).estimate_many is not Estimator.estimate_many


def _load_partial(path: Path, params_json: str) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError):
        return {}  # a torn checkpoint is just recomputed
    return {r["sample_id"]: r for r in table.to_pylist() if r["estimator_params"] == params_json}


def run_part(
    plan: BenchmarkPlan,
    label: str,
    entry: Mapping[str, Any] | None,
    part: int,
    output: str | os.PathLike,
    *,
    meta_root: str | os.PathLike = "results/meta",
    checkpoint_s: float = 30.0,
    progress: bool = False,
) -> pa.Table:
    """Estimate every cell of ``part`` with estimator ``label`` (config ``entry``) and write ``output``."""
    output = Path(output)
    partial_path = output.with_name(output.name + ".partial")
    params_json = canonical_json(dict(entry or {}))
    done = _load_partial(partial_path, params_json)

    try:
        estimator: Estimator | None = build_estimator(label, entry)
        build_error: BaseException | None = None
    except Exception as exc:  # every cell gets this error row; other estimators go on
        estimator, build_error = None, exc
    device = _device(estimator)

    rows: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], Cell, np.ndarray, np.ndarray]] = []
    last_checkpoint = time.monotonic()

    def checkpoint(force: bool = False) -> None:
        nonlocal last_checkpoint
        if force or time.monotonic() - last_checkpoint >= checkpoint_s:
            atomic_write_table(estimates_table(rows), partial_path)
            last_checkpoint = time.monotonic()

    cells = plan.part_cells(part, meta_root)
    if progress:
        from rich.progress import track

        cells = track(cells, description=f"{plan.name}/{label} part {part}", transient=True)

    batch_size = int(getattr(estimator, "batch_cells", 256)) if estimator is not None else 1
    batched = estimator is not None and _is_batched(estimator)

    def flush() -> None:
        if not pending:
            return
        assert estimator is not None
        start = time.perf_counter()
        try:
            with time_limit(plan.timeout_s * len(pending)):
                results = estimator.estimate_many(
                    [(x, y) for _, _, x, y in pending], [c.seed for _, c, _, _ in pending]
                )
        except Exception as exc:  # the whole batch failed or timed out
            results = [exc] * len(pending)
        per_cell = (time.perf_counter() - start) / len(pending)
        for (row, _, _, _), result in zip(pending, results, strict=True):
            rows.append(fill_result(row, result, per_cell))
        pending.clear()
        checkpoint()

    for cell, x, y in cells:
        row = _row(plan.name, label, params_json, cell, device)
        if cell.sample_id in done:
            rows.append(done[cell.sample_id])
            continue
        if isinstance(x, BaseException):
            rows.append(fill_result(row, x, 0.0))
            continue
        if estimator is None:
            assert build_error is not None
            rows.append(fill_result(row, build_error, 0.0))
            continue
        if batched:
            pending.append((row, cell, x, y))
            if len(pending) >= batch_size:
                flush()
            continue
        start = time.perf_counter()
        try:
            with time_limit(plan.timeout_s):
                result: Estimate | BaseException = estimator(x, y, seed=cell.seed)
        except Exception as exc:
            result = exc
        rows.append(fill_result(row, result, time.perf_counter() - start))
        checkpoint()
    flush()

    table = estimates_table(rows)
    atomic_write_table(table, output)
    partial_path.unlink(missing_ok=True)
    return table
