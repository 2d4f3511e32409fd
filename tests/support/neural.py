"""Test estimators and helpers shared by the variational and consistency tests (closed-form Gaussian MI, deliberately broken estimators)."""

from __future__ import annotations

import math

import numpy as np

from mibench.estimators import (
    ESTIMATORS,
    Estimate,
    Estimator,
    EstimatorParams,
    load_builtin_estimators,
    register_estimator,
)
from mibench.tasks import TaskSpec

load_builtin_estimators()

BOUND_NAMES = ["mine", "dv", "nwj", "infonce", "js", "smile"]


def gaussian_task(mi: float, dim: int, transform: str = "base"):
    """dim independent pairs (X_i, Y_i), each with correlation ρ so that the total MI is ``mi`` nats."""
    rho = math.sqrt(1.0 - math.exp(-2.0 * mi / dim)) if mi > 0 else 0.0
    return TaskSpec("multinormal", "sparse", dim, dim, {"k": dim, "strength": rho}, transform).build()


# A closed-form Gaussian estimator (½ log det ratio of the sample covariance): fast and exact enough to
# test the wrappers, which must work around any registered estimator.
def _gauss_mi(x: np.ndarray, y: np.ndarray) -> float:
    dx = x.shape[1]
    cov = np.cov(np.concatenate([x, y], 1), rowvar=False)
    ld = lambda m: np.linalg.slogdet(np.atleast_2d(m))[1]  # noqa: E731
    return float(0.5 * (ld(cov[:dx, :dx]) + ld(cov[dx:, dx:]) - ld(cov)))


def _register(cls):
    return cls if cls.name in ESTIMATORS else register_estimator(cls)


@_register
class _TestGauss(Estimator):
    name = "_test_gauss"
    min_n = 5

    def estimate(self, x, y, *, seed):
        return Estimate(_gauss_mi(x, y))


@_register
class _TestSlowBias(Estimator):
    """Gaussian MI plus a bias 40/√N (0.9 nats at N = 2000): not linear in 1/N, so the protocol must flag it."""

    name = "_test_slow_bias"
    min_n = 5

    class Params(EstimatorParams):
        amplitude: float = 8.0

    def estimate(self, x, y, *, seed):
        return Estimate(_gauss_mi(x, y) + self.hp.amplitude / math.sqrt(x.shape[0]))


@_register
class _TestOffset(Estimator):
    """Deliberately broken: adds 0.5 nats to every estimate."""

    name = "_test_offset"
    min_n = 5

    def estimate(self, x, y, *, seed):
        return Estimate(_gauss_mi(x, y) + 0.5)


@_register
class _TestFirstColumn(Estimator):
    """Deliberately broken: looks only at the first column of X and of Y."""

    name = "_test_first_column"
    min_n = 5

    def estimate(self, x, y, *, seed):
        return Estimate(_gauss_mi(x[:, :1], y[:, :1]))


# small concat critic, batch 64: a few seconds per bound on one CPU thread
FAST = {
    "critic": "concat",
    "hidden": [32, 16],
    "batch_size": 64,
    "learning_rate": 5e-3,
    "steps": 1200,
    "eval_every": 100,
    "patience": 4,
}
