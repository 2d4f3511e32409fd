"""Multivariate normal family: covariance structures shared with the Student-t family.

For a joint Gaussian with covariance Σ = [[Σxx, Σxy], [Σyx, Σyy]] the mutual information is exact:

    I(X; Y) = ½ (log det Σxx + log det Σyy − log det Σ)

(e.g. Cover & Thomas, Elements of Information Theory, eq. 8.56 and §8.4). Structures (BMI-style):

* ``dense``  — every pair of the dim_x + dim_y variables has correlation ``rho``;
* ``sparse`` — ``k`` interacting pairs (X_i, Y_i), i < k, each with correlation ``strength``; the
  remaining variables are independent, so I = −(k/2)·log(1 − strength²);
* ``2pair``  — exactly two interacting pairs with correlation ``strength`` plus a nuisance
  equicorrelation ``within`` inside X and inside Y;
* ``lvm``    — latent-variable model Z ~ N(0, I_k), X = A Z + ε_x, Y = B Z + ε_y, ε ~ N(0, I).

BMI's parametrisations (Czyż et al. 2023, ``bmi.samplers.GaussianLVMParametrization``; the ones MIST's
meta-datasets draw), all as the *correlation* matrix of BMI's Gaussian latent-variable model with noise 1:

* ``bmi_lvm``    — X_i = α U + β U_X + λ Z_i [i < k] + η V_i [i ≥ k] + E_i, Y_j alike (U shared by all, U_X
  by X, U_Y by Y, Z_i by the pair (X_i, Y_i)): parameters ``n_interacting`` k, ``alpha``, ``lambd``,
  ``beta``, ``eta``;
* ``bmi_sparse`` — ``bmi_lvm`` with α = β = 0 and λ = η = ``strength``: k pairs (X_i, Y_i) with correlation
  strength²/(1 + strength²), everything else independent (BMI's ``multinormal-sparse``);
* ``bmi_2pair``  — ``bmi_sparse`` with k = 2 (BMI's ``multinormal-2pair``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from scipy.special import ndtr

from mibench.tasks.base import (
    Distribution,
    Family,
    Param,
    TaskParameterError,
    register_family,
    require_matrix,
    require_number,
)

STRUCTURES: dict[str, str] = {
    "dense": "all dim_x+dim_y variables equicorrelated with correlation rho",
    "sparse": "k interacting pairs (X_i, Y_i) with correlation strength, the rest independent",
    "2pair": "two interacting pairs with correlation strength, plus equicorrelation `within` inside X and Y",
    "lvm": "latent-variable model: X = A Z + noise, Y = B Z + noise, Z ~ N(0, I_latent_dim)",
    "bmi_sparse": "BMI's sparse: n_interacting pairs with correlation strength²/(1+strength²), the rest independent",
    "bmi_2pair": "BMI's 2-pair: bmi_sparse with n_interacting = 2",
    "bmi_lvm": "BMI's latent-variable model (n_interacting, alpha, lambd, beta, eta; noise 1), as correlations",
}

_N_INTERACTING = Param(1, 64, integer=True, doc="number of interacting pairs, capped at min(dim_x, dim_y)")
#: Default laws of BMI's structures: MIST's hyperparameter ranges (all uniform; n_interacting ~ U{1..d}).
BMI_STRUCTURE_PARAMETERS: dict[str, dict[str, Param]] = {
    "bmi_sparse": {
        "n_interacting": _N_INTERACTING,
        "strength": Param(0.1, 5.0, doc="λ of each pair; pair correlation λ²/(1+λ²)"),
    },
    "bmi_2pair": {"strength": Param(0.1, 5.0, doc="λ of each of the 2 pairs; pair correlation λ²/(1+λ²)")},
    "bmi_lvm": {
        "n_interacting": _N_INTERACTING,
        "alpha": Param(0.0, 1.0, doc="weight of the latent shared by every variable"),
        "lambd": Param(0.1, 3.0, doc="weight of the latent shared by each interacting pair"),
        "beta": Param(0.0, 1.5, doc="weight of the latent shared within X (and within Y)"),
        "eta": Param(0.1, 5.0, doc="weight of the private latent of each non-interacting variable"),
    },
}

COVARIANCE_PARAMETERS: dict[str, Param] = {
    "rho": Param(0.0, 0.9, doc="dense: common correlation of all variables"),
    "k": Param(1, 8, integer=True, doc="sparse: number of interacting pairs (clipped to min(dim_x, dim_y))"),
    "strength": Param(0.1, 0.9, doc="sparse/2pair: correlation of each interacting pair"),
    "within": Param(0.0, 0.5, doc="2pair: equicorrelation inside X and inside Y"),
    "latent_dim": Param(1, 4, integer=True, doc="lvm: dimension of the shared latent Z"),
    "loading_scale": Param(0.2, 1.2, doc="lvm: loadings A, B are drawn N(0, loading_scale^2) (stored)"),
}


def _logdet_pd(matrix: np.ndarray) -> float:
    return float(2.0 * np.sum(np.log(np.diag(np.linalg.cholesky(matrix)))))


def gaussian_mi(cov: np.ndarray, dim_x: int) -> float:
    """Exact MI (nats) between the first ``dim_x`` and the remaining coordinates of N(0, cov)."""
    mi = 0.5 * (_logdet_pd(cov[:dim_x, :dim_x]) + _logdet_pd(cov[dim_x:, dim_x:]) - _logdet_pd(cov))
    return max(mi, 0.0)  # rounding can give -1e-16 for independent blocks


def bmi_lvm_correlation(
    dim_x: int, dim_y: int, k: int, alpha: float, lambd: float, beta: float, eta: float, epsilon: float = 1.0
) -> np.ndarray:
    """Correlation matrix of BMI's ``GaussianLVMParametrization`` (beta_y = beta_x, eta_y = eta_x, epsilon)."""
    d = dim_x + dim_y
    cov = np.full((d, d), alpha**2)
    cov[:dim_x, :dim_x] += beta**2
    cov[dim_x:, dim_x:] += beta**2
    cov[np.diag_indices(d)] += epsilon**2
    idx = np.arange(k)
    cov[idx, dim_x + idx] += lambd**2
    cov[dim_x + idx, idx] += lambd**2
    diag = np.zeros(d)
    diag[idx] = diag[dim_x + idx] = lambd**2
    diag[k:dim_x] = diag[dim_x + k :] = eta**2
    cov[np.diag_indices(d)] += diag
    scale = np.sqrt(np.diag(cov))
    return cov / np.outer(scale, scale)


