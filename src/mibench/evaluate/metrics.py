"""Error and calibration metrics from estimates Parquet.

Metrics are computed per estimator for several groupings of the cells — by split, family, n-bin and
dim-bin (``dim_x + dim_y``) — and the grouping columns not used hold ``"ALL"``, so
``WHERE family = 'ALL' AND n_bin = 'ALL'`` is the overall line of an estimator. Columns:

``count`` (ok cells), ``errors`` (error + timeout cells), ``timeouts``, ``mse``, ``bias`` (mean of
estimate − truth), ``mae``, ``mre`` (mean of |error| / max(truth, 0.1 nats), so near-zero truths do not
explode it), ``coverage_<L>`` (fraction of ok cells whose central L-interval contains the true MI, null for
estimators without intervals), ``width_<L>`` (mean interval width), ``median_seconds``.

The calibration table holds, for estimators with quantiles, the fraction of cells with true MI ≤ q_τ for
each τ (a calibrated estimator follows the diagonal).

The task table (:func:`task_summary`, task-grid benchmarks) follows BMI's conventions (Czyż et al. 2023): per
estimator, task and n the ``mean`` estimate over the seeds (BMI reports it at n = 5,000 over 10 seeds), its
``std``, ``abs_log_ratio`` = |ln(mean / true MI)| and ``within`` (< ln 1.5, i.e. within a factor 1.5), and
``samples_needed``: the smallest n of the grid from which ``within`` holds at every larger n too (null when
it does not hold at the largest n).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

import polars as pl

from mibench.benchmark import bin_label
from mibench.config.schema import central_taus

GROUP_COLUMNS = ("split", "family", "n_bin", "dim_bin")
GROUPINGS: tuple[tuple[str, ...], ...] = (
    (),
    ("split",),
    ("family",),
    ("n_bin",),
    ("dim_bin",),
    ("split", "n_bin"),
    ("split", "family"),
    ("family", "n_bin"),
    ("split", "family", "n_bin", "dim_bin"),
)
ALL = "ALL"


def level_key(level: float) -> str:
    """Column suffix of a level: 0.95 -> '95', 0.5 -> '50', 0.975 -> '97.5'."""
    return f"{level * 100:g}"


#: What :func:`rank_estimators` reads (the diagnostics in ``extras`` can be large: neural test curves).
RANKING_COLUMNS = (
    "benchmark",
    "estimator",
    "sample_id",
    "status",
    "mi_true",
    "mi_estimate",
    "ci_low",
    "ci_high",
    "ci_level",
    "quantiles",
    "seconds",
)


def read_ranking_columns(paths: Iterable[str | os.PathLike]) -> pl.DataFrame:
    """The columns a ranking needs from estimates parts (``mibench where``, MLflow)."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, columns=list(RANKING_COLUMNS)) for p in paths]
    if not tables:
        raise ValueError("no estimates files given")
    return pl.concat([pl.from_arrow(t) for t in tables], how="vertical_relaxed")  # type: ignore[misc]


def with_interval_columns(df: pl.DataFrame, levels: Sequence[float]) -> pl.DataFrame:
    """Add lo_<L>/hi_<L>: the central L-interval from quantiles, else the native interval at level L."""
    exprs = []
    for level in levels:
        lo_tau, hi_tau = central_taus(level)
        key = level_key(level)

        def pick(tau: float) -> pl.Expr:
            return (
                pl.col("quantiles")
                .list.eval(
                    pl.element().filter((pl.element().struct.field("tau") - tau).abs() < 1e-9).struct.field("value")
                )
                .list.first()
            )

        native = (pl.col("ci_level") - level).abs() < 1e-9
        exprs += [
            pl.coalesce(pick(lo_tau), pl.when(native).then(pl.col("ci_low"))).alias(f"lo_{key}"),
            pl.coalesce(pick(hi_tau), pl.when(native).then(pl.col("ci_high"))).alias(f"hi_{key}"),
        ]
    return df.with_columns(exprs)


def prepare(
    df: pl.DataFrame,
    levels: Sequence[float],
    n_bins: Sequence[float] | None,
    dim_bins: Sequence[float],
    n_closed: str = "left",
) -> pl.DataFrame:
    """Add error, n_bin, dim_bin and interval columns to raw estimates (``n_closed``: see ``bin_label``)."""
    ns = df["n"].to_list()
    # without configured edges every distinct n is its own bin (task grids use a few sizes)
    n_labels = [bin_label(n, n_bins, n_closed) for n in ns] if n_bins else [str(n) for n in ns]
    dims = (df["dim_x"] + df["dim_y"]).to_list()
    df = df.with_columns(
        pl.Series("n_bin", n_labels, dtype=pl.String),
        pl.Series("dim_bin", [bin_label(d, dim_bins) for d in dims], dtype=pl.String),
        pl.col("split").fill_null("-"),
        (pl.col("mi_estimate") - pl.col("mi_true")).alias("err"),
    )
    return with_interval_columns(df, levels)


