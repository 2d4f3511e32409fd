"""Faults inside one cell: bad inputs, raising, hanging and crashing estimators, SIGTERM; every fault ends with all
completed results on disk and a re-run finishing only what is missing (recorded with the ``ledger`` fixture).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import mibench.benchmark as benchmark_module
import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.meta import generate_split
from mibench.meta.shards import sample_id, write_shard
from mibench.runner import run_part
from tests.support.configs import bench_config
from tests.support.faults import (
    child,
    faulty_entry,
    grid_config,
    markers,
    plan_of,
    reference,
    same_results,
)

# ---------------------------------------------------------------------------------- faults inside one cell


def shard_samples(path: Path) -> tuple[list[dict], list[np.ndarray], list[np.ndarray]]:
    """A shard's rows as (meta dicts, x arrays, y arrays), to be damaged and written back."""
    table = pq.read_table(path)
    meta = table.drop_columns(["x", "y"]).to_pylist()
    pairs = zip(table["x"].to_pylist(), table["y"].to_pylist(), meta, strict=True)
    xs = [np.reshape(x, (r["n"], r["dim_x"])).astype(np.float32) for x, _, r in pairs]
    pairs = zip(table["x"].to_pylist(), table["y"].to_pylist(), meta, strict=True)
    ys = [np.reshape(y, (r["n"], r["dim_y"])).astype(np.float32) for _, y, r in pairs]
    return meta, xs, ys


def reid(row: dict) -> str:
    """The sample id a shard row's own columns hash to (what a consistent edit of a row must also change)."""
    return sample_id(*(row[c] for c in ("family", "structure", "transform", "params", "dim_x", "dim_y", "n", "seed")))


BAD_INPUTS = {
    0: ("NaN in X", "X has 1 non-finite value(s), first at row 3, column 0 (nan)"),
    1: ("+inf in Y", "Y has 1 non-finite value(s), first at row 0, column 0 (inf)"),
    2: ("-inf in X", "X has 1 non-finite value(s), first at row 1, column 0 (-inf)"),
    3: ("constant X", "column(s) [0] of X are constant"),
    4: ("too short (n=1)", "needs at least 2 samples, got n=1"),
}


def test_bad_inputs_become_error_rows_and_the_rest_of_the_shard_completes(tmp_path, monkeypatch, ledger) -> None:
    # The rewritten shard is deliberately not the planned one (an n=1 row, rows of shard 0 appended): the check that
    # a shard holds its planned samples (tested in test_faults_integrity.py) is switched off to reach the runner.
    monkeypatch.setattr(benchmark_module, "check_shard_is_planned", lambda *args: None)
    config = bench_config(mist={"splits": ["test_imd"], "estimators": ["corr"]})
    generate_split(config, "test_imd", tmp_path / "meta", progress=False)
    shard = tmp_path / "meta" / "test_imd" / "shard-0001.parquet"
    meta, xs, ys = shard_samples(shard)
    xs[0][3, 0] = np.nan
    ys[1][0, 0] = np.inf
    xs[2][1, 0] = -np.inf
    xs[3][:, 0] = 2.0
    meta[4]["n"], xs[4], ys[4] = 1, xs[4][:1], ys[4][:1]
    meta[4]["sample_id"] = reid(meta[4])  # a consistent row (a shard refuses rows whose id does not match)
    # the shard has 5 samples: all are bad; add the good ones of shard 0 behind them
    gmeta, gxs, gys = shard_samples(tmp_path / "meta" / "test_imd" / "shard-0000.parquet")
    write_shard(shard, meta + gmeta, xs + gxs, ys + gys)

    plan = plan_of(config, "mist")
    out = tmp_path / "est" / "part-0001.parquet"
    rows = run_part(plan, "corr", config["estimators"]["corr"], 1, out, meta_root=tmp_path / "meta").to_pylist()
    assert len(rows) == 10
    for i, (_, message) in BAD_INPUTS.items():
        assert rows[i]["status"] == "error" and message in rows[i]["error"], rows[i]["error"]
        assert rows[i]["mi_estimate"] is None and rows[i]["mi_true"] == meta[i]["mi"]
    assert all(r["status"] == "ok" for r in rows[5:])
    again = run_part(plan, "corr", config["estimators"]["corr"], 1, out, meta_root=tmp_path / "meta")
    identical = same_results(pq.read_table(out), again)
    assert identical
    for what, message in BAD_INPUTS.values():
        ledger(
            fault=f"input: {what}",
            outcome="clear error",
            group="faults while running",
            injected="sample rewritten in a meta shard",
            expected="error row naming the problem; other cells ok",
            observed=message,
            results_lost=0,
            rerun_work="none (error rows are results)",
            identical=identical,
        )


