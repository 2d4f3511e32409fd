"""Crash and timeout guards: what keeps one cell (or a SIGTERM) from costing a job its finished work.

* :func:`time_limit` - a per-cell (or per-batch) time budget: :class:`CellTimeout` is raised in the block
  once it runs out. It uses ``SIGALRM`` (main thread, POSIX): it interrupts Python code and sleeps, but a long
  C call (a huge KD-tree query, a C loop holding the GIL) is only noticed when it returns. For those,
  :class:`CellGuard`'s faulthandler watchdog stops the process once a cell has run its hard limit.
  :func:`alarm_blocked` holds the alarm while a checkpoint is written;
* :func:`on_sigterm` - SIGTERM (Snakemake cancelling, SLURM's time limit) handled in the main thread: it sets
  a flag (the learned trainer's "finish the step, save, exit") or calls an action, e.g.
  :func:`raise_terminated`, which turns it into :class:`Terminated` so the runner checkpoints its part;
  :func:`terminate_on_sigterm` is that, installed only over the default handler;
* :class:`CellGuard` - ``<output>.inflight`` names the cell(s) being estimated and faulthandler writes a
  fatal error's stack to ``<output>.crash``, so a re-run can tell which cell killed the process;
  :func:`verdict` decides what the re-run records for it (:class:`ProcessDied`, :class:`CellTimeout`, or
  estimate it again).

Nothing here knows about benchmarks or estimators: :mod:`mibench.runner` combines these guards.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mibench.io import write_error


class CellTimeout(BaseException):
    """A cell exceeded its time budget.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that an estimator's own ``except Exception`` around
    its work cannot swallow the timeout and run on past the budget.
    """


class Terminated(BaseException):
    """The process got SIGTERM (Snakemake cancelling, SLURM's time limit): checkpoint, then stop."""


#: A cell whose process died silently (SIGKILL, ``os._exit``) this many times is recorded as an error row.
MAX_DEATHS = 2

#: alarm_blocked's state (main thread only): how deep the holds are, and the timeout that came meanwhile
_held: dict[str, Any] = {"depth": 0, "pending": None}


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str = "") -> Iterator[Callable[[float], None]]:
    """Raise :class:`CellTimeout` in the block after ``seconds`` (no-op off the main thread or if None).

    ``what`` ends the message: ``time_limit(2, "per cell")`` -> 'exceeded the time budget of 2 s per cell'.
    Yields ``rearm(s)``, which moves the deadline to ``s`` seconds from now (a batch whose cells finish
    one by one earns the time of the cells still running; see :class:`mibench.runner._Batched`).
    """
    if not seconds or seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield lambda s: None
        return

    def on_alarm(signum, frame):
        exc = CellTimeout(f"exceeded the time budget of {seconds:g} s{' ' + what if what else ''}")
        if _held["depth"]:  # inside alarm_blocked: raised when the write is done
            _held["pending"] = exc
            return
        raise exc

    def rearm(s: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, max(float(s), 1e-4))

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield rearm
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def alarm_blocked() -> Iterator[None]:
    """Hold the :func:`time_limit` alarm while a checkpoint is written: a budget running out meanwhile
    interrupts right after the write (nestable; off the main thread there is no alarm to hold).

    A flag, not ``pthread_sigmask``: the kernel hands a process-directed SIGALRM to any thread that does not
    block it (numpy's or Arrow's worker threads), and Python then runs the handler in the main thread anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
        pending = _held["pending"] if _held["depth"] == 0 else None
        if pending is not None:
            _held["pending"] = None
    if pending is not None:
        raise pending


class ProcessDied(RuntimeError):
    """A cell killed the process estimating it (recorded by the re-run)."""


class StopRequest:
    """What :func:`on_sigterm` yields: ``requested`` names the signal once one arrived (None before)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.installed = False  # whether the handler is in place (False off the main thread)

    def __bool__(self) -> bool:
        return self.requested is not None


def raise_terminated(signame: str) -> None:
    """An :func:`on_sigterm` action: raise :class:`Terminated` where the main thread is."""
    raise Terminated(signame)


@contextlib.contextmanager
def on_sigterm(
    action: Callable[[str], None] | None = None,
    *,
    signals: Sequence[signal.Signals] = (signal.SIGTERM,),
    only_default: bool = False,
) -> Iterator[StopRequest]:
    """Handle ``signals`` (SIGTERM) inside the block: record them on the yielded :class:`StopRequest`, then
    call ``action(signal name)`` if given (it runs in the main thread between two bytecodes and may raise).

    Without an action the block polls the flag: a training loop finishes its step, saves, and exits. With
    :func:`raise_terminated` the block is interrupted by :class:`Terminated`. ``only_default``: leave a
    handler someone else installed alone (then, as off the main thread, nothing is installed and
    ``installed`` is False). The previous handlers are restored when the block ends.
    """
    stop = StopRequest()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def handle(signum: int, frame: Any) -> None:
            stop.requested = signal.Signals(signum).name
            if action is not None:
                action(stop.requested)

        for sig in signals:
            old = signal.getsignal(sig)
            if only_default and old not in (signal.SIG_DFL, None):
                continue
            previous[sig] = old
            signal.signal(sig, handle)
    stop.installed = bool(previous)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def terminate_on_sigterm() -> contextlib.AbstractContextManager[StopRequest]:
    """Turn SIGTERM into :class:`Terminated` (main thread, over the default handler only): the runner's part
    checkpoints what it has and stops."""
    return on_sigterm(raise_terminated, only_default=True)


