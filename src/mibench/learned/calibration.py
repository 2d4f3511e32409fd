"""Split-conformal calibration of the quantile head: per-τ additive offsets fitted on held-out datasets.

Why: a quantile head trained with the pinball loss for a fixed budget is over-confident where it has learnt
least, at small n: on ``benchmarks/mist_vs_reference.py`` its 90 % central intervals covered 66 % of the true
MI at n ≤ 100 and 88 % above. Offsets fitted on held-out datasets of the training meta-distribution restore
the nominal level there, with the finite-sample guarantee of conformalised quantile regression (Romano,
Patterson & Candès, 2019) for datasets exchangeable with the held-out ones. Out of the meta-distribution
nothing is guaranteed (the benchmark measures it on its OoMD cells).

For every τ and every n-bin, the residuals ``r = MI − q_τ`` of the m held-out datasets give the offset
``δ_τ``: the ⌈τ(m+1)⌉-th smallest residual for τ ≥ ½ (so ``P(MI ≤ q_τ + δ_τ) ≥ τ``) and the ⌊τ(m+1)⌋-th
for τ < ½ (so ``P(MI < q_τ + δ_τ) ≤ τ``); a central interval at level 1 − 2α then covers at least 1 − 2α.
n-bins (coverage depends strongly on n) are cut at quantiles of the held-out n with at least
``min_per_bin`` datasets each, and never fewer than the most extreme τ needs (⌈1/min(τ, 1 − τ)⌉ − 1: 99 for
τ = 0.01); with fewer held-out datasets in all, the extreme τ get the largest (smallest) residual, which
does not reach their level, and a warning names them. Calibrated quantiles stay non-decreasing in τ
(running maximum upwards from the median, running minimum downwards, so no lower quantile is raised
above its level) and ≥ 0. The median moves too: ``mist_qr`` reports the calibrated median.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: fewer held-out datasets than this and no calibration is fitted (the offsets would be the extremes)
MIN_DATASETS = 20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantileCalibration:
    """Additive offsets (nats) per n-bin and τ, and where they came from."""

    taus: tuple[float, ...]
    n_upper: tuple[float, ...]  # inclusive upper edge of each n-bin; the last is +inf
    offsets: tuple[tuple[float, ...], ...]  # [bin][τ]
    counts: tuple[int, ...]  # held-out datasets per bin

    def apply(self, quantiles: np.ndarray, n: Sequence[float] | np.ndarray) -> np.ndarray:
        """Calibrated copy of ``quantiles`` (S, len(taus)) for datasets of sizes ``n`` (S,)."""
        quantiles = np.asarray(quantiles, dtype=np.float64)
        if quantiles.ndim != 2 or quantiles.shape[1] != len(self.taus):
            raise ValueError(f"quantiles of shape {quantiles.shape} do not match the {len(self.taus)} calibrated τ")
        bins = np.searchsorted(np.asarray(self.n_upper), np.asarray(n, dtype=np.float64), side="left")
        shifted = quantiles + np.asarray(self.offsets)[np.minimum(bins, len(self.n_upper) - 1)]
        mid = int(np.searchsorted(np.asarray(self.taus), 0.5, side="left"))  # first τ ≥ ½
        upper = np.maximum.accumulate(shifted[:, mid:], axis=1)
        lower = np.minimum.accumulate(shifted[:, :mid][:, ::-1], axis=1)[:, ::-1]
        if upper.shape[1]:
            lower = np.minimum(lower, upper[:, :1])
        return np.maximum(np.concatenate([lower, upper], axis=1), 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``inf`` as null), stored in the checkpoint's ``model.json``."""
        upper = [None if math.isinf(u) else u for u in self.n_upper]
        return {"method": "split-conformal per τ and n-bin", "taus": list(self.taus), "n_upper": upper,
                "offsets": [list(row) for row in self.offsets], "counts": list(self.counts)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantileCalibration:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed section."""
        try:
            taus = tuple(float(t) for t in data["taus"])
            upper = tuple(math.inf if u is None else float(u) for u in data["n_upper"])
            offsets = tuple(tuple(float(v) for v in row) for row in data["offsets"])
            counts = tuple(int(c) for c in data["counts"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed quantile calibration ({exc!r})") from None
        if not (len(upper) == len(offsets) == len(counts) >= 1) or any(len(row) != len(taus) for row in offsets):
            raise ValueError("malformed quantile calibration: bins, offsets and τ grid do not agree")
        if not all(math.isfinite(v) for row in offsets for v in row):
            raise ValueError("malformed quantile calibration: non-finite offsets")
        return cls(taus, upper, offsets, counts)


def datasets_needed(tau: float) -> int:
    """Held-out datasets a bin needs for the conformal offset of ``tau`` to reach its level: ⌈1/min(τ, 1−τ)⌉ − 1."""
    return math.ceil(1 / min(tau, 1 - tau) - 1e-9) - 1


def _offset(residuals: np.ndarray, tau: float) -> float:
    """The conformal offset of one τ from sorted residuals (see the module docstring)."""
    m = residuals.size
    if tau >= 0.5:
        rank = min(m, math.ceil(tau * (m + 1)))
    else:
        rank = max(1, math.floor(tau * (m + 1)))
    return float(residuals[rank - 1])


def n_bin_edges(n: np.ndarray, min_per_bin: int, max_bins: int) -> tuple[float, ...]:
    """Inclusive upper edges of up to ``max_bins`` n-bins, cut at quantiles of ``n``, each ≥ ``min_per_bin``."""
    bins = max(1, min(max_bins, n.size // max(1, min_per_bin)))
    while bins > 1:
        cuts = np.unique(np.quantile(n, np.arange(1, bins) / bins, method="higher"))
        upper = (*(float(c) for c in cuts), math.inf)
        counts = np.bincount(np.searchsorted(np.asarray(upper), n, side="left"), minlength=len(upper))
        if counts.min() >= min_per_bin and np.all(np.diff(cuts) > 0):
            return upper
        bins -= 1
    return (math.inf,)


def fit_calibration(
    quantiles: np.ndarray,
    targets: np.ndarray,
    n: np.ndarray,
    taus: Sequence[float],
    min_per_bin: int = 100,
    max_bins: int = 4,
) -> QuantileCalibration | None:
    """Offsets from held-out ``quantiles`` (m, T), true MI ``targets`` (m,) and sizes ``n`` (m,).

    Returns None (no calibration) with fewer than :data:`MIN_DATASETS` finite held-out datasets.
    """
    quantiles = np.asarray(quantiles, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    keep = np.isfinite(targets) & np.isfinite(quantiles).all(axis=1)
    quantiles, targets, n = quantiles[keep], targets[keep], n[keep]
    if targets.size < MIN_DATASETS:
        return None
    upper = n_bin_edges(n, max(min_per_bin, *(datasets_needed(t) for t in taus)), max_bins)
    which = np.searchsorted(np.asarray(upper), n, side="left")
    offsets, counts = [], []
    for b in range(len(upper)):
        rows = which == b
        residuals = np.sort(targets[rows, None] - quantiles[rows], axis=0)
        offsets.append(tuple(_offset(residuals[:, j], float(t)) for j, t in enumerate(taus)))
        counts.append(int(rows.sum()))
    short = [t for t in taus if min(counts) < datasets_needed(t)]
    if short:
        log.warning(
            "quantile calibration on %d held-out datasets per bin (fewest): τ = %s need more to reach their level",
            min(counts),
            ", ".join(f"{t:g}" for t in short),
        )
    return QuantileCalibration(tuple(float(t) for t in taus), upper, tuple(offsets), tuple(counts))
