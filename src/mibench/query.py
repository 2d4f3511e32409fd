"""SQL over every result: DuckDB in memory, sandboxed, with views over the Parquet files under ``results/``.

Views: ``meta`` (meta-dataset shards), ``estimates`` (one row per cell), ``metrics`` (per estimator and
grouping), ``calibration`` (quantile calibration). A view whose files do not exist yet is empty but has its
columns, so queries written before a run work after it. Only files whose path and schema match the results
layout are read (:mod:`mibench.layout`); a stray Parquet file with a wrong schema is refused by name.

Read-only is enforced by DuckDB itself, not by matching statements: the views are Arrow datasets opened by
pyarrow *before* the sandbox closes, then DuckDB's external access is switched off
(``enable_external_access = false``: no file reads or writes, no ``ATTACH``, no ``COPY``, no extension
install or load), extension autoloading/autoinstalling and Python replacement scans are off, and the
configuration is locked so no statement can undo any of it. The only directory DuckDB may touch is a
private temp folder for spilling, deleted when the query ends. Whatever SQL arrives - ``EXPLAIN ANALYZE
COPY ... TO``, ``read_csv('/etc/passwd')``, ``INSTALL httpfs`` - cannot write, install or read outside the
views. A statement allow-list remains only to give writing statements a friendly message.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from mibench.layout import KINDS, SCHEMAS, ResultsIntegrityError, check_file, scan

VIEWS = tuple(KINDS)
READ_ONLY = {
    duckdb.StatementType.SELECT,
    duckdb.StatementType.EXPLAIN,
    duckdb.StatementType.PRAGMA,
}
#: Settings applied, in this order, after the views exist; the last one locks them all.
SANDBOX = (
    "SET python_enable_replacements = false",  # no scanning of Python variables by name
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET enable_external_access = false",  # no file system, no ATTACH/COPY/INSTALL/LOAD
    "SET lock_configuration = true",
)
EXPLAIN_PREFIX = re.compile(r"^\s*EXPLAIN(\s+ANALY[SZ]E)?\s+", re.IGNORECASE)


class QueryError(ValueError):
    """A rejected (writing) or failing SQL statement, or a results folder that cannot be queried."""


def _view_files(root: Path) -> dict[str, list[Path]]:
    """The files behind each view (the paths that match the layout; strays are left out)."""
    return {view: scan(root, view)[0] for view in VIEWS}


def _view_data(root: Path, view: str, files: list[Path]) -> pads.Dataset | pa.Table:
    """The data behind a view: a lazy Arrow dataset over the checked files, or an empty table with columns."""
    if not files:
        return pa.Table.from_batches([], schema=SCHEMAS[view])
    schemas = []
    for path in files:
        try:
            schemas.append(check_file(path, view))
        except ResultsIntegrityError as exc:
            raise QueryError(str(exc)) from None
    try:
        schema = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise QueryError(f"the {view} files under {root} do not share one schema ({exc})") from None
    return pads.dataset([str(p) for p in files], schema=schema, format="parquet")


def strays(results_dir: str | os.PathLike = "results") -> list[Path]:
    """Parquet files in the view folders whose path is outside the layout: never read, worth naming."""
    return [p for view in VIEWS for p in scan(results_dir, view)[1]]


def check_results_dir(results_dir: str | os.PathLike) -> tuple[Path, dict[str, list[Path]]]:
    """(``results_dir``, the files behind each view) if it holds at least one result file; else a
    :class:`QueryError` saying what is missing."""
    root = Path(results_dir)
    if not root.exists():
        raise QueryError(f"no results folder at {root}: run the workflow first (make run), or pass --results DIR")
    if not root.is_dir():
        raise QueryError(f"--results {root} is a file, not a results folder")
    files = _view_files(root)
    if not any(files.values()):
        folders = ", ".join(f"{KINDS[v].folder}/" for v in VIEWS)
        raise QueryError(
            f"the results folder {root} holds no results yet (nothing under {folders}): run the workflow first"
        )
    return root, files


@contextmanager
def connect(
    results_dir: str | os.PathLike = "results", files: dict[str, list[Path]] | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A sandboxed in-memory DuckDB connection with the result views defined (closed and cleaned on exit).

    ``files``: the files behind each view when already scanned (else ``results_dir`` is scanned).
    """
    root = Path(results_dir)
    files = _view_files(root) if files is None else files
    spill = tempfile.mkdtemp(prefix="mibench-query-")
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        for view in VIEWS:
            con.register(view, _view_data(root, view, files[view]))
        con.execute(f"SET temp_directory = '{spill}'")
        for setting in SANDBOX:
            con.execute(setting)
        yield con
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def _refuse_writes(statement: duckdb.Statement) -> None:
    """The friendly message for statements that would write (the sandbox would refuse them anyway)."""
    kind = statement.type
    query = statement.query
    if kind == duckdb.StatementType.EXPLAIN:  # EXPLAIN ANALYZE runs its statement: judge that one
        inner = EXPLAIN_PREFIX.sub("", query, count=1)
        try:
            parsed = duckdb.extract_statements(inner) if inner != query else []
        except duckdb.Error:
            parsed = []
        if len(parsed) == 1:
            kind = parsed[0].type
    if kind not in READ_ONLY:
        name = "INSTALL/LOAD" if kind == duckdb.StatementType.LOAD else kind.name
        raise QueryError(
            f"only read statements are allowed (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN); got {name}. "
            "mibench query never writes into results/; use --output to save a result."
        )


def _message(exc: duckdb.Error) -> str:
    first = str(exc).splitlines()[0]
    if isinstance(exc, duckdb.PermissionException) or "configuration has been locked" in first:
        return (
            f"{first}. mibench query reads only the views meta, estimates, metrics and calibration: it cannot "
            "read or write other files, attach databases, install or load extensions, or change settings"
        )
    return first


def run_query(sql: str, results_dir: str | os.PathLike = "results") -> pa.Table:
    """Run read-only SQL over the result views of ``results_dir``; returns an Arrow table."""
    root, files = check_results_dir(results_dir)
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {exc}") from None
    if not statements:
        raise QueryError("no SQL statement given")
    for statement in statements:
        _refuse_writes(statement)
    with connect(root, files) as con:
        try:
            for statement in statements[:-1]:
                con.execute(statement).fetchall()
            result = con.sql(statements[-1].query)
            return result.to_arrow_table() if result is not None else pa.table({})
        except duckdb.Error as exc:
            raise QueryError(_message(exc)) from None
