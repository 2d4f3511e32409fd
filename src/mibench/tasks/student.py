"""Multivariate Student-t family (same scale-matrix structures as the Gaussian family).

(X, Y) = Z / sqrt(W / ν) with Z ~ N(0, Σ) and W ~ χ²_ν shared by X and Y. Marginals of a multivariate t
are t with the same ν and the sub-blocks of Σ, and the entropy of a d-dimensional t with scale Σ is

    h = ½ log det Σ + log Γ(ν/2) + (d/2) log(νπ) − log Γ((ν+d)/2) + (ν+d)/2 [ψ((ν+d)/2) − ψ(ν/2)].

Taking h(X) + h(Y) − h(X, Y), the log(νπ) terms cancel and

    I(X; Y) = I_Gauss(Σ) + c(ν, dim_x, dim_y),
    c = log Γ(ν/2) + log Γ((ν+dx+dy)/2) − log Γ((ν+dx)/2) − log Γ((ν+dy)/2)
        + (ν+dx)/2·ψ((ν+dx)/2) + (ν+dy)/2·ψ((ν+dy)/2) − (ν+dx+dy)/2·ψ((ν+dx+dy)/2) − ν/2·ψ(ν/2),

with c > 0 even when Σxy = 0: the shared W makes X and Y dependent. (Same result as Arellano-Valle,
Contreras-Reyes & Genton 2013, used by BMI.) ν > 0 is any float; ν ≤ 2 has infinite variance but finite MI.

**Stability.** With g(a) = log Γ(a) − a ψ(a), a = ν/2, p = dx/2, q = dy/2, c is the mixed second difference
g(a) + g(a+p+q) − g(a+p) − g(a+q) of terms of size a·log a, while c itself is ≈ pq/(2a²): evaluated directly it
loses every digit at large ν (−4.5e-8 at ν = 1e7). For a ≥ ``STUDENT_ASYMPTOTIC_A`` we use Stirling's series
g(a) = −½ log a − a + ½ log 2π + ½ + Σ_k B₂ₖ/((2k−1)a²ᵏ⁻¹) (k ≤ 7), whose linear part cancels exactly
in the difference, and form the remaining differences without cancellation (log1p and closed-form
differences of 1/a). c is clipped at 0 (it is never negative).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from scipy.special import digamma, gammaln, stdtr

from mibench.tasks.base import Distribution, Param, register_family, require_number
from mibench.tasks.gaussian import COVARIANCE_PARAMETERS, CovarianceFamily, draw_covariance_params, gaussian_mi

#: From this a = ν/2 the correction uses Stirling's series (both branches agree with 60-digit arithmetic to
#: ~1e-11 relative at the switch and better on either side, tested).
STUDENT_ASYMPTOTIC_A = 10.0
#: Coefficients B_2k / (2k − 1) of a^-(2k-1) in the series of g(a) = log Γ(a) − a ψ(a), k = 1..7.
_G_SERIES = (1 / 6, -1 / 90, 1 / 210, -1 / 210, 5 / 594, -691 / 30030, 7 / 78)


def _second_difference(h, a: float, p: float, q: float) -> float:
    return h(a) + h(a + p + q) - h(a + p) - h(a + q)


def student_t_correction(df: float, dim_x: int, dim_y: int) -> float:
    """The degrees-of-freedom term c(ν, dim_x, dim_y) ≥ 0 added to the Gaussian MI of the scale matrix."""
    a, p, q = 0.5 * float(df), 0.5 * float(dim_x), 0.5 * float(dim_y)
    if a < STUDENT_ASYMPTOTIC_A:

        def g(x: float) -> float:
            return float(gammaln(x) - x * digamma(x))

        return max(_second_difference(g, a, p, q), 0.0)
    # −½ [log a + log(a+p+q) − log(a+p) − log(a+q)] = −½ log(1 − pq/((a+p)(a+q)))
    total = -0.5 * math.log1p(-p * q / ((a + p) * (a + q)))
    # 1/a + 1/(a+p+q) − 1/(a+p) − 1/(a+q) = pq(2a+p+q) / (a(a+p)(a+q)(a+p+q)), without cancellation
    total += _G_SERIES[0] * p * q * (2 * a + p + q) / (a * (a + p) * (a + q) * (a + p + q))
    for k, coefficient in enumerate(_G_SERIES[1:], start=2):
        power = -(2 * k - 1)
        total += coefficient * _second_difference(lambda x, e=power: x**e, a, p, q)
    return max(total, 0.0)


class MultivariateStudentT(Distribution):
    def __init__(self, scale: np.ndarray, dim_x: int, df: float) -> None:
        self.scale, self.df = scale, df
        self.dim_x, self.dim_y = dim_x, scale.shape[0] - dim_x
        self._chol = np.linalg.cholesky(scale)
        self._mi = gaussian_mi(scale, dim_x) + student_t_correction(df, self.dim_x, self.dim_y)

    @property
    def mi(self) -> float:
        return self._mi

    def tail_probability(self, t: float, side: str) -> float:
        block = np.diag(self.scale)[: self.dim_x] if side == "x" else np.diag(self.scale)[self.dim_x :]
        return float(2.0 * stdtr(self.df, -t / np.sqrt(block.max())))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        z = rng.standard_normal((n, self.scale.shape[0])) @ self._chol.T
        w = rng.chisquare(self.df, size=n) / self.df
        t = z / np.sqrt(w)[:, None]
        return t[:, : self.dim_x], t[:, self.dim_x :]


@register_family
class StudentFamily(CovarianceFamily):
    name = "student"
    summary = "multivariate Student-t; I = I_Gauss(scale) + c(df, dim_x, dim_y)"
    parameters: ClassVar[dict[str, Param]] = {
        **COVARIANCE_PARAMETERS,
        "df": Param(1.0, 20.0, log=True, doc="degrees of freedom ν > 0 (float)"),
    }

    def build(self, structure: str, dim_x: int, dim_y: int, params: Mapping[str, Any]) -> MultivariateStudentT:
        df = require_number(f"{self.name}-{structure}", params, "df", low=0.0, low_open=True)
        return MultivariateStudentT(self.covariance(structure, dim_x, dim_y, params), dim_x, df)

    def draw_params(self, rng, structure, dim_x, dim_y, ranges):
        params = draw_covariance_params(self, rng, structure, dim_x, dim_y, ranges)
        params["df"] = self.draw("df", rng, ranges)
        return params
