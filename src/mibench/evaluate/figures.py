"""Figures of a benchmark (PNG): where people would rather look than read."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from mibench.evaluate.metrics import level_key, with_interval_columns
from mibench.io import atomic_write_file

FIGURES = {
    "estimate_vs_true": "Estimate vs true MI per estimator (identity line dashed); colour = family.",
    "tasks": "Per task: mean estimate ± sd over seeds against n; true MI dashed.",
    "error_vs_n": "Mean absolute error against sample size per estimator (per split for meta-dataset benchmarks).",
    "coverage": "Coverage of the true MI by central intervals against the nominal level (diagonal = calibrated).",
    "calibration": "Fraction of cells with true MI ≤ q_τ against τ for estimators with quantiles (diagonal = calibrated).",
}


def _save(fig: plt.Figure, path: Path) -> Path:
    """Atomically, with the permissions of every other result (``mibench.io``; mkstemp alone made them 0600)."""
    try:
        return atomic_write_file(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)


def _empty(path: Path, message: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.35", wrap=True)
    return _save(fig, path)


def _grid(count: int, max_cols: int = 4, size: float = 3.2) -> tuple[plt.Figure, np.ndarray]:
    cols = min(max_cols, max(count, 1))
    rows = math.ceil(max(count, 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * 0.85 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, axes


def _n_axis(ax, ns) -> None:
    """Log n axis labelled with the sample sizes themselves (no 2x10^2 clutter)."""
    from matplotlib.ticker import NullFormatter

    ns = sorted({int(v) for v in ns})
    ax.set_xscale("log")
    if len(ns) <= 8:
        ax.set_xticks(ns, [str(v) for v in ns])
        ax.xaxis.set_minor_formatter(NullFormatter())


def estimate_vs_true(ok: pl.DataFrame, path: Path) -> Path:
    estimators = sorted(ok["estimator"].unique().to_list())
    if not estimators:
        return _empty(path, "no successful estimates")
    families = sorted(ok["family"].unique().to_list())
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    fig, axes = _grid(len(estimators))
    # The axes fit the true MI, not the worst estimate: one wild estimator must not squash every panel.
    # Estimates beyond the axes are drawn on its edge as triangles and counted in the panel title.
    span = float(ok["mi_true"].max()) - min(0.0, float(ok["mi_true"].min()))
    hi = float(ok["mi_true"].max()) + 0.3 * span + 0.1
    lo = min(0.0, float(ok["mi_true"].min())) - 0.1 * span - 0.05
    for ax, name in zip(axes.flat, estimators, strict=False):
        sub = ok.filter(pl.col("estimator") == name)
        for fam in families:
            part = sub.filter(pl.col("family") == fam)
            if not part.height:
                continue
            true, est = part["mi_true"].to_numpy(), part["mi_estimate"].to_numpy()
            inside = (est >= lo) & (est <= hi)
            ax.scatter(true[inside], est[inside], s=8, alpha=0.6, color=colours[fam], label=fam)
            for mask, edge, marker in ((est > hi, hi, "^"), (est < lo, lo, "v")):
                if mask.any():
                    ax.scatter(true[mask], np.full(mask.sum(), edge), s=18, marker=marker, color=colours[fam])
        beyond = int(((sub["mi_estimate"] > hi) | (sub["mi_estimate"] < lo)).sum())
        title = name + (f" ({beyond} off the axes)" if beyond else "")
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(title=title, xlabel="true MI (nats)", ylabel="estimate (nats)", xlim=(lo, hi), ylim=(lo, hi))
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Estimate vs true MI")
    return _save(fig, path)


def tasks_panel(ok: pl.DataFrame, path: Path) -> Path:
    tasks = sorted(ok["task"].unique().to_list())
    if not tasks or ok["split"].fill_null("-").ne("-").any():
        return _empty(path, "per-task panels are drawn for task-grid benchmarks")
    estimators = sorted(ok["estimator"].unique().to_list())
    fig, axes = _grid(len(tasks), max_cols=5, size=3.0)
    stats = ok.group_by(["task", "estimator", "n"]).agg(
        pl.col("mi_estimate").mean().alias("mean"),
        pl.col("mi_estimate").std().fill_null(0).alias("sd"),
        pl.col("mi_true").first(),
    )
    for ax, task in zip(axes.flat, tasks, strict=False):
        sub = stats.filter(pl.col("task") == task)
        for i, name in enumerate(estimators):
            line = sub.filter(pl.col("estimator") == name).sort("n")
            if line.height:
                ax.errorbar(
                    line["n"],
                    line["mean"],
                    yerr=line["sd"],
                    marker="o",
                    ms=3,
                    lw=1,
                    capsize=2,
                    label=name,
                    color=plt.get_cmap("tab10")(i % 10),
                )
        ax.axhline(float(sub["mi_true"][0]), color="k", ls="--", lw=0.8)
        _n_axis(ax, sub["n"])
        ax.set_title(task, fontsize=8)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("Estimates per task against n (true MI dashed)")
    return _save(fig, path)


def error_vs_n(ok: pl.DataFrame, path: Path) -> Path:
    if ok.is_empty():
        return _empty(path, "no successful estimates")
    ok = ok.with_columns(pl.col("split").fill_null("-"))
    splits = sorted(ok["split"].unique().to_list())
    fig, axes = _grid(len(splits), max_cols=3, size=4.0)
    for ax, split in zip(axes.flat, splits, strict=False):
        sub = ok.filter(pl.col("split") == split)
        for i, name in enumerate(sorted(sub["estimator"].unique().to_list())):
            line = (
                sub.filter(pl.col("estimator") == name)
                .group_by("n")
                .agg(pl.col("err").abs().mean().alias("mae"))
                .sort("n")
            )
            ax.plot(line["n"], line["mae"], marker="o", ms=3, label=name, color=plt.get_cmap("tab10")(i % 10))
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="n",
            ylabel="mean |error| (nats)",
            title="all tasks" if split == "-" else split,
        )
        ax.legend(fontsize=7)
    fig.suptitle("Error against sample size")
    return _save(fig, path)


def coverage(ok: pl.DataFrame, levels: Sequence[float], path: Path) -> Path:
    ok = with_interval_columns(ok, levels)
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    drawn = 0
    for i, name in enumerate(sorted(ok["estimator"].unique().to_list())):
        sub = ok.filter(pl.col("estimator") == name)
        xs, ys = [], []
        for level in levels:
            lo, hi = sub[f"lo_{level_key(level)}"], sub[f"hi_{level_key(level)}"]
            mask = lo.is_not_null() & hi.is_not_null()
            if mask.sum():
                truth = sub["mi_true"].filter(mask)
                xs.append(level)
                ys.append(float(((lo.filter(mask) <= truth) & (truth <= hi.filter(mask))).mean()))
        if xs:
            ax.plot(xs, ys, marker="o", label=name, color=plt.get_cmap("tab10")(i % 10))
            drawn += 1
    if not drawn:
        plt.close(fig)
        return _empty(path, "no estimator reported intervals (add bootstrap: to an estimator)")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal level", ylabel="coverage of true MI", title="Interval coverage")
    ax.legend(fontsize=7)
    return _save(fig, path)


def calibration(calib: pl.DataFrame, path: Path) -> Path:
    overall = calib.filter(pl.col("group") == "ALL")
    if overall.is_empty():
        return _empty(path, "no estimator reported quantiles")
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for i, name in enumerate(sorted(overall["estimator"].unique().to_list())):
        line = overall.filter(pl.col("estimator") == name).sort("tau")
        ax.plot(line["tau"], line["fraction"], marker="o", label=name, color=plt.get_cmap("tab10")(i % 10))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="τ", ylabel="fraction with true MI ≤ q_τ", title="Quantile calibration")
    ax.legend(fontsize=7)
    return _save(fig, path)


def make_figures(
    estimates: pl.DataFrame, calib: pl.DataFrame, levels: Sequence[float], out_dir: str | os.PathLike
) -> dict[str, Path]:
    """Draw every figure of :data:`FIGURES` into ``out_dir``; returns name -> path."""
    out = Path(out_dir)
    ok = estimates.filter(pl.col("status") == "ok").with_columns(
        (pl.col("mi_estimate") - pl.col("mi_true")).alias("err")
    )
    return {
        "estimate_vs_true": estimate_vs_true(ok, out / "estimate_vs_true.png"),
        "tasks": tasks_panel(ok, out / "tasks.png"),
        "error_vs_n": error_vs_n(ok, out / "error_vs_n.png"),
        "coverage": coverage(ok, levels, out / "coverage.png"),
        "calibration": calibration(calib, out / "calibration.png"),
    }
