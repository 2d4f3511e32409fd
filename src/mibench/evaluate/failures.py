"""Error and timeout rows per estimator: the summary printed at the end of every run and by ``mibench where``.

A cell that fails becomes an ``error`` or ``timeout`` row and its job succeeds (nothing already computed is
lost), so a benchmark can finish "successfully" with an estimator that never produced a number. This
module makes that visible where people look: :func:`print_run_summary` runs in the Snakefile's
``onsuccess``/``onerror`` handlers, and ``mibench where`` prints the same table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

import polars as pl
import pyarrow.parquet as pq

COLUMNS = ("benchmark", "estimator", "status", "error")


def failure_counts(estimates: pl.DataFrame) -> pl.DataFrame:
    """Per (benchmark, estimator): ``rows``, ``errors``, ``timeouts`` and one example message (the most frequent).

    Every estimator appears, also those without failures, so a caller can tell "no failures" from "absent".
    """
    if estimates.is_empty():
        return pl.DataFrame(
            schema={
                "benchmark": pl.String,
                "estimator": pl.String,
                "rows": pl.UInt32,
                "errors": pl.UInt32,
                "timeouts": pl.UInt32,
                "example": pl.String,
            }
        )
    keys = ["benchmark", "estimator"]
    counts = estimates.group_by(keys).agg(
        pl.len().cast(pl.UInt32).alias("rows"),
        (pl.col("status") == "error").sum().cast(pl.UInt32).alias("errors"),
        (pl.col("status") == "timeout").sum().cast(pl.UInt32).alias("timeouts"),
    )
    bad = estimates.filter(pl.col("status") != "ok").with_columns(pl.col("error").fill_null("(no message)"))
    examples = (
        bad.group_by([*keys, "error"])
        .agg(pl.len().alias("n"))
        .sort(["n", "error"], descending=[True, False])
        .group_by(keys, maintain_order=True)
        .first()
        .select([*keys, pl.col("error").alias("example")])
    )
    return counts.join(examples, on=keys, how="left").sort(keys)


def read_statuses(
    results_dir: str | os.PathLike = "results",
    benchmarks: Iterable[str] | None = None,
    parts: Mapping[str, Iterable[Path]] | None = None,
) -> tuple[pl.DataFrame, list[str]]:
    """Status columns of every complete estimates part on disk (of ``benchmarks`` if given; only the planned
    ``parts`` of each benchmark if given, so orphans of an older config are not counted).

    Returns the rows and the parts that could not be read (named, never a crash: this runs after failures).
    """
    root = Path(results_dir) / "estimates"
    names = sorted(benchmarks) if benchmarks is not None else sorted(p.name for p in root.glob("*") if p.is_dir())
    frames, unreadable = [], []
    for name in names:
        found = sorted((root / name).glob("*/part-*.parquet"))
        if parts is not None and name in parts:
            planned = {Path(p).resolve() for p in parts[name]}
            found = [p for p in found if p.resolve() in planned]
        for path in found:
            try:
                table = pq.read_table(path, columns=list(COLUMNS))
            except Exception as exc:
                unreadable.append(f"{path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                continue
            frames.append(pl.from_arrow(table))
    if not frames:
        return pl.DataFrame(schema=dict.fromkeys(COLUMNS, pl.String)), unreadable
    return pl.concat(frames, how="vertical_relaxed"), unreadable


def summary_lines(
    results_dir: str | os.PathLike = "results",
    benchmarks: Iterable[str] | None = None,
    planned_parts: Mapping[str, int] | None = None,
    width: int = 160,
    parts: Mapping[str, Iterable[Path]] | None = None,
) -> list[str]:
    """The run summary as lines: per estimator with failures, its error and timeout counts and one example."""
    rows, unreadable = read_statuses(results_dir, benchmarks, parts)
    counts = failure_counts(rows)
    failed = counts.filter((pl.col("errors") + pl.col("timeouts")) > 0)
    total, bad = int(counts["rows"].sum() or 0), int((counts["errors"] + counts["timeouts"]).sum() or 0)
    n_bench = rows["benchmark"].n_unique() if rows.height else 0
    if not rows.height and not unreadable:
        lines = [f"mibench: no estimates under {Path(results_dir) / 'estimates'} yet"]
    elif bad == 0:
        lines = [f"mibench: no error or timeout rows ({total} estimate rows, {n_bench} benchmark(s))"]
    else:
        lines = [f"mibench: {bad} of {total} estimate rows are errors or timeouts (per estimator, one example):"]
        head = max(len(f"{r['benchmark']}/{r['estimator']}") for r in failed.iter_rows(named=True))
        for r in failed.iter_rows(named=True):
            what = f"{r['errors']} error(s), {r['timeouts']} timeout(s) of {r['rows']}"
            line = f"  {r['benchmark'] + '/' + r['estimator']:<{head}}  {what:<32}  e.g. {r['example']}"
            lines.append(line if len(line) <= width else line[: width - 1] + "…")
    for name, planned in sorted((planned_parts or {}).items()):
        on_disk = (parts or {}).get(name)
        found = (
            sum(1 for p in on_disk if Path(p).exists())
            if on_disk is not None
            else len(list((Path(results_dir) / "estimates" / name).glob("*/part-*.parquet")))
        )
        if found < planned:
            lines.append(f"  {name}: {found} of {planned} estimates parts on disk (the others did not finish)")
    lines += [f"  unreadable: {u}" for u in unreadable]
    return lines


def print_run_summary(
    benchmarks: Mapping[str, object] | Iterable[str] | None = None,
    results_dir: str | os.PathLike = "results",
    stream: TextIO | None = None,
) -> None:
    """Print :func:`summary_lines` (the Snakefile's onsuccess/onerror hook); never raises.

    ``benchmarks``: names, or the workflow's ``{name: BenchmarkPlan}`` (then missing parts are counted too).
    """
    stream = stream or sys.stdout
    try:
        planned = parts = None
        if isinstance(benchmarks, Mapping):
            from mibench.evaluate.parts import planned_parts

            plans = {name: plan for name, plan in benchmarks.items() if hasattr(plan, "n_parts")}
            planned = {name: len(plan.estimators) * plan.n_parts for name, plan in plans.items()}  # type: ignore[attr-defined]
            parts = {name: planned_parts(plan, results_dir) for name, plan in plans.items()}  # type: ignore[arg-type]
        names = list(benchmarks) if benchmarks is not None else None
        text = "\n".join(summary_lines(results_dir, names, planned, parts=parts))
    except Exception as exc:  # a summary must never turn a finished run into a failed one
        text = f"mibench: could not summarise the estimates ({type(exc).__name__}: {exc})"
    print(text, file=stream, flush=True)
