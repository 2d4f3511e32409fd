"""Gaussian (CCA) MI estimator: the MI of the Gaussian with the sample's covariance.

    Î = ½ (log det Σ̂xx + log det Σ̂yy − log det Σ̂) = −½ Σ_i log(1 − ρ_i²),

ρ_i the canonical correlations between X and Y. Exact in the limit for Gaussian data, a lower bound on
the MI of any distribution with that covariance, blind to non-linear dependence (e.g. after ``wiggly``).

Guarding n ≤ dim (dim = dim_x + dim_y): the sample covariance has rank ≤ n − 1, so for n ≤ dim it is
singular and log det Σ̂ = −∞ (the plain estimate diverges), and for n close to dim it is badly
conditioned and the estimate is biased far upward. We chose shrinkage over refusal by default:

* ``shrinkage="auto"`` (default): Ledoit–Wolf shrinkage of the correlation matrix towards the identity
  (Ledoit & Wolf, J. Multivariate Anal. 88, 2004) when n ≤ 2·dim or the sample covariance is
  numerically singular; the plain sample covariance otherwise. Always finite, never negative;
* ``shrinkage="ledoit_wolf"``: always shrink;
* ``shrinkage="none"``: always the sample covariance; n ≤ dim or a singular covariance raise a
  ``ValueError`` naming n and dim.

Columns are standardised first, so shrinking towards the identity is scale-free (MI is unchanged by
per-column scaling).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from mibench.estimators.base import Estimate, Estimator, EstimatorParams, register_estimator


def _logdet(matrix: np.ndarray) -> float | None:
    """log det of a symmetric positive-definite matrix, or None if it is not numerically PD."""
    try:
        chol = np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return None
    diag = np.diag(chol)
    if diag.min() <= 1e-7 * diag.max():  # condition number beyond ~1e14: treat as singular
        return None
    return 2.0 * float(np.sum(np.log(diag)))


def gaussian_mi_from_cov(cov: np.ndarray, dim_x: int) -> float | None:
    """½(log det Σxx + log det Σyy − log det Σ), or None if a block is singular."""
    parts = [_logdet(cov[:dim_x, :dim_x]), _logdet(cov[dim_x:, dim_x:]), _logdet(cov)]
    if any(p is None for p in parts):
        return None
    return 0.5 * (parts[0] + parts[1] - parts[2])  # type: ignore[operator]


@register_estimator
class Gaussian(Estimator):
    """MI of the Gaussian with the sample covariance (canonical correlations); shrinkage for small n.

    Hyperparameter: ``shrinkage`` ``auto|none|ledoit_wolf`` (see the module docstring for the choice).
    """

    name = "gaussian"
    min_n = 3

    class Params(EstimatorParams):
        shrinkage: Literal["auto", "none", "ledoit_wolf"] = Field(
            "auto", description="Covariance shrinkage: Ledoit-Wolf when n <= 2 x dim (auto), never, or always."
        )

    def setup(self) -> None:
        self.shrinkage = self.hp.shrinkage

    def estimate(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> Estimate:
        n, dim_x = x.shape[0], x.shape[1]
        dim = dim_x + y.shape[1]
        z = np.hstack([x, y])
        z = (z - z.mean(axis=0)) / z.std(axis=0)
        if self.shrinkage == "none" and n <= dim:
            raise ValueError(
                f"gaussian: n={n} <= dim_x + dim_y = {dim}: the sample covariance is singular; "
                "use shrinkage='auto' or 'ledoit_wolf'"
            )
        value: float | None = None
        shrink = 0.0
        if self.shrinkage == "none" or (self.shrinkage == "auto" and n > 2 * dim):
            value = gaussian_mi_from_cov(np.cov(z, rowvar=False), dim_x)
            if value is None and self.shrinkage == "none":
                raise ValueError(
                    f"gaussian: the sample covariance of the {dim} columns is singular (collinear columns?, "
                    f"n={n}); use shrinkage='auto' or 'ledoit_wolf'"
                )
        method = "sample"
        if value is None:
            from sklearn.covariance import ledoit_wolf

            cov, shrink = ledoit_wolf(z)
            value = gaussian_mi_from_cov(cov, dim_x)
            method = "ledoit_wolf"
            if value is None:
                raise ValueError(f"gaussian: the Ledoit–Wolf covariance is singular (n={n}, dim={dim})")
        extras: dict[str, Any] = {"covariance": method, "shrinkage": float(shrink)}
        return Estimate(float(value), extras=extras)
