"""`mibench query` is sandboxed by DuckDB: no statement can write, install, attach or read outside the views."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.query import QueryError, connect, run_query
from tests.support.integrity import (
    clean,
    cli,
    cli_outcome,
    lost,
    snapshot,
)
from tests.support.reliability import attempt

# ------------------------------------------------------------------------------------------------ SQL sandbox

OUTSIDE_TOKEN = "mibench-secret-7f3a"
ESCAPES = {
    "EXPLAIN ANALYZE COPY ... TO a part file": "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{part}' (FORMAT parquet)",
    "EXPLAIN ANALYZE CREATE": "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1 AS x",
    "EXPLAIN ANALYZE SET (undo the sandbox)": "EXPLAIN ANALYZE SET enable_external_access = true",
    "EXPLAIN ANALYZE INSTALL": "EXPLAIN ANALYZE INSTALL httpfs",
    "read_csv of /etc/passwd": "SELECT * FROM read_csv('/etc/passwd')",
    "read_text of a file outside results/": "SELECT content FROM read_text('{outside}')",
    "read_parquet of a result file (bypassing the views)": "SELECT * FROM read_parquet('{part}')",
    "ATTACH a database file in results/": "ATTACH '{results}/x.db' AS x",
    "COPY into a part file": "COPY (SELECT 1 AS x) TO '{part}' (FORMAT parquet)",
    "extension install": "INSTALL httpfs",
    "extension autoload (a remote Parquet URL)": "SELECT * FROM 'https://example.invalid/x.parquet'",
    "SET (undo the sandbox)": "SET enable_external_access = true",
}


def extension_dirs() -> set[str]:
    home = Path.home() / ".duckdb"
    return {str(p) for p in home.rglob("*")} if home.exists() else set()


@pytest.mark.parametrize("case", list(ESCAPES))
def test_sql_cannot_write_read_or_install_outside_the_views(results, tmp_path, ledger, case) -> None:
    root, _ = results
    outside = tmp_path / "outside.txt"
    outside.write_text(OUTSIDE_TOKEN)
    part = root / "estimates" / "grid" / "corr" / "part-0000.parquet"
    sql = ESCAPES[case].format(part=part, outside=outside, results=root)
    before, extensions = snapshot(root), extension_dirs()

    outcome, message = attempt(lambda: run_query(sql, root), (QueryError,))
    # the sandbox itself, without the friendly allow-list in front of it
    with connect(root) as con:
        try:
            raw = str(con.execute(sql).fetchall())
            sandbox = "ran (in memory only)"
        except duckdb.Error as exc:
            raw, sandbox = str(exc), "refused: " + clean(str(exc).splitlines()[0], root, tmp_path)[:90]
    changed = lost(before, root)
    leaked = OUTSIDE_TOKEN in message or OUTSIDE_TOKEN in raw or "root:x:0:0" in message + raw
    escaped = bool(changed or leaked or extension_dirs() != extensions or set(snapshot(root)) != set(before))
    if escaped:
        outcome = "escape"
    ledger(
        group="SQL sandbox (mibench query)",
        fault=f"SQL: {case}",
        injected=f"`{sql.replace(str(root), 'results').replace(str(tmp_path), '/tmp')}`",
        expected="QueryError; nothing written, read or installed outside the views",
        observed=f"{clean(message.split('. mibench query')[0], root, tmp_path)[:160]}; sandbox alone: {sandbox}",
        outcome=outcome,
        results_lost=changed,
    )
    assert outcome == "clear error", message
    assert (not escaped and "ran" not in sandbox) or case == "EXPLAIN ANALYZE CREATE", sandbox


def test_normal_queries_still_work(results, ledger) -> None:
    root, _ = results
    estimates = sum(pq.read_metadata(p).num_rows for p in (root / "estimates").rglob("part-*.parquet"))
    shards = sum(pq.read_metadata(p).num_rows for p in (root / "meta").rglob("shard-*.parquet"))
    got = {
        "estimates": run_query("SELECT count(*) AS c FROM estimates", root).to_pylist()[0]["c"],
        "meta": run_query("SELECT count(*) AS c FROM meta", root).to_pylist()[0]["c"],
        "join": run_query(
            "WITH e AS (SELECT sample_id, mi_true FROM estimates WHERE benchmark = 'mist') "
            "SELECT count(*) AS c FROM e JOIN meta m USING (sample_id) WHERE abs(e.mi_true - m.mi) < 1e-12",
            root,
        ).to_pylist()[0]["c"],
        "explain": run_query("EXPLAIN SELECT * FROM metrics", root).num_rows,
        "describe": run_query("DESCRIBE calibration", root).num_rows,
    }
    want = {"estimates": estimates, "meta": shards, "join": shards, "explain": 1, "describe": 6}
    outcome = "right answer" if got == want else "silently wrong"
    ledger(
        group="SQL sandbox (mibench query)",
        fault="SQL: ordinary read queries inside the sandbox",
        injected="count, join of estimates with meta, EXPLAIN, DESCRIBE",
        expected="the same numbers as reading the Parquet files directly",
        observed=json.dumps(got),
        outcome=outcome,
        results_lost=0,
    )
    assert got == want


@pytest.mark.parametrize("case", ["-o a folder", "missing results folder", "empty results folder"])
def test_query_command_refuses_what_it_cannot_do(results, tmp_path, ledger, case) -> None:
    root, _ = results
    before = snapshot(root)
    if case == "-o a folder":
        args, names = ["query", "SELECT 1", "--results", str(root), "-f", "csv", "-o", str(root)], ["is a folder"]
    elif case == "missing results folder":
        args, names = ["query", "SELECT 1", "--results", str(tmp_path / "nowhere")], ["no results folder"]
    else:
        (tmp_path / "empty" / "logs").mkdir(parents=True)
        args, names = ["query", "SELECT 1", "--results", str(tmp_path / "empty")], ["holds no results yet"]
    code, output, exc = cli(*args)
    outcome = cli_outcome(code, output, exc, *names)
    ledger(
        group="SQL sandbox (mibench query)",
        fault=f"mibench query: {case}",
        injected=" ".join(a.replace(str(tmp_path), "/tmp") for a in args),
        expected="exit non-zero with the reason, no traceback",
        observed=f"exit {code}: {clean(output, root, tmp_path)[:160]}",
        outcome=outcome,
        results_lost=lost(before, root),
    )
    assert outcome == "clear error", output
    assert code != 0