@pytest.mark.parametrize(
    ("fault", "status", "message"),
    [
        ("raise", "error", "RuntimeError: deliberate failure on seed"),
        ("inf", "error", "estimator returned a non-finite value (inf)"),
        ("python_hang", "timeout", "CellTimeout: exceeded the time budget of 0.2 s"),
        # before the fix CellTimeout was an Exception: this cell ran its full 10 s and came back "ok"
        ("swallow", "timeout", "CellTimeout: exceeded the time budget of 0.2 s"),
    ],
)
def test_a_failing_or_hanging_cell_becomes_one_row(monkeypatch, tmp_path, ledger, fault, status, message) -> None:
    config = grid_config()
    plan = plan_of(config)
    seeds = [c.seed for c, _, _ in plan.part_cells(0)]
    entry = faulty_entry(fault, [seeds[2]])
    start = time.monotonic()
    table = run_part(plan, "f", entry, 0, tmp_path / "part-0000.parquet")
    elapsed = time.monotonic() - start
    rows = table.to_pylist()
    assert rows[2]["status"] == status and message in rows[2]["error"], rows[2]
    assert all(r["status"] == "ok" for i, r in enumerate(rows) if i != 2)
    assert elapsed < 5, f"the budget of 0.2 s did not stop the {fault} cell ({elapsed:.1f} s)"
    ref = reference(monkeypatch, plan, "f", entry, 0, tmp_path)
    keep = [0, 1, 3, 4]
    identical = same_results(table.take(keep), ref.take(keep))
    assert identical
    ledger(
        fault={"raise": "estimator raises", "inf": "estimator returns inf"}.get(fault, f"hang: {fault}"),
        outcome="clear error",
        group="faults while running",
        injected="test estimator `faulty` on one cell",
        expected=f"`{status}` row for that cell; other cells ok",
        observed=f"{message} after {elapsed:.1f} s for the part",
        results_lost=0,
        rerun_work="none (the row is a result)",
        identical=identical,
    )


