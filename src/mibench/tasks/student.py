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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from scipy.special import digamma, gammaln

from mibench.tasks.base import Distribution, Param, register_family, require_number
from mibench.tasks.gaussian import COVARIANCE_PARAMETERS, CovarianceFamily, draw_covariance_params, gaussian_mi


def student_t_correction(df: float, dim_x: int, dim_y: int) -> float:
    """The degrees-of-freedom term c(ν, dim_x, dim_y) ≥ 0 added to the Gaussian MI of the scale matrix."""
    nu, dx, dy = float(df), float(dim_x), float(dim_y)
    h = 0.5

    def term(a: float) -> float:
        return a * digamma(a)

    return float(
        gammaln(h * nu)
        + gammaln(h * (nu + dx + dy))
        - gammaln(h * (nu + dx))
        - gammaln(h * (nu + dy))
        + term(h * (nu + dx))
        + term(h * (nu + dy))
        - term(h * (nu + dx + dy))
        - term(h * nu)
    )


class MultivariateStudentT(Distribution):
    def __init__(self, scale: np.ndarray, dim_x: int, df: float) -> None:
        self.scale, self.df = scale, df
        self.dim_x, self.dim_y = dim_x, scale.shape[0] - dim_x
        self._chol = np.linalg.cholesky(scale)
        self._mi = gaussian_mi(scale, dim_x) + student_t_correction(df, self.dim_x, self.dim_y)

    @property
    def mi(self) -> float:
        return self._mi

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
