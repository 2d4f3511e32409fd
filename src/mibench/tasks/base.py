"""Interfaces shared by every task family: distributions with exact MI, families that build them.

A *family* (e.g. ``multinormal``) turns ``(structure, dim_x, dim_y, params)`` into a
:class:`Distribution` that can sample ``(x, y)`` and knows its mutual information in nats. Families
validate their parameters *before* any sampling, so an impossible configuration fails with a message
that names the family, the parameter and the value.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from mibench.registry import Registry


class TaskParameterError(ValueError):
    """An impossible or malformed distribution parameter (raised before any sampling)."""


#: Laws a config may give a drawn parameter: ``{uniform: [lo, hi]}`` etc. (``[lo, hi]`` keeps the default law).
LAWS = ("uniform", "log_uniform", "integer")


@dataclass(frozen=True)
class Param:
    """A parameter a family draws for meta-datasets: its default range and how to draw within it."""

    low: float
    high: float
    integer: bool = False
    log: bool = False
    doc: str = ""

    def with_override(self, override: tuple) -> Param:
        """This parameter with a config override: ``(lo, hi)`` keeps the law, ``(lo, hi, law)`` sets it."""
        lo, hi = float(override[0]), float(override[1])
        law = override[2] if len(override) > 2 else None
        if law is None:
            return replace(self, low=lo, high=hi)
        if law not in LAWS:
            raise TaskParameterError(f"unknown parameter law {law!r}; known: {', '.join(LAWS)}")
        return replace(self, low=lo, high=hi, integer=law == "integer", log=law == "log_uniform")

    def draw(self, rng: np.random.Generator, bounds: tuple[float, float] | None = None) -> float | int:
        lo, hi = bounds if bounds is not None else (self.low, self.high)
        if self.integer:
            return int(rng.integers(int(lo), int(hi) + 1))
        if self.log:
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return float(rng.uniform(lo, hi))


class Distribution(ABC):
    """A joint distribution of (X, Y) with known mutual information."""

    dim_x: int
    dim_y: int

    @property
    @abstractmethod
    def mi(self) -> float:
        """Mutual information I(X; Y) in nats."""

    #: Absolute error bound on :attr:`mi` (0 for closed forms; MC/quadrature families set it).
    mi_error_bound: float = 0.0
    #: Standard error of a Monte-Carlo :attr:`mi` (None for closed forms and quadrature).
    mi_std_error: float | None = None
    #: How :attr:`mi` was obtained (``closed_form``, ``quadrature``, ``monte_carlo``).
    mi_method: str = "closed_form"

    def tail_probability(self, t: float, side: str) -> float:
        """An upper bound on P(|v_j| > t) for every coordinate v_j of side ``x`` or ``y`` (1.0: unknown).

        Used to refuse ``normal_cdf`` where it would saturate (:func:`mibench.tasks.transforms.check_saturation`).
        """
        return 1.0

    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` i.i.d. pairs; returns float64 arrays of shape (n, dim_x) and (n, dim_y)."""


