"""The estimator interface, its registry, and the input checks every estimator gets for free.

An estimator is a class with a registry ``name``, a ``Params`` model declaring its hyperparameters (types,
ranges, defaults, descriptions: the one declaration that the constructor, config validation, ``mibench
estimators``, the docs and MLflow all read) and an :meth:`Estimator.estimate` that maps one sample to an
:class:`Estimate`::

    @register_estimator
    class MyEstimator(Estimator):
        name = "my_estimator"

        class Params(EstimatorParams):
            alpha: float = Field(1.0, gt=0, description="why alpha matters")

        def estimate(self, x, y, *, seed):
            return Estimate(value=... self.hp.alpha ...)

``MyEstimator(alpha=2.0)`` validates the keywords against ``Params`` (unknown names get a did-you-mean, bad
types and ranges name the key and the value); ``self.hp`` is the validated model and ``self.params`` its
plain dict with every default filled in (what rows and MLflow record). Derived state goes in :meth:`setup`.

Call estimators through :meth:`Estimator.__call__` (what the benchmark runner does): it validates the
input first, so every estimator rejects NaN/inf, mismatched rows, too few rows, constant columns and
non-numeric data with the same clear ``ValueError``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic_core import PydanticUndefined

from mibench.config.base import ConfigError, StrictModel, allowed_values, json_type, parse_model
from mibench.config.schema import central_taus
from mibench.inputs import EstimatorInputError as EstimatorInputError  # re-exported: its home is mibench.inputs
from mibench.inputs import check_inputs
from mibench.registry import Registry


class EstimatorParams(StrictModel):
    """Hyperparameters of an estimator: no unknown keys, no coercion, no NaN/inf (see :class:`StrictModel`)."""


class HyperparameterError(ValueError):
    """A hyperparameter that is unknown, of the wrong type or out of range; the message names it."""


@dataclass(frozen=True)
class Estimate:
    """One estimate in nats, with an optional central interval and optional quantiles.

    ``quantiles`` maps τ ∈ (0, 1) to the τ-quantile of the estimator's uncertainty about the MI (native
    for quantile-regression models, percentile bootstrap otherwise); intervals at any central level L are
    read from quantiles (1−L)/2 and (1+L)/2 by :meth:`interval_at`.
    """

    value: float
    interval: tuple[float, float] | None = None
    level: float | None = None
    quantiles: Mapping[float, float] | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.interval is not None and self.level is None:
            raise ValueError("an interval needs its confidence level")
        if self.level is not None and not 0.0 < self.level < 1.0:
            raise ValueError(f"interval level must be in (0, 1), got {self.level}")

    def interval_at(self, level: float) -> tuple[float, float] | None:
        """Central interval at ``level`` from the quantiles (or the native interval at that level)."""
        if self.interval is not None and self.level is not None and math.isclose(self.level, level):
            return self.interval
        if not self.quantiles:
            return None
        lo_tau, hi_tau = central_taus(level)
        taus = {round(t, 10): v for t, v in self.quantiles.items()}
        if lo_tau in taus and hi_tau in taus:
            return taus[lo_tau], taus[hi_tau]
        return None


class Estimator(ABC):
    """Base class: stores hyperparameters, validates input, estimates one sample (or many)."""

    name: ClassVar[str]
    #: the hyperparameters; subclasses declare their own ``class Params(EstimatorParams)``.
    Params: ClassVar[type[EstimatorParams]] = EstimatorParams
    #: smallest sample size the estimator accepts (checked before :meth:`estimate`; see :meth:`min_n_for`).
    min_n: int = 2
    #: reject constant columns (most estimators divide by a scale or invert a covariance).
    reject_constant_columns: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        self.hp: Any = validate_params(type(self), params)
        #: every hyperparameter, defaults included, as plain data (recorded in rows and MLflow)
        self.params: dict[str, Any] = self.hp.model_dump(mode="json")
        self.min_n = self.min_n_for(self.hp)
        self.setup()

    def setup(self) -> None:  # noqa: B027 - a hook: most estimators need no derived state
        """Derived state from the validated hyperparameters ``self.hp`` (e.g. a loaded model)."""

    @classmethod
    def min_n_for(cls, hp: Any) -> int:
        """Smallest sample size with these hyperparameters (config validation refuses smaller ``n``)."""
        return cls.min_n

    @abstractmethod
    def estimate(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> Estimate:
        """Estimate I(X; Y) in nats from x (n, dim_x) and y (n, dim_y), float64, already validated."""

    def __call__(self, x: Any, y: Any, *, seed: int = 0) -> Estimate:
        x, y = check_inputs(x, y, min_n=self.min_n, reject_constant=self.reject_constant_columns, who=self.name)
        result = self.estimate(x, y, seed=seed)
        if not isinstance(result, Estimate):
            raise TypeError(f"estimator {self.name!r} returned {type(result).__name__}, expected Estimate")
        return result

    def estimate_many(
        self,
        samples: Sequence[tuple[np.ndarray, np.ndarray]],
        seeds: Sequence[int],
        *,
        on_result: Callable[[int, Estimate | BaseException], None] | None = None,
    ) -> list[Estimate | BaseException]:
        """Estimate many samples; one failure is returned in its slot, never raised.

        Learned and neural estimators override this to batch the whole list. ``on_result(i, result)``, if
        given, is called as soon as sample ``i`` is done: the runner keeps those cells when the call is
        interrupted by a time budget (overrides that cannot report early may omit the keyword).
        """
        results: list[Estimate | BaseException] = []
        for i, ((x, y), seed) in enumerate(zip(samples, seeds, strict=True)):
            try:
                results.append(self(x, y, seed=seed))
            except Exception as exc:  # recorded as an error row by the runner
                results.append(exc)
            if on_result is not None:
                on_result(i, results[-1])
        return results

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator")


def register_estimator(cls: type[Estimator]) -> type[Estimator]:
    """Class decorator adding an estimator class to :data:`ESTIMATORS` under ``cls.name``."""
    ESTIMATORS.add(cls.name, cls)
    return cls


#: marks a hyperparameter without a default in :func:`hyperparameters`
REQUIRED = PydanticUndefined


def hyperparameters(cls: type[Estimator]) -> dict[str, Any]:
    """Each hyperparameter's default (:data:`REQUIRED` if it has none), read from ``cls.Params``."""
    out = {}
    for name, info in cls.Params.model_fields.items():
        out[name] = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    return out