@pytest.mark.parametrize(
    ("fault", "returncode", "status", "message"),
    [
        ("c_hang", 1, "timeout", "did not return within the hard limit of 1 s"),
        ("segfault", -signal.SIGSEGV, "error", "ProcessDied: crashed the process: Segmentation fault at File"),
        ("exit", 3, "error", "ProcessDied: the process died 2 times while estimating this cell"),
    ],
)
def test_a_cell_that_kills_its_process_cannot_block_the_part(
    monkeypatch, tmp_path, venv_env, ledger, fault, returncode, status, message
) -> None:
    config = grid_config(hard_timeout_s=1.0, checkpoint_s=0)
    plan = plan_of(config)
    seeds = [c.seed for c, _, _ in plan.part_cells(0)]
    config["estimators"]["f"] = entry = faulty_entry(fault, [seeds[2]])
    out = tmp_path / "est" / "part-0000.parquet"

    start = time.monotonic()
    first = child(venv_env, config, "f", 0, out)
    died_after = time.monotonic() - start
    assert first.returncode == returncode, first.stdout + first.stderr
    partial = pq.read_table(out.with_name(out.name + ".partial"))
    assert partial.num_rows == 2 and not out.exists()
    crash = out.with_name(out.name + ".crash").read_text()
    assert (
        ("Timeout" in crash)
        if fault == "c_hang"
        else ("Segmentation fault" in crash)
        if fault == "segfault"
        else not crash
    )
    attempts = 1
    if fault == "exit":  # a silent death may be an outside kill: the cell is tried once more
        assert child(venv_env, config, "f", 0, out).returncode == 3
        attempts += 1

    table = run_part(plan, "f", entry, 0, out)  # the re-run (in-process: the bad cell is not run again)
    rows = table.to_pylist()
    assert rows[:2] == partial.to_pylist(), "finished cells must be kept, not recomputed (seconds included)"
    assert rows[2]["status"] == status and message in rows[2]["error"], rows[2]["error"]
    assert [r["status"] for r in rows[3:]] == ["ok", "ok"]
    assert markers(out) == [], "checkpoint and markers are removed once the part is complete"
    ref = reference(monkeypatch, plan, "f", entry, 0, tmp_path)
    identical = same_results(table.take([0, 1, 3, 4]), ref.take([0, 1, 3, 4]))
    assert identical
    ledger(
        fault={"c_hang": "hang in C (SIGALRM cannot interrupt)", "segfault": "segfault", "exit": "os._exit"}[fault],
        outcome="clear error",
        group="faults while running",
        injected="test estimator `faulty` on cell 3 of 5, in a child process",
        expected="process dies; re-run keeps done cells, records the cell, finishes the part",
        observed=f"exit {first.returncode} after {died_after:.1f} s; re-run row: {message}",
        results_lost=0,
        rerun_work=f"{attempts} re-run(s); 2 of 5 cells computed again (none of the 2 checkpointed)",
        identical=identical,
    )


def test_sigterm_checkpoints_before_stopping(monkeypatch, tmp_path, venv_env, ledger) -> None:
    """SLURM's time limit and Snakemake's cancel send SIGTERM: done cells are saved although no checkpoint was due."""
    config = grid_config(timeout_s=5, checkpoint_s=3600)
    config["estimators"]["slow"]["seconds"] = 0.3
    plan = plan_of(config)
    cells = [c for c, _, _ in plan.part_cells(0)]
    out = tmp_path / "est" / "part-0000.parquet"
    inflight = out.with_name(out.name + ".inflight")
    proc = child(venv_env, config, "slow", 0, out, wait=False)
    try:
        deadline = time.monotonic() + 60
        while cells[3].sample_id not in (inflight.read_text() if inflight.exists() else ""):
            assert time.monotonic() < deadline and proc.poll() is None, "the child never reached cell 4"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    finally:
        proc.kill()
    assert proc.returncode == 1 and "Terminated: SIGTERM" in output, output
    partial = pq.read_table(out.with_name(out.name + ".partial")).to_pylist()
    assert [r["sample_id"] for r in partial] == [c.sample_id for c in cells[:3]]
    assert not inflight.exists(), "a SIGTERM is not the cell's fault: nothing is blamed on the re-run"
    table = run_part(plan, "slow", config["estimators"]["slow"], 0, out)
    assert table.to_pylist()[:3] == partial
    ref = reference(monkeypatch, plan, "slow", config["estimators"]["slow"], 0, tmp_path)
    identical = same_results(table, ref)
    assert identical
    ledger(
        fault="SIGTERM mid-part (cancel, SLURM time limit)",
        outcome="right answer",
        group="faults while running",
        injected="SIGTERM to a child running a part, no checkpoint due",
        expected="done cells saved to .partial, re-run computes the rest",
        observed=f"exit 1 (Terminated); {len(partial)} cells in .partial",
        results_lost=0,
        rerun_work="2 of 5 cells",
        identical=identical,
    )
