"""Helpers of the learned-estimator tests: a tiny model entry, dependent samples, raw batches."""

from __future__ import annotations

import numpy as np
import torch

from mibench.learned.batching import Batch, collate, dependence_stats
from mibench.learned.model import MISTModel
from mibench.learned.normalise import channels

torch.set_num_threads(1)

REQUIRED_TAUS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)


def tiny_model_entry(steps: int = 40, **training) -> dict:
    return {
        "preset": "tiny",
        "device": "cpu",
        "threads": 1,
        "training": {
            "steps": steps,
            "batch_size": 16,
            "lr": 2e-3,
            "warmup_steps": 5,
            "validate_every": 10,
            "bucket_pool": 4,
            **training,
        },
        "data": {"train_count": 400, "validation_count": 48, "validation_split": "validation"},
    }


def dependent_sample(n: int, dx: int, dy: int, seed: int, rho: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dx))
    y = rho * x[:, [i % dx for i in range(dy)]] + np.sqrt(1 - rho**2) * rng.normal(size=(n, dy))
    return x, y


def raw_batch(pairs, dtype=torch.float64, method: str = "copula") -> Batch:
    """Collate without the wide-side-first swap, so X really is X (for the X<->Y symmetry test)."""
    prepared = [(channels(x, method), channels(y, method)) for x, y in pairs]
    batch = collate(prepared)
    batch.x, batch.y, batch.n = batch.x.to(dtype), batch.y.to(dtype), batch.n.to(dtype)
    stats = [dependence_stats(zx[..., 0], zy[..., 0]) for zx, zy in prepared]
    batch.stats = torch.from_numpy(np.stack(stats)).to(dtype)
    return batch


def outputs(model: MISTModel, pairs) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        point, q = model(raw_batch(pairs, method=model.arch.normalisation))
    return point.numpy(), q.numpy()
