"""Checking one sample (x, y) before any MI estimate: the single place that says what a usable sample is.

Both the estimators (:mod:`mibench.estimators`) and the learned models' :func:`~mibench.learned.infer.predict`
call :func:`check_inputs`, so a NaN, a mismatched row count or a string array gets the same clear error
whichever door it comes in by (``predict`` used to return NaN for a column that was mostly infinite).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class EstimatorInputError(ValueError):
    """The sample given to an estimator is unusable (non-finite, mismatched, too small, constant...)."""


def check_inputs(
    x: Any, y: Any, *, min_n: int = 2, reject_constant: bool = True, who: str = "estimator"
) -> tuple[np.ndarray, np.ndarray]:
    """Return x, y as 2-D float64 arrays or raise :class:`EstimatorInputError` naming the problem."""
    arrays = []
    for side, value in (("X", x), ("Y", y)):
        arr = np.asarray(value)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise EstimatorInputError(f"{who}: {side} must be numeric, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise EstimatorInputError(f"{who}: {side} must be real, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise EstimatorInputError(f"{who}: {side} must be 1-D or 2-D (n, dim), got shape {arr.shape}")
        if arr.shape[1] == 0:
            raise EstimatorInputError(f"{who}: {side} has no columns")
        arrays.append(arr.astype(np.float64, copy=False))
    x, y = arrays
    if x.shape[0] != y.shape[0]:
        raise EstimatorInputError(f"{who}: X has {x.shape[0]} rows but Y has {y.shape[0]}")
    if x.shape[0] < min_n:
        raise EstimatorInputError(f"{who}: needs at least {min_n} samples, got n={x.shape[0]}")
    for side, arr in (("X", x), ("Y", y)):
        finite = np.isfinite(arr)
        if not finite.all():
            row, col = map(int, np.argwhere(~finite)[0])
            raise EstimatorInputError(
                f"{who}: {side} has {int((~finite).sum())} non-finite value(s), first at row {row}, column {col} "
                f"({arr[row, col]})"
            )
        if reject_constant:
            constant = np.flatnonzero(np.ptp(arr, axis=0) == 0)
            if constant.size:
                raise EstimatorInputError(f"{who}: column(s) {constant.tolist()} of {side} are constant")
    return x, y
