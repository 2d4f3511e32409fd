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


def read_estimates(paths: Iterable[str | os.PathLike]) -> pl.DataFrame:
    """Estimates files, each schema-checked (a foreign file is named); evaluation uses ``read_planned_estimates``."""
    from mibench.layout import check_file

    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no estimates files given")
    for path in paths:
        check_file(path, "estimates")
    return pl.concat([pl.read_parquet(p) for p in paths], how="diagonal_relaxed")


def with_interval_columns(df: pl.DataFrame, levels: Sequence[float]) -> pl.DataFrame:
    """Add lo_<L>/hi_<L>: the central L-interval from quantiles, else the native interval at level L."""
    exprs = []
    for level in levels:
        lo_tau, hi_tau = round((1 - level) / 2, 10), round((1 + level) / 2, 10)
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
    df: pl.DataFrame, levels: Sequence[float], n_bins: Sequence[float] | None, dim_bins: Sequence[float]
) -> pl.DataFrame:
    """Add error, n_bin, dim_bin and interval columns to raw estimates."""
    ns = df["n"].to_list()
    # without configured edges every distinct n is its own bin (task grids use a few sizes)
    n_labels = [bin_label(n, n_bins) for n in ns] if n_bins else [str(n) for n in ns]
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
) -> pl.DataFrame:
    """The metrics table described in the module docstring (one row per estimator × grouping)."""
    prepared = prepare(df, levels, n_bins, dim_bins)
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


def ranking(metrics: pl.DataFrame) -> pl.DataFrame:
    """Overall line per estimator, best (lowest MSE) first; estimators with only errors come last."""
    overall = metrics.filter(pl.all_horizontal([pl.col(c) == ALL for c in GROUP_COLUMNS]))
    return overall.sort(["mse", "estimator"], nulls_last=True).with_row_index("rank", offset=1)


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
