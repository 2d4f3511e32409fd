"""Estimators: one module per estimator (or family of estimators), each registering itself.

Every module in this package is imported on first use (so dropping a file here is all it takes to add an
estimator), and modules outside the package can be loaded with ``module:`` in an estimator's config entry.
Modules must keep heavy imports (torch) inside functions, so cheap jobs stay cheap.

A config entry (``estimators: {label: {...}}``) is resolved by :func:`resolve_entry`: the module imported,
the class found (did-you-mean on a typo), the hyperparameters validated against the class's ``Params``
with every default filled in; nothing is built (no checkpoint is loaded) until :meth:`ResolvedEstimator.build`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from mibench.config.base import ConfigError, parse_model
from mibench.config.schema import DEFAULT_LEVELS, EstimatorEntry
from mibench.estimators.base import (
    ESTIMATORS,
    REQUIRED,
    Estimate,
    Estimator,
    EstimatorInputError,
    EstimatorParams,
    HyperparameterError,
    check_inputs,
    hyperparameters,
    register_estimator,
    validate_params,
)
from mibench.estimators.base import make_estimator as _make_estimator
from mibench.estimators.bootstrap import Bootstrapped, bootstrap_estimate, taus_for_levels
from mibench.registry import UnknownNameError

__all__ = [
    "DEFAULT_LEVELS",
    "ESTIMATORS",
    "REQUIRED",
    "Bootstrapped",
    "Estimate",
    "Estimator",
    "EstimatorInputError",
    "EstimatorParams",
    "Field",
    "HyperparameterError",
    "ResolvedEstimator",
    "bootstrap_estimate",
    "build_estimator",
    "check_inputs",
    "hyperparameters",
    "load_builtin_estimators",
    "make_estimator",
    "register_estimator",
    "resolve_entry",
    "taus_for_levels",
    "validate_params",
]

_INFRASTRUCTURE = {"base", "bootstrap"}
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


@dataclass(frozen=True)
class ResolvedEstimator:
    """A config entry checked against its estimator class: what will run, with every default filled in."""

    label: str
    name: str
    cls: type[Estimator]
    entry: EstimatorEntry
    params: Mapping[str, Any]  # validated hyperparameters, defaults included, plain data
    min_n: int

    @property
    def module(self) -> str:
        """The module that defines the class (its code is part of the job fingerprint)."""
        return self.cls.__module__

    def entry_dict(self) -> dict[str, Any]:
        """The flat entry that rebuilds exactly this estimator (defaults written out)."""
        out: dict[str, Any] = {"estimator": self.name}
        if self.entry.module:
            out["module"] = self.entry.module
        if self.entry.bootstrap is not None:
            out["bootstrap"] = self.entry.bootstrap.model_dump()
        return {**out, **self.params}

    def build(self) -> Estimator:
        estimator = self.cls(**self.params)
        boot = self.entry.bootstrap
        if boot is not None:
            estimator = Bootstrapped(estimator, resamples=boot.resamples, levels=boot.levels)
        return estimator


def _import_module(name: str, where: str) -> None:
    try:
        importlib.import_module(name)
    except Exception as exc:  # ImportError, or an error while the module runs
        raise ConfigError(f"{where}.module: cannot import {name!r} ({type(exc).__name__}: {exc})") from None


def resolve_entry(
    label: str, entry: Mapping[str, Any] | EstimatorEntry | None, prefix: str | None = None
) -> ResolvedEstimator:
    """Check an estimator entry without building it: module, class, hyperparameters (errors name the key)."""
    where = prefix or f"config.estimators.{label}"
    if not isinstance(entry, EstimatorEntry):
        entry = parse_model(EstimatorEntry, dict(entry or {}), where)
    if entry.module:
        _import_module(entry.module, where)
    load_builtin_estimators()
    name = entry.name(label)
    try:
        cls = ESTIMATORS.get(name)
    except UnknownNameError as exc:
        key = f"{where}.estimator" if entry.estimator else where
        hint = "" if entry.estimator else " (the label names the estimator unless `estimator:` is given)"
        raise ConfigError(f"{key}: {exc}{hint}") from None
    try:
        hp = validate_params(cls, entry.hyperparameters, where)
    except HyperparameterError as exc:
        raise ConfigError(str(exc)) from None
    return ResolvedEstimator(label, name, cls, entry, hp.model_dump(mode="json"), int(cls.min_n_for(hp)))


def build_estimator(label: str, entry: Mapping[str, Any] | EstimatorEntry | None) -> Estimator:
    """Build the estimator a config entry describes.

    ``label`` is the key under ``estimators:``; the entry may name the registered ``estimator`` (default:
    the label, so ``ksg_k10: {estimator: ksg, k: 10}`` runs KSG with k=10), an extra ``module`` to import,
    and ``bootstrap: {resamples, levels}`` for percentile-bootstrap intervals.
    """
    return resolve_entry(label, entry).build()
