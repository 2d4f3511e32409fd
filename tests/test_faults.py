"""Fault injection: every fault ends with all completed results on disk and a re-run finishing only what is missing.

Library-level faults (fast) call :func:`mibench.runner.run_part` directly, in a child process where the fault kills
the process; pipeline-level faults (``slow``) run the real Snakemake workflow and kill it, corrupt its inputs, stop
its MLflow server or make its results folder read-only.

"Identical" below means: meta shards byte for byte; estimates parts in every column except ``seconds`` (the only
column that depends on the machine's speed), compared with a fault-free run of the same configuration.

Each case appends one JSON line per fault to ``$MIBENCH_RELIABILITY_LOG`` through the ``ledger`` fixture
(tests/conftest.py); ``benchmarks/reliability_summary.py`` runs every test that takes that fixture and renders the
table in ``docs/reliability.md``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mibench.benchmark as benchmark_module
import tests.estimators_for_tests  # noqa: F401 - registers the test estimators
from mibench.benchmark import BenchmarkPlan
from mibench.config import parse_config
from mibench.io import ResultsWriteError
from mibench.meta import generate_split
from mibench.meta.shards import sample_id, write_shard
from mibench.runner import run_part

from .conftest import GRID, REPO, TEST_MODULE, TINY_META, bench_config, write_config
from .test_workflow_generate import snakemake

# ---------------------------------------------------------------------------------------------------- helpers


#: Columns that describe where a run came from, not what it computed: the commit (it moves while a suite
#: runs against a live checkout) and the fingerprint of the whole config (a fault-free reference may differ in
#: unrelated keys, e.g. tracking). The job and code fingerprints are compared: they identify the computation.
CONTEXT_COLUMNS = ("seconds", "git_sha", "config_fingerprint")


def without_seconds(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in CONTEXT_COLUMNS if c in table.column_names])


def same_results(a: pa.Table, b: pa.Table) -> bool:
    """Equal in every column but timing and run context (the definition of 'identical' for estimates)."""
    return without_seconds(a).equals(without_seconds(b))


def faulty_entry(fault: str, seeds: list[int]) -> dict:
    return {"estimator": "faulty", "module": TEST_MODULE, "fault": fault, "seeds": seeds}


def grid_config(**bench) -> dict:
    """The GRID benchmark (3 parts of 5 cells) with short budgets: 0.2 s soft, 1 s hard, checkpoint every cell."""
    return bench_config(grid={**GRID, "estimators": ["corr"], "timeout_s": 0.2, **bench})


def plan_of(config: dict, name: str = "grid") -> BenchmarkPlan:
    return BenchmarkPlan.from_config(name, config)


def reference(monkeypatch, plan: BenchmarkPlan, label: str, entry: dict, part: int, where: Path, **kw) -> pa.Table:
    """The same part estimated with the test faults disarmed."""
    with monkeypatch.context() as m:
        m.setenv("MIBENCH_TEST_FAULTS", "off")
        return run_part(plan, label, entry, part, where / f"ref-{label}-{part}.parquet", **kw)


CHILD = """
import json, sys
import tests.estimators_for_tests
from mibench.benchmark import BenchmarkPlan
from mibench.runner import run_part
config, bench, label, part, out, meta = json.loads(sys.argv[1])
run_part(BenchmarkPlan.from_config(bench, config), label, config["estimators"][label], part, out, meta_root=meta)
"""


def child(venv_env, config, label, part, out, *, bench="grid", meta="results/meta", wait=True):
    """run_part in a child process (the fault kills the process, not pytest)."""
    args = json.dumps([config, bench, label, part, str(out), str(meta)])
    cmd = [sys.executable, "-c", CHILD, args]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=venv_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, cwd=REPO, env=venv_env, capture_output=True, text=True, timeout=120)


def markers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(out.name + ".*"))


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


# -------------------------------------------------------------------------------------- full disk, read-only


def can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"mibench-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
    if ok.returncode == 0:
        subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return ok.returncode == 0


@contextlib.contextmanager
def small_disk(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` at ``path``: a real 'No space left on device' when it fills (root + mount)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not can_mount(), reason="a real full disk needs a tmpfs mount (root with CAP_SYS_ADMIN)")
def test_full_disk_fails_clearly_and_keeps_what_was_written(monkeypatch, tmp_path, ledger) -> None:
    config = grid_config()
    plan = plan_of(config)
    entry = config["estimators"]["corr"]
    with small_disk(tmp_path / "results", 256) as disk:
        first = disk / "part-0000.parquet"
        run_part(plan, "corr", entry, 0, first)
        before = sha(first)
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as handle:  # fill the disk to the last byte (unbuffered: no
            with contextlib.suppress(OSError):  # late ENOSPC from a flush at close)
                while handle.write(b"\0" * 4096):
                    pass
        second = disk / "part-0001.parquet"
        with pytest.raises(ResultsWriteError) as info:
            run_part(plan, "corr", entry, 1, second, checkpoint_s=0)
        message = str(info.value)
        assert info.value.errno == errno.ENOSPC
        assert f"cannot write {second}" in message and "the disk is full" in message, message
        assert sha(first) == before, "a file written before the disk filled up must be untouched"
        assert not second.exists() and not list(disk.glob(".*.tmp")), "no half-written file or temp file is left"
        filler.unlink()
        table = run_part(plan, "corr", entry, 1, second)
        assert sha(first) == before and markers(second) == []
        identical = same_results(table, reference(monkeypatch, plan, "corr", entry, 1, tmp_path))
    assert identical
    ledger(
        fault="results disk full",
        outcome="clear error",
        group="faults while running",
        injected="256 KiB tmpfs filled to the last byte before a part",
        expected="clear error naming the file; earlier files intact; re-run after freeing space completes",
        observed=message.split(". ")[0],
        results_lost=0,
        rerun_work="the failed part only",
        identical=identical,
    )


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """Make folder ``path`` read-only: a read-only bind mount as root (root ignores mode bits), else ``chmod``."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(mode)


