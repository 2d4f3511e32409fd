"""The crash and timeout guards (:mod:`mibench.guards`) on their own: signals to this process, short alarms."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from mibench.guards import (
    MAX_DEATHS,
    CellGuard,
    CellTimeout,
    ProcessDied,
    Terminated,
    alarm_blocked,
    fatal_summary,
    on_sigterm,
    terminate_on_sigterm,
    time_limit,
    verdict,
)


@pytest.fixture
def default_sigterm():
    """Run the test with SIGTERM at its default handler, whatever the runner installed, and put it back."""
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, before)


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # the handler runs between two bytecodes of the main thread; give it that chance


def test_sigterm_raises_terminated_and_the_default_handler_comes_back(default_sigterm):
    with pytest.raises(Terminated, match="SIGTERM"), terminate_on_sigterm() as stop:
        assert stop.installed
        _sigterm_self()
        pytest.fail("SIGTERM did not interrupt the block")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_sets_the_flag_without_an_action(default_sigterm):
    with on_sigterm() as stop:
        assert not stop
        _sigterm_self()
        assert stop and stop.requested == "SIGTERM"  # the block goes on: the loop decides when to stop
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_calls_the_action_and_restores_a_custom_handler(default_sigterm):
    def custom(signum, frame):
        raise AssertionError("the outer handler ran inside the block")

    signal.signal(signal.SIGTERM, custom)
    seen: list[str] = []
    with on_sigterm(seen.append) as stop:
        _sigterm_self()
    assert seen == ["SIGTERM"] and stop.requested == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is custom


def test_only_default_leaves_another_handler_alone(default_sigterm):
    hits: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: hits.append(signum))
    with terminate_on_sigterm() as stop:
        assert not stop.installed
        _sigterm_self()  # the other handler gets it; nothing is raised
    assert hits == [signal.SIGTERM]


def test_off_the_main_thread_nothing_is_installed(default_sigterm):
    out: dict[str, bool] = {}

    def work() -> None:
        with on_sigterm() as stop:
            out["installed"] = stop.installed

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert out == {"installed": False}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_time_limit_fires_and_disarms():
    before = signal.getsignal(signal.SIGALRM)
    start = time.perf_counter()
    with pytest.raises(CellTimeout, match=r"exceeded the time budget of 0\.1 s per cell"), time_limit(0.1, "per cell"):
        time.sleep(5)
    assert time.perf_counter() - start < 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before


def test_time_limit_is_not_swallowed_by_except_exception():
    with pytest.raises(CellTimeout), time_limit(0.1):
        try:
            time.sleep(5)
        except Exception:  # an estimator's own handler must not eat the budget
            pass


def test_time_limit_rearm_moves_the_deadline():
    with time_limit(0.1) as rearm:
        rearm(2.0)
        time.sleep(0.3)  # past the first deadline, inside the moved one
    with pytest.raises(CellTimeout), time_limit(5) as rearm:
        rearm(0.05)
        time.sleep(2)


def test_no_time_limit_is_a_no_op():
    with time_limit(None) as rearm:
        rearm(0.01)  # does nothing
        time.sleep(0.05)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_alarm_blocked_defers_the_timeout_until_the_write_is_done():
    done = []
    with pytest.raises(CellTimeout), time_limit(0.05):
        with alarm_blocked():
            time.sleep(0.2)
            done.append("write")
        time.sleep(1)
    assert done == ["write"]


def test_fatal_summary_names_the_error_and_innermost_frame():
    text = 'Fatal Python error: Segmentation fault\n\nCurrent thread 0x1:\n  File "x.py", line 3 in estimate\n'
    assert fatal_summary(text) == 'Segmentation fault at File "x.py", line 3 in estimate'
    assert fatal_summary("") == ""


def test_verdict_per_cause():
    hang = verdict({"fatal": 'Timeout (0:01:00)! at File "k.py", line 9', "deaths": 1}, 60, 10)
    assert isinstance(hang, CellTimeout) and "hard limit of 60 s" in str(hang)
    crash = verdict({"fatal": "Segmentation fault", "deaths": 1}, 60, 10)
    assert isinstance(crash, ProcessDied) and "crashed the process" in str(crash)
    assert verdict({"fatal": "", "deaths": 1}, 60, 10) is None  # a silent death is retried once
    assert isinstance(verdict({"fatal": "", "deaths": MAX_DEATHS}, 60, 10), ProcessDied)


def test_cell_guard_marks_the_cells_in_flight(tmp_path):
    output = tmp_path / "part-0000.parquet"
    guard = CellGuard(output, hard_s=60)
    assert guard.previous == {}
    guard.open()
    try:
        guard.enter(["a", "b"], deaths=1, cells=2)
        assert json.loads(guard.inflight_path.read_text()) == {"cells": ["a", "b"], "deaths": 1}
        # a process dying now leaves the marker: the next attempt reads what it was doing
        assert CellGuard(output, hard_s=60).previous == {"cells": ["a", "b"], "deaths": 2, "fatal": ""}
        guard.leave()
        assert guard.inflight_path.read_text() == ""
    finally:
        guard.close()
    assert not guard.inflight_path.exists() and not guard.crash_path.exists()
