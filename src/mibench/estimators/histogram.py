"""Histogram (binning) plug-in MI estimator with the Miller–Madow bias correction; low dimension only.

Every column is cut into ``bins`` equal-width bins over its sample range; X, Y and (X, Y) cells are the
products of their columns' bins. With cell frequencies p̂ the plug-in estimate is

    Î = Ĥ(X) + Ĥ(Y) − Ĥ(X, Y),   Ĥ = −Σ p̂ log p̂,

and Miller–Madow adds (m − 1)/(2n) to each entropy (m = occupied cells), i.e.
Î_MM = Î + (m_x + m_y − m_xy − 1)/(2n) (Miller 1955; Paninski, Neural Computation 15, 2003).
The number of cells grows as bins^(dim_x+dim_y), so the estimator refuses samples above ``max_dim``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from mibench.estimators.base import Estimate, Estimator, EstimatorParams, register_estimator


def default_bins(n: int, dim: int) -> int:
    """Bins per column for ``bins="auto"``: ⌊n^(1/(dim+1))⌋, at least 2.

    Keeps the expected count per joint cell ≈ n^(1/(dim+1)) (≈10 for 1×1 at n = 1000), so cells stay
    populated as the joint dimension grows; the usual 1-D rules (Sturges, Freedman–Diaconis) ignore dim.
    """
    return max(2, math.floor(n ** (1.0 / (dim + 1)) + 1e-9))


def bin_codes(data: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin index of every column combined into one integer code per row (mixed radix)."""
    lo, hi = data.min(axis=0), data.max(axis=0)
    width = np.where(hi > lo, hi - lo, 1.0)
    idx = np.floor((data - lo) / width * bins).astype(np.int64)
    np.clip(idx, 0, bins - 1, out=idx)  # the maximum falls on the upper edge of the last bin
    codes = np.zeros(data.shape[0], dtype=np.int64)
    for col in range(data.shape[1]):
        codes = codes * bins + idx[:, col]
    return codes


def _entropy(codes: np.ndarray) -> tuple[float, int]:
    """Plug-in entropy (nats) of integer codes and the number of occupied cells."""
    counts = np.unique(codes, return_counts=True)[1]
    p = counts / codes.shape[0]
    return float(-np.sum(p * np.log(p))), int(counts.shape[0])


@register_estimator
class Histogram(Estimator):
    """Equal-width binning plug-in MI with optional Miller–Madow correction.

    Hyperparameters: ``bins`` per column (int, or ``"auto"`` = ⌊n^(1/(d+1))⌋ with d = dim_x + dim_y);
    ``miller_madow`` bias correction (default on); ``max_dim`` the largest dim_x + dim_y accepted
    (default 4: beyond it the cells are nearly all empty at benchmark sample sizes and the estimate is
    meaningless).
    """

    name = "histogram"

    class Params(EstimatorParams):
        bins: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
            "auto", description="Bins per axis, or `auto` (a rule on n and the joint dimension)."
        )
        miller_madow: bool = Field(True, description="Add the Miller-Madow bias correction of each entropy.")
        max_dim: int = Field(4, ge=2, description="Largest dim_x + dim_y binned (bins^dim cells); wider is an error.")

    def setup(self) -> None:
        self.bins, self.miller_madow, self.max_dim = self.hp.bins, self.hp.miller_madow, self.hp.max_dim

    def estimate(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> Estimate:
        n, dim = x.shape[0], x.shape[1] + y.shape[1]
        if dim > self.max_dim:
            raise ValueError(
                f"histogram: dim_x + dim_y = {x.shape[1]} + {y.shape[1]} = {dim} exceeds max_dim={self.max_dim} "
                "(binning needs bins^dim cells; raise max_dim or use another estimator)"
            )
        bins = default_bins(n, dim) if self.bins == "auto" else int(self.bins)
        if dim * math.log2(bins) > 62:
            raise ValueError(f"histogram: bins^dim = {bins}^{dim} cells overflow int64 codes; lower bins or max_dim")
        cx, cy = bin_codes(x, bins), bin_codes(y, bins)
        cxy = cx * (bins ** y.shape[1]) + cy
        (hx, mx), (hy, my), (hxy, mxy) = _entropy(cx), _entropy(cy), _entropy(cxy)
        value = hx + hy - hxy
        if self.miller_madow:
            value += (mx + my - mxy - 1) / (2.0 * n)
        extras: dict[str, Any] = {"bins": bins, "occupied_cells": mxy}
        return Estimate(value, extras=extras)
