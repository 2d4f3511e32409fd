"""Estimators: one module per estimator (or family of estimators), each registering itself.

Every module in this package is imported on first use (so dropping a file here is all it takes to add an
estimator), and modules outside the package can be loaded with ``module:`` in an estimator's config entry.
Modules must keep heavy imports (torch) inside functions, so cheap jobs stay cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from mibench.estimators.base import (
    ESTIMATORS,
    Estimate,
    Estimator,
    EstimatorInputError,
    check_inputs,
    hyperparameters,
    register_estimator,
)
from mibench.estimators.base import make_estimator as _make_estimator
from mibench.estimators.bootstrap import DEFAULT_LEVELS, Bootstrapped, bootstrap_estimate, taus_for_levels

__all__ = [
    "DEFAULT_LEVELS",
    "ESTIMATORS",
    "Bootstrapped",
    "Estimate",
    "Estimator",
    "EstimatorInputError",
    "bootstrap_estimate",
    "build_estimator",
    "check_inputs",
    "hyperparameters",
    "load_builtin_estimators",
    "make_estimator",
    "register_estimator",
    "taus_for_levels",
]

_INFRASTRUCTURE = {"base", "bootstrap", "runner"}
_loaded = False


def load_builtin_estimators() -> None:
    """Import every estimator module of this package once (they register themselves)."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _INFRASTRUCTURE and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def make_estimator(name: str, params: Mapping[str, Any] | None = None) -> Estimator:
    """:func:`mibench.estimators.base.make_estimator` after loading the built-in estimator modules."""
    load_builtin_estimators()
    return _make_estimator(name, params)


# Reserved keys of an estimator's config entry; everything else is a hyperparameter.
RESERVED_KEYS = ("estimator", "module", "bootstrap", "resources")


def build_estimator(label: str, entry: Mapping[str, Any] | None) -> Estimator:
    """Build the estimator a config entry describes.

    ``label`` is the key under ``estimators:``; the entry may name the registered ``estimator`` (default:
    the label, so ``ksg_k10: {estimator: ksg, k: 10}`` runs KSG with k=10), an extra ``module`` to import,
    and ``bootstrap: {resamples, levels}`` for percentile-bootstrap intervals.
    """
    entry = dict(entry or {})
    if entry.get("module"):
        importlib.import_module(entry["module"])
    load_builtin_estimators()
    name = entry.get("estimator", label)
    params = {k: v for k, v in entry.items() if k not in RESERVED_KEYS}
    estimator = make_estimator(name, params)
    boot = entry.get("bootstrap")
    if boot:
        boot = {} if boot is True else dict(boot)
        estimator = Bootstrapped(
            estimator, resamples=int(boot.get("resamples", 100)), levels=boot.get("levels", DEFAULT_LEVELS)
        )
    return estimator
