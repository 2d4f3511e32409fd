"""Batched inference: many datasets, one forward pass per size bucket, equal to one-at-a-time results.

Samples are checked (:func:`mibench.inputs.check_inputs`: the estimators' rules), normalised, sorted by size
and grouped into buckets of at most ``max_cells`` padded cells (bounding memory); masks make every output
independent of what it was batched with, up to float32 rounding (a batch's matrix products may round
differently from one dataset's: ~1e-7 relative).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mibench.inputs import check_inputs
from mibench.learned.batching import collate, prepare, token_buckets
from mibench.learned.checkpoint import load_model
from mibench.learned.model import MISTModel

_CACHE: dict[tuple, tuple[MISTModel, dict]] = {}
_LOCK = threading.Lock()


def cached_model(path: str | os.PathLike, device: torch.device) -> tuple[MISTModel, dict]:
    """Load a checkpoint once per process (``mist`` and ``mist_qr`` of one checkpoint share the model)."""
    path = Path(path).resolve()
    stat = path.stat() if path.exists() else None
    key = (str(path), stat.st_mtime_ns if stat else None, stat.st_size if stat else None, str(device))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_model(path, device)
        return _CACHE[key]


@torch.inference_mode()  # cheaper dispatch than no_grad: ~15 % of a small dataset's forward
def predict(
    model: MISTModel,
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    device: torch.device | str = "cpu",
    max_cells: int = 1 << 21,
    calibrated: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates (S,) and quantiles (S, len(taus)) for ``samples`` of (x (n, dx), y (n, dy)).

    Quantiles carry the model's conformal calibration (if it has one) unless ``calibrated`` is False.
    A sample that is not usable (non-finite values, too few rows, mismatched rows, no columns, not numeric)
    raises :class:`~mibench.inputs.EstimatorInputError` naming the sample and the problem.
    """
    device = torch.device(device)
    if model.training:  # walking every module costs ~2 ms, a quarter of a single small dataset's time
        model.eval()
    # the estimators' rules: without them a column mostly made of infinities came back as a NaN estimate, and
    # strings were ranked alphabetically by one channel and parsed as numbers by the other (float64 arrays out:
    # the channels compute in float64 anyway, so float32 input gives the values it always gave)
    checked = [
        check_inputs(x, y, reject_constant=False, who=f"predict: sample {i}") for i, (x, y) in enumerate(samples)
    ]
    prepared = [prepare(x, y, model.arch.normalisation) for x, y in checked]
    sizes = [(zx.shape[0], zx.shape[1], zy.shape[1]) for zx, zy in prepared]
    points = np.zeros(len(samples), np.float64)
    quantiles = np.zeros((len(samples), len(model.arch.taus)), np.float64)
    for group in token_buckets(sizes, max_cells):
        batch = collate([prepared[i] for i in group]).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            point, q = model(batch)
        points[group] = point.float().cpu().numpy()
        quantiles[group] = q.float().cpu().numpy()
    if calibrated and model.calibration is not None:
        quantiles = model.calibration.apply(quantiles, [zx.shape[0] for zx, _ in prepared])
    return points, quantiles
