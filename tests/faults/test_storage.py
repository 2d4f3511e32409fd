"""Storage faults: a full disk, a read-only results folder, a corrupt shard - clear errors, nothing lost."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.io import ResultsWriteError
from mibench.meta import generate_split
from mibench.runner import run_part
from tests.support.configs import bench_config
from tests.support.faults import (
    grid_config,
    markers,
    plan_of,
    reference,
    same_results,
)
from tests.support.integrity import sha

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
