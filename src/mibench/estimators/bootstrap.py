"""Percentile-bootstrap intervals and quantiles for any estimator.

Resample rows with replacement ``resamples`` times, estimate on each, and report the empirical quantiles
at τ = (1 ± L)/2 for every configured central level L (plus the median). The point value stays the
estimate on the full sample.

Resampling rows with replacement duplicates them, and a duplicated row is its own copy's nearest
neighbour at distance 0: nearest-neighbour and resubstitution estimators (KSG, KDE) then explode
upward (measured: KSG's 90% row-bootstrap interval was [0.77, 1.07] nats for a true MI of 0.22 at
n = 1000; jitter only turns the ties into near-ties). Estimators whose estimate is a mean of
per-sample terms, Î = (1/n) Σ φ_i, therefore expose ``estimate_with_terms(x, y, *, seed) -> (Estimate,
φ)``; for them the helper resamples the terms instead (one estimate instead of ``resamples + 1``, and
no duplicated rows). This ignores the weak dependence between the φ_i (each depends on its neighbours);
on Gaussians the resulting standard error was within 20% of the across-sample spread (KSG, n = 500 to
5000), with 75-88% empirical coverage at the 90% level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mibench.config.schema import DEFAULT_LEVELS, central_taus
from mibench.estimators.base import Estimate, Estimator


def taus_for_levels(levels: Sequence[float]) -> list[float]:
    """Quantile levels needed for central intervals at ``levels``, plus the median; sorted, rounded."""
    taus = {0.5}
    for level in levels:
        if not 0.0 < level < 1.0:
            raise ValueError(f"interval level must be in (0, 1), got {level}")
        taus.update(central_taus(level))
    return sorted(taus)


def bootstrap_estimate(
    estimator: Estimator,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    resamples: int = 100,
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> Estimate:
    """Point estimate on the full sample + percentile-bootstrap quantiles (x, y already validated)."""
    if resamples < 2:
        raise ValueError(f"bootstrap needs resamples >= 2, got {resamples}")
    rng = np.random.default_rng([seed, 0xB007])
    n = x.shape[0]
    values, failures = [], 0
    with_terms = getattr(estimator, "estimate_with_terms", None)
    if callable(with_terms):
        point, terms = with_terms(x, y, seed=seed)
        terms = np.asarray(terms, dtype=np.float64)
        if terms.shape != (n,):
            raise ValueError(f"{estimator.name}: estimate_with_terms returned {terms.shape} terms for n={n}")
        per_block = max(1, 2**22 // n)  # bound the (resamples, n) index matrix
        for start in range(0, resamples, per_block):
            idx = rng.integers(0, n, size=(min(per_block, resamples - start), n))
            values.extend(terms[idx].mean(axis=1).tolist())
        mode = "terms"
    else:
        point = estimator.estimate(x, y, seed=seed)
        for b in range(resamples):
            idx = rng.integers(0, n, size=n)
            try:
                values.append(estimator(x[idx], y[idx], seed=seed + b + 1).value)
            except ValueError:  # e.g. a resample with a constant column
                failures += 1
        mode = "rows"
    extras: dict[str, Any] = {
        **point.extras,
        "bootstrap_resamples": resamples,
        "bootstrap_failures": failures,
        "bootstrap_mode": mode,
    }
    if len(values) < max(2, resamples // 2):
        return Estimate(point.value, extras=extras)
    taus = taus_for_levels(levels)
    qs = np.quantile(np.asarray(values), taus)
    quantiles = {float(t): float(q) for t, q in zip(taus, qs, strict=True)}
    top = max(levels)
    lo, hi = central_taus(top)
    interval = (quantiles[lo], quantiles[hi])
    return Estimate(point.value, interval=interval, level=top, quantiles=quantiles, extras=extras)


class Bootstrapped(Estimator):
    """Wraps any estimator with percentile-bootstrap intervals (``bootstrap:`` in an estimator's config)."""

    def __init__(self, inner: Estimator, resamples: int = 100, levels: Sequence[float] = DEFAULT_LEVELS) -> None:
        # a wrapper, not a registered estimator: it records the inner hyperparameters plus its own settings
        taus_for_levels(levels)  # validate early
        self.hp = inner.hp
        self.params = {**inner.params, "bootstrap": {"resamples": int(resamples), "levels": list(levels)}}
        self.inner, self.resamples, self.levels = inner, int(resamples), tuple(levels)
        self.name = inner.name  # type: ignore[misc]
        self.min_n = inner.min_n
        self.reject_constant_columns = inner.reject_constant_columns  # type: ignore[misc]

    def estimate(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> Estimate:
        return bootstrap_estimate(self.inner, x, y, seed=seed, resamples=self.resamples, levels=self.levels)