def validate_params(cls: type[Estimator], params: Mapping[str, Any], prefix: str | None = None) -> Any:
    """``cls.Params`` validated from ``params``; a :class:`HyperparameterError` names each bad key.

    ``prefix`` is the key path in errors (default: the estimator's name); config validation passes
    ``config.estimators.<label>``.
    """
    try:
        return parse_model(cls.Params, dict(params), prefix or cls.name)
    except ConfigError as exc:
        raise HyperparameterError(str(exc)) from None


def make_estimator(name: str, params: Mapping[str, Any] | None = None) -> Estimator:
    """Instantiate a registered estimator; unknown, ill-typed or out-of-range hyperparameters get a clear error."""
    return ESTIMATORS.get(name)(**dict(params or {}))


def describe_params(cls: type[Estimator]) -> list[dict[str, str]]:
    """Each hyperparameter of ``cls.Params``: name, type, default, allowed values, meaning (for
    ``mibench estimators`` and the docs: the same declaration the constructor validates against)."""
    import json

    schema = cls.Params.model_json_schema()
    props = schema.get("properties", {})
    rows = []
    for name, info in cls.Params.model_fields.items():
        prop = props.get(name, {})
        default = hyperparameters(cls)[name]
        allowed = allowed_values(prop)
        rows.append(
            {
                "name": name,
                "type": json_type(prop),
                "default": "required" if default is REQUIRED else json.dumps(default),
                "allowed": allowed,
                "description": info.description or "",
            }
        )
    return rows