class Family(ABC):
    """A parametric family of distributions, registered under :attr:`name`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: structure name -> one-line description; the first one is the default.
    structures: ClassVar[dict[str, str]]
    #: parameters drawn for meta-datasets, with their default ranges.
    parameters: ClassVar[dict[str, Param]]
    #: structure -> parameters that only that structure draws, or whose default law differs there.
    structure_parameters: ClassVar[dict[str, dict[str, Param]]] = {}
    #: X and Y must have the same dimension (e.g. additive noise, Y = X + U).
    same_dims: ClassVar[bool] = False
    #: X has a fixed dimension (e.g. a discrete label), or None.
    fixed_dim_x: ClassVar[int | None] = None

    def min_dims(self, structure: str) -> tuple[int, int]:
        """Smallest (dim_x, dim_y) the structure supports."""
        return (1, 1)

    @abstractmethod
    def build(self, structure: str, dim_x: int, dim_y: int, params: Mapping[str, Any]) -> Distribution:
        """Validate the parameters and return the distribution (never samples)."""

    @abstractmethod
    def draw_params(
        self,
        rng: np.random.Generator,
        structure: str,
        dim_x: int,
        dim_y: int,
        ranges: Mapping[str, tuple[float, float]],
    ) -> dict[str, Any]:
        """Draw a random parameter set for meta-datasets (``ranges`` overrides default ranges)."""

    # -- helpers shared by the families -------------------------------------------------------------
    def check_structure(self, structure: str) -> None:
        if structure not in self.structures:
            raise TaskParameterError(
                f"{self.name}: unknown structure {structure!r}; known structures: {', '.join(self.structures)}"
            )

    def check_dims(self, structure: str, dim_x: int, dim_y: int) -> None:
        for side, dim in (("dim_x", dim_x), ("dim_y", dim_y)):
            if not isinstance(dim, int | np.integer) or dim < 1:
                raise TaskParameterError(f"{self.name}-{structure}: {side} must be an integer >= 1, got {dim!r}")
        min_x, min_y = self.min_dims(structure)
        if dim_x < min_x or dim_y < min_y:
            raise TaskParameterError(
                f"{self.name}-{structure}: needs dim_x >= {min_x} and dim_y >= {min_y}, got {dim_x}x{dim_y}"
            )
        if self.same_dims and dim_x != dim_y:
            raise TaskParameterError(f"{self.name}: needs dim_x == dim_y, got {dim_x}x{dim_y}")
        if self.fixed_dim_x is not None and dim_x != self.fixed_dim_x:
            raise TaskParameterError(f"{self.name}: needs dim_x == {self.fixed_dim_x}, got {dim_x}")

    def param_spec(self, name: str, structure: str | None = None, ranges: Mapping[str, tuple] | None = None) -> Param:
        """The law parameter ``name`` is drawn from: the structure's own, else the family's, with the override."""
        spec = (self.structure_parameters.get(structure or "", {}) or {}).get(name) or self.parameters[name]
        if ranges and name in ranges:
            spec = spec.with_override(ranges[name])
        return spec

    def parameter_names(self, structure: str | None = None) -> list[str]:
        """Names a config may override: the family's, plus one structure's (or every structure's) own."""
        extra = [self.structure_parameters.get(structure, {})] if structure else self.structure_parameters.values()
        return list(dict.fromkeys([*self.parameters, *(name for group in extra for name in group)]))

    def param_bounds(
        self, name: str, ranges: Mapping[str, tuple[float, float]], structure: str | None = None
    ) -> tuple[float, float]:
        spec = self.param_spec(name, structure, ranges)
        return float(spec.low), float(spec.high)

    def draw(
        self,
        name: str,
        rng: np.random.Generator,
        ranges: Mapping[str, tuple[float, float]],
        structure: str | None = None,
    ) -> Any:
        return self.param_spec(name, structure, ranges).draw(rng)


FAMILIES: Registry[Family] = Registry("family", "families")


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: instantiate the family and add it to :data:`FAMILIES`."""
    FAMILIES.add(cls.name, cls())
    return cls


def get_family(name: str) -> Family:
    return FAMILIES.get(name)


# -- parameter access with errors that name the parameter -------------------------------------------
def require_number(
    family: str,
    params: Mapping[str, Any],
    key: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> float:
    """Read ``params[key]`` as a finite number within bounds, or raise a :class:`TaskParameterError`."""
    if key not in params:
        raise TaskParameterError(f"{family}: missing parameter {key!r} (given: {sorted(params)})")
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TaskParameterError(f"{family}: parameter {key!r} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise TaskParameterError(f"{family}: parameter {key!r} must be finite, got {value!r}")
    if integer and value != int(value):
        raise TaskParameterError(f"{family}: parameter {key!r} must be an integer, got {value!r}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise TaskParameterError(f"{family}: parameter {key!r}={params[key]!r} is outside {interval}")
    return value


def require_matrix(family: str, params: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    """Read ``params[key]`` as a finite float array (matrix or vector) of the given shape."""
    if key not in params:
        raise TaskParameterError(f"{family}: missing parameter {key!r} (given: {sorted(params)})")
    try:
        value = np.asarray(params[key], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TaskParameterError(f"{family}: parameter {key!r} is not a numeric matrix ({exc})") from None
    if value.shape != shape:
        raise TaskParameterError(f"{family}: parameter {key!r} must have shape {shape}, got {value.shape}")
    if not np.all(np.isfinite(value)):
        raise TaskParameterError(f"{family}: parameter {key!r} has non-finite entries")
    return value


def require_vector(family: str, params: Mapping[str, Any], key: str, length: int) -> np.ndarray:
    """Read ``params[key]`` as a finite float vector of the given length."""
    return require_matrix(family, params, key, (length,))


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and exact float repr: the stable text form of parameters.

    numpy scalars/arrays become Python numbers/lists; NaN/inf are refused (they are never valid
    generating parameters and are not JSON).
    """

    def convert(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return convert(value.tolist())
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    return json.dumps(convert(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)
