"""Evaluation: metrics and calibration tables, figures and the HTML report of a benchmark."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from mibench.benchmark import BenchmarkPlan
from mibench.evaluate.metrics import (
    compute_calibration,
    compute_metrics,
    rank_estimators,
    ranking_caption,
    read_estimates,
)
from mibench.io import atomic_write_table

__all__ = [
    "compute_calibration",
    "compute_metrics",
    "evaluate_benchmark",
    "rank_estimators",
    "ranking_caption",
    "read_estimates",
]


def evaluate_benchmark(
    plan: BenchmarkPlan,
    estimate_paths: Iterable[str | os.PathLike],
    metrics_path: str | os.PathLike,
    calibration_path: str | os.PathLike,
    figures_dir: str | os.PathLike,
) -> pl.DataFrame:
    """Metrics + calibration Parquet and the figures of one benchmark, from all its estimates parts."""
    from mibench.evaluate.figures import make_figures

    estimates = read_estimates(estimate_paths)
    metrics = compute_metrics(estimates, plan.levels, plan.n_bins, plan.dim_bins)
    calib = compute_calibration(estimates)
    atomic_write_table(metrics.to_arrow(), metrics_path)
    atomic_write_table(calib.to_arrow(), calibration_path)
    make_figures(estimates, calib, plan.levels, Path(figures_dir))
    return metrics