def fatal_summary(text: str) -> str:
    """faulthandler's report -> 'Segmentation fault at File "x.py", line 3 in estimate' (first line, innermost frame)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    head = lines[0].removeprefix("Fatal Python error: ").rstrip("!")
    frame = next((ln for ln in lines if ln.startswith("File ")), "")
    return f"{head} at {frame}" if frame else head


class CellGuard:
    """Records which cell(s) the process is estimating, so a re-run can tell which cell killed it.

    ``<output>.inflight`` holds ``{"cells": [...], "deaths": k}`` while cells run (emptied between cells);
    faulthandler writes fatal signals' stacks (segfault, abort) and the hard-limit watchdog's stack to
    ``<output>.crash`` and, for the watchdog, exits the process. Costs two small writes per cell; the
    watchdog is re-armed only every ~0.5 x hard limit.
    """

    def __init__(self, output: Path, hard_s: float) -> None:
        self.inflight_path = output.with_name(output.name + ".inflight")
        self.crash_path = output.with_name(output.name + ".crash")
        self.hard_s = float(hard_s)
        self.previous = self._read_previous()
        self._fd: int | None = None
        self._crash: int | None = None
        self._deadline = 0.0
        self._faulthandler_was_enabled = faulthandler.is_enabled()

    def _read_previous(self) -> dict[str, Any]:
        """What the previous attempt was doing when it died ({} if it ended normally or never ran)."""
        try:
            record = json.loads(self.inflight_path.read_text() or "{}")
        except (OSError, ValueError):
            record = {}
        if not record.get("cells"):
            return {}
        try:
            fatal = fatal_summary(self.crash_path.read_text(errors="replace"))
        except OSError:
            fatal = ""
        return {"cells": list(record["cells"]), "deaths": int(record.get("deaths", 0)) + 1, "fatal": fatal}

    def open(self) -> None:
        try:
            self.inflight_path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.inflight_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._crash = os.open(self.crash_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            self.close(remove=False)
            raise write_error(self.inflight_path, exc) from exc
        faulthandler.enable(file=self._crash, all_threads=True)

    def enter(self, ids: Sequence[str], deaths: int = 0, cells: int = 1) -> None:
        """Cells ``ids`` start (``deaths``: times the process already died on them); arm the watchdog."""
        if self._fd is None:
            return
        record = json.dumps({"cells": list(ids), "deaths": deaths}).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, record, 0)
        except OSError as exc:
            raise write_error(self.inflight_path, exc) from exc
        needed = self.hard_s * cells
        remaining = self._deadline - time.monotonic()
        if remaining < needed or remaining > 1.5 * needed:
            assert self._crash is not None
            faulthandler.dump_traceback_later(1.5 * needed, exit=True, file=self._crash)
            self._deadline = time.monotonic() + 1.5 * needed

    def leave(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)

    def close(self, remove: bool = True) -> None:
        """Disarm; ``remove`` the marker files (the part ended normally or by an error that is not a cell's)."""
        if self._crash is not None:
            faulthandler.cancel_dump_traceback_later()
            faulthandler.disable()
            if self._faulthandler_was_enabled:
                with contextlib.suppress(Exception):
                    faulthandler.enable(file=sys.__stderr__, all_threads=True)
        for fd in (self._fd, self._crash):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._crash = None
        if remove:
            self.inflight_path.unlink(missing_ok=True)
            self.crash_path.unlink(missing_ok=True)


def verdict(previous: Mapping[str, Any], hard_s: float, timeout_s: float) -> BaseException | None:
    """The error row's cause for the one cell the previous attempt died on, or None to estimate it again."""
    fatal = previous.get("fatal", "")
    if fatal.startswith("Timeout"):
        where = fatal.split(" at ", 1)[1] if " at " in fatal else "unknown"
        return CellTimeout(
            f"did not return within the hard limit of {hard_s:g} s (stuck where the {timeout_s:g} s budget "
            f"cannot interrupt it); the watchdog stopped the process at {where}; not retried"
        )
    if fatal:
        return ProcessDied(f"crashed the process: {fatal}; not retried")
    if previous["deaths"] >= MAX_DEATHS:
        return ProcessDied(
            f"the process died {previous['deaths']} times while estimating this cell, without a Python error "
            "(SIGKILL, out of memory, os._exit); not retried"
        )
    return None
