"""Learned-model-specific evaluation: predictions over whole test splits, MSE per n-bin next to the paper.

General metrics (per family/n-bin/dim-bin MSE, bias, coverage, calibration curves for every estimator) live
in :mod:`mibench.evaluate`; this module exists for ``benchmarks/mist_accuracy.py``, which streams test shards
through a checkpoint without the estimate rule's per-cell bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mibench.learned.infer import predict
from mibench.learned.model import MISTModel
from mibench.meta.shards import read_shards

#: The MIST paper's n-bins and its reported MSE (arXiv 2511.18945), for side-by-side tables.
N_BINS: tuple[tuple[int, int], ...] = ((10, 100), (100, 300), (300, 500))
PAPER_MSE: dict[tuple[str, str], tuple[float, float, float]] = {
    ("mist", "test_imd"): (3.1, 0.34, 0.28),
    ("mist", "test_oomd"): (8.0, 7.3, 8.8),
    ("mist_qr", "test_imd"): (3.1, 0.31, 0.12),
}
LEVELS = (0.5, 0.8, 0.9, 0.95)


def n_bin(n: int) -> str:
    """'[10,100]', '(100,300]', '(300,500]' (n above 500 or below 10: 'other')."""
    for i, (lo, hi) in enumerate(N_BINS):
        if (lo <= n if i == 0 else lo < n) and n <= hi:
            return f"{'[' if i == 0 else '('}{lo},{hi}]"
    return "other"


def predict_shards(
    model: MISTModel,
    source: str | Path | Iterable,
    device: torch.device | str = "cpu",
    chunk: int = 2048,
    max_cells: int = 1 << 22,
) -> pl.DataFrame:
    """One row per sample of the shards: meta columns, true MI, MIST point, MIST-QR quantiles (memory: a chunk)."""
    taus = [round(t, 10) for t in model.arch.taus]
    frames: list[pl.DataFrame] = []
    samples, metas = [], []

    def flush() -> None:
        if not samples:
            return
        points, quantiles = predict(model, samples, device, max_cells)
        frame = pl.DataFrame(
            {
                "sample_id": [m["sample_id"] for m in metas],
                "split": [m["split"] for m in metas],
                "family": [m["family"] for m in metas],
                "transform": [m["transform"] for m in metas],
                "dim_x": [m["dim_x"] for m in metas],
                "dim_y": [m["dim_y"] for m in metas],
                "n": [m["n"] for m in metas],
                "mi_true": [m["mi"] for m in metas],
                "mist": points,
                "mist_qr": quantiles[:, taus.index(0.5)],
                "quantiles": quantiles.tolist(),
            }
        )
        frames.append(frame)
        samples.clear()
        metas.clear()

    for x, y, meta in read_shards(source):
        samples.append((x, y))
        metas.append(meta)
        if len(samples) >= chunk:
            flush()
    flush()
    out = pl.concat(frames)
    return out.with_columns(pl.col("n").map_elements(n_bin, return_dtype=pl.String).alias("n_bin")).with_columns(
        pl.lit(taus).alias("taus")
    )


def nbin_table(predictions: pl.DataFrame) -> pl.DataFrame:
    """MSE/bias/MAE per (split, estimator, n-bin) plus MIST-QR coverage of the true MI at each level."""
    taus = predictions["taus"][0].to_list()
    q = np.asarray(predictions["quantiles"].to_list())
    truth = predictions["mi_true"].to_numpy()
    cover = {}
    for level in LEVELS:
        lo, hi = round((1 - level) / 2, 10), round((1 + level) / 2, 10)
        if lo in taus and hi in taus:
            inside = (q[:, taus.index(lo)] <= truth) & (truth <= q[:, taus.index(hi)])
            cover[f"coverage_{int(level * 100)}"] = inside.astype(np.float64)
            cover[f"width_{int(level * 100)}"] = q[:, taus.index(hi)] - q[:, taus.index(lo)]
    base = predictions.select("split", "n_bin", "mi_true", "mist", "mist_qr").with_columns(
        **{k: pl.Series(v) for k, v in cover.items()}
    )
    rows = []
    for estimator in ("mist", "mist_qr"):
        err = pl.col(estimator) - pl.col("mi_true")
        aggs = [
            pl.len().alias("count"),
            (err**2).mean().alias("mse"),
            err.mean().alias("bias"),
            err.abs().mean().alias("mae"),
        ]
        if estimator == "mist_qr":
            aggs += [pl.col(k).mean() for k in cover]
        table = base.group_by("split", "n_bin").agg(aggs).with_columns(pl.lit(estimator).alias("estimator"))
        rows.append(table)
    order = {n_bin(hi): i for i, (_, hi) in enumerate(N_BINS)}
    out = (
        pl.concat(rows, how="diagonal")
        .with_columns(pl.col("n_bin").replace_strict(order, default=len(order)).alias("_order"))
        .sort("split", "estimator", "_order")
        .drop("_order")
        .select("split", "estimator", "n_bin", pl.exclude("split", "estimator", "n_bin"))
    )
    paper = []
    for split, estimator, nb in out.select("split", "estimator", "n_bin").iter_rows():
        ref = PAPER_MSE.get((estimator, split))
        labels = [n_bin(hi) for _, hi in N_BINS]
        paper.append(ref[labels.index(nb)] if ref is not None and nb in labels else None)
    return out.with_columns(pl.Series("paper_mse", paper, dtype=pl.Float64)).with_columns(
        (pl.col("mse") / pl.col("paper_mse")).alias("ratio_to_paper")
    )
