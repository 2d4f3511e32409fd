"""Bad inputs against the integrity of outputs: the SQL sandbox, tampered shards, parts and checkpoints, strays
under results/, and honest exits.

Every case is recorded with the ``ledger`` fixture (tests/conftest.py) *before* it is asserted, with the outcome a
user would see - a clear error naming the file/sample/setting, the right answer, silently wrong, a traceback, or an
escape from the SQL sandbox - and the number of completed result files the fault changed or removed (measured by
hashing every file under results/ before and after). ``benchmarks/reliability_summary.py`` renders the records into
docs/reliability.md.

All cases share one small results folder (a task-grid benchmark of 3 parts x 2 estimators and a meta-split
benchmark of 4 shards, estimated and evaluated in-process), copied afresh for each test.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import tests.estimators_for_tests  # noqa: F401 - registers the test estimators
from mibench.benchmark import BenchmarkPlan, benchmark_plans
from mibench.cli import app
from mibench.config import parse_config
from mibench.config.learned import PRESETS
from mibench.evaluate import evaluate_benchmark
from mibench.evaluate.parts import planned_parts
from mibench.evaluate.report import report_from_disk
from mibench.layout import ResultsIntegrityError
from mibench.learned.checkpoint import CheckpointError, load_model, save_checkpoint
from mibench.learned.model import MISTModel
from mibench.meta import generate_split
from mibench.meta.shards import ShardError, read_shards, sample_id
from mibench.query import QueryError, connect, run_query
from mibench.runner import run_part

from .conftest import GRID, attempt, bench_config


def validate(config: dict) -> dict:
    """The config, checked by the typed models (plain data is kept: the tests index and edit it)."""
    parse_config(config)
    return config


ID_COLUMNS = ("family", "structure", "transform", "params", "dim_x", "dim_y", "n", "seed")

# ------------------------------------------------------------------------------------------------ the results


def build_results(root: Path, config: dict) -> Path:
    """Estimate and evaluate every benchmark of ``config`` into ``root/results`` (what the workflow does)."""
    results = root / "results"
    generate_split(config, "test_imd", results / "meta", progress=False)
    for name, plan in benchmark_plans(config).items():
        for label in plan.estimators:
            for part in range(plan.n_parts):
                out = planned_parts(plan, results)[plan.estimators.index(label) * plan.n_parts + part]
                run_part(plan, label, config["estimators"][label], part, out, meta_root=results / "meta")
        evaluate_benchmark(
            plan,
            planned_parts(plan, results),
            results / "metrics" / f"{name}.parquet",
            results / "calibration" / f"{name}.parquet",
            results / "figures" / name,
        )
    return results


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, dict]:
    config = validate(
        bench_config(
            grid={**GRID, "estimators": ["corr", "odd"]},
            mist={"splits": ["test_imd"], "estimators": ["corr"]},
        )
    )
    return build_results(tmp_path_factory.mktemp("base"), config), config


@pytest.fixture
def results(base, tmp_path) -> tuple[Path, dict]:
    """A private copy of the shared results folder (time stamps kept)."""
    src, config = base
    dst = tmp_path / "results"
    shutil.copytree(src, dst)
    return dst, config


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def lost(before: dict[str, str], root: Path, *damaged: Path) -> int:
    """Completed result files the fault (or its handling) changed or removed, besides the ones it damaged."""
    skip = {str(p.relative_to(root)) for p in damaged}
    after = snapshot(root)
    return sum(1 for rel, digest in before.items() if rel not in skip and after.get(rel) != digest)


def clean(text: str, root: Path, tmp: Path | None = None) -> str:
    """A message as the docs show it: results/ for the results folder, /tmp for the test's own temp folder."""
    text = " ".join(text.split()).replace(str(root), "results")
    return text.replace(str(tmp), "/tmp") if tmp is not None else text


def shard_of(results: Path, shard: int = 1) -> Path:
    return results / "meta" / "test_imd" / f"shard-{shard:04d}.parquet"


def rewrite_shard(path: Path, edit) -> None:
    """Apply ``edit(rows: list[dict]) -> list[dict]`` to a shard's rows and write it back as valid Parquet."""
    table = pq.read_table(path)
    rows = edit(table.to_pylist())
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path, write_page_checksum=True)


def reid(row: dict) -> dict:
    """The row with its sample id recomputed from its columns (a consistent, deliberate edit)."""
    return {**row, "sample_id": sample_id(*(row[c] for c in ID_COLUMNS))}


