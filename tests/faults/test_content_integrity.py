"""Content, not only bytes: tampered shards and estimates parts, stray Parquet files are refused by name."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.benchmark import BenchmarkPlan
from mibench.evaluate import evaluate_benchmark
from mibench.evaluate.parts import planned_parts
from mibench.evaluate.report import report_from_disk
from mibench.layout import ResultsIntegrityError
from mibench.meta import generate_split
from mibench.meta.shards import ShardError, read_shards
from mibench.query import QueryError, run_query
from mibench.runner import run_part
from tests.support.integrity import (
    cli,
    cli_outcome,
    lost,
    mist_part,
    reid,
    rewrite_shard,
    shard_of,
    snapshot,
    validate,
)
from tests.support.reliability import attempt

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
