"""Evaluation: metrics and calibration tables, figures and the HTML report of a benchmark."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from mibench.benchmark import BenchmarkPlan
from mibench.evaluate.metrics import (
    compute_calibration,
    compute_metrics,
    rank_estimators,
    ranking_caption,
    task_summary,
)
from mibench.evaluate.parts import read_planned_estimates
from mibench.io import atomic_write_table

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "compute_calibration",
    "compute_metrics",
    "evaluate_benchmark",
    "rank_estimators",
    "ranking_caption",
    "read_planned_estimates",
    "task_summary",
]


def evaluate_benchmark(
    plan: BenchmarkPlan,
    estimate_paths: Iterable[str | os.PathLike],
    metrics_path: str | os.PathLike,
    calibration_path: str | os.PathLike,
    figures_dir: str | os.PathLike,
    task_metrics_path: str | os.PathLike | None = None,
    provenance: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Metrics + calibration Parquet and the figures of one benchmark, from all its estimates parts; with
    ``task_metrics_path`` also BMI's per-task table (:func:`task_summary`, empty for meta splits).

    Each part is checked to hold exactly its planned cells, once each (:mod:`mibench.evaluate.parts`).
    ``provenance`` (config fingerprint, git commit, ...) is stored in the files' Parquet metadata, so
    ``mibench where`` and the report can say which config and commit the numbers reflect.
    """
    from mibench.evaluate.figures import make_figures

    estimates = read_planned_estimates(plan, estimate_paths)
    metrics = compute_metrics(estimates, plan.levels, plan.n_bins, plan.dim_bins)
    calib = compute_calibration(estimates)
    meta = {f"mibench.{k}".encode(): str(v).encode() for k, v in (provenance or {}).items()}
    atomic_write_table(_with_metadata(metrics.to_arrow(), meta), metrics_path)
    atomic_write_table(_with_metadata(calib.to_arrow(), meta), calibration_path)
    if task_metrics_path is not None:
        atomic_write_table(_with_metadata(task_summary(estimates).to_arrow(), meta), task_metrics_path)
    make_figures(estimates, calib, plan.levels, Path(figures_dir))
    return metrics


def _with_metadata(table, meta: Mapping[bytes, bytes]):
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}) if meta else table


def read_provenance(path: str | os.PathLike) -> dict[str, str]:
    """The provenance stored in a metrics or calibration file (empty for files without it)."""
    import pyarrow.parquet as pq

    return schema_provenance(pq.read_schema(path))


def schema_provenance(schema: pa.Schema) -> dict[str, str]:
    """The provenance in a metrics or calibration file's schema (as :func:`read_provenance` reads it)."""
    meta = schema.metadata or {}
    return {k.decode().removeprefix("mibench."): v.decode() for k, v in meta.items() if k.startswith(b"mibench.")}
