"""Per-dataset input normalisation that mutual information cannot see.

``copula`` (default): every column is replaced by the normal scores of its ranks,
``Φ⁻¹((rank − ½)/n)`` with mid-ranks for ties. MI is invariant under strictly increasing maps of each
coordinate, and so is this transform: ``halfcube``, ``asinh``, ``wiggly`` and ``normal_cdf`` samples look
exactly like their ``base`` counterparts to the model, and scale/offset never matter. Values are bounded
(|z| ≤ Φ⁻¹(1 − 1/(2n)) ≈ 3.1 at n = 500), so bf16 activations stay tame.

``robust``: (x − median)/IQR·1.349, clipped to ±8 — invariant to affine maps only.

``copula+robust``: both, as two channels of every cell. The copula channel carries the dependence in a form no
marginal map can disturb; the robust channel keeps what ranks throw away, the *shape* of each marginal (heavy
tails, skew, atoms), which is scale-free yet tells the model which family a sample likely came from (e.g. a
Student-t's few degrees of freedom, whose MI term the copula scores alone show only through joint extremes).
On ``benchmarks/mist_vs_reference.py`` (60 CPU-s pilots) both channels gave 0.87× the copula's IMD MSE; at
150 CPU-s the three choices are within the seed spread (docs/learned.md).
Still invariant to units and offsets (but no longer to every monotone map).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata


@functools.lru_cache(maxsize=64)
def _scores(n: int) -> np.ndarray:
    """Normal scores Φ⁻¹((r − ½)/n) of the ranks r = 1..n as float32 (read-only, shared through the cache)."""
    scores = ndtri((np.arange(1, n + 1) - 0.5) / n).astype(np.float32)
    scores.setflags(write=False)
    return scores


def copula(values: np.ndarray) -> np.ndarray:
    """Normal scores of per-column mid-ranks of an (n, d) array (float32).

    Without ties (continuous data, the usual case) every column is a permutation of the same n scores, so
    one argsort per column places them (3-5x faster than ``rankdata``; identical values). Ties, NaN,
    infinities, non-numeric arrays and arrays that are not 2-D take ``rankdata``'s mid-rank path.
    """
    values = np.asarray(values)
    n = values.shape[0] if values.ndim else 0
    if values.ndim == 2 and values.dtype.kind in "biuf" and n > 0:
        order = np.argsort(values, axis=0, kind="stable")
        ordered = np.take_along_axis(values, order, axis=0)
        if np.isfinite(ordered).all() and not (ordered[1:] == ordered[:-1]).any():
            out = np.empty(values.shape, np.float32)
            np.put_along_axis(out, order, _scores(n)[:, None], axis=0)
            return out
    ranks = rankdata(values, method="average", axis=0)
    return ndtri((ranks - 0.5) / n).astype(np.float32)


def robust(values: np.ndarray) -> np.ndarray:
    """Median/IQR scaling per column, clipped (constant columns become 0)."""
    values = np.asarray(values, dtype=np.float64)
    med = np.median(values, axis=0)  # not percentile 50: it interpolates (inf·0 = NaN, and a 1-ulp difference)
    q75, q25 = np.percentile(values, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349
    if not (scale > 0).all():  # a column with half its values equal: its standard deviation, else 1
        fallback = np.std(values, axis=0)
        scale = np.where(scale > 0, scale, np.where(fallback > 0, fallback, 1.0))
    return np.clip((values - med) / scale, -8.0, 8.0).astype(np.float32)


NORMALISERS = {"copula": copula, "robust": robust}
#: every normalisation the model accepts, with the single-channel normalisers each stacks (in channel order)
CHANNELS: dict[str, tuple[str, ...]] = {
    "copula": ("copula",),
    "robust": ("robust",),
    "copula+robust": ("copula", "robust"),
}


def normalise(values: np.ndarray, method: str) -> np.ndarray:
    """Apply one single-channel normalisation (``copula`` or ``robust``) to one side (n, d) of a sample."""
    try:
        fn = NORMALISERS[method]
    except KeyError:
        raise ValueError(f"unknown normalisation {method!r}; known: {', '.join(NORMALISERS)}") from None
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    return fn(values)


def channels(values: np.ndarray, method: str) -> np.ndarray:
    """One side (n, d) as the (n, d, k) cell channels of the named normalisation (see :data:`CHANNELS`)."""
    try:
        names = CHANNELS[method]
    except KeyError:
        raise ValueError(f"unknown normalisation {method!r}; known: {', '.join(CHANNELS)}") from None
    return np.stack([normalise(values, name) for name in names], axis=-1)