def _aggregations(levels: Sequence[float]) -> list[pl.Expr]:
    ok = pl.col("status") == "ok"
    err = pl.col("err").filter(ok)
    aggs = [
        ok.sum().alias("count"),
        (~ok).sum().alias("errors"),
        (pl.col("status") == "timeout").sum().alias("timeouts"),
        (err**2).mean().alias("mse"),
        err.mean().alias("bias"),
        err.abs().mean().alias("mae"),
        (err.abs() / pl.max_horizontal(pl.col("mi_true"), pl.lit(0.1)).filter(ok)).mean().alias("mre"),
    ]
    for level in levels:
        key = level_key(level)
        lo, hi = pl.col(f"lo_{key}").filter(ok), pl.col(f"hi_{key}").filter(ok)
        truth = pl.col("mi_true").filter(ok)
        has = lo.is_not_null() & hi.is_not_null()
        covered = ((lo <= truth) & (truth <= hi)).filter(has)
        aggs += [
            pl.when(has.sum() > 0).then(covered.cast(pl.Float64).mean()).alias(f"coverage_{key}"),
            pl.when(has.sum() > 0).then((hi - lo).filter(has).mean()).alias(f"width_{key}"),
        ]
    aggs.append(pl.col("seconds").filter(ok).median().alias("median_seconds"))
    return aggs


def compute_metrics(
    df: pl.DataFrame,
    levels: Sequence[float],
    n_bins: Sequence[float] | None = None,
    dim_bins: Sequence[float] = (2, 4, 10, 20, 40, 65),
    n_closed: str = "left",
) -> pl.DataFrame:
    """The metrics table described in the module docstring (one row per estimator × grouping).

    n-bins are [a, b) by default; ``n_closed="right"`` makes them (a, b] (the MIST paper's [10,100], (100,300]).
    """
    prepared = prepare(df, levels, n_bins, dim_bins, n_closed)
    aggs = _aggregations(levels)
    frames = []
    for grouping in GROUPINGS:
        keys = ["benchmark", "estimator", *grouping]
        out = prepared.group_by(keys).agg(aggs)
        missing = [c for c in GROUP_COLUMNS if c not in grouping]
        out = out.with_columns([pl.lit(ALL).alias(c) for c in missing])
        frames.append(
            out.select(
                [
                    "benchmark",
                    "estimator",
                    *GROUP_COLUMNS,
                    *[c for c in out.columns if c not in ("benchmark", "estimator", *GROUP_COLUMNS)],
                ]
            )
        )
    result = pl.concat(frames, how="vertical_relaxed").unique(
        subset=["benchmark", "estimator", *GROUP_COLUMNS], keep="first"
    )
    return result.sort(["benchmark", "estimator", *GROUP_COLUMNS])


def compute_calibration(df: pl.DataFrame, by: Sequence[str] = ("split",)) -> pl.DataFrame:
    """Fraction of cells with true MI ≤ q_τ, per estimator, τ and grouping (plus an ALL row)."""
    ok = df.filter((pl.col("status") == "ok") & pl.col("quantiles").is_not_null()).with_columns(
        pl.col("split").fill_null("-")
    )
    schema = {
        "benchmark": pl.String,
        "estimator": pl.String,
        "group": pl.String,
        "tau": pl.Float64,
        "fraction": pl.Float64,
        "count": pl.UInt32,
    }
    if ok.is_empty():
        return pl.DataFrame(schema=schema)
    long = (
        ok.select("benchmark", "estimator", *by, "mi_true", "quantiles")
        .explode("quantiles")
        .with_columns(
            pl.col("quantiles").struct.field("tau").alias("tau"), pl.col("quantiles").struct.field("value").alias("q")
        )
    )
    below = (pl.col("mi_true") <= pl.col("q")).cast(pl.Float64)
    frames = [
        long.group_by(["benchmark", "estimator", "tau"])
        .agg(below.mean().alias("fraction"), pl.len().cast(pl.UInt32).alias("count"))
        .with_columns(pl.lit(ALL).alias("group"))
    ]
    for col in by:
        frames.append(
            long.group_by(["benchmark", "estimator", col, "tau"])
            .agg(below.mean().alias("fraction"), pl.len().cast(pl.UInt32).alias("count"))
            .rename({col: "group"})
        )
    return pl.concat([f.select(list(schema)) for f in frames], how="vertical_relaxed").sort(
        ["benchmark", "estimator", "group", "tau"]
    )