def _bmi_structure(label: str, structure: str, dim_x: int, dim_y: int, params: Mapping[str, Any]) -> np.ndarray:
    if structure == "bmi_2pair":
        lam = require_number(label, params, "strength")
        return bmi_lvm_correlation(dim_x, dim_y, 2, 0.0, lam, 0.0, lam)
    k = int(require_number(label, params, "n_interacting", low=0, high=min(dim_x, dim_y), integer=True))
    if structure == "bmi_sparse":
        lam = require_number(label, params, "strength")
        return bmi_lvm_correlation(dim_x, dim_y, k, 0.0, lam, 0.0, lam)
    alpha, lambd, beta, eta = (require_number(label, params, key) for key in ("alpha", "lambd", "beta", "eta"))
    return bmi_lvm_correlation(dim_x, dim_y, k, alpha, lambd, beta, eta)


def structure_covariance(family: str, structure: str, dim_x: int, dim_y: int, params: Mapping[str, Any]) -> np.ndarray:
    """Covariance matrix of the requested structure; raises if it is not positive definite."""
    label = f"{family}-{structure}"
    d = dim_x + dim_y
    if structure == "dense":
        rho = require_number(label, params, "rho", low=-1.0, high=1.0, low_open=True, high_open=True)
        if rho <= -1.0 / (d - 1):
            raise TaskParameterError(
                f"{label}: rho={rho!r} gives a covariance that is not positive definite for "
                f"dim_x+dim_y={d} (rho must be in ({-1.0 / (d - 1):.6g}, 1))"
            )
        cov = np.full((d, d), rho)
        np.fill_diagonal(cov, 1.0)
    elif structure == "sparse":
        k = int(require_number(label, params, "k", low=1, high=min(dim_x, dim_y), integer=True))
        strength = require_number(label, params, "strength", low=-1.0, high=1.0, low_open=True, high_open=True)
        cov = np.eye(d)
        idx = np.arange(k)
        cov[idx, dim_x + idx] = cov[dim_x + idx, idx] = strength
    elif structure == "2pair":
        strength = require_number(label, params, "strength", low=-1.0, high=1.0, low_open=True, high_open=True)
        within = require_number(label, params, "within", low=-1.0, high=1.0, low_open=True, high_open=True)
        cov = np.eye(d)
        for block in (slice(0, dim_x), slice(dim_x, d)):
            sub = cov[block, block]
            sub[~np.eye(sub.shape[0], dtype=bool)] = within
        for i in range(2):
            cov[i, dim_x + i] = cov[dim_x + i, i] = strength
    elif structure == "lvm":
        k = int(require_number(label, params, "latent_dim", low=1, integer=True))
        a = require_matrix(label, params, "loadings_x", (dim_x, k))
        b = require_matrix(label, params, "loadings_y", (dim_y, k))
        loadings = np.vstack([a, b])
        cov = loadings @ loadings.T + np.eye(d)
    elif structure in BMI_STRUCTURE_PARAMETERS:
        cov = _bmi_structure(label, structure, dim_x, dim_y, params)
    else:
        raise TaskParameterError(f"{family}: unknown structure {structure!r}; known: {', '.join(STRUCTURES)}")
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh(cov)[0])
        shown = {k: v for k, v in params.items() if not str(k).startswith("loadings")}
        raise TaskParameterError(
            f"{label}: parameters {shown} give a covariance that is not positive definite "
            f"(smallest eigenvalue {smallest:.3g}) for dims {dim_x}x{dim_y}"
        ) from None
    return cov