def mist_part(results: Path, config: dict, part: int = 1) -> tuple[BenchmarkPlan, Path]:
    plan = BenchmarkPlan.from_config("mist", config)
    return plan, planned_parts(plan, results)[part]


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


def cli(*args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output, result.exception


def cli_outcome(code: int, output: str, exc: BaseException | None, *names: str) -> str:
    if exc is not None and not isinstance(exc, SystemExit):
        return "traceback"
    if code == 0:
        return "silently wrong"
    return "clear error" if all(n in " ".join(output.split()) for n in names) else "traceback"


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


# --------------------------------------------------------------------------------------------- shard content


def _nan(rows):
    rows[2]["mi"] = math.nan
    return rows


def _negative(rows):
    rows[2]["mi"] = -0.3
    return rows


def _shifted(rows):
    rows[2]["mi"] += 0.25
    return rows


def _params(rows):
    params = json.loads(rows[2]["params"])
    key = next(k for k, v in params.items() if isinstance(v, float))
    params[key] *= 0.5
    rows[2] = reid({**rows[2], "params": json.dumps(params, sort_keys=True, separators=(",", ":"))})
    return rows


def _duplicate(rows):
    return [*rows, dict(rows[0])]


def _n_reid(rows):
    rows[1] = reid({**rows[1], "n": rows[1]["n"] + 1})
    return rows


def _n_edit(rows):
    rows[1]["n"] += 1
    return rows


def _other_shard(rows):
    return pq.read_table(OTHER_SHARD[0]).to_pylist()  # a complete, consistent shard: but not this one


OTHER_SHARD: list[Path] = []
SHARD_FAULTS = {
    "mi is NaN": (_nan, 2, "has mi = nan"),
    "mi is negative": (_negative, 2, "has mi = -0.3"),
    "mi edited (+0.25 nats)": (_shifted, 2, "but its parameters"),
    "params edited, sample id recomputed to match": (_params, 2, "but its parameters"),
    "a repeated sample_id": (_duplicate, 0, "appears 2 times"),
    "n edited": (_n_edit, 1, "the id is not the hash"),
    "n disagreeing with x (sample id recomputed)": (_n_reid, 1, "x values, but n*dim_x"),
    "a valid shard of the same split put in its place": (_other_shard, 0, "not planned there"),
}


@pytest.mark.parametrize("case", list(SHARD_FAULTS))
def test_a_shard_with_wrong_values_is_refused_naming_shard_and_sample(results, ledger, case) -> None:
    root, config = results
    edit, row, says = SHARD_FAULTS[case]
    shard = shard_of(root)
    original = pq.read_table(shard).to_pylist()
    OTHER_SHARD[:] = [shard_of(root, 2)]
    rewrite_shard(shard, edit)
    bad_id = pq.read_table(shard).to_pylist()[row]["sample_id"]
    plan, part = mist_part(root, config)
    part.unlink()  # the estimate job reading this shard runs again
    before = snapshot(root)

    entry = config["estimators"]["corr"]
    outcome, message = attempt(
        lambda: run_part(plan, "corr", entry, 1, part, meta_root=root / "meta"), (ShardError,), str(shard), bad_id, says
    )
    changed = lost(before, root, shard)
    # the user's fix: delete the shard, regenerate it (byte-identical), estimate again
    shard.unlink()
    generate_split(config, "test_imd", root / "meta", progress=False)
    table = run_part(plan, "corr", entry, 1, part, meta_root=root / "meta")
    regenerated = pq.read_table(shard).to_pylist() == original
    ledger(
        group="content integrity",
        fault=f"shard: {case}",
        injected="a meta shard rewritten as valid Parquet (page checksums intact)",
        expected="ShardError naming the shard and the sample before anything is estimated",
        observed=message.replace(str(root), "results")[:200],
        outcome=outcome,
        results_lost=changed,
        rerun_work="delete the shard: regenerated, then the part estimated",
        identical=regenerated and table.num_rows == len(original),
    )
    assert outcome == "clear error", message
    assert changed == 0 and regenerated


def test_monte_carlo_mi_is_checked_within_its_error_bound(tmp_path, ledger) -> None:
    config = validate(
        {
            "meta": {
                "shard_size": 4,
                "splits": {
                    "mc": {
                        "root_seed": 5,
                        "count": 4,
                        "mixture": ["mixture-bimodal-base", "mixture-random-base"],
                        "n": {"low": 10, "high": 20},
                        "dims": {"x": [1, 2], "y": [1, 2]},
                    }
                },
            }
        }
    )
    shard = generate_split(config, "mc", tmp_path, progress=False)[0]
    untouched = [meta["sample_id"] for _, _, meta in read_shards(shard)]  # an intact shard passes
    rewrite_shard(shard, _shifted)
    bad_id = pq.read_table(shard).to_pylist()[2]["sample_id"]
    outcome, message = attempt(lambda: list(read_shards(shard)), (ShardError,), str(shard), bad_id, "tolerance")
    ledger(
        group="content integrity",
        fault="shard: Monte-Carlo family (Gaussian mixture) mi edited (+0.25 nats)",
        injected="mi of one mixture row raised by 0.25 nats in a valid shard",
        expected="ShardError: outside 6 standard errors of a 2,048-draw re-estimate; intact rows pass",
        observed=message.replace(str(tmp_path), "")[:200],
        outcome=outcome,
        results_lost=0,
    )
    assert len(untouched) == 4
    assert outcome == "clear error", message


# --------------------------------------------------------------------------------------------- estimates parts


def _dup_cell(df, other):
    return pa.concat_tables([df, df.slice(0, 1)])


def _foreign_cell(df, other):
    return pa.concat_tables([df.slice(0, df.num_rows - 1), other.slice(0, 1)])


def _missing_cell(df, other):
    return df.slice(0, df.num_rows - 1)


def _mi_true(df, other):
    values = df["mi_true"].to_numpy().copy()
    values[0] += 0.1
    return df.set_column(df.schema.get_field_index("mi_true"), "mi_true", pa.array(values))


PART_FAULTS = {
    "a duplicated cell": (_dup_cell, "more than once"),
    "a foreign cell (a row of another part)": (_foreign_cell, "not cells of part 0"),
    "a planned cell missing": (_missing_cell, "misses 1 of its"),
    "mi_true edited (task grid)": (_mi_true, "the plan says"),
}


@pytest.mark.parametrize("case", [*PART_FAULTS, "copied from another estimator"])
def test_evaluation_refuses_a_part_without_exactly_its_planned_cells(results, ledger, case) -> None:
    root, config = results
    plan = BenchmarkPlan.from_config("grid", config)
    parts = planned_parts(plan, root)
    part = root / "estimates" / "grid" / "odd" / "part-0000.parquet"
    original = pq.read_table(part)
    if case == "copied from another estimator":
        shutil.copyfile(root / "estimates" / "grid" / "corr" / "part-0000.parquet", part)
        says = "rows of estimator 'corr' in a part of estimator 'odd'"
    else:
        edit, says = PART_FAULTS[case]
        pq.write_table(edit(original, pq.read_table(parts[plan.n_parts + 1])), part)  # odd, part 1
    before = snapshot(root)
    outcome, message = attempt(
        lambda: evaluate_benchmark(
            plan, parts, root / "metrics" / "grid.parquet", root / "calibration" / "grid.parquet", root / "figures"
        ),
        (ResultsIntegrityError,),
        str(part),
        says,
    )
    changed = lost(before, root, part)
    part.unlink()  # the fix the error names: delete, re-run
    again = run_part(plan, "odd", config["estimators"]["odd"], 0, part)
    identical = again.drop_columns(["seconds"]).equals(original.drop_columns(["seconds"]))
    ledger(
        group="content integrity",
        fault=f"estimates part: {case}",
        injected="an estimates part rewritten as valid Parquet with the estimates schema",
        expected="evaluation refuses it naming the file; metrics and figures untouched",
        observed=message.replace(str(root), "results")[:200],
        outcome=outcome,
        results_lost=changed,
        rerun_work="delete the part: 1 estimate job",
        identical=identical,
    )
    assert outcome == "clear error", message
    assert changed == 0 and identical


FOREIGN = pa.table({"id": [1, 2, 3], "value": ["a", "b", "c"]})


STRAYS = {
    "foreign Parquet at an estimates path: mibench query": "estimates/grid/stray/part-0000.parquet",
    "foreign Parquet at an estimates path: mibench report": "estimates/grid/stray/part-0000.parquet",
    "foreign Parquet at a meta shard path: mibench query": "meta/elsewhere/shard-0000.parquet",
    "foreign Parquet in place of a metrics file: mibench report": "metrics/grid.parquet",
    "foreign Parquet in place of a metrics file: mibench where": "metrics/grid.parquet",
    "Parquet outside the layout (meta/notes.parquet): mibench query": "meta/notes.parquet",
}


@pytest.mark.parametrize("case", list(STRAYS))
def test_a_parquet_file_from_elsewhere_is_named_never_unioned(results, ledger, case) -> None:
    root, config = results
    stray = root / STRAYS[case]
    stray.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(FOREIGN, stray)
    before = snapshot(root)
    meta_rows = sum(pq.read_metadata(p).num_rows for p in (root / "meta").rglob("shard-*.parquet") if p != stray)
    report = root / "report" / "index.html"
    if "outside the layout" in case:
        code, output, exc = cli("query", "SELECT count(*) AS c FROM meta", "--results", str(root), "-f", "csv")
        lines = output.splitlines()
        right = (
            code == 0 and '"c"' in lines and lines[lines.index('"c"') + 1] == str(meta_rows) and "not read" in output
        )
        outcome = "right answer" if right and str(stray) in " ".join(output.split()) else "silently wrong"
        message = " ".join(output.split())
    elif case.endswith("mibench query"):
        outcome, message = attempt(lambda: run_query("SELECT count(*) FROM meta", root), (QueryError,), str(stray))
    elif case.endswith("mibench where"):
        code, output, exc = cli("where", "--results", str(root))
        message = " ".join(output.split())
        outcome = cli_outcome(code, output, exc, str(stray))
    elif "estimates" in case:  # the report reads only planned parts: the stray is not read at all
        outcome, message = attempt(lambda: report_from_disk(config, root, report), (ResultsIntegrityError,))
        outcome = "right answer" if outcome == "silently wrong" and report.exists() else outcome
        message = "report written from the planned parts only" if outcome == "right answer" else message
    else:
        outcome, message = attempt(lambda: report_from_disk(config, root, report), (ResultsIntegrityError,), str(stray))
    ledger(
        group="content integrity",
        fault=case,
        injected=f"a 3-row Parquet table (columns id, value) written to {stray.relative_to(root.parent)}",
        expected="named in a clear error, or not read and named; never unioned into a view",
        observed=message.replace(str(root), "results")[:200],
        outcome=outcome,
        results_lost=lost(before, root, report),
    )
    assert outcome in ("clear error", "right answer"), message


# ------------------------------------------------------------------------------------------------- checkpoints


def _set(path: tuple[str, ...], value):
    def edit(cfg: dict) -> None:
        target = cfg
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value

    return edit


CHECKPOINT_EDITS = {
    "attention heads (shapes unchanged)": (_set(("architecture", "heads"), 2), "edited after training"),
    "normalisation": (
        lambda cfg: (_set(("architecture", "normalisation"), "robust")(cfg), _set(("normalisation",), "robust")(cfg)),
        "edited after training",
    ),
    "τ grid": (_set(("architecture", "taus"), lambda t: [round(t[0] * 0.9, 6), *t[1:]]), "edited after training"),
    "top-level taus only": (_set(("taus",), lambda t: [round(t[0] * 0.9, 6), *t[1:]]), "edited after training"),
    "training section": (_set(("training",), {"steps_done": 10**6}), "config_sha256"),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    weights, _ = save_checkpoint(
        MISTModel(PRESETS["tiny"]), tmp_path_factory.mktemp("ckpt") / "model.safetensors", {"training": {}}
    )
    return weights


@pytest.mark.parametrize("case", list(CHECKPOINT_EDITS))
def test_an_edited_model_json_is_refused(checkpoint, tmp_path, ledger, case) -> None:
    edit, says = CHECKPOINT_EDITS[case]
    weights = tmp_path / "model.safetensors"
    shutil.copyfile(checkpoint, weights)
    cfg = json.loads(checkpoint.with_suffix(".json").read_text())
    load_model(checkpoint)  # the untouched checkpoint loads
    edit(cfg)
    weights.with_suffix(".json").write_text(json.dumps(cfg, indent=2))
    outcome, message = attempt(lambda: load_model(weights), (CheckpointError,), "model.json", says)
    ledger(
        group="content integrity",
        fault=f"model.json edited: {case}",
        injected="a field of a trained checkpoint's model.json changed by hand",
        expected="CheckpointError naming model.json; nothing loads",
        observed=message.replace(str(tmp_path), "")[:200],
        outcome=outcome,
        results_lost=0,
    )
    assert outcome == "clear error", message


# ---------------------------------------------------------------------------------------------- honest exits


def test_mibench_ui_refuses_a_port_in_use_and_a_tracking_server(results, monkeypatch, ledger) -> None:
    root, _ = results
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own store, whatever ran before
    import mlflow

    mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_experiments()  # a real, empty store
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        start = time.monotonic()
        code, output, exc = cli("ui", "--results", str(root), "--port", str(port))
        seconds = time.monotonic() - start
    outcome = cli_outcome(code, output, exc, f"127.0.0.1:{port}", "address already in use")
    ledger(
        group="honest exits",
        fault="mibench ui: its port in use",
        injected="a socket listening on the port before `mibench ui --port` starts",
        expected="exit 1 naming the port and 'address already in use'; no URL printed",
        observed=f"exit {code} after {seconds:.1f} s: {' '.join(output.split())[:150]}",
        outcome=outcome if "http://" not in output else "silently wrong",
        results_lost=0,
    )
    assert outcome == "clear error" and "http://" not in output, output

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example.invalid:5000")
    code, output, exc = cli("ui", "--results", str(root))
    outcome = cli_outcome(code, output, exc, "http://mlflow.example.invalid:5000", "serves its own UI")
    ledger(
        group="honest exits",
        fault="mibench ui: a remote tracking URI",
        injected="MLFLOW_TRACKING_URI=http://mlflow.example.invalid:5000",
        expected="exit 1: that server serves its own UI; no traceback",
        observed=f"exit {code}: {' '.join(output.split())[:150]}",
        outcome=outcome,
        results_lost=0,
    )
    assert outcome == "clear error", output


def test_every_output_gets_the_same_permissions(base, tmp_path, ledger) -> None:
    """Parquet, figures, the report and checkpoints: 0666 & ~umask (group-readable on a shared filesystem)."""
    _, config = base
    old = os.umask(0o027)
    try:
        results = build_results(tmp_path, config)
        report_from_disk(config, results, results / "report" / "index.html")
        save_checkpoint(MISTModel(PRESETS["tiny"]), results / "models" / "m" / "model.safetensors")
    finally:
        os.umask(old)
    kinds = {
        "parquet": results / "metrics" / "grid.parquet",
        "shard": shard_of(results, 0),
        "figure": results / "figures" / "grid" / "estimate_vs_true.png",
        "report": results / "report" / "index.html",
        "checkpoint weights": results / "models" / "m" / "model.safetensors",
        "checkpoint json": results / "models" / "m" / "model.json",
    }
    modes = {kind: oct(path.stat().st_mode & 0o777) for kind, path in kinds.items()}
    outcome = "right answer" if set(modes.values()) == {"0o640"} else "silently wrong"
    ledger(
        group="honest exits",
        fault="permissions of figures, report and checkpoints",
        injected="umask 027 (a group-shared cluster filesystem)",
        expected="every output 0640 like Parquet (figures and checkpoints were 0600)",
        observed=", ".join(f"{k} {v}" for k, v in modes.items()),
        outcome=outcome,
        results_lost=0,
    )
    assert set(modes.values()) == {"0o640"}, modes


@pytest.mark.slow
def test_mibench_ui_serves_then_stops_with_its_server(results, venv_env, ledger) -> None:
    root, _ = results
    import mlflow

    mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_experiments()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mibench.cli", "ui", "--results", str(root), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=venv_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = time.monotonic()
        line = proc.stdout.readline()  # printed only once the UI answers
        ready = time.monotonic() - start
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            health = response.read().decode()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as probe:
        stopped = probe.connect_ex(("127.0.0.1", port)) != 0
    right = f"http://127.0.0.1:{port}" in line and health == "OK" and proc.returncode == 0 and stopped
    ledger(
        group="honest exits",
        fault="mibench ui: serve, then SIGTERM",
        injected="`mibench ui` on a free port, one request, then SIGTERM",
        expected="URL printed only once serving; exit 0 and the server stopped with it",
        observed=f"URL after {ready:.0f} s, /health {health!r}, exit {proc.returncode}, port closed: {stopped}",
        outcome="right answer" if right else "silently wrong",
        results_lost=0,
    )
    assert right, (line, health, proc.returncode, stopped)
