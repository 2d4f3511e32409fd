"""The meta-dataset shard format and its pickle-free, checking reader.

One row per sample (:data:`mibench.layout.SHARD_SCHEMA`): ``sample_id, split, family, structure, transform, params (JSON), dim_x, dim_y, n,
seed, mi, mi_std_error, x, y``; ``x``/``y`` are ``list<float32>`` in row-major order, reshaped with
``(n, dim)``. ``mi_std_error`` is the standard error of a Monte-Carlo label and null for exact ones; shards
written before it existed lack the column and read as null.
Everything is plain Arrow types, so DuckDB, polars or any Parquet reader can open the files.

Reading checks more than bytes (Parquet page CRCs catch damaged bytes, not wrong values): before the first
sample of a shard is handed out, :func:`check_shard_content` refuses - with a :class:`ShardError` naming the
shard and the sample - a row whose ``mi`` is missing, NaN, infinite or negative, a repeated ``sample_id``, a
``sample_id`` that is not the hash of the row's own family/params/dims/n/seed (an edited or foreign row), and
an ``mi`` inconsistent with the row's parameters: recomputed exactly for closed-form and quadrature families
(tolerance 1e-6 relative plus the family's error bound), re-estimated with 2,048 Monte-Carlo draws for
Monte-Carlo families (tolerance 6 standard errors of that re-estimate). ``n`` disagreeing with the length of
``x`` or ``y`` is refused as the batch is read. A shard is checked once per process (keyed by its inode, size
and modification time): training reads its shards many times.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mibench.io import atomic_write_table
from mibench.layout import SHARD_SCHEMA

META_COLUMNS = [f.name for f in SHARD_SCHEMA if f.name not in ("x", "y")]
#: Columns added after the first shard format: absent in older shards, read as nulls.
OPTIONAL_COLUMNS = ("mi_std_error",)


class ShardError(ValueError):
    """A shard that is missing, corrupt, truncated or not in the shard schema (message names the path)."""


def sample_id(
    family: str, structure: str, transform: str, params_json: str, dim_x: int, dim_y: int, n: int, seed: int
) -> str:
    """Stable hash of everything that generates a sample (16 hex characters)."""
    text = "\x1f".join(map(str, (family, structure, transform, params_json, dim_x, dim_y, n, seed)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _list_array(arrays: Sequence[np.ndarray]) -> pa.ListArray:
    sizes = np.fromiter((a.size for a in arrays), dtype=np.int32, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    flat = (
        np.concatenate([np.ascontiguousarray(a, dtype=np.float32).ravel() for a in arrays])
        if arrays
        else np.zeros(0, np.float32)
    )
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float32()))


def shard_table(
    rows: Sequence[dict[str, Any]],
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    metadata: dict[str, str] | None = None,
) -> pa.Table:
    """Assemble rows (meta columns) and their x/y arrays into a table in :data:`SHARD_SCHEMA`."""
    columns = {
        name: [row.get(name) if name in OPTIONAL_COLUMNS else row[name] for row in rows] for name in META_COLUMNS
    }
    arrays = [pa.array(columns[f.name], type=f.type) for f in SHARD_SCHEMA if f.name in columns]
    arrays += [_list_array(xs), _list_array(ys)]
    schema = SHARD_SCHEMA.with_metadata({k.encode(): v.encode() for k, v in (metadata or {}).items()})
    return pa.Table.from_arrays(arrays, schema=schema)


def write_shard(path: str | os.PathLike, rows, xs, ys, metadata: dict[str, str] | None = None) -> Path:
    """Atomically write one shard."""
    return atomic_write_table(
        shard_table(rows, xs, ys, metadata), path, row_group_size=max(1, len(rows)), write_page_checksum=True
    )


def shard_paths(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Resolve a directory, a glob, a file or a list of them to a sorted list of shard paths."""
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        if os.path.isdir(text):
            paths = sorted(Path(text).rglob("shard-*.parquet"))
        elif any(ch in text for ch in "*?["):
            paths = sorted(Path(p) for p in glob.glob(text, recursive=True))
        else:
            paths = [Path(text)]
    else:
        paths = [p for item in source for p in shard_paths(item)]
    return paths


