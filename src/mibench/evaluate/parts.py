"""Read estimates parts for evaluation only after checking that each holds exactly its planned cells.

Checksummed, well-formed Parquet can still hold the wrong rows: a part copied from another run, rows
appended twice, a cell of another part. Each would silently change counts and rankings (a part with 11 rows
for 8 cells once flipped a ranking). So before a part is used, :func:`read_part` refuses it - with a
:class:`~mibench.layout.ResultsIntegrityError` naming the file - unless

* its path is a planned part ``estimates/{benchmark}/{estimator}/part-NNNN.parquet`` of this benchmark and
  its schema holds the estimates columns (:func:`mibench.layout.check_file`);
* every row names this benchmark and this estimator;
* its sample ids are exactly the plan's cells of that part (:meth:`BenchmarkPlan.part_sample_ids`), each
  once: no duplicate, no foreign cell, none missing;
* for task grids, every row's ``mi_true`` is the task's exact MI.

The fix the error suggests is always the same: delete the part and re-run, which estimates it again.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from mibench.benchmark import BenchmarkPlan
from mibench.layout import ResultsIntegrityError, check_file, part_of, part_path

REDO = "delete it and re-run to estimate the part again"


def _examples(items: Iterable[str], limit: int = 3) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_part(plan: BenchmarkPlan, estimator: str, part: int, df: pl.DataFrame, path: str | os.PathLike) -> None:
    """Raise :class:`ResultsIntegrityError` unless ``df`` holds exactly the planned cells of ``part``, once each."""
    for column, want in (("benchmark", plan.name), ("estimator", estimator)):
        found = sorted(v for v in df[column].unique().to_list() if v != want)
        if found:
            raise ResultsIntegrityError(
                f"{path}: rows of {column} {_examples(map(repr, found))} in a part of {column} {want!r}; "
                f"the file was copied from elsewhere: {REDO}"
            )
    planned = plan.part_sample_ids(part)
    counts = Counter(df["sample_id"].to_list())
    twice = [f"{sid} ({k} times)" for sid, k in counts.items() if k > 1]
    if twice:
        raise ResultsIntegrityError(
            f"{path}: holds {len(twice)} cell(s) more than once: {_examples(twice)}; each planned cell is "
            f"estimated once ({len(planned)} cells, {df.height} rows): {REDO}"
        )
    wanted = set(planned)
    foreign = [sid for sid in counts if sid not in wanted]
    if foreign:
        raise ResultsIntegrityError(
            f"{path}: holds {len(foreign)} cell(s) that are not cells of part {part} of benchmark {plan.name!r}: "
            f"{_examples(foreign)}; the rows come from another part, benchmark or configuration: {REDO}"
        )
    missing = [sid for sid in planned if sid not in counts]
    if missing:
        raise ResultsIntegrityError(
            f"{path}: misses {len(missing)} of its {len(planned)} planned cells ({_examples(missing)}): {REDO}"
        )
    truths = plan.grid_truths()
    if truths:
        for task, mi_true, sid in df.select("task", "mi_true", "sample_id").iter_rows():
            exact = truths.get(task)
            if exact is None or mi_true is None or not math.isclose(mi_true, exact, rel_tol=1e-9, abs_tol=1e-12):
                raise ResultsIntegrityError(
                    f"{path}: cell {sid} of task {task!r} has mi_true = {mi_true!r}, the plan says {exact!r}: {REDO}"
                )


def read_part(plan: BenchmarkPlan, path: str | os.PathLike) -> pl.DataFrame:
    """One estimates part, checked against ``plan`` (see the module docstring)."""
    check_file(path, "estimates")
    benchmark, estimator, part = part_of(path)
    if benchmark != plan.name or estimator not in plan.estimators or not 0 <= part < plan.n_parts:
        raise ResultsIntegrityError(
            f"{path}: not a planned part of benchmark {plan.name!r} (estimators {list(plan.estimators)}, parts "
            f"0..{plan.n_parts - 1}); evaluation reads only planned parts"
        )
    df = pl.read_parquet(path)
    check_part(plan, estimator, part, df, path)
    return df


def read_planned_estimates(plan: BenchmarkPlan, paths: Iterable[str | os.PathLike]) -> pl.DataFrame:
    """Every given part, each checked; one frame (parts written by other versions may lack nullable columns)."""
    frames = [read_part(plan, p) for p in paths]
    if not frames:
        raise ValueError(f"no estimates files given for benchmark {plan.name!r}")
    return pl.concat(frames, how="diagonal_relaxed")


def planned_parts(plan: BenchmarkPlan, results_dir: str | os.PathLike = "results") -> list[Path]:
    """Paths of every planned part of ``plan`` under ``results_dir`` (existing or not), estimator by estimator."""
    return [part_path(plan.name, e, part, results_dir) for e in plan.estimators for part in range(plan.n_parts)]
