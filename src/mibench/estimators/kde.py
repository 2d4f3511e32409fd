"""Gaussian-kernel density plug-in MI estimator (resubstitution), Scott or Silverman bandwidth.

With kernel density estimates p̂ of (X, Y), X and Y built on the sample itself,

    Î = (1/n) Σ_i [log p̂(x_i, y_i) − log p̂(x_i) − log p̂(y_i)]

(Moon, Rajagopalan & Lall, Phys. Rev. E 52, 1995). Each density uses a Gaussian kernel with covariance
h²·Σ̂ (Σ̂ the sample covariance of that space, as ``scipy.stats.gaussian_kde``), so the estimate is
invariant to affine maps of X and of Y. h is Scott's factor n^(−1/(d+4)) or Silverman's
(n(d+2)/4)^(−1/(d+4)) with d the dimension of the space (so the joint and marginal densities each get
their own h), or a fixed float. Computing it is O(n²·d): whitened pairwise squared distances by
matrix products in row chunks (bounded memory) and a log-sum-exp per row.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from mibench.estimators.base import Estimate, Estimator, EstimatorParams, register_estimator

#: Bytes one chunk of the pairwise-distance matrix may take.
CHUNK_BYTES = 64 * 2**20


def bandwidth_factor(rule: str | float, n: int, dim: int) -> float:
    """Kernel scale h relative to the data covariance for ``n`` points in ``dim`` dimensions."""
    if rule == "scott":
        return float(n ** (-1.0 / (dim + 4)))
    if rule == "silverman":
        return float((n * (dim + 2) / 4.0) ** (-1.0 / (dim + 4)))
    return float(rule)


def log_density_resub(
    data: np.ndarray, h: float, *, leave_one_out: bool = False, chunk_bytes: int = CHUNK_BYTES
) -> np.ndarray:
    """log p̂(z_i) of a Gaussian KDE with kernel covariance h²·Σ̂ at every sample point z_i."""
    n, d = data.shape
    centered = data - data.mean(axis=0)
    cov = np.atleast_2d(np.cov(centered, rowvar=False))
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        chol = None
    # collinear columns often pass Cholesky with a rounding-size pivot; the kernel would then be a
    # needle of width ~1e-8 and log p̂ meaningless: same threshold as the Gaussian estimator (cond ~1e14)
    if chol is None or np.diag(chol).min() <= 1e-7 * np.diag(chol).max():
        raise ValueError(
            f"kde: the sample covariance of a {d}-dimensional space is singular (n={n}); "
            "the kernel needs n > dim and no collinear columns"
        )
    w = np.linalg.solve(chol, centered.T).T / h  # whitened and scaled: the kernel is N(0, I)
    sq = np.einsum("ij,ij->i", w, w)
    log_norm = -0.5 * d * math.log(2 * math.pi) - d * math.log(h) - float(np.sum(np.log(np.diag(chol))))
    rows = max(1, min(n, chunk_bytes // (8 * n)))
    out = np.empty(n)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        block = w[start:stop] @ w.T  # becomes −½‖w_i − w_j‖², in place
        block *= 2.0
        block -= sq[start:stop, None]
        block -= sq[None, :]
        np.minimum(block, 0.0, out=block)
        block *= 0.5
        diag = (np.arange(stop - start), np.arange(start, stop))
        if leave_one_out:
            block[diag] = -np.inf
            shift = block.max(axis=1, keepdims=True)
            block -= shift
        else:  # the self term exp(0) = 1 is the largest: no shift needed
            block[diag] = 0.0
            shift = np.zeros((stop - start, 1))
        np.exp(block, out=block)
        out[start:stop] = np.log(block.sum(axis=1)) + shift[:, 0]
    return out - math.log(n - 1 if leave_one_out else n) + log_norm


@register_estimator
class KDE(Estimator):
    """Gaussian KDE plug-in (resubstitution) MI.

    Hyperparameters: ``bandwidth`` ``"scott"`` (default), ``"silverman"`` or a positive float factor h
    (kernel covariance h²·Σ̂ in every space); ``leave_one_out`` drops each point's own kernel from its
    density (default off: plain resubstitution, which is biased upward at small n).
    """

    name = "kde"
    min_n = 3

    class Params(EstimatorParams):
        bandwidth: Literal["scott", "silverman"] | Annotated[float, Field(gt=0)] = Field(
            "scott", description="Bandwidth rule, or a factor > 0 multiplying each space's covariance."
        )
        leave_one_out: bool = Field(False, description="Leave each point out of its own density estimate.")

    def setup(self) -> None:
        self.bandwidth, self.leave_one_out = self.hp.bandwidth, self.hp.leave_one_out

    def estimate(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> Estimate:
        return self.estimate_with_terms(x, y, seed=seed)[0]

    def estimate_with_terms(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> tuple[Estimate, np.ndarray]:
        """The estimate and its per-sample terms log p̂(x_i, y_i) − log p̂(x_i) − log p̂(y_i) (for the bootstrap)."""
        n = x.shape[0]
        logs, factors = [], []
        for data in (np.hstack([x, y]), x, y):
            h = bandwidth_factor(self.bandwidth, n, data.shape[1])
            factors.append(h)
            logs.append(log_density_resub(data, h, leave_one_out=self.leave_one_out))
        terms = logs[0] - logs[1] - logs[2]
        extras: dict[str, Any] = {"h_joint": factors[0], "h_x": factors[1], "h_y": factors[2]}
        return Estimate(float(np.mean(terms)), extras=extras), terms
