"""Atomic Parquet writes: a reader never sees a half-written file, a crash never leaves one in place."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: Parquet writer settings shared by every file mibench writes (deterministic: same table, same bytes).
PARQUET_OPTIONS: dict = {"compression": "zstd", "compression_level": 3, "write_statistics": True}


class ResultsWriteError(OSError):
    """A result could not be written (disk full, read-only folder, quota). The message names the file; whatever
    was on disk before is untouched, because every write goes to a temp file that is renamed only when complete."""


def write_error(path: str | os.PathLike, exc: OSError) -> ResultsWriteError:
    """Wrap ``exc`` (pyarrow's ENOSPC message names no file) into an error naming ``path`` and what to do."""
    code = exc.errno
    reason = os.strerror(code) if code else str(exc)
    hint = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "the folder is not writable",
        errno.EPERM: "the folder is not writable (immutable?)",
    }.get(code, "the write failed")
    return ResultsWriteError(
        code,
        f"cannot write {path}: {hint} ({reason}). Results already on disk are intact (writes are atomic); "
        "free space or make the folder writable, then re-run to finish the missing work",
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike, write) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        write(fd, tmp)
        # mkstemp makes 0600 files, and some writers (safetensors) recreate the file 0600: after writing, give
        # every result the usual permissions (group-readable under the common umasks, as on a shared cluster)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, ResultsWriteError):
            raise write_error(path, exc) from exc
        raise
    return path


def atomic_write_table(table: pa.Table, path: str | os.PathLike, **options) -> Path:
    """Write ``table`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    return atomic_write_file(path, lambda tmp: pq.write_table(table, tmp, **{**PARQUET_OPTIONS, **options}))


def atomic_write_file(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Atomically write ``path`` with ``write(tmp_path)`` (figures, checkpoints: any writer that takes a path).

    Same guarantees and permissions as the Parquet results: temp file in the same folder, renamed when
    complete, mode ``0666 & ~umask`` (group-readable under the usual umask, not ``mkstemp``'s 0600).
    """

    def wrapped(fd: int, tmp: str) -> None:
        os.close(fd)
        write(tmp)

    return _atomic_write(path, wrapped)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a small text file atomically (reports, markers)."""

    def write(fd: int, tmp: str) -> None:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)

    return _atomic_write(path, write)