needs_read_only = pytest.mark.skipif(
    os.geteuid() == 0 and not can_mount(), reason="root ignores mode bits: a read-only folder needs a bind mount"
)


@needs_read_only
def test_read_only_results_folder_fails_clearly_and_keeps_what_was_written(monkeypatch, tmp_path, ledger) -> None:
    config = grid_config()
    plan = plan_of(config)
    entry = config["estimators"]["corr"]
    folder = tmp_path / "results"
    folder.mkdir()
    first = folder / "part-0000.parquet"
    run_part(plan, "corr", entry, 0, first)
    before = sha(first)
    second = folder / "part-0001.parquet"
    with read_only(folder):
        with pytest.raises(ResultsWriteError) as info:
            run_part(plan, "corr", entry, 1, second, checkpoint_s=0)
    message = str(info.value)
    assert info.value.errno in (errno.EROFS, errno.EACCES)
    assert f"cannot write {second}" in message and "re-run to finish the missing work" in message, message
    assert sha(first) == before and not second.exists() and not list(folder.glob(".*.tmp"))
    table = run_part(plan, "corr", entry, 1, second)  # the folder is writable again: the re-run completes
    assert sha(first) == before and markers(second) == []
    identical = same_results(table, reference(monkeypatch, plan, "corr", entry, 1, tmp_path))
    assert identical
    ledger(
        fault="results folder read-only",
        outcome="clear error",
        group="faults while running",
        injected="read-only bind mount (root) / chmod 555 over the results folder before a part",
        expected="clear error naming the file; earlier files intact; re-run completes",
        observed=message.split(". ")[0],
        results_lost=0,
        rerun_work="the failed part only",
        identical=identical,
    )


# ------------------------------------------------------------------------------------------- corrupt shards


