"""The reference MIST implementation's *shape*, re-implemented for benchmarks only (never used as an estimator).

Each row [x, y] is zero-padded to a fixed ``width`` (silently truncated beyond, as the reference does), no
normalisation of the values, a linear embedding to ``dim``, 2 ISABs (``heads`` heads, FFN ``ffn``, ``inducing``
points) with post-norm residual blocks built on ``nn.MultiheadAttention``, pooling by multi-head attention
with ``seeds`` seeds, and a 3-layer MLP head on the flattened seeds. The defaults are the reference's size
class (4.7M parameters at width 64; the reference reports ~5.5M); :func:`matched_reference` scales the trunk's
width down to a given parameter count, keeping every other proportion, for side-by-side CPU runs.

Imported by ``benchmarks/train_throughput.py`` (throughput) and ``benchmarks/mist_vs_reference.py`` (accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class RefMAB(nn.Module):
    """Post-norm attention block: LN(q + MHA(q, k)), then LN(h + FFN(h))."""

    def __init__(self, dim: int = 256, heads: int = 16, ffn: int = 1024) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Linear(ffn, dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln1(q + self.attn(q, k, k, key_padding_mask=pad, need_weights=False)[0])
        return self.ln2(h + self.ffn(h))


class RefISAB(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 16, ffn: int = 1024, inducing: int = 32) -> None:
        super().__init__()
        self.points = nn.Parameter(torch.randn(1, inducing, dim) * 0.02)
        self.mab1, self.mab2 = RefMAB(dim, heads, ffn), RefMAB(dim, heads, ffn)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        h = self.mab1(self.points.expand(x.shape[0], -1, -1), x, pad)
        return self.mab2(x, h)


class ReferenceShape(nn.Module):
    """[x, y] padded to ``width`` columns -> ``dim`` -> 2 ISAB(``inducing``) -> PMA(``seeds``) -> 3-layer head."""

    def __init__(
        self,
        width: int = 64,
        dim: int = 256,
        heads: int = 16,
        ffn: int | None = None,
        inducing: int = 32,
        seeds: int = 10,
    ) -> None:
        super().__init__()
        ffn = 4 * dim if ffn is None else ffn
        self.width = width
        self.config = dict(width=width, dim=dim, heads=heads, ffn=ffn, inducing=inducing, seeds=seeds)
        self.inp = nn.Linear(width, dim)
        self.isabs = nn.ModuleList([RefISAB(dim, heads, ffn, inducing), RefISAB(dim, heads, ffn, inducing)])
        self.seeds = nn.Parameter(torch.randn(1, seeds, dim) * 0.02)
        self.pma = RefMAB(dim, heads, ffn)
        self.head = nn.Sequential(
            nn.Linear(seeds * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1)
        )

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, rows: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.inp(rows)
        for isab in self.isabs:
            h = isab(h, pad)
        pooled = self.pma(self.seeds.expand(h.shape[0], -1, -1), h, pad)
        return self.head(pooled.flatten(1)).squeeze(-1)


def reference_batch(
    samples: Sequence[tuple[np.ndarray, np.ndarray]], width: int = 64, targets: Sequence[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows [x, y] zero-padded to ``width`` (truncated beyond, as the reference does), padded to the largest n.

    Returns (rows (B, N, width) float32, key padding mask (B, N) True = padding, targets (B,)).
    """
    big_n = max(x.shape[0] for x, _ in samples)
    rows = np.zeros((len(samples), big_n, width), np.float32)
    pad = np.ones((len(samples), big_n), bool)
    for i, (x, y) in enumerate(samples):
        joint = np.concatenate([x, y], axis=1)[:, :width]
        rows[i, : len(joint), : joint.shape[1]] = joint
        pad[i, : len(joint)] = False
    target = torch.zeros(len(samples)) if targets is None else torch.as_tensor(np.asarray(targets, np.float32))
    return torch.from_numpy(rows), torch.from_numpy(pad), target


def matched_reference(parameters: int, width: int, inducing: int, seeds: int, head_dim: int = 8) -> ReferenceShape:
    """The reference shape whose parameter count is closest to ``parameters`` (trunk width a multiple of
    ``head_dim``, heads = width / head_dim, FFN 4× width, as the reference's 256/16/1024)."""
    best: ReferenceShape | None = None
    for dim in range(head_dim, 1025, head_dim):
        model = ReferenceShape(width, dim, dim // head_dim, 4 * dim, inducing, seeds)
        if best is None or abs(model.parameter_count() - parameters) < abs(best.parameter_count() - parameters):
            best = model
        if model.parameter_count() > parameters:
            break
    assert best is not None
    return best