GROUPS = ("complete", "with failures", "no estimates")


def common_cells(estimates: pl.DataFrame, estimators: Sequence[str] | None = None) -> pl.Series:
    """Sample ids every listed estimator scored (status ok); estimators that scored no cell are left out."""
    listed = list(estimators) if estimators is not None else estimates["estimator"].unique().to_list()
    ok = estimates.filter(pl.col("estimator").is_in(listed) & (pl.col("status") == "ok"))
    contributors = ok["estimator"].n_unique()
    return (
        ok.group_by("sample_id")
        .agg(pl.col("estimator").n_unique().alias("k"))
        .filter(pl.col("k") == contributors)["sample_id"]
        .sort()
    )


def rank_estimators(
    estimates: pl.DataFrame,
    estimators: Sequence[str] | None = None,
    levels: Sequence[float] = (),
    *,
    common: pl.Series | None = None,
) -> pl.DataFrame:
    """The one fair ranking (``mibench where``, the report and MLflow all show this table).

    Estimators are compared on the *common cells*: the cells every listed estimator scored (status ok),
    leaving out only estimators that scored none. ``mse``, ``bias``, ``mae``, ``mre`` and ``coverage_<L>``
    are over those cells, so every number in these columns is comparable. Estimators that scored every cell
    form the group ``complete``; estimators with error or timeout rows are ranked separately (group ``with
    failures``), and ``mse_own``, their MSE over their own scored cells, is marked ``own_comparable =
    false`` (for complete estimators it is the MSE over all cells). ``rank`` counts within a group (best MSE
    first).

    Columns: ``group``, ``rank``, ``estimator``, ``scored`` (k), ``cells`` (N: distinct cells of the listed
    estimators), ``errors``, ``timeouts``, ``common_cells``, ``mse``, ``bias``, ``mae``, ``mre``,
    ``coverage_<L>``/``width_<L>`` per level, ``mse_own``, ``own_comparable``, ``median_seconds`` (own ok
    cells).

    ``common``: ``common_cells(estimates, estimators)`` when the caller has it already (not recomputed).
    """
    listed = list(estimators) if estimators is not None else sorted(estimates["estimator"].unique().to_list())
    df = estimates.filter(pl.col("estimator").is_in(listed))
    cells = df["sample_id"].n_unique() if df.height else 0
    ok = df.filter(pl.col("status") == "ok").unique(subset=["estimator", "sample_id"], keep="first")
    if common is None:
        common = common_cells(df, listed)
    prepared = with_interval_columns(ok.with_columns((pl.col("mi_estimate") - pl.col("mi_true")).alias("err")), levels)
    keep = ["mse", "bias", "mae", "mre", *[f"{m}_{level_key(v)}" for v in levels for m in ("coverage", "width")]]
    on_common = (
        prepared.filter(pl.col("sample_id").is_in(common.implode()))
        .group_by("estimator")
        .agg(_aggregations(levels))
        .select(["estimator", *keep])
    )
    own = prepared.group_by("estimator").agg(
        (pl.col("err") ** 2).mean().alias("mse_own"), pl.col("seconds").median().alias("median_seconds")
    )
    base = pl.DataFrame({"estimator": listed}, schema={"estimator": pl.String})
    table = (
        base.join(_status_counts(df), on="estimator", how="left")
        .join(on_common, on="estimator", how="left")
        .join(own, on="estimator", how="left")
        .with_columns(
            pl.col("scored").fill_null(0).cast(pl.Int64),
            pl.col("errors").fill_null(0).cast(pl.Int64),
            pl.col("timeouts").fill_null(0).cast(pl.Int64),
            pl.lit(cells, dtype=pl.Int64).alias("cells"),
            pl.lit(len(common), dtype=pl.Int64).alias("common_cells"),
        )
    )
    first = ["group", "rank", "estimator", "scored", "cells", "errors", "timeouts", "common_cells", *keep]
    return _grouped_ranks(table).select([*first, "mse_own", "own_comparable", "median_seconds"])


def _status_counts(df: pl.DataFrame) -> pl.DataFrame:
    """Per estimator: distinct cells scored (ok), error rows and timeout rows, the numbers that decide its group."""
    return df.group_by("estimator").agg(
        pl.col("sample_id").filter(pl.col("status") == "ok").n_unique().alias("scored"),
        (pl.col("status") == "error").sum().alias("errors"),
        (pl.col("status") == "timeout").sum().alias("timeouts"),
    )