def test_corrupt_shard_is_reported_by_path_never_skipped(monkeypatch, tmp_path, ledger) -> None:
    config = bench_config(mist={"splits": ["test_imd"], "estimators": ["corr"]})
    meta = tmp_path / "meta"
    generate_split(config, "test_imd", meta, progress=False)
    plan = plan_of(config, "mist")
    entry = config["estimators"]["corr"]
    ref = run_part(plan, "corr", entry, 1, tmp_path / "ref.parquet", meta_root=meta)
    shard = meta / "test_imd" / "shard-0001.parquet"
    good = shard.read_bytes()
    out = tmp_path / "est" / "part-0001.parquet"
    group = pq.ParquetFile(shard).metadata.row_group(0)
    column = next(group.column(i) for i in range(group.num_columns) if group.column(i).path_in_schema.startswith("x."))
    assert column.path_in_schema == "x.list.element"
    inside = column.data_page_offset + column.total_compressed_size - 20  # in the page's compressed data
    flipped = bytearray(good)
    flipped[inside] ^= 0x01
    observed = []
    for how, damaged in {
        "one bit flipped in the x data (page CRC)": bytes(flipped),
        "truncated": good[: len(good) // 2],
        "footer overwritten": good[:-12] + b"\xff" * 12,
        "zeroed middle": good[:8] + b"\0" * (len(good) - 16) + good[-8:],
    }.items():
        shard.write_bytes(damaged)
        with pytest.raises(Exception, match="corrupt or truncated Parquet file") as info:
            run_part(plan, "corr", entry, 1, out, meta_root=meta)
        assert str(shard) in str(info.value), f"{how}: the error must name the shard: {info.value}"
        assert type(info.value).__name__ == "ShardError" and not out.exists()
        observed.append(how)
    # regenerating the shard (what Snakemake does once the bad file is removed) gives the same bytes
    shard.unlink()
    generate_split(config, "test_imd", meta, progress=False)
    assert shard.read_bytes() == good, "shard generation must be deterministic"
    table = run_part(plan, "corr", entry, 1, out, meta_root=meta)
    identical = same_results(table, ref)
    assert identical
    ledger(
        fault="corrupt Parquet shard",
        outcome="clear error",
        group="faults while running",
        injected=f"meta shard {', '.join(observed)}",
        expected="ShardError naming the shard path; no output; re-run after regeneration completes",
        observed=f"ShardError: {shard.name}: corrupt or truncated Parquet file",
        results_lost=0,
        rerun_work="the part reading that shard",
        identical=identical,
    )


# ------------------------------------------------------------------------------- pipeline level (Snakemake)
#
# One configuration for all pipeline faults: the GRID benchmark (corr + a 0.5 s/cell estimator, one part each) and a
# benchmark over the test_imd meta split (2 shards, generated once in-process and copied in, so no run regenerates
# them unless a fault removes one). Runs stop at the estimates (``--until estimate_part``): evaluation, report and
# MLflow are covered by the MLflow case below. A fault-free run of the same configuration is the reference.

PIPELINE_META = {"shard_size": 8, "splits": {"test_imd": copy.deepcopy(TINY_META["splits"]["test_imd"])}}


def pipeline_config(*, tracking: bool = False, mist: bool = True) -> dict:
    benches = {"grid": {**GRID, "estimators": ["corr", "slow"], "cells_per_job": 12, "timeout_s": 5, "checkpoint_s": 0}}
    if mist:
        benches["mist"] = {"splits": ["test_imd"], "estimators": ["corr"]}
    config = bench_config(PIPELINE_META, **benches)
    config["estimators"]["slow"]["seconds"] = 0.5
    config["tracking"] = {"enabled": tracking}
    return config


@pytest.fixture(scope="module")
def pipeline_shards(tmp_path_factory) -> Path:
    """The test_imd shards of the pipeline configuration, generated once."""
    root = tmp_path_factory.mktemp("shards")
    generate_split(parse_config(pipeline_config()), "test_imd", root / "meta", progress=False)
    return root / "meta"


def pipeline_workdir(path: Path, shards: Path, **kw) -> Path:
    write_config(path / "config" / "config.yaml", pipeline_config(**kw))
    shutil.copytree(shards, path / "results" / "meta")  # time stamps kept: newer than the workflow's scripts
    return path


UNTIL = ("--until", "estimate_part")


@pytest.fixture(scope="module")
def fault_free(tmp_path_factory, pipeline_shards) -> Path:
    """The reference: the same configuration run without faults."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    env["OMP_NUM_THREADS"] = "1"
    work = pipeline_workdir(tmp_path_factory.mktemp("fault-free"), pipeline_shards)
    snakemake(REPO, work, env, *UNTIL)
    return work


def estimate_files(work: Path) -> dict[str, Path]:
    root = work / "results" / "estimates"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("part-*.parquet"))}


def compare_with(work: Path, reference: Path) -> tuple[bool, int]:
    """(every estimates part equal to the reference's except `seconds`, and meta shards byte-identical; #files)."""
    mine, theirs = estimate_files(work), estimate_files(reference)
    assert set(mine) == set(theirs), f"parts differ: {sorted(set(mine) ^ set(theirs))}"
    same = all(same_results(pq.read_table(mine[k]), pq.read_table(theirs[k])) for k in mine)
    shards = sorted((reference / "results" / "meta").rglob("shard-*.parquet"))
    same = same and all(sha(s) == sha(work / s.relative_to(reference)) for s in shards)
    return same, len(mine) + len(shards)


def snapshot(work: Path) -> dict[str, str]:
    """sha256 of every complete result file (estimates parts and meta shards)."""
    files = [*estimate_files(work).values(), *(work / "results" / "meta").rglob("shard-*.parquet")]
    return {str(p.relative_to(work)): sha(p) for p in files}


def recorded(work: Path) -> set[str]:
    """Estimates parts whose job Snakemake recorded as finished (its metadata record exists)."""
    meta = work / ".snakemake" / "metadata"
    names = {base64.urlsafe_b64decode(p.name + "==").decode(errors="replace") for p in meta.glob("*")}
    return {str(Path(n)) for n in names if n.startswith("results/estimates/")}


def jobs_run(proc: subprocess.CompletedProcess) -> list[str]:
    """'rule wildcards' of every job Snakemake started (from its log)."""
    out, jobs, rule = proc.stdout + proc.stderr, [], None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("wildcards:") and rule:
            jobs.append(f"{rule} {line.removeprefix('wildcards:').strip()}")
            rule = None
    return jobs


@pytest.mark.slow
def test_kill_9_of_the_snakemake_run_then_resume(tmp_path, venv_env, pipeline_shards, fault_free, ledger) -> None:
    work = pipeline_workdir(tmp_path, pipeline_shards)
    slow_parts = work / "results" / "estimates" / "grid" / "slow"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
    cmd += ["--directory", str(work), "--cores", "2", *UNTIL]
    proc = subprocess.Popen(cmd, env=venv_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:  # kill once Snakemake has recorded a finished part and a slow part has checkpointed some cells
        deadline = time.monotonic() + 180
        while not (recorded(work) and any(p.stat().st_size for p in slow_parts.glob("*.partial"))):
            assert proc.poll() is None, "the run ended before it could be killed: " + proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and every job it started, no chance to clean up
        proc.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
    time.sleep(0.5)  # the killed jobs' last writes (atomic renames) have landed
    finished = recorded(work)  # parts Snakemake saw finish; a part written after it stopped listening is redone
    done = {rel: digest for rel, digest in snapshot(work).items() if rel in finished or "/meta/" in rel}
    partials = {p: pq.read_table(p).to_pylist() for p in slow_parts.glob("*.partial")}
    assert partials and any(partials.values())
    checkpointed = sum(len(rows) for rows in partials.values())
    n_parts = len(estimate_files(fault_free))
    assert len(finished) < n_parts, "the kill came too late to test anything"

    assert "LockException" in snakemake(REPO, work, venv_env, *UNTIL, check=False).stderr  # the killed run's lock
    snakemake(REPO, work, venv_env, "--unlock")
    again = snakemake(REPO, work, venv_env, *UNTIL)
    rerun = jobs_run(again)
    assert all(j.startswith("estimate_part") for j in rerun), rerun
    assert len(rerun) == n_parts - len(finished), (rerun, again.stdout[-3000:], again.stderr[-3000:])
    for rel, digest in done.items():
        assert sha(work / rel) == digest, f"{rel} was complete before the kill and must not be recomputed"
    for path, rows in partials.items():
        final = pq.read_table(path.with_name(path.name.removesuffix(".partial"))).to_pylist()
        assert final[: len(rows)] == rows, "checkpointed cells are kept as they were (seconds included)"
    assert not list((work / "results").rglob("*.partial")) and not list((work / "results").rglob("*.inflight"))
    identical, _ = compare_with(work, fault_free)
    assert identical
    ledger(
        fault="kill -9 of the Snakemake run",
        outcome="right answer",
        group="faults while running",
        injected="SIGKILL to Snakemake's process group once a part was complete and another had checkpointed",
        expected="complete parts untouched; re-run resumes checkpointed parts and runs only missing jobs",
        observed=f"{len(finished)}/{n_parts} parts complete, {checkpointed} cell(s) checkpointed at the kill",
        results_lost=0,
        rerun_work=f"{len(rerun)} of {n_parts} estimate jobs; {checkpointed} checkpointed cell(s) not recomputed",
        identical=identical,
    )


@pytest.mark.slow
def test_corrupt_shard_in_the_pipeline(tmp_path, venv_env, pipeline_shards, fault_free, ledger) -> None:
    work = pipeline_workdir(tmp_path, pipeline_shards)
    shard = work / "results" / "meta" / "test_imd" / "shard-0001.parquet"
    good, stamp = shard.read_bytes(), shard.stat()
    shard.write_bytes(good[: len(good) // 2])
    os.utime(shard, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # time stamp unchanged: only reading it can tell
    first = snakemake(REPO, work, venv_env, *UNTIL, "--keep-going", check=False)
    out = first.stdout + first.stderr
    assert first.returncode != 0
    log = work / "results" / "logs" / "estimate" / "mist" / "corr" / "part-0001.log"
    assert "Error in rule estimate_part" in out and str(log.relative_to(work)) in out, out[-3000:]
    message = f"ShardError: {shard.relative_to(work)}: corrupt or truncated Parquet file"
    assert message in log.read_text()
    bad_part = work / "results" / "estimates" / "mist" / "corr" / "part-0001.parquet"
    n_parts = len(estimate_files(fault_free))
    assert not bad_part.exists() and len(estimate_files(work)) == n_parts - 1, "every other part completes"
    done = snapshot(work)

    shard.unlink()  # what the error tells the user to do; Snakemake regenerates it
    again = snakemake(REPO, work, venv_env, *UNTIL)
    jobs = jobs_run(again)
    assert sorted(j.split()[0] for j in jobs) == ["estimate_part", "generate_shard"], jobs
    assert shard.read_bytes() == good, "the regenerated shard is byte-identical"
    for rel, digest in done.items():
        if not rel.endswith("shard-0001.parquet"):
            assert sha(work / rel) == digest, f"{rel} must not be recomputed"
    identical, _ = compare_with(work, fault_free)
    assert identical
    ledger(
        fault="corrupt Parquet shard (Snakemake run)",
        outcome="clear error",
        group="faults while running",
        injected="a meta shard truncated to half, time stamp unchanged",
        expected="the job reading it fails naming the shard; all other parts complete (--keep-going)",
        observed=f"{message} (in the job's log, named by Snakemake)",
        results_lost=0,
        rerun_work="after deleting the shard: 1 generate_shard + 1 estimate_part job",
        identical=identical,
    )


@pytest.mark.slow
def test_mlflow_server_down_during_the_run(tmp_path, venv_env, pipeline_shards, fault_free, ledger) -> None:
    from .mlflow_server import mlflow_server

    work = pipeline_workdir(tmp_path / "work", pipeline_shards, tracking=True, mist=False)
    store = tmp_path / "mlflow"
    store.mkdir()
    db = store / "mlflow.db"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
    cmd += ["--directory", str(work), "--cores", "2"]
    with mlflow_server(db) as (url, server):
        env = {**venv_env, "MLFLOW_TRACKING_URI": url}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 180
            while not estimate_files(work):  # the run is under way: take the server down (a crash, no goodbye)
                assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the fault"
                time.sleep(0.05)
            os.killpg(server.pid, signal.SIGKILL)
            out = proc.communicate(timeout=400)[0]
        finally:
            proc.kill()
    assert proc.returncode != 0, "tracking must fail loudly"
    track_log = (work / "results" / "logs" / "tracking" / "grid.log").read_text()
    assert f"MLflow at {url} is unreachable" in track_log, track_log[-2000:]
    results = work / "results"
    assert (results / "report" / "index.html").exists() and (results / "metrics" / "grid.parquet").exists()
    assert not (results / "tracking" / "grid.json").exists()
    done = snapshot(work)

    # the store is reachable again: a re-run only logs. (Straight to the server's sqlite store: a second server
    # start costs ~40 s on 2 busy cores; tests/test_mlflow_ui.py reads such a store through a real server.)
    again = snakemake(REPO, work, {**venv_env, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
    assert [j.split()[0] for j in jobs_run(again)] == ["track_benchmark"], jobs_run(again)
    import mlflow

    runs = mlflow.MlflowClient(f"sqlite:///{db}").search_runs(
        [mlflow.MlflowClient(f"sqlite:///{db}").get_experiment_by_name("mibench/grid").experiment_id]
    )
    assert sorted(r.info.run_name for r in runs) == ["corr", "slow"]
    assert all(sha(work / rel) == digest for rel, digest in done.items()), "nothing is recomputed"
    ours = {k: v for k, v in estimate_files(work).items() if k.startswith("grid/")}
    identical = all(
        same_results(pq.read_table(p), pq.read_table(estimate_files(fault_free)[k])) for k, p in ours.items()
    )
    assert identical
    ledger(
        fault="MLflow server down during the run",
        outcome="clear error",
        group="faults while running",
        injected="SIGKILL to a real `mlflow server` while estimates run",
        expected="track job fails fast naming the server; every other output complete; re-run only logs",
        observed=f"rc {proc.returncode}; 'MLflow at http://127.0.0.1:<port> is unreachable' in the track job's log",
        results_lost=0,
        rerun_work="1 track_benchmark job (store reachable again); 2 runs logged",
        identical=identical,
    )
    assert out is not None


# --------------------------------------------------------- issue 11: budgets per cell when batched, honest exits
#
# Batched estimators (neural stacks, MIST) take many cells per call. `batched_sleepy` models such a call: its
# cells run together and finish one by one; with slow_n=200 the six n=200 cells of the GRID part need 0.9 s
# each, the six n=50 cells 0.03 s, under timeout_s 0.3. `silent_batched_sleepy` cannot report cells early
# (like one forward pass). MIBENCH_TEST_FAULTS=off makes every cell fast: the fault-free reference.


def batched_entry(estimator: str = "batched_sleepy", slow_seconds: float = 0.9) -> dict:
    return {"estimator": estimator, "module": TEST_MODULE, "seconds": 0.03, "slow_seconds": slow_seconds, "slow_n": 200}


PER_CELL = "CellTimeout: exceeded the time budget of 0.3 s per cell (estimated alone, after its batch of 12 cells"


@pytest.mark.parametrize("estimator", ["batched_sleepy", "silent_batched_sleepy"])
def test_a_batch_that_runs_out_of_time_keeps_its_finished_cells(monkeypatch, tmp_path, ledger, estimator) -> None:
    """Before: one pooled budget of 3.6 s for the 12 cells; it ran out and all 12 became timeout rows saying
    'budget of 3.6 s'. Now the 6 fast cells are ok and only the 6 slow ones time out, each with the per-cell budget."""
    config = grid_config(cells_per_job=12, timeout_s=0.3)
    plan = plan_of(config)
    entry = batched_entry(estimator)
    table = run_part(plan, "b", entry, 0, tmp_path / "part-0000.parquet")
    rows = table.to_pylist()
    fast = [i for i, r in enumerate(rows) if r["n"] == 50]
    slow = [i for i, r in enumerate(rows) if r["n"] == 200]
    assert len(fast) == len(slow) == 6
    assert all(rows[i]["status"] == "ok" and rows[i]["mi_estimate"] == 0.05 for i in fast)
    assert all(rows[i]["seconds"] < 0.3 for i in fast), "a kept cell is charged its share, within its budget"
    for i in slow:
        assert rows[i]["status"] == "timeout" and rows[i]["error"].startswith(PER_CELL), rows[i]["error"]
        assert "3.6" not in rows[i]["error"]
    assert [r["sample_id"] for r in rows] == [c.sample_id for c, _, _ in plan.part_cells(0)], "rows in cell order"
    ref = reference(monkeypatch, plan, "b", entry, 0, tmp_path)
    assert [r["status"] for r in ref.to_pylist()] == ["ok"] * 12
    identical = same_results(table.take(fast), ref.take(fast))
    assert identical
    ledger(
        fault=f"slow cells in a batched call ({'no early reports' if 'silent' in estimator else 'cells reported as done'})",
        injected="6 of 12 cells need 0.9 s under timeout_s 0.3, one estimate_many call",
        expected="fast cells ok, only the slow ones timeout rows naming the per-cell budget",
        observed="6 ok, 6 timeout: " + rows[slow[0]]["error"][:90] + "…",
        results_lost=0,
        rerun_work="none (the rows are results)",
        identical=identical,
    )


def test_sigterm_during_a_batched_call_keeps_the_cells_it_finished(monkeypatch, tmp_path, venv_env, ledger) -> None:
    """SIGTERM while a batched call still trains its slow cells: the cells it already reported are checkpointed."""
    config = grid_config(cells_per_job=12, timeout_s=30, checkpoint_s=0)
    config["estimators"]["b"] = entry = batched_entry(slow_seconds=120)
    plan = plan_of(config)
    out = tmp_path / "est" / "part-0000.parquet"
    partial = out.with_name(out.name + ".partial")
    proc = child(venv_env, config, "b", 0, out, wait=False)
    try:
        deadline = time.monotonic() + 90
        while not (partial.exists() and pq.read_metadata(partial).num_rows >= 6):
            assert time.monotonic() < deadline and proc.poll() is None, "the child never finished its fast cells"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    finally:
        proc.kill()
    assert proc.returncode == 1 and "Terminated: SIGTERM" in output, output[-2000:]
    kept = pq.read_table(partial).to_pylist()
    assert sorted(r["n"] for r in kept) == [50] * 6 and all(r["status"] == "ok" for r in kept)
    with monkeypatch.context() as m:
        m.setenv("MIBENCH_TEST_FAULTS", "off")  # the slow cells are fast now: the re-run only adds them
        table = run_part(plan, "b", entry, 0, out)
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    assert all(rows[r["sample_id"]] == r for r in kept), "kept cells are not recomputed (seconds included)"
    assert [r["status"] for r in rows.values()] == ["ok"] * 12
    ref = reference(monkeypatch, plan, "b", entry, 0, tmp_path)
    identical = same_results(table, ref)
    assert identical
    ledger(
        fault="SIGTERM inside a batched estimate_many call",
        injected="SIGTERM once 6 of 12 cells of the call were done, 6 still running",
        expected="the 6 finished cells saved to .partial; the re-run estimates only the other 6",
        observed=f"exit 1 (Terminated); {len(kept)} cells in .partial",
        results_lost=0,
        rerun_work="6 of 12 cells",
        identical=identical,
    )


def test_mibench_log_with_an_unknown_benchmark_is_a_clear_error(tmp_path, ledger) -> None:
    from typer.testing import CliRunner

    from mibench.cli import app

    config_path = write_config(tmp_path / "config.yaml", grid_config())
    result = CliRunner().invoke(
        app, ["log", "--config", str(config_path), "--benchmark", "gird", "--results", str(tmp_path / "results")]
    )
    message = "benchmark 'gird' is not defined under `benchmarks:` of the config (defined: grid)"
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "results").exists(), "nothing is created for a typo"
    ledger(
        fault="`mibench log --benchmark` with a name the config lacks",
        injected="--benchmark gird (the config defines grid)",
        expected="exit 2 naming the benchmark and the defined ones",
        observed=message,
        results_lost=0,
        rerun_work="none",
        identical=True,
    )


def test_run_summary_names_failing_estimators_and_unreadable_parts(tmp_path, ledger) -> None:
    """The end-of-run summary: an estimator whose jobs succeeded but whose cells all errored is named, with a
    message; a damaged part is named, not a crash (the summary also runs after failures)."""
    import io

    from mibench.evaluate.failures import print_run_summary, summary_lines

    config = grid_config(estimators=["corr", "broken", "odd"], cells_per_job=12)
    plan = plan_of(config)
    results = tmp_path / "results"
    for label in plan.estimators:
        run_part(
            plan, label, config["estimators"][label], 0, results / "estimates" / "grid" / label / "part-0000.parquet"
        )
    odd_errors = sum(c.seed % 2 for c, _, _ in plan.part_cells(0))
    lines = summary_lines(results, ["grid"], {"grid": 4})
    text = "\n".join(lines)
    assert (
        lines[0]
        == f"mibench: {12 + odd_errors} of 36 estimate rows are errors or timeouts (per estimator, one example):"
    )
    assert "grid/broken  12 error(s), 0 timeout(s) of 12" in text and "RuntimeError: deliberate failure" in text
    assert f"grid/odd     {odd_errors} error(s), 0 timeout(s) of 12" in text and "ValueError: odd seed" in text
    assert "grid/corr" not in text and "grid: 3 of 4 estimates parts on disk" in text
    bad = results / "estimates" / "grid" / "corr" / "part-0000.parquet"
    bad.write_bytes(bad.read_bytes()[:100])
    text = "\n".join(summary_lines(results, ["grid"]))
    assert f"unreadable: {bad}: " in text
    buffer = io.StringIO()
    print_run_summary({"nowhere": object()}, tmp_path / "missing", stream=buffer)  # never raises
    assert buffer.getvalue().startswith("mibench: no estimates under")
    ledger(
        fault="an estimator errors on every cell while every job succeeds",
        injected="`always_fails` and `fails_on_odd_seeds` in a benchmark; then a truncated part",
        expected="the end-of-run summary names each with counts and a message; a damaged part is named",
        observed=lines[1].strip()[:100],
        results_lost=0,
        rerun_work="none",
        identical=True,
    )


@pytest.mark.slow
def test_pipeline_budgets_progress_and_run_summary(tmp_path, venv_env, ledger) -> None:
    """A real Snakemake run (as `make run` starts it): batched per-cell budgets, progress lines on the console while
    a job runs and in its log line by line, and the error/timeout summary at the end; after a failure too."""
    config = bench_config(
        grid={**GRID, "estimators": ["corr", "bslow", "broken"], "cells_per_job": 12, "timeout_s": 0.3}
    )
    config["estimators"]["bslow"] = batched_entry()
    config["tracking"] = {"enabled": False}
    del config["meta"]
    write_config(tmp_path / "config" / "config.yaml", config)
    env = {**venv_env, "MIBENCH_PROGRESS": "console", "MIBENCH_PROGRESS_EVERY_S": "0"}
    part = tmp_path / "results" / "estimates" / "grid" / "bslow" / "part-0000.parquet"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
    cmd += ["--directory", str(tmp_path), "--cores", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, live = [], []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "[estimate/grid/bslow/part-0000] grid/bslow part 0000: " in line:
                live.append((line.strip(), part.exists()))
        proc.wait(timeout=300)
    finally:
        proc.kill()
    out = "\n".join(lines)
    assert proc.returncode == 0, out[-3000:]
    assert any("6/12 cells done (6 ok)" in text and not written for text, written in live), live
    log = (tmp_path / "results" / "logs" / "estimate" / "grid" / "bslow" / "part-0000.log").read_text()
    assert [f"cell {k}/12 " in log for k in range(1, 13)] == [True] * 12
    rows = pq.read_table(part).to_pylist()
    assert sorted((r["n"], r["status"]) for r in rows) == [(50, "ok")] * 6 + [(200, "timeout")] * 6
    summary = out[out.index("mibench: 18 of 36 estimate rows are errors or timeouts") :]
    assert "grid/bslow   0 error(s), 6 timeout(s) of 12    e.g. " + PER_CELL[:60] in summary, summary
    assert "grid/broken  12 error(s), 0 timeout(s) of 12   e.g. RuntimeError: deliberate failure" in summary

    corr = tmp_path / "results" / "estimates" / "grid" / "corr" / "part-0000.parquet"
    stamp = corr.stat()
    corr.write_bytes(corr.read_bytes()[:200])  # a damaged part; evaluation fails on it
    os.utime(corr, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    failed = snakemake(REPO, tmp_path, venv_env, "--forcerun", "evaluate_benchmark", check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "mibench: 18 of 24 estimate rows are errors or timeouts" in failed.stdout, text[-3000:]
    assert "unreadable: results/estimates/grid/corr/part-0000.parquet" in failed.stdout
    ledger(
        fault="a benchmark with errors and timeouts finishes 'successfully' (Snakemake run)",
        injected="`always_fails` and a batched estimator with slow cells; then a damaged part and a failing re-run",
        expected="summary of error/timeout rows per estimator at the end of the run, also when the run fails",
        observed="onsuccess: 18 of 36 rows named per estimator; onerror: the damaged part named",
        results_lost=0,
        rerun_work="none",
        identical=True,
    )


def test_an_estimator_failing_on_its_hardest_cells_does_not_rank_first(tmp_path, ledger) -> None:
    """Issue 11: histogram ranked first on bmi_small with 20 of 32 cells. Here `faulty` is the correlation
    estimator itself, except that it raises on the 4 cells where that estimator errs most: over its own cells
    its MSE looks best, yet on the cells both scored the two are equal."""
    import polars as pl

    from mibench.evaluate import compute_metrics, rank_estimators
    from mibench.evaluate.report import write_report

    config = grid_config(cells_per_job=12)
    plan = plan_of(config)
    corr = run_part(plan, "corr", config["estimators"]["corr"], 0, tmp_path / "corr" / "part-0000.parquet")
    errs = sorted(corr.to_pylist(), key=lambda r: -abs(r["mi_estimate"] - r["mi_true"]))
    hardest = [r["seed"] for r in errs[:4]]
    faulty = run_part(plan, "faulty", faulty_entry("raise", hardest), 0, tmp_path / "f" / "part-0000.parquet")
    estimates = pl.from_arrow(pa.concat_tables([corr, faulty]))
    own = compute_metrics(estimates, plan.levels).filter(
        (pl.col("split") == "ALL")
        & (pl.col("family") == "ALL")
        & (pl.col("n_bin") == "ALL")
        & (pl.col("dim_bin") == "ALL")
    )
    by_own = own.sort("mse")["estimator"].to_list()
    assert by_own == ["faulty", "corr"], "the trap: over its own cells the failing estimator looks best"
    ranked = rank_estimators(estimates, ["corr", "faulty"], plan.levels)
    rows = {r["estimator"]: r for r in ranked.iter_rows(named=True)}
    assert ranked["estimator"].to_list() == ["corr", "faulty"]
    assert rows["corr"]["group"] == "complete" and rows["faulty"]["group"] == "with failures"
    assert rows["faulty"]["scored"] == 8 and rows["corr"]["common_cells"] == 8
    assert rows["corr"]["mse"] == pytest.approx(rows["faulty"]["mse"]) and not rows["faulty"]["own_comparable"]
    page = write_report({"grid": (own, estimates, tmp_path, plan.levels)}, tmp_path / "index.html").read_text()
    assert page.index("<td>corr</td>") < page.index("<td>faulty</td>") and "8 of 12" in page
    ledger(
        fault="an estimator fails on its hardest cells (silently better MSE)",
        injected="`faulty` = the correlation estimator raising on its 4 worst of 12 cells",
        expected="ranked separately, compared on the 8 cells both scored ('scored 8 of 12')",
        observed="own-cell MSE would rank it first; rank_estimators puts it in 'with failures', equal MSE on common cells",
        results_lost=0,
        rerun_work="none",
        identical=True,
    )