def open_shard(path: Path) -> pq.ParquetFile:
    """Open and schema-check a shard; raises :class:`ShardError` naming the path."""
    if not path.exists():
        raise ShardError(f"{path}: shard does not exist")
    try:
        handle = pq.ParquetFile(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: corrupt or truncated Parquet file ({exc})") from None
    names = set(handle.schema_arrow.names)
    missing = [f.name for f in SHARD_SCHEMA if f.name not in names and f.name not in OPTIONAL_COLUMNS]
    if missing:
        raise ShardError(f"{path}: not a meta-dataset shard, missing columns {missing}")
    return handle


#: shards whose content passed :func:`check_shard_content` in this process: (path, inode, size, mtime_ns)
_CHECKED: set[tuple[str, int, int, int]] = set()
MI_RTOL = 1e-6
MC_CHECK_DRAWS = 2048
MC_CHECK_SIGMAS = 6.0
_ID_COLUMNS = ("family", "structure", "transform", "params", "dim_x", "dim_y", "n", "seed")


def _row_name(ids: Sequence[Any], i: int) -> str:
    return f"sample {ids[i]} (row {i})"


@functools.lru_cache(maxsize=65536)
def expected_mi(
    family: str, structure: str, transform: str, params_json: str, dim_x: int, dim_y: int
) -> tuple[float, float]:
    """(MI, tolerance) a shard row with these columns must hold; raises ValueError for impossible parameters.

    Closed-form and quadrature families: the exact value, tolerance 1e-6 relative + the family's error bound.
    Monte-Carlo families with a ``log_ratio``: a 2,048-draw re-estimate seeded by the parameters, tolerance 6
    standard errors of it (the stored value uses 200,000 draws; its own error is negligible next to that).
    Others: (nan, inf), i.e. not checked.
    """
    from mibench.tasks import TaskSpec  # the task families import scipy: only when a shard is checked

    params = json.loads(params_json)
    spec = TaskSpec(family, structure, int(dim_x), int(dim_y), params, transform)
    dist = spec.build().distribution
    if dist.mi_method != "monte_carlo":
        value = float(dist.mi)
        return value, MI_RTOL * max(1.0, abs(value)) + float(dist.mi_error_bound)
    if not hasattr(dist, "log_ratio"):
        return math.nan, math.inf
    seed = int.from_bytes(hashlib.sha256(f"check\x1f{spec.entry}\x1f{params_json}".encode()).digest()[:8], "little")
    x, y = dist.sample(MC_CHECK_DRAWS, np.random.default_rng(seed))
    ratio = dist.log_ratio(np.hstack([x, y]))
    return max(float(ratio.mean()), 0.0), MC_CHECK_SIGMAS * float(ratio.std()) / math.sqrt(MC_CHECK_DRAWS) + 1e-9


def check_shard_content(path: Path, table: pa.Table) -> None:
    """Refuse a shard whose values are wrong although its bytes are intact (see the module docstring).

    ``table`` holds the shard's metadata columns (:data:`META_COLUMNS`). Raises :class:`ShardError` naming
    the shard and the first bad sample.
    """
    ids = table.column("sample_id").to_pylist()
    for name in META_COLUMNS:
        if name in OPTIONAL_COLUMNS:  # nullable by design (mi_std_error: exact labels have none)
            continue
        nulls = table.column(name).null_count
        if nulls:
            i = table.column(name).is_null().to_pylist().index(True)
            raise ShardError(f"{path}: {_row_name(ids, i)} has no {name} (null)")
    mi = table.column("mi").to_numpy()
    bad = np.flatnonzero(~np.isfinite(mi) | (mi < 0))
    if bad.size:
        i = int(bad[0])
        raise ShardError(
            f"{path}: {_row_name(ids, i)} has mi = {float(mi[i])!r}; mutual information is finite and >= 0. "
            f"{bad.size} row(s) affected; regenerate the shard (delete it and re-run)"
        )
    unique, first, counts = np.unique(np.asarray(ids, dtype=object).astype(str), return_index=True, return_counts=True)
    if unique.size != len(ids):
        j = int(np.argmax(counts > 1))
        raise ShardError(
            f"{path}: sample {unique[j]} appears {counts[j]} times (first at row {first[j]}); every sample of a "
            "shard is unique: rows were duplicated or copied in"
        )
    cols = {name: table.column(name).to_pylist() for name in _ID_COLUMNS}
    rows = list(zip(*(cols[name] for name in _ID_COLUMNS), strict=True))
    for i, row in enumerate(rows):
        if sample_id(*row) != ids[i]:
            raise ShardError(
                f"{path}: {_row_name(ids, i)}: the id is not the hash of the row's family/params/dims/n/seed "
                f"(it would be {sample_id(*row)}); the row was edited or comes from elsewhere"
            )
    for i, (family, structure, transform, params, dim_x, dim_y, _, _) in enumerate(rows):
        try:
            value, tol = expected_mi(family, structure, transform, params, dim_x, dim_y)
        except (ValueError, TypeError, KeyError) as exc:
            raise ShardError(f"{path}: {_row_name(ids, i)}: its parameters do not define a task ({exc})") from None
        if abs(mi[i] - value) > tol:
            raise ShardError(
                f"{path}: {_row_name(ids, i)} has mi = {mi[i]:.6g} but its parameters ({family}-{structure} "
                f"{dim_x}x{dim_y} {params}) give {value:.6g} (tolerance {tol:.2g}); the value was edited or the "
                "row comes from elsewhere. Regenerate the shard (delete it and re-run)"
            )


def _check_once(path: Path, handle: pq.ParquetFile) -> list[str] | None:
    """:func:`check_shard_content` unless this very file (same inode, size, mtime) already passed.

    Returns the shard's sample ids when it was checked now (read anyway), None when it had passed before.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _CHECKED:
        return None
    table = handle.read(columns=META_COLUMNS)
    check_shard_content(path, table)
    _CHECKED.add(key)
    return table.column("sample_id").to_pylist()


def read_shard_meta(source, columns: Sequence[str] = tuple(META_COLUMNS)) -> pa.Table:
    """Only the metadata columns of one or many shards (x/y are never read): cheap scans of big splits."""
    tables = []
    for path in shard_paths(source):
        handle = open_shard(path)
        present = set(handle.schema_arrow.names)
        try:
            table = handle.read(columns=[c for c in columns if c in present])
        except (pa.ArrowException, OSError) as exc:
            raise ShardError(f"{path}: corrupt or truncated Parquet file ({exc})") from None
        for name in columns:  # an older shard without an optional column: nulls
            if name not in present:
                field = SHARD_SCHEMA.field(name)
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        tables.append(table.select(list(columns)))
    if not tables:
        raise ShardError(f"no shards found at {source!r}")
    return pa.concat_tables(tables)


def read_shards(
    source: str | os.PathLike | Iterable[str | os.PathLike],
    batch_size: int = 256,
    check_ids: Callable[[Path, list[str]], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """Stream ``(x, y, meta)`` per sample: x (n, dim_x) and y (n, dim_y) float32, meta the other columns.

    Memory is bounded by one record batch; nothing is unpickled. A missing, corrupt or truncated shard
    raises :class:`ShardError` with its path; it is never skipped. ``check_ids(path, sample_ids)``, if given,
    runs for every shard after its content checks and its first batch's, before its first sample (also for a
    shard without rows).
    """
    paths = shard_paths(source)
    if not paths:
        raise ShardError(f"no shards found at {source!r}")
    for path in paths:
        handle = open_shard(path)
        present = set(handle.schema_arrow.names)
        try:
            ids = _check_once(path, handle)
            pending = check_ids
            columns = [f.name for f in SHARD_SCHEMA if f.name in present]
            for batch in handle.iter_batches(batch_size=batch_size, columns=columns):
                samples = _batch_samples(path, batch)  # the batch is checked here, before any row is handed out
                if pending is not None:  # after the first batch's own checks (more specific messages)
                    pending(path, _shard_ids(handle, ids))
                    pending = None
                yield from samples
            if pending is not None:  # a shard without rows
                pending(path, _shard_ids(handle, ids))
        except (pa.ArrowException, OSError) as exc:
            raise ShardError(f"{path}: corrupt or truncated Parquet file ({exc})") from None


def _shard_ids(handle: pq.ParquetFile, ids: list[str] | None) -> list[str]:
    """The shard's sample ids: ``ids`` when its content check just read them, else only that column."""
    return ids if ids is not None else handle.read(columns=["sample_id"]).column("sample_id").to_pylist()