def draw_covariance_params(
    family: Family, rng: np.random.Generator, structure: str, dim_x: int, dim_y: int, ranges: Mapping
) -> dict[str, Any]:
    """Random covariance parameters for a structure, within (possibly overridden) ranges."""
    if structure == "dense":
        return {"rho": family.draw("rho", rng, ranges)}
    if structure == "sparse":
        lo, hi = family.param_bounds("k", ranges)
        cap = min(dim_x, dim_y)
        k = int(rng.integers(min(int(lo), cap), min(int(hi), cap) + 1))
        return {"k": k, "strength": family.draw("strength", rng, ranges)}
    if structure == "2pair":
        # strength and within interact (roughly strength + within < 1 is needed): redraw until positive
        # definite, deterministically from the same generator.
        for _ in range(1000):
            params = {"strength": family.draw("strength", rng, ranges), "within": family.draw("within", rng, ranges)}
            try:
                structure_covariance(family.name, structure, dim_x, dim_y, params)
                return params
            except TaskParameterError:
                continue
        raise TaskParameterError(
            f"{family.name}-2pair: no positive-definite (strength, within) found in ranges "
            f"strength={family.param_bounds('strength', ranges)}, within={family.param_bounds('within', ranges)}"
        )
    if structure in BMI_STRUCTURE_PARAMETERS:
        params: dict[str, Any] = {}
        for name in BMI_STRUCTURE_PARAMETERS[structure]:
            if name == "n_interacting":  # randint(lo, hi) capped at min(dim_x, dim_y), as MIST draws it
                lo, hi = family.param_bounds(name, ranges, structure)
                cap = min(dim_x, dim_y)
                params[name] = int(rng.integers(min(int(lo), cap), min(int(hi), cap) + 1))
            else:
                params[name] = family.draw(name, rng, ranges, structure)
        return params
    if structure == "lvm":
        k = int(family.draw("latent_dim", rng, ranges))
        scale = float(family.draw("loading_scale", rng, ranges))
        return {
            "latent_dim": k,
            "loadings_x": (scale * rng.standard_normal((dim_x, k))).tolist(),
            "loadings_y": (scale * rng.standard_normal((dim_y, k))).tolist(),
        }
    raise TaskParameterError(f"{family.name}: unknown structure {structure!r}")


class MultivariateNormal(Distribution):
    """N(0, cov) split into X (first dim_x coordinates) and Y (the rest)."""

    def __init__(self, cov: np.ndarray, dim_x: int) -> None:
        self.cov = cov
        self.dim_x, self.dim_y = dim_x, cov.shape[0] - dim_x
        self._chol = np.linalg.cholesky(cov)
        self._mi = gaussian_mi(cov, dim_x)

    @property
    def mi(self) -> float:
        return self._mi

    def tail_probability(self, t: float, side: str) -> float:
        block = np.diag(self.cov)[: self.dim_x] if side == "x" else np.diag(self.cov)[self.dim_x :]
        return float(2.0 * ndtr(-t / np.sqrt(block.max())))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        z = rng.standard_normal((n, self.cov.shape[0])) @ self._chol.T
        return z[:, : self.dim_x], z[:, self.dim_x :]


class CovarianceFamily(Family):
    """Shared structure handling for families parametrised by a covariance/scale matrix."""

    structures: ClassVar[dict[str, str]] = STRUCTURES
    structure_parameters: ClassVar[dict[str, dict[str, Param]]] = BMI_STRUCTURE_PARAMETERS

    def min_dims(self, structure: str) -> tuple[int, int]:
        return (2, 2) if structure in ("2pair", "bmi_2pair") else (1, 1)

    def covariance(self, structure: str, dim_x: int, dim_y: int, params: Mapping[str, Any]) -> np.ndarray:
        self.check_structure(structure)
        self.check_dims(structure, dim_x, dim_y)
        return structure_covariance(self.name, structure, dim_x, dim_y, params)


@register_family
class MultinormalFamily(CovarianceFamily):
    name = "multinormal"
    summary = "multivariate normal; I = ½(log det Σxx + log det Σyy − log det Σ)"
    parameters: ClassVar[dict[str, Param]] = dict(COVARIANCE_PARAMETERS)

    def build(self, structure: str, dim_x: int, dim_y: int, params: Mapping[str, Any]) -> MultivariateNormal:
        return MultivariateNormal(self.covariance(structure, dim_x, dim_y, params), dim_x)

    def draw_params(self, rng, structure, dim_x, dim_y, ranges):
        return draw_covariance_params(self, rng, structure, dim_x, dim_y, ranges)
