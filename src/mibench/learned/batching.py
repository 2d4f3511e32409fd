"""Padding samples of different n, dim_x, dim_y into one batch, and bucketing by size to cut padding.

A batch holds X and Y separately, each zero-padded to the largest column count on its side and every
sample padded to the largest n, with boolean masks for real rows and real columns. The model only ever
lets real cells see real cells (masks in every attention and pooling), so padding changes no output.

Because the model is exactly symmetric in X and Y, :func:`collate` puts the wider side first
(``swap`` where dim_x < dim_y): the padded width max(dx) + max(dy) over a batch shrinks, nothing else does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtri
from scipy.stats import rankdata

from mibench.learned.normalise import channels


@dataclass
class Batch:
    x: torch.Tensor  # (B, N, Cx, K) float32, normalised (K channels per cell), zero-padded
    y: torch.Tensor  # (B, N, Cy, K)
    rows: torch.Tensor  # (B, N) bool, real rows
    xcols: torch.Tensor  # (B, Cx) bool, real X columns
    ycols: torch.Tensor  # (B, Cy) bool
    n: torch.Tensor  # (B,) float32 sample sizes
    target: torch.Tensor | None = None  # (B,) float32 true MI (training/validation)
    stats: torch.Tensor | None = None  # (B, STATS) dependence statistics (:func:`dependence_stats`)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = {
            k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
            for k, v in self.__dict__.items()
        }
        return Batch(**move)

    def pin_memory(self) -> Batch:
        return Batch(**{k: (v.pin_memory() if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

    @property
    def cells(self) -> int:
        """Padded cell count B·N·(Cx+Cy): what the cell stage pays for."""
        return int(self.x.shape[0] * self.x.shape[1] * (self.x.shape[2] + self.y.shape[2]))


def prepare(x: np.ndarray, y: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalise both sides of one sample into (n, d, K) cell channels, wider side first (X/Y symmetric model)."""
    zx, zy = channels(x, method), channels(y, method)
    if zx.shape[1] < zy.shape[1]:
        zx, zy = zy, zx
    return zx, zy


#: dependence statistics per dataset (see :func:`dependence_stats`): their excess over independence
STATS = 6
#: independent samples whose mean statistics are the null of one (n, wider d, narrower d) (:func:`null_stats`)
NULL_DRAWS = 16
#: the null is drawn at every n up to this, and above it on a geometric grid (ratio NULL_GRID_RATIO), interpolated
NULL_EXACT_UP_TO = 32
NULL_GRID_RATIO = 1.125
#: above this n the null is not drawn but scaled: its value here times NULL_MAX_N / n (see :func:`null_stats`)
NULL_MAX_N = 2048


def _canonical(zx: np.ndarray, zy: np.ndarray) -> np.ndarray:
    """Squared canonical correlations of two standardised blocks (k, n, d), from shrunk correlation matrices.

    Shrinkage towards the identity, α = min(0.5, (dx + dy) / n), keeps the matrix positive definite when
    n ≤ dx + dy (where every sample canonical correlation would be 1). Returns (k, min(dx, dy)).
    """
    n, dx = zx.shape[1], zx.shape[2]
    joint = np.concatenate([zx, zy], axis=2)
    width = joint.shape[2]
    corr = np.einsum("kni,knj->kij", joint, joint) / n
    alpha = min(0.5, width / n)
    corr = (1 - alpha) * corr + alpha * np.eye(width)
    lx = np.linalg.cholesky(corr[:, :dx, :dx])
    ly = np.linalg.cholesky(corr[:, dx:, dx:])
    cross = np.linalg.solve(ly, np.swapaxes(np.linalg.solve(lx, corr[:, :dx, dx:]), 1, 2))  # Ly⁻¹ Ryx Lx⁻ᵀ
    rho = np.linalg.svd(cross, compute_uv=False)
    return np.clip(rho**2, 0.0, 1.0 - 1e-6)


def _standardise(values: np.ndarray) -> np.ndarray:
    values = values - values.mean(axis=-2, keepdims=True)
    scale = values.std(axis=-2, keepdims=True)
    return values / np.where(scale > 0, scale, 1.0)


def raw_stats(zx: np.ndarray, zy: np.ndarray) -> np.ndarray:
    """The six statistics of :func:`dependence_stats` before the null is subtracted: (6,) for one sample
    (n, d), or (k, 6) for k samples of one size stacked as (k, n, d)."""
    single = zx.ndim == 2
    # C order: reductions round by memory layout, and single and stacked samples must give the same values
    zx, zy = (np.ascontiguousarray(z[None] if single else z, dtype=np.float64) for z in (zx, zy))
    # the columns and their squares in one stacked pass (each linear-algebra call costs ~10 µs on its own)
    k = zx.shape[0]
    rho2 = _canonical(_standardise(np.concatenate([zx, zx * zx])), _standardise(np.concatenate([zy, zy * zy])))
    gauss = -0.5 * np.log1p(-rho2).sum(axis=1)
    out = []
    for part in (slice(0, k), slice(k, 2 * k)):
        out += [np.log1p(gauss[part]), rho2[part].max(axis=1), rho2[part].mean(axis=1)]
    stats = np.stack(out, axis=1)
    return stats[0] if single else stats


