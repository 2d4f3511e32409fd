"""SQL over every result: DuckDB in memory with views over the Parquet files under ``results/``.

Views: ``meta`` (meta-dataset shards), ``estimates`` (one row per cell), ``metrics`` (per estimator and
grouping), ``calibration`` (quantile calibration). A view whose files do not exist yet is empty but has
its columns, so queries written before a run work after it. Only read statements are accepted (SELECT,
WITH, DESCRIBE, SHOW, EXPLAIN, PRAGMA): the query never writes into ``results/``.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import duckdb
import pyarrow as pa

from mibench.meta.shards import SHARD_SCHEMA
from mibench.runner import ESTIMATES_SCHEMA

VIEW_GLOBS: dict[str, str] = {
    "meta": "meta/*/shard-*.parquet",
    "estimates": "estimates/*/*/part-*.parquet",
    "metrics": "metrics/*.parquet",
    "calibration": "calibration/*.parquet",
}
EMPTY_SCHEMAS: dict[str, pa.Schema] = {
    "meta": SHARD_SCHEMA,
    "estimates": ESTIMATES_SCHEMA,
    "metrics": pa.schema(
        [
            ("benchmark", pa.string()),
            ("estimator", pa.string()),
            ("split", pa.string()),
            ("family", pa.string()),
            ("n_bin", pa.string()),
            ("dim_bin", pa.string()),
            ("count", pa.uint32()),
            ("errors", pa.uint32()),
            ("mse", pa.float64()),
            ("bias", pa.float64()),
            ("mae", pa.float64()),
        ]
    ),
    "calibration": pa.schema(
        [
            ("benchmark", pa.string()),
            ("estimator", pa.string()),
            ("group", pa.string()),
            ("tau", pa.float64()),
            ("fraction", pa.float64()),
            ("count", pa.uint32()),
        ]
    ),
}
READ_ONLY = {
    duckdb.StatementType.SELECT,
    duckdb.StatementType.EXPLAIN,
    duckdb.StatementType.PRAGMA,
}


class QueryError(ValueError):
    """A rejected (writing) or failing SQL statement."""


def connect(results_dir: str | os.PathLike = "results") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the result views defined."""
    root = Path(results_dir)
    con = duckdb.connect(":memory:")
    for view, pattern in VIEW_GLOBS.items():
        files = sorted(glob.glob(str(root / pattern)))
        if files:
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{listed}], union_by_name = true)")
        else:
            con.register(f"_empty_{view}", pa.Table.from_batches([], schema=EMPTY_SCHEMAS[view]))
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM _empty_{view}")
    return con


def run_query(sql: str, results_dir: str | os.PathLike = "results") -> pa.Table:
    """Run read-only SQL over the result views; returns an Arrow table."""
    con = connect(results_dir)
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {exc}") from None
    if not statements:
        raise QueryError("no SQL statement given")
    for statement in statements:
        if statement.type not in READ_ONLY:
            raise QueryError(
                f"only read statements are allowed (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN); got {statement.type.name}. "
                "mibench query never writes into results/; use --output to save a result."
            )
    try:
        for statement in statements[:-1]:
            con.execute(statement).fetchall()
        result = con.sql(statements[-1].query)
        return result.to_arrow_table() if result is not None else pa.table({})
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0]) from None
    finally:
        con.close()
