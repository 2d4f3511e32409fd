"""Estimators used only by the tests: a cheap real one and deliberately broken ones.

Loaded by config entries with ``module: tests.estimators_for_tests`` (the repository root is on PYTHONPATH in
the tests), which also exercises the ``module:`` mechanism for estimators living outside the package.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.stats import norm

from mibench.estimators import ESTIMATORS, Estimate, Estimator, register_estimator


def _register(cls):
    return cls if cls.name in ESTIMATORS else register_estimator(cls)


@_register
class FirstColumnCorrelation(Estimator):
    """-½ log(1 - r²) of the first columns' Pearson r, with a Fisher-z normal interval (exact for 1x1 Gaussians)."""

    name = "first_column_corr"

    def __init__(self, clip: float = 0.999999) -> None:
        super().__init__(clip=clip)
        self.clip = clip

    def estimate(self, x, y, *, seed):
        n = x.shape[0]
        r = float(np.clip(np.corrcoef(x[:, 0], y[:, 0])[0, 1], -self.clip, self.clip))
        se = 1.0 / math.sqrt(max(n - 3, 1))
        z = math.atanh(abs(r))

        def mi(zz: float) -> float:
            rr = math.tanh(max(zz, 0.0))
            return -0.5 * math.log(1 - rr * rr)

        taus = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)
        quantiles = {t: mi(z + norm.ppf(t) * se) for t in taus}
        return Estimate(
            mi(z), interval=(quantiles[0.025], quantiles[0.975]), level=0.95, quantiles=quantiles, extras={"r": r}
        )


@_register
class AlwaysFails(Estimator):
    name = "always_fails"

    def estimate(self, x, y, *, seed):
        raise RuntimeError("deliberate failure for the tests")


@_register
class FailsOnOddSeeds(Estimator):
    name = "fails_on_odd_seeds"

    def estimate(self, x, y, *, seed):
        if seed % 2:
            raise ValueError(f"odd seed {seed}")
        return Estimate(0.0)


@_register
class Sleepy(Estimator):
    """Sleeps ``seconds`` per cell (to exceed time budgets) and returns 0."""

    name = "sleepy"

    def __init__(self, seconds: float = 1.0) -> None:
        super().__init__(seconds=seconds)
        self.seconds = seconds

    def estimate(self, x, y, *, seed):
        time.sleep(self.seconds)
        return Estimate(0.0)


@_register
class ReturnsNaN(Estimator):
    name = "returns_nan"

    def estimate(self, x, y, *, seed):
        return Estimate(float("nan"))
