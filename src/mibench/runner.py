"""Run one estimator over one part of a benchmark and write the estimates Parquet (one row per cell).

Nothing already computed is lost:

* a cell that raises, returns a non-finite value, or exceeds the benchmark's ``timeout_s`` becomes a row
  with ``status = error | timeout`` and the message; the rest of the part completes. The budget is per cell
  also for batched estimators (many cells per ``estimate_many`` call): see :class:`_Batched`;
* an estimator that cannot even be built (bad hyperparameters) yields an error row for every cell, and the
  job still succeeds, so the other estimators and the report go on;
* progress is checkpointed to ``<output>.partial`` every ``checkpoint_s`` seconds (and on SIGTERM or any
  error that stops the part); a killed job resumes from it and recomputes only the missing cells;
* a cell that kills its process (segfault, ``os._exit``, out-of-memory kill, a hang past the hard limit)
  cannot block its part forever: ``<output>.inflight`` names the cell(s) being estimated, and faulthandler
  writes a fatal error's stack to ``<output>.crash``. The re-run records a cell that crashed or hung as an
  ``error``/``timeout`` row at once, and one that died silently (SIGKILL) after a second death on it;
  everything else of the part is estimated normally;
* every finished cell is logged as it finishes (one line in the job's log), with a progress line
  (:mod:`mibench.progress`) every few seconds.

The guards themselves (per-cell time limits, SIGTERM, the in-flight marker and crash stack) live in
:mod:`mibench.guards`. A long C call that the ``SIGALRM`` budget cannot interrupt is stopped by a faulthandler
watchdog once a cell has run ``hard_timeout_s`` (between 1x and 1.5x of it; default ``2 * timeout_s + 60``).
Locally nothing else would: Snakemake's ``runtime`` resource is only enforced by cluster executors (SLURM
``--time``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mibench import __version__
from mibench.benchmark import Cell
from mibench.config import EstimatorEntry
from mibench.estimators import Estimate, Estimator, build_estimator
from mibench.extras import MissingExtraError, explain
from mibench.guards import CellGuard, CellTimeout, alarm_blocked, terminate_on_sigterm, time_limit, verdict
from mibench.io import atomic_write_table
from mibench.layout import ESTIMATES_SCHEMA
from mibench.progress import progress_logger
from mibench.provenance import git_sha
from mibench.tasks import canonical_json

log = logging.getLogger("mibench.runner")


class PartPlan(Protocol):
    """What :func:`run_part` needs of a plan: a :class:`~mibench.benchmark.BenchmarkPlan`, or the
    :class:`~mibench.jobs.EstimateJob` the workflow builds from a job's params (which also has
    ``row_provenance``, the fingerprints recorded in every row). Stated here so the runner does not import
    the job layer above it."""

    name: str
    timeout_s: float
    checkpoint_s: float

    @property
    def hard_limit_s(self) -> float: ...

    def part_size(self, part: int) -> int: ...

    def part_cells(
        self, part: int, meta_root: str | os.PathLike = ...
    ) -> Iterator[tuple[Cell, np.ndarray, np.ndarray] | tuple[Cell, BaseException, None]]: ...


def _device(estimator: Estimator | None) -> str:
    inner = getattr(estimator, "inner", estimator)
    return str(getattr(inner, "device", "cpu"))


def _row(
    bench: str, label: str, params_json: str, cell: Cell, device: str, provenance: Mapping[str, str] | None = None
) -> dict[str, Any]:
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
        "job_fingerprint": "",
        "code_fingerprint": "",
        "config_fingerprint": "",
        **(provenance or {}),
    }


def _json_safe(obj: Any) -> Any:
    try:
        return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    except (TypeError, ValueError):
        return str(obj)


def fill_result(row: dict[str, Any], result: Estimate | BaseException, seconds: float) -> dict[str, Any]:
    """Turn an estimate (or the exception in its place) into the row's result columns.

    A missing extra (torch not installed) is the environment's fault, not the cell's: it is raised, not recorded,
    so the job fails naming the extra, keeps its finished cells in the checkpoint, and runs again once installed.
    """
    row["seconds"] = float(seconds)
    if isinstance(result, BaseException):
        missing = explain(result)
        if isinstance(missing, MissingExtraError):
            raise missing from result
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


def _load_partial(path: Path, params_json: str, job_fingerprint: str = "") -> dict[str, dict[str, Any]]:
    """Rows a killed attempt of *this* job checkpointed (another job's rows, e.g. before a code edit, are not
    reused)."""
    if not path.exists():
        return {}
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError):
        return {}  # a torn checkpoint is just recomputed
    if "job_fingerprint" not in table.column_names:
        return {}
    return {
        r["sample_id"]: r
        for r in table.to_pylist()
        if r["estimator_params"] == params_json and r["job_fingerprint"] == job_fingerprint
    }


#: Seconds between two progress lines of a part (every cell also gets its own line in the job's log);
#: ``$MIBENCH_PROGRESS_EVERY_S`` overrides it.
PROGRESS_EVERY_S = 10.0


def _progress_every() -> float:
    try:
        return max(0.0, float(os.environ.get("MIBENCH_PROGRESS_EVERY_S", PROGRESS_EVERY_S)))
    except ValueError:
        return PROGRESS_EVERY_S


_Item = tuple[dict[str, Any], Cell, np.ndarray, np.ndarray]  # (row, cell, x, y) waiting for a batched call


class _Rows:
    """The finished rows of a part: checkpointed every ``every`` s, one log line per cell, progress lines.

    Every new cell gets a line in the job's log; a progress line (:mod:`mibench.progress`, teed to the
    terminal by ``make run``) sums the part up at most every :data:`PROGRESS_EVERY_S` seconds and at the end.
    Both are written as they happen (the job's log is line-buffered).
    """

    def __init__(self, partial: Path, every: float, label: str, total: int | None, resumed: int) -> None:
        self.rows: list[dict[str, Any]] = []
        self.partial, self.every, self.label, self.total = partial, every, label, total
        self.resumed, self.new = resumed, 0
        self.counts: dict[str, int] = {}
        self.started = self.last_checkpoint = self.last_progress = time.monotonic()
        self.progress_every, self.reported = _progress_every(), -1

    def add(self, row: dict[str, Any], *, resumed: bool = False) -> None:
        self.rows.append(row)
        if not resumed:
            self.note(row)
            self.checkpoint()

    def note(self, row: dict[str, Any]) -> None:
        """Log one finished cell (called the moment it is done, also from inside a batched call)."""
        self.new += 1
        self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
        what = f"{row['mi_estimate']:.4g} nats" if row["status"] == "ok" else str(row["error"])[:300]
        done = self.resumed + self.new
        log.info(
            "%s: cell %d%s %s %s in %.2f s: %s",
            self.label,
            done,
            f"/{self.total}" if self.total else "",
            row["sample_id"][:12],
            row["status"],
            row["seconds"],
            what,
        )
        if time.monotonic() - self.last_progress >= self.progress_every:
            self.progress()

    def progress(self) -> None:
        done = self.resumed + self.new
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
        progress_logger("runner").info(
            "%s: %d%s cells done (%s%s) after %.0f s",
            self.label,
            done,
            f"/{self.total}" if self.total else "",
            counts or "none new",
            f"; {self.resumed} from the checkpoint" if self.resumed else "",
            time.monotonic() - self.started,
        )
        self.last_progress, self.reported = time.monotonic(), done

    def checkpoint(self, force: bool = False, extra: Sequence[dict[str, Any]] = ()) -> None:
        """Write the rows (and ``extra`` rows of a batch still running) to ``.partial`` if one is due."""
        if force or time.monotonic() - self.last_checkpoint >= self.every:
            with alarm_blocked():
                atomic_write_table(estimates_table([*self.rows, *extra]), self.partial)
            self.last_checkpoint = time.monotonic()

    def finish(self) -> None:
        if self.reported != self.resumed + self.new:
            self.progress()


class _Batched:
    """Per-cell time budgets for estimators that take many cells per call (``estimate_many``).

    The cells of a call run together (a stack of critics, one forward pass), so each cell is charged its
    *share* of the call's wall time: while u cells are unfinished, each is charged dt/u. A cell is over its
    budget when its share passes ``timeout_s``; as long as the estimator reports cells as they finish
    (``on_result``), the deadline moves out by the time the finished cells no longer use. A call that gives
    no early reports gets the pooled k x ``timeout_s`` of its k cells.

    Cells reported as done are kept whatever happens to the rest of the call. When the deadline passes,
    the cells still without a result are split in two halves, each retried as its own call, down to single
    cells: only a cell that runs past ``timeout_s`` alone becomes a timeout row, and its message states the
    per-cell budget. A cell's ``seconds`` is its share at the moment it was done.
    """

    def __init__(self, estimator: Estimator, timeout_s: float, guard: CellGuard, rows: _Rows) -> None:
        self.estimator, self.timeout_s, self.guard, self.rows = estimator, float(timeout_s), guard, rows
        try:
            self.reports = "on_result" in inspect.signature(estimator.estimate_many).parameters
        except (TypeError, ValueError):
            self.reports = False

    def run(self, items: Sequence[_Item], deaths: int = 0) -> None:
        queue, first = [list(items)], len(items)
        while queue:
            batch = queue.pop(0)
            left = self._attempt(batch, deaths)
            if not left:
                continue
            if len(batch) == 1:
                self.rows.add(fill_result(batch[0][0], self._timeout(first), self.timeout_s))
                continue
            log.info(
                "%s: a batch of %d cell(s) ran past its budget (%g s per cell); %d done, retrying %d in smaller "
                "batches",
                self.rows.label,
                len(batch),
                self.timeout_s,
                len(batch) - len(left),
                len(left),
            )
            half = max(1, len(left) // 2)
            queue[0:0] = [left[:half], left[half:]] if len(left) > 1 else [left]

    def _timeout(self, first: int) -> CellTimeout:
        budget = f"exceeded the time budget of {self.timeout_s:g} s per cell"
        if first == 1:
            return CellTimeout(budget)
        return CellTimeout(f"{budget} (estimated alone, after its batch of {first} cells ran out of time)")

    def _attempt(self, batch: list[_Item], deaths: int) -> list[_Item]:
        """One ``estimate_many`` call under the batch's budget; returns the cells left without a result."""
        k, got = len(batch), {}
        clock = {"last": time.perf_counter(), "share": 0.0}
        rearm: Callable[[float], None] = lambda s: None  # noqa: E731 - replaced once the alarm is armed

        def record(j: int, result: Estimate | BaseException) -> None:
            if not 0 <= j < k or j in got:
                return
            now = time.perf_counter()
            clock["share"] += (now - clock["last"]) / (k - len(got))  # every unfinished cell ran meanwhile
            clock["last"] = now
            got[j] = fill_result(dict(batch[j][0]), result, clock["share"])
            if len(got) < k:
                rearm((self.timeout_s - clock["share"]) * (k - len(got)))
            self.rows.note(got[j])
            self.rows.checkpoint(extra=list(got.values()))

        self.guard.enter([c.sample_id for _, c, _, _ in batch], deaths, cells=k)
        try:
            samples, seeds = [(x, y) for _, _, x, y in batch], [c.seed for _, c, _, _ in batch]
            with time_limit(self.timeout_s * k, "for the batch") as rearm:
                if self.reports:
                    out = self.estimator.estimate_many(samples, seeds, on_result=record)
                else:
                    out = self.estimator.estimate_many(samples, seeds)
            rearm = lambda s: None  # noqa: E731 - the alarm is disarmed
            if len(out) != k:
                raise RuntimeError(f"estimate_many returned {len(out)} result(s) for {k} cell(s)")
            for j, result in enumerate(out):
                record(j, result)
        except CellTimeout:
            pass  # the cells without a result are split and retried
        except Exception as exc:  # the whole call failed: every cell without a result records why
            rearm = lambda s: None  # noqa: E731
            for j in range(k):
                record(j, exc)
        finally:
            self.guard.leave()
            self.rows.rows.extend(got[j] for j in sorted(got))  # kept even if SIGTERM stops the part now
        self.rows.checkpoint()
        return [item for j, item in enumerate(batch) if j not in got]


def _build(label: str, entry: Mapping[str, Any] | None) -> tuple[Estimator | None, BaseException | None]:
    """(the estimator, None), or (None, why it cannot be built): then every cell gets that error row."""
    try:
        return build_estimator(label, entry), None
    except Exception as exc:  # other estimators go on
        return None, exc


class _Part:
    """One pass over a part's cells and the state every cell shares: the finished rows, the pending batch,
    the guard, the checkpointed rows of a killed attempt and the cell(s) it died on."""

    def __init__(
        self, plan: PartPlan, label: str, entry: Mapping[str, Any] | None, output: Path, part: int, every: float
    ):
        self.plan, self.label, self.output = plan, label, output
        self.partial_path = output.with_name(output.name + ".partial")
        self.params_json = canonical_json(dict(entry or {}))
        self.provenance: Mapping[str, str] = getattr(plan, "row_provenance", {})
        self.done = _load_partial(self.partial_path, self.params_json, self.provenance.get("job_fingerprint", ""))
        self.guard = CellGuard(output, plan.hard_limit_s)
        self.previous = self.guard.previous
        self.suspects = {sid for sid in self.previous.get("cells", ()) if sid not in self.done}
        self._log_resume()
        self.estimator, self.build_error = _build(label, entry)
        self.device = _device(self.estimator)
        total = plan.part_size(part)
        self.rows = _Rows(self.partial_path, every, f"{plan.name}/{label} part {part:04d}", total, len(self.done))
        self.pending: list[_Item] = []
        self.order: dict[str, int] = {}
        estimator = self.estimator
        self.batch_size = int(getattr(estimator, "batch_cells", 256)) if estimator is not None else 1
        batched = estimator is not None and _is_batched(estimator)
        self.batches = _Batched(estimator, plan.timeout_s, self.guard, self.rows) if batched else None

    def _log_resume(self) -> None:
        if not (self.done or self.suspects):
            return
        log.info(
            "%s: resuming from checkpoint with %d cell(s) done%s",
            self.output,
            len(self.done),
            f"; the previous attempt died on {len(self.suspects)} cell(s) "
            f"({self.previous.get('fatal') or 'no Python error'})"
            if self.suspects
            else "",
        )

    def flush(self, deaths: int = 0) -> None:
        if self.pending:
            assert self.batches is not None
            self.batches.run(self.pending, deaths)
            self.pending.clear()

    def cell(self, cell: Cell, x: np.ndarray | BaseException, y: np.ndarray | None) -> None:
        """Record one cell: from the checkpoint, as an error row, into the pending batch, or estimated now."""
        plan, rows = self.plan, self.rows
        self.order.setdefault(cell.sample_id, len(self.order))
        if cell.sample_id in self.done:
            rows.add(self.done[cell.sample_id], resumed=True)
            return
        row = _row(plan.name, self.label, self.params_json, cell, self.device, self.provenance)
        if isinstance(x, BaseException):
            rows.add(fill_result(row, x, 0.0))
            return
        if self.estimator is None:
            assert self.build_error is not None
            rows.add(fill_result(row, self.build_error, 0.0))
            return
        suspect = cell.sample_id in self.suspects
        alone = suspect and len(self.suspects) == 1
        cause = verdict(self.previous, plan.hard_limit_s, plan.timeout_s) if alone else None
        if cause is not None:
            rows.add(fill_result(row, cause, 0.0))
            rows.checkpoint(force=True)
            return
        deaths = self.previous["deaths"] if suspect else 0
        if self.batches is not None:
            if suspect:  # a batch that killed the process is retried one cell at a time
                self.flush()
            self.pending.append((row, cell, x, y))
            if suspect or len(self.pending) >= self.batch_size:
                self.flush(deaths)
            return
        self._single(row, cell, x, y, deaths)

    def _single(self, row: dict[str, Any], cell: Cell, x: np.ndarray, y: Any, deaths: int) -> None:
        """One cell through ``estimator(x, y)`` under its time budget."""
        assert self.estimator is not None
        self.guard.enter([cell.sample_id], deaths)
        start = time.perf_counter()
        try:
            with time_limit(self.plan.timeout_s, "per cell"):
                result: Estimate | BaseException = self.estimator(x, y, seed=cell.seed)
        except (Exception, CellTimeout) as exc:
            result = exc
        self.guard.leave()
        self.rows.add(fill_result(row, result, time.perf_counter() - start))

    def abort(self, exc: BaseException) -> None:
        """Not a cell's fault (corrupt shard, disk full, SIGTERM, Ctrl-C): keep what is done for the re-run."""
        self.guard.close(remove=not isinstance(exc, SystemExit))
        if self.rows.rows:
            with contextlib.suppress(Exception):
                self.rows.checkpoint(force=True)

    def finish(self) -> pa.Table:
        """Write the part (in its cell order), then remove the checkpoint and the guard's markers."""
        self.rows.finish()
        order = self.order
        rows = sorted(self.rows.rows, key=lambda r: order.get(r["sample_id"], len(order)))
        table = estimates_table(rows)
        atomic_write_table(table, self.output)
        self.guard.close()
        self.partial_path.unlink(missing_ok=True)
        return table


def run_part(
    plan: PartPlan,
    label: str,
    entry: Mapping[str, Any] | EstimatorEntry | None,
    part: int,
    output: str | os.PathLike,
    *,
    meta_root: str | os.PathLike = "results/meta",
    checkpoint_s: float | None = None,
    progress: bool = False,
) -> pa.Table:
    """Estimate every cell of ``part`` with estimator ``label`` (config ``entry``) and write ``output``.

    ``plan`` is the benchmark's plan, or the :class:`~mibench.jobs.EstimateJob` the workflow builds from a
    job's params (its fingerprints are recorded in every row). ``checkpoint_s`` defaults to the plan's.
    """
    if isinstance(entry, EstimatorEntry):
        entry = entry.as_written()
    every = plan.checkpoint_s if checkpoint_s is None else checkpoint_s
    run = _Part(plan, label, entry, Path(output), part, every)
    cells = plan.part_cells(part, meta_root)
    if progress:
        from rich.progress import track

        cells = track(cells, description=f"{plan.name}/{label} part {part}", transient=True)
    run.guard.open()
    try:
        with terminate_on_sigterm():
            for cell, x, y in cells:
                run.cell(cell, x, y)
            run.flush()
    except BaseException as exc:
        run.abort(exc)
        raise
    return run.finish()