@functools.cache
def _null_drawn(n: int, d_wide: int, d_narrow: int) -> np.ndarray:
    """Mean raw statistics of :data:`NULL_DRAWS` independent samples of exactly this size (seeded by it)."""
    rng = np.random.default_rng([0x5EED, n, d_wide, d_narrow])
    zx = ndtri((rankdata(rng.standard_normal((NULL_DRAWS, n, d_wide)), axis=1) - 0.5) / n)
    zy = ndtri((rankdata(rng.standard_normal((NULL_DRAWS, n, d_narrow)), axis=1) - 0.5) / n)
    null = raw_stats(zx, zy).mean(axis=0)
    null.setflags(write=False)  # shared by every caller through the cache
    return null


def null_stats(n: int, d_wide: int, d_narrow: int) -> np.ndarray:
    """The statistics that independence gives at this size: a fixed function of (n, d_wide, d_narrow).

    For normal scores of ranks the null distribution does not depend on the marginals at all, so this is
    *the* null of every continuous independent pair with these sizes (with ``normalisation: robust`` it is
    still a fixed function of the sizes, so nothing is lost, but not that pair's null). Its Monte-Carlo
    error (~0.01) is fixed per size, the same in training and at inference. Drawn (:data:`NULL_DRAWS` samples, one
    stacked pass, cached) at every n ≤ :data:`NULL_EXACT_UP_TO`, where it changes fast, and above that on a
    geometric grid, linear in log n between grid points: a paper-scale run (n ≤ 500, d ≤ 32) then meets
    ~45 sizes per width pair instead of ~490. Above :data:`NULL_MAX_N` independent canonical correlations
    shrink as 1/n (so does the shrinkage), and the null is its value at NULL_MAX_N scaled by NULL_MAX_N / n:
    drawing it at n = 100,000 with 25 columns per side took 48 s and 3 GB, for values of ~10⁻⁴.
    """
    if n > NULL_MAX_N:
        return null_stats(NULL_MAX_N, d_wide, d_narrow) * (NULL_MAX_N / n)
    if n <= NULL_EXACT_UP_TO:
        return _null_drawn(n, d_wide, d_narrow)
    step = math.log(NULL_GRID_RATIO)
    k = math.floor(math.log(n / NULL_EXACT_UP_TO) / step)
    lo, hi = (round(NULL_EXACT_UP_TO * NULL_GRID_RATIO**j) for j in (k, k + 1))
    if n >= hi:  # rounding put n on the upper point
        return _null_drawn(hi, d_wide, d_narrow)
    weight = (math.log(n) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (1 - weight) * _null_drawn(lo, d_wide, d_narrow) + weight * _null_drawn(hi, d_wide, d_narrow)


def dependence_stats(zx: np.ndarray, zy: np.ndarray) -> np.ndarray:
    """Permutation- and swap-invariant summaries of one normalised sample's dependence (float64, (STATS,)).

    For the columns (with copula inputs: the normal scores, i.e. a Gaussian-copula fit) and for their squares
    (dependence in scale, e.g. the χ² shared by all coordinates of a Student-t), from the squared canonical
    correlations ρ² between X and Y: the Gaussian MI ``g = −½ Σ log(1 − ρ²)`` as ``log1p(g)``, the largest ρ²
    and the mean ρ². None of them changes when columns are permuted within X or within Y, when rows are
    permuted, or when X and Y are swapped, so the model keeps its exact symmetries; they cost O(n·d²) per
    dataset.

    Each is given as its *excess over independence* (minus :func:`null_stats` of the same n and widths, a
    fixed function of sizes the model also reads, so nothing is lost): at n ≤ dx + dy even independent
    columns have large canonical correlations, and a network that saw few such small samples in training
    read the raw values as strong dependence. On ``benchmarks/mist_vs_reference.py`` (60 CPU-s pilots, 2
    seeds) the excess form cut the IMD MSE at n = 10 from 3.0 to 1.8 nats² and at n = 31..94 by 10 %.
    """
    return batch_stats([(zx, zy)])[0]


def batch_stats(samples: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """:func:`dependence_stats` of many samples (S, STATS): one stacked pass per size, not one per sample.

    A training batch is bucketed by size, so most of its samples share (n, dx, dy); stacking them turns
    S small linear-algebra calls into a few batched ones (the values equal the one-by-one results).
    """
    out = np.empty((len(samples), STATS), np.float64)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (zx, zy) in enumerate(samples):
        groups.setdefault(zx.shape + zy.shape, []).append(i)
    for (n, dx, _, dy), members in groups.items():
        raw = raw_stats(np.stack([samples[i][0] for i in members]), np.stack([samples[i][1] for i in members]))
        out[members] = raw - null_stats(n, max(dx, dy), min(dx, dy))
    return out


def collate(prepared: Sequence[tuple[np.ndarray, np.ndarray]], targets: Sequence[float] | None = None) -> Batch:
    """Pad already-normalised samples into a :class:`Batch` (no further changes to values).

    Each side is (n, d, K) cell channels (:func:`prepare`) or (n, d), read as one channel. The dependence
    statistics are computed on channel 0 (the copula scores, wherever the normalisation has them).
    """
    b = len(prepared)
    if b == 0:
        raise ValueError("cannot collate an empty batch")
    prepared = [(zx[..., None] if zx.ndim == 2 else zx, zy[..., None] if zy.ndim == 2 else zy) for zx, zy in prepared]
    if len({side.shape[2] for pair in prepared for side in pair}) != 1:
        raise ValueError("cannot collate samples with different channel counts")
    ns = np.array([zx.shape[0] for zx, _ in prepared])
    dxs = np.array([zx.shape[1] for zx, _ in prepared])
    dys = np.array([zy.shape[1] for _, zy in prepared])
    big_n, cx, cy, k = int(ns.max()), int(dxs.max()), int(dys.max()), prepared[0][0].shape[2]
    x = np.zeros((b, big_n, cx, k), np.float32)
    y = np.zeros((b, big_n, cy, k), np.float32)
    for i, (zx, zy) in enumerate(prepared):
        x[i, : zx.shape[0], : zx.shape[1]] = zx
        y[i, : zy.shape[0], : zy.shape[1]] = zy
    batch = Batch(
        x=torch.from_numpy(x),
        y=torch.from_numpy(y),
        rows=torch.from_numpy(np.arange(big_n)[None, :] < ns[:, None]),
        xcols=torch.from_numpy(np.arange(cx)[None, :] < dxs[:, None]),
        ycols=torch.from_numpy(np.arange(cy)[None, :] < dys[:, None]),
        n=torch.from_numpy(ns.astype(np.float32)),
        stats=torch.from_numpy(batch_stats([(zx[..., 0], zy[..., 0]) for zx, zy in prepared]).astype(np.float32)),
    )
    if targets is not None:
        batch.target = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    return batch


def size_key(n: int, dim_x: int, dim_y: int) -> tuple[int, int, int]:
    """Sort key for bucketing: wider side, narrower side, then n (two-level buckets, see :func:`buckets`)."""
    return max(dim_x, dim_y), min(dim_x, dim_y), n


def buckets(sizes: Sequence[tuple[int, int, int]], batch_size: int) -> list[list[int]]:
    """Split indices of samples with (n, dim_x, dim_y) into batches of similar size.

    Samples are first grouped by their widths (about √(number of batches) groups), then sorted by n inside
    each group and cut into batches; padding then wastes little along either axis. Deterministic.
    """
    order = sorted(range(len(sizes)), key=lambda i: (*size_key(*sizes[i])[:2], sizes[i][0], i))
    n_batches = max(1, -(-len(order) // batch_size))
    groups = max(1, round(math.sqrt(n_batches)))
    per_group = -(-n_batches // groups) * batch_size  # whole batches per width group
    out: list[list[int]] = []
    for start in range(0, len(order), per_group):
        group = sorted(order[start : start + per_group], key=lambda i: (sizes[i][0], i))
        out.extend(group[s : s + batch_size] for s in range(0, len(group), batch_size))
    return out


def token_buckets(sizes: Sequence[tuple[int, int, int]], max_cells: int) -> list[list[int]]:
    """Inference buckets: sorted by size, each holding as many samples as fit ``max_cells`` padded cells."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i][0] * (sizes[i][1] + sizes[i][2]), i))
    out: list[list[int]] = []
    current: list[int] = []
    big_n = cx = cy = 0
    for i in order:
        n, dx, dy = sizes[i]
        wide, narrow = max(dx, dy), min(dx, dy)
        nn, nx, ny = max(big_n, n), max(cx, wide), max(cy, narrow)
        if current and (len(current) + 1) * nn * (nx + ny) > max_cells:
            out.append(current)
            current, nn, nx, ny = [], n, wide, narrow
        current.append(i)
        big_n, cx, cy = nn, nx, ny
    if current:
        out.append(current)
    return out