def _batch_samples(path: Path, batch: pa.RecordBatch) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """Check a batch (``n`` against the lengths of x and y) now; the returned iterator yields its samples."""
    names = set(batch.schema.names)
    meta = {name: batch.column(name).to_pylist() if name in names else [None] * batch.num_rows for name in META_COLUMNS}
    n = np.asarray(meta["n"], dtype=np.int64)
    lists = {}
    for side in ("x", "y"):
        col = batch.column(side)
        offsets = col.offsets.to_numpy()
        dims = np.asarray(meta[f"dim_{side}"], dtype=np.int64)
        bad = np.flatnonzero((np.diff(offsets) != n * dims) | (n < 1))
        if bad.size:  # n must agree with the data, for every row, before any row is used
            i = int(bad[0])
            raise ShardError(
                f"{path}: sample {meta['sample_id'][i]} has {offsets[i + 1] - offsets[i]} {side} values, but "
                f"n*dim_{side} = {n[i]}*{dims[i]} = {n[i] * dims[i]}; {bad.size} row(s) of this batch disagree"
            )
        lists[side] = (offsets, col.values.to_numpy(zero_copy_only=False))
    return _samples(meta, lists, batch.num_rows)


def _samples(
    meta: dict[str, list[Any]], lists: dict[str, tuple[np.ndarray, np.ndarray]], num_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    for i in range(num_rows):
        row = {name: meta[name][i] for name in META_COLUMNS}
        out = []
        for side, dim in (("x", row["dim_x"]), ("y", row["dim_y"])):
            offsets, values = lists[side]
            out.append(values[offsets[i] : offsets[i + 1]].reshape(row["n"], dim))
        yield out[0], out[1], row