def _grouped_ranks(table: pl.DataFrame) -> pl.DataFrame:
    """``group`` (complete, with failures, no estimates), ``own_comparable`` and ``rank`` by MSE within a group,
    sorted group first: an estimator with failures never outranks a complete one by skipping hard cells."""
    table = (
        table.with_columns(
            pl.when(pl.col("scored") == 0)
            .then(pl.lit(GROUPS[2]))
            .when((pl.col("scored") == pl.col("cells")) & (pl.col("errors") + pl.col("timeouts") == 0))
            .then(pl.lit(GROUPS[0]))
            .otherwise(pl.lit(GROUPS[1]))
            .alias("group"),
            (pl.col("scored") == pl.col("cells")).alias("own_comparable"),
        )
        .with_columns(pl.col("group").replace_strict({g: i for i, g in enumerate(GROUPS)}).alias("_g"))
        .sort(["_g", "mse", "estimator"], nulls_last=True)
    )
    return table.with_columns(
        pl.when(pl.col("mse").is_not_null()).then(pl.col("mse").rank("ordinal").over("_g")).alias("rank")
    ).drop("_g")


def ranking_caption(table: pl.DataFrame) -> str:
    """'ranked by MSE on the 20 cells every listed estimator scored (of 32)': what every ranking table says.

    Estimators without a single estimate are left out of the common cells (else there would be none)."""
    if table.is_empty():
        return "no estimators"
    common, cells = int(table["common_cells"][0]), int(table["cells"][0])
    if (table["group"] == GROUPS[0]).all():
        return f"ranked by MSE on all {cells} cells (every listed estimator scored every cell)"
    if (table["group"] == GROUPS[2]).any():
        return f"ranked by MSE on the {common} cells every estimator with estimates scored (of {cells})"
    return f"ranked by MSE on the {common} cells every listed estimator scored (of {cells})"


#: BMI's tolerance for "samples needed": the estimate is within a factor 1.5 of the true MI.
BMI_RATIO = 1.5
TASK_SUMMARY_SCHEMA = {
    "benchmark": pl.String,
    "estimator": pl.String,
    "task": pl.String,
    "n": pl.Int64,
    "mi_true": pl.Float64,
    "mean": pl.Float64,
    "std": pl.Float64,
    "seeds": pl.UInt32,
    "errors": pl.UInt32,
    "abs_log_ratio": pl.Float64,
    "within": pl.Boolean,
    "samples_needed": pl.Int64,
}


def task_summary(df: pl.DataFrame, ratio: float = BMI_RATIO) -> pl.DataFrame:
    """BMI's per-task view of a task-grid benchmark (module docstring); empty for meta-split rows, whose
    cells at one (entry, n) are different distributions."""
    grid = df.filter(pl.col("split").is_null())
    if grid.is_empty():
        return pl.DataFrame(schema=TASK_SUMMARY_SCHEMA)
    ok = pl.col("status") == "ok"
    keys = ["benchmark", "estimator", "task", "n"]
    per_n = grid.group_by(keys).agg(
        pl.col("mi_true").first().alias("mi_true"),
        pl.col("mi_estimate").filter(ok).mean().alias("mean"),
        pl.col("mi_estimate").filter(ok).std().alias("std"),
        ok.sum().cast(pl.UInt32).alias("seeds"),
        (~ok).sum().cast(pl.UInt32).alias("errors"),
    )
    # |ln(mean / true)|: undefined (null) when either is not positive, which never counts as within
    positive = (pl.col("mean") > 0) & (pl.col("mi_true") > 0)
    per_n = per_n.with_columns(
        pl.when(positive).then((pl.col("mean") / pl.col("mi_true")).log().abs()).alias("abs_log_ratio")
    ).with_columns((pl.col("abs_log_ratio") < math.log(ratio)).fill_null(False).alias("within"))
    per_n = per_n.sort(keys)
    # samples needed: the smallest n after the last n that fails (null when the largest n fails)
    needed = []
    for (benchmark, estimator, task), group in per_n.group_by(["benchmark", "estimator", "task"]):
        group = group.sort("n")
        ns, within = group["n"].to_list(), group["within"].to_list()
        fails = [n for n, w in zip(ns, within, strict=True) if not w]
        after = [n for n in ns if not fails or n > fails[-1]]
        needed.append((benchmark, estimator, task, after[0] if after else None))
    needed_df = pl.DataFrame(
        needed,
        schema={"benchmark": pl.String, "estimator": pl.String, "task": pl.String, "samples_needed": pl.Int64},
        orient="row",
    )
    out = per_n.join(needed_df, on=["benchmark", "estimator", "task"], how="left")
    return out.select([pl.col(c).cast(t) for c, t in TASK_SUMMARY_SCHEMA.items()])
