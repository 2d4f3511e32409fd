"""The meta-dataset shard format (DESIGN.md §3) and its pickle-free reader.

One row per sample: ``sample_id, split, family, structure, transform, params (JSON), dim_x, dim_y, n,
seed, mi, mi_std_error, x, y``; ``x``/``y`` are ``list<float32>`` in row-major order, reshaped with
``(n, dim)``. ``mi_std_error`` is the standard error of a Monte-Carlo label and null for exact ones; shards
written before it existed lack the column and read as null.
Everything is plain Arrow types, so DuckDB, polars or any Parquet reader can open the files.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mibench.io import atomic_write_table

SHARD_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("family", pa.string()),
        ("structure", pa.string()),
        ("transform", pa.string()),
        ("params", pa.string()),
        ("dim_x", pa.int32()),
        ("dim_y", pa.int32()),
        ("n", pa.int64()),
        ("seed", pa.int64()),
        ("mi", pa.float64()),
        ("mi_std_error", pa.float64()),  # nullable: only Monte-Carlo labels have one
        ("x", pa.list_(pa.float32())),
        ("y", pa.list_(pa.float32())),
    ]
)
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
    source: str | os.PathLike | Iterable[str | os.PathLike], batch_size: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """Stream ``(x, y, meta)`` per sample: x (n, dim_x) and y (n, dim_y) float32, meta the other columns.

    Memory is bounded by one record batch; nothing is unpickled. A missing, corrupt or truncated shard
    raises :class:`ShardError` with its path; it is never skipped.
    """
    paths = shard_paths(source)
    if not paths:
        raise ShardError(f"no shards found at {source!r}")
    for path in paths:
        handle = open_shard(path)
        present = set(handle.schema_arrow.names)
        try:
            columns = [f.name for f in SHARD_SCHEMA if f.name in present]
            for batch in handle.iter_batches(batch_size=batch_size, columns=columns):
                yield from _batch_samples(path, batch)
        except (pa.ArrowException, OSError) as exc:
            raise ShardError(f"{path}: corrupt or truncated Parquet file ({exc})") from None


def _batch_samples(path: Path, batch: pa.RecordBatch) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    names = set(batch.schema.names)
    meta = {name: batch.column(name).to_pylist() if name in names else [None] * batch.num_rows for name in META_COLUMNS}
    lists = {}
    for side in ("x", "y"):
        col = batch.column(side)
        lists[side] = (col.offsets.to_numpy(), col.values.to_numpy(zero_copy_only=False))
    for i in range(batch.num_rows):
        row = {name: meta[name][i] for name in META_COLUMNS}
        out = []
        for side, dim in (("x", row["dim_x"]), ("y", row["dim_y"])):
            offsets, values = lists[side]
            flat = values[offsets[i] : offsets[i + 1]]
            if flat.size != row["n"] * dim:
                raise ShardError(
                    f"{path}: sample {row['sample_id']} has {flat.size} {side} values, expected n*dim_{side} = "
                    f"{row['n']}*{dim}"
                )
            out.append(flat.reshape(row["n"], dim))
        yield out[0], out[1], row
