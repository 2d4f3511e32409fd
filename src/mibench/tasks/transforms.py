"""MI-preserving transforms applied to one side (X or Y) of a sample.

Mutual information is invariant under injective (differentiable, invertible) maps applied separately to X
and to Y. Every transform here is such a map:

* ``base``       — identity;
* ``halfcube``   — x·sqrt(|x|) = sign(x)|x|^{3/2} per coordinate (strictly increasing);
* ``asinh``      — arcsinh per coordinate (strictly increasing);
* ``wiggly``     — mibench's: x + 0.4 sin x + 0.15 sin(1.7x + 1) + 0.08 sin(3x + 2) per coordinate; its
  derivative is ≥ 1 − 0.4 − 0.255 − 0.24 = 0.105 > 0, so it is strictly increasing;
* ``bmi_wiggly`` — BMI's (Czyż et al. 2023): f(x) = x + 0.4 sin x + 0.2 sin(1.7x + 1) + 0.03 sin(3.3x − 2.5)
  on X and g(y) = y − 0.4 sin(0.4y) + 0.17 sin(1.3y + 3.5) + 0.02 sin(4.3y − 2.5) on Y, per coordinate
  (derivatives ≥ 0.161 and ≥ 0.533);
* ``normal_cdf`` — the standard normal CDF Φ per coordinate (strictly increasing onto (0, 1));
* ``spiral``     — mibench's: rotates each coordinate pair (x₁, x₂), (x₃, x₄), … by the angle 2·‖x‖²/d;
  rotations keep ‖x‖, so the map is inverted by rotating back by the same angle. Needs dim ≥ 2;
* ``bmi_spiral`` — BMI's: x ↦ exp(‖x‖²/d · A)·x with A the so(d) generator of the (0, 1) plane on X and of
  the (1, 2) plane on Y (a rotation in that plane by the angle ‖x‖²/d); needs dim_x ≥ 2, dim_y ≥ 3;
* ``bimodal``    — BMI's bimodal marginals: x ↦ F⁻¹(Φ(x)) with F the CDF of 0.3·N(0,1) + 0.7·N(5,1) on X and
  of 0.5·N(−1,1) + 0.5·N(3,1) on Y; inverted in log space by bisection, so it never saturates;
* ``swissroll``  — BMI's Swiss-roll embedding, 1 → 2 dimensions: u ∈ (0, 1) ↦ (t cos t, t sin t)/21 with
  t = 1.5π(1 + 2u); the radius t/21 is strictly increasing in u, so the map is injective. It needs inputs in
  (0, 1) and therefore has to follow ``normal_cdf`` in its chain.

A transform spec is a ``+``-separated chain applied left to right (``asinh+wiggly``) used for both sides,
or ``x:SPEC,y:SPEC`` for different chains per side. Specs are normalised to a canonical string, which is
what the ``transform`` column of every Parquet file holds. Side-aware transforms (``bmi_wiggly``,
``bimodal``, ``bmi_spiral``) apply their X map on X and their Y map on Y, as BMI does.

**Dimensions.** A transform may change a side's dimension (``swissroll``: 1 → 2). A task's ``dim_x``/``dim_y``
are always the dimensions of the sample an estimator sees; :meth:`TransformSpec.base_dims` recovers the
dimensions of the underlying distribution.

**Saturation.** Φ rounds to exactly 1.0 above 8.29 in float64 and above ``NORMAL_CDF_SATURATION`` ≈ 5.42 after
the float32 cast of the shards: two such values become a tie, and the stored sample carries less
information than its label. :func:`check_saturation` refuses ``normal_cdf`` wherever the input can exceed that
threshold with probability above ``SATURATION_MAX_PROBABILITY`` per value (heavy-tailed Student-t bases,
``halfcube`` before it, wide Gaussians), using each transform's ``tail_preimage`` and each distribution's
``tail_probability``; :func:`saturation_ties` finds ties at a bound in a stored sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, logsumexp, ndtr, ndtri, ndtri_exp

from mibench.registry import Registry
from mibench.tasks.base import TaskParameterError

Side = str  # "x" or "y"

#: Φ(v) rounds to 1.0 in float32 for v above this (1 − Φ(v) < 2⁻²⁵, half an ulp below 1).
NORMAL_CDF_SATURATION = float(-ndtri(2.0**-25))
#: ``normal_cdf`` is refused when an input value exceeds NORMAL_CDF_SATURATION with more than this probability.
SATURATION_MAX_PROBABILITY = 1e-6


@dataclass(frozen=True)
class Transform:
    name: str
    doc: str
    fn: Callable[[np.ndarray], np.ndarray]
    #: strictly increasing in every coordinate separately (tested); False for mixing maps like spiral.
    per_coordinate_monotone: bool = True
    min_dim: int = 1
    inverse: Callable[[np.ndarray], np.ndarray] | None = None
    #: the map (and inverse, smallest dimension) on Y when it differs from X's (BMI's transforms are per side)
    fn_y: Callable[[np.ndarray], np.ndarray] | None = None
    inverse_y: Callable[[np.ndarray], np.ndarray] | None = None
    min_dim_y: int | None = None
    #: a dimension-changing transform accepts exactly ``in_dim`` columns and returns ``out_dim`` columns
    in_dim: int | None = None
    out_dim: int | None = None
    #: outputs lie in this open interval; a stored value equal to a bound is saturated (normal_cdf: (0, 1))
    bounds: tuple[float, float] | None = None
    #: inputs must lie in the previous transform's bounds, within this interval (swissroll: (0, 1))
    needs_inputs_in: tuple[float, float] | None = None
    #: t ↦ t' such that |T(v)_j| > t implies |v_i| > t' for some input coordinate i among ``tail_factor``
    #: of them (None: unknown, so normal_cdf may not follow); used by :func:`check_saturation`
    tail_preimage: Callable[[float], float] | None = None
    tail_factor: int = 1

    def side_fn(self, side: Side = "x") -> Callable[[np.ndarray], np.ndarray]:
        return self.fn_y if side == "y" and self.fn_y is not None else self.fn

    def side_inverse(self, side: Side = "x") -> Callable[[np.ndarray], np.ndarray] | None:
        return self.inverse_y if side == "y" and self.fn_y is not None else self.inverse

    def side_min_dim(self, side: Side = "x") -> int:
        return self.min_dim_y if side == "y" and self.min_dim_y is not None else self.min_dim

    def __call__(self, x: np.ndarray, side: Side = "x") -> np.ndarray:
        need = self.side_min_dim(side)
        if x.shape[1] < need:
            raise TaskParameterError(f"transform {self.name!r} needs dim >= {need} on {side}, got {x.shape[1]}")
        if self.in_dim is not None and x.shape[1] != self.in_dim:
            raise TaskParameterError(
                f"transform {self.name!r} needs exactly {self.in_dim} input column(s), got {x.shape[1]}"
            )
        return self.side_fn(side)(x)


TRANSFORMS: Registry[Transform] = Registry("transform")

SPIRAL_SPEED = 2.0


def _wiggly(x: np.ndarray) -> np.ndarray:
    return x + 0.4 * np.sin(x) + 0.15 * np.sin(1.7 * x + 1.0) + 0.08 * np.sin(3.0 * x + 2.0)


def bmi_wiggly_x(x: np.ndarray) -> np.ndarray:
    """BMI's wiggly map on X (``bmi.benchmark.tasks.wiggly.wiggly_x``)."""
    return x + 0.4 * np.sin(x) + 0.2 * np.sin(1.7 * x + 1.0) + 0.03 * np.sin(3.3 * x - 2.5)


def bmi_wiggly_y(y: np.ndarray) -> np.ndarray:
    """BMI's wiggly map on Y (``bmi.benchmark.tasks.wiggly.wiggly_y``)."""
    return y - 0.4 * np.sin(0.4 * y) + 0.17 * np.sin(1.3 * y + 3.5) + 0.02 * np.sin(4.3 * y - 2.5)


def _rotate_pairs(x: np.ndarray, sign: float) -> np.ndarray:
    d = x.shape[1]
    angle = sign * SPIRAL_SPEED * np.sum(x * x, axis=1) / d
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    out = x.copy()
    m = d - d % 2
    a, b = x[:, 0:m:2], x[:, 1:m:2]
    out[:, 0:m:2] = c * a - s * b
    out[:, 1:m:2] = s * a + c * b
    return out


def bmi_spiral(x: np.ndarray, plane: tuple[int, int], sign: float = 1.0) -> np.ndarray:
    """exp(θ·A)·x with θ = ‖x‖²/d and A the so(d) generator with A[i, j] = −1, A[j, i] = 1 (BMI's Spiral).

    exp(θA) rotates the (i, j) plane by θ and fixes the rest; ‖x‖ is unchanged, so ``sign=-1`` inverts it.
    """
    i, j = plane
    angle = sign * np.sum(x * x, axis=1) / x.shape[1]
    c, s = np.cos(angle), np.sin(angle)
    out = x.copy()
    out[:, i] = c * x[:, i] - s * x[:, j]
    out[:, j] = s * x[:, i] + c * x[:, j]
    return out


#: BMI's bimodal marginals: (weight, mean) of unit-variance Gaussian components, per side.
BIMODAL_COMPONENTS: dict[Side, tuple[tuple[float, float], ...]] = {
    "x": ((0.3, 0.0), (0.7, 5.0)),
    "y": ((0.5, -1.0), (0.5, 3.0)),
}


def _mixture_log_cdf(t: np.ndarray, components, upper: bool) -> np.ndarray:
    """log F(t) (``upper`` False) or log(1 − F(t)) (True) of Σ w_k N(m_k, 1), without cancellation."""
    terms = [math.log(w) + (log_ndtr(m - t) if upper else log_ndtr(t - m)) for w, m in components]
    return logsumexp(np.stack(terms), axis=0)


def mixture_quantile_of_normal(v: np.ndarray, components) -> np.ndarray:
    """F⁻¹(Φ(v)) elementwise for F the CDF of Σ w_k N(m_k, 1), exact to an ulp in the far tails too.

    Φ(v) is never formed (it saturates at 1 for v > 8.3): for v ≤ 0 we solve log F(t) = log Φ(v), for v > 0
    log(1 − F(t)) = log Φ(−v), both monotone in t, by vectorised bisection on the bracket
    [v + min m, v + max m] (F(v + min m) ≤ Φ(v) ≤ F(v + max m) because every component is a shifted Φ).
    """
    v = np.asarray(v, dtype=np.float64)
    flat = v.ravel()
    out = np.empty_like(flat)
    means = [m for _, m in components]
    for upper in (False, True):
        sel = flat > 0 if upper else ~(flat > 0)
        if not sel.any():
            continue
        w = flat[sel]
        target = log_ndtr(-w) if upper else log_ndtr(w)
        lo, hi = w + min(means), w + max(means)
        for _ in range(200):  # ~55 halvings reach the tolerance; the cap only guards against NaN input
            if np.all(hi - lo <= 2.0 * np.spacing(np.maximum(np.maximum(np.abs(lo), np.abs(hi)), 1.0))):
                break
            mid = 0.5 * (lo + hi)
            value = _mixture_log_cdf(mid, components, upper)
            above = value > target if upper else value < target  # the root lies above mid
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
        out[sel] = 0.5 * (lo + hi)
    return out.reshape(v.shape)


def mixture_normal_score(t: np.ndarray, components) -> np.ndarray:
    """Φ⁻¹(F(t)): the inverse of :func:`mixture_quantile_of_normal`, again in log space."""
    t = np.asarray(t, dtype=np.float64)
    log_cdf = _mixture_log_cdf(t, components, upper=False)
    log_sf = _mixture_log_cdf(t, components, upper=True)
    upper = log_sf < log_cdf  # F(t) > ½: use the survival side
    return np.where(upper, -ndtri_exp(np.minimum(log_sf, 0.0)), ndtri_exp(np.minimum(log_cdf, 0.0)))


SWISSROLL_SCALE = 21.0


def swissroll(u: np.ndarray) -> np.ndarray:
    """BMI's Swiss roll: u ∈ (0, 1) ↦ (t cos t, t sin t)/21 with t = 1.5π(1 + 2u); (n, 1) → (n, 2)."""
    if np.any((u <= 0.0) | (u >= 1.0)):
        raise TaskParameterError("transform 'swissroll' needs inputs strictly inside (0, 1) (apply normal_cdf first)")
    t = 1.5 * math.pi * (1.0 + 2.0 * u[:, 0])
    return np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / SWISSROLL_SCALE


def swissroll_inverse(z: np.ndarray) -> np.ndarray:
    """The radius of a Swiss-roll point is t/21, so u = (21‖z‖/(1.5π) − 1)/2."""
    t = SWISSROLL_SCALE * np.hypot(z[:, 0], z[:, 1])
    return ((t / (1.5 * math.pi) - 1.0) / 2.0)[:, None]


def _bounded_preimage(bound: float) -> Callable[[float], float]:
    """tail_preimage of a map whose outputs satisfy |T(v)| < bound: nothing exceeds t ≥ bound."""
    return lambda t: math.inf if t >= bound else 0.0


for _t in (
    Transform("base", "identity", lambda x: x, inverse=lambda x: x, tail_preimage=lambda t: t),
    Transform(
        "halfcube",
        "x·sqrt(|x|) = sign(x)|x|^{3/2} per coordinate (BMI's half_cube)",
        lambda x: x * np.sqrt(np.abs(x)),
        inverse=lambda y: np.sign(y) * np.abs(y) ** (2.0 / 3.0),
        tail_preimage=lambda t: t ** (2.0 / 3.0),
    ),
    Transform("asinh", "arcsinh per coordinate", np.arcsinh, inverse=np.sinh, tail_preimage=math.sinh),
    Transform(
        "wiggly",
        "mibench's: x + 0.4 sin x + 0.15 sin(1.7x+1) + 0.08 sin(3x+2) per coordinate (derivative ≥ 0.105)",
        _wiggly,
        tail_preimage=lambda t: t - 0.63,
    ),
    Transform(
        "bmi_wiggly",
        "BMI's wiggly: x + 0.4 sin x + 0.2 sin(1.7x+1) + 0.03 sin(3.3x−2.5) on X, "
        "y − 0.4 sin(0.4y) + 0.17 sin(1.3y+3.5) + 0.02 sin(4.3y−2.5) on Y, per coordinate",
        bmi_wiggly_x,
        fn_y=bmi_wiggly_y,
        tail_preimage=lambda t: t - 0.63,
    ),
    Transform(
        "normal_cdf",
        "standard normal CDF per coordinate, onto (0, 1) (refused where it would saturate)",
        ndtr,
        inverse=ndtri,
        bounds=(0.0, 1.0),
        tail_preimage=_bounded_preimage(1.0),
    ),
    Transform(
        "spiral",
        "mibench's: rotate coordinate pairs by 2·|x|²/d (norm-preserving, invertible; dim ≥ 2)",
        lambda x: _rotate_pairs(x, 1.0),
        per_coordinate_monotone=False,
        min_dim=2,
        inverse=lambda y: _rotate_pairs(y, -1.0),
        tail_preimage=lambda t: t / math.sqrt(2.0),
        tail_factor=2,
    ),
    Transform(
        "bmi_spiral",
        "BMI's spiral: rotate the (0,1) plane of X / the (1,2) plane of Y by |v|²/d (dim_x ≥ 2, dim_y ≥ 3)",
        lambda x: bmi_spiral(x, (0, 1)),
        per_coordinate_monotone=False,
        min_dim=2,
        inverse=lambda x: bmi_spiral(x, (0, 1), -1.0),
        fn_y=lambda y: bmi_spiral(y, (1, 2)),
        inverse_y=lambda y: bmi_spiral(y, (1, 2), -1.0),
        min_dim_y=3,
        tail_preimage=lambda t: t / math.sqrt(2.0),
        tail_factor=2,
    ),
    Transform(
        "bimodal",
        "BMI's bimodal marginals: F⁻¹(Φ(v)), F = 0.3·N(0,1) + 0.7·N(5,1) on X, 0.5·N(−1,1) + 0.5·N(3,1) on Y",
        lambda x: mixture_quantile_of_normal(x, BIMODAL_COMPONENTS["x"]),
        inverse=lambda t: mixture_normal_score(t, BIMODAL_COMPONENTS["x"]),
        fn_y=lambda y: mixture_quantile_of_normal(y, BIMODAL_COMPONENTS["y"]),
        inverse_y=lambda t: mixture_normal_score(t, BIMODAL_COMPONENTS["y"]),
        tail_preimage=lambda t: t - 5.0,
    ),
    Transform(
        "swissroll",
        "BMI's Swiss roll, 1 → 2 dims: u ∈ (0,1) ↦ (t cos t, t sin t)/21, t = 1.5π(1+2u) (follows normal_cdf)",
        swissroll,
        per_coordinate_monotone=False,
        inverse=swissroll_inverse,
        in_dim=1,
        out_dim=2,
        needs_inputs_in=(0.0, 1.0),
        tail_preimage=_bounded_preimage(4.5 * math.pi / SWISSROLL_SCALE),
    ),
):
    TRANSFORMS.add(_t.name, _t)


@dataclass(frozen=True)
class TransformSpec:
    """Transform chains for X and Y (empty chain = identity)."""

    x: tuple[str, ...] = ()
    y: tuple[str, ...] = ()

    @staticmethod
    def _chain(text: str) -> tuple[str, ...]:
        names = [part.strip() for part in text.split("+")]
        if any(not name for name in names):
            raise TaskParameterError(f"malformed transform chain {text!r} (expected NAME or NAME+NAME...)")
        for name in names:
            TRANSFORMS.get(name)  # raises with the list of known transforms
        chain = tuple(name for name in names if name != "base")
        for i, name in enumerate(chain):
            need = TRANSFORMS.get(name).needs_inputs_in
            if need is None:
                continue
            prev = TRANSFORMS.get(chain[i - 1]).bounds if i else None
            if prev is None or prev[0] < need[0] or prev[1] > need[1]:
                raise TaskParameterError(
                    f"transform {name!r} needs inputs in {need}, so it must follow a transform onto that "
                    f"interval such as normal_cdf (chain {text!r})"
                )
        return chain

    @classmethod
    def parse(cls, text: str) -> TransformSpec:
        """Parse ``NAME[+NAME...]`` (both sides) or ``x:CHAIN,y:CHAIN``."""
        text = text.strip()
        if text.startswith(("x:", "y:")):
            sides = {"x": "base", "y": "base"}
            for part in text.split(","):
                side, sep, chain = part.partition(":")
                if not sep or side.strip() not in sides:
                    raise TaskParameterError(f"malformed per-side transform {text!r} (expected x:CHAIN,y:CHAIN)")
                sides[side.strip()] = chain
            return cls(cls._chain(sides["x"]), cls._chain(sides["y"]))
        chain = cls._chain(text)
        return cls(chain, chain)

    @staticmethod
    def _text(chain: tuple[str, ...]) -> str:
        return "+".join(chain) if chain else "base"

    def __str__(self) -> str:
        if self.x == self.y:
            return self._text(self.x)
        return f"x:{self._text(self.x)},y:{self._text(self.y)}"

    def chain(self, side: Side) -> tuple[str, ...]:
        return self.x if side == "x" else self.y

    def base_dim_bounds(self, side: Side) -> tuple[int, int | None]:
        """(smallest base dimension, the only one allowed or None) of one side's chain."""
        low, fixed, current = 1, None, None  # current: the known dimension after a dimension change
        for name in self.chain(side):
            t = TRANSFORMS.get(name)
            need = t.side_min_dim(side)
            if current is None:
                low = max(low, need)
                if t.in_dim is not None:
                    if t.in_dim < low:
                        raise TaskParameterError(f"transform chain {self}: {name!r} cannot follow on side {side}")
                    fixed = current = t.in_dim
            elif current < need or (t.in_dim is not None and current != t.in_dim):
                raise TaskParameterError(
                    f"transform chain {self}: {name!r} gets {current} column(s) on side {side}, needs "
                    f"{t.in_dim if t.in_dim is not None else f'>= {need}'}"
                )
            if t.out_dim is not None:
                current = t.out_dim
        return low, fixed

    def output_dim(self, side: Side, base: int) -> int:
        for name in self.chain(side):
            out = TRANSFORMS.get(name).out_dim
            base = out if out is not None else base
        return base

    def output_dims(self, base_x: int, base_y: int) -> tuple[int, int]:
        """Dimensions of the transformed sample given those of the distribution."""
        return self.output_dim("x", base_x), self.output_dim("y", base_y)

    def base_dims(self, dim_x: int, dim_y: int) -> tuple[int, int]:
        """Dimensions of the distribution behind a transformed sample of (dim_x, dim_y); raises if impossible."""
        out = []
        for side, dim in (("x", dim_x), ("y", dim_y)):
            low, fixed = self.base_dim_bounds(side)
            base = dim if fixed is None else fixed
            if self.output_dim(side, base) != dim or base < low:
                wanted = self.output_dim(side, fixed) if fixed is not None else f">= {low}"
                raise TaskParameterError(f"transform {self}: dim_{side} must be {wanted}, got {dim}")
            out.append(base)
        return out[0], out[1]

    def apply(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for name in self.x:
            x = TRANSFORMS.get(name)(x, "x")
        for name in self.y:
            y = TRANSFORMS.get(name)(y, "y")
        return x, y


def check_saturation(spec: TransformSpec, tail_probability: Callable[[float, Side], float], label: str) -> None:
    """Refuse a chain whose ``normal_cdf`` would saturate on this distribution (see the module docstring).

    ``tail_probability(t, side)`` bounds P(|v_j| > t) for every coordinate v_j of the distribution's side.
    The threshold is pulled back through the transforms before ``normal_cdf`` with their ``tail_preimage``.
    """
    for side in ("x", "y"):
        chain = spec.chain(side)
        for pos, name in enumerate(chain):
            if name != "normal_cdf":
                continue
            threshold, factor = NORMAL_CDF_SATURATION, 1
            for prev in reversed(chain[:pos]):
                t = TRANSFORMS.get(prev)
                if t.tail_preimage is None:
                    raise TaskParameterError(f"{label}: normal_cdf after {prev!r} on {side} can saturate; not allowed")
                threshold, factor = t.tail_preimage(threshold), factor * t.tail_factor
            prob = 1.0 if threshold <= 0 else min(1.0, factor * float(tail_probability(threshold, side)))
            if prob > SATURATION_MAX_PROBABILITY:
                raise TaskParameterError(
                    f"{label}: normal_cdf on {side} saturates: Φ rounds to 1.0 in float32 above "
                    f"{NORMAL_CDF_SATURATION:.2f}, and an input value lies there with probability up to {prob:.2g} "
                    f"(allowed: {SATURATION_MAX_PROBABILITY:g}); the stored sample would hold ties and carry less "
                    f"than its MI label. Use a lighter-tailed base or another transform"
                )


def saturation_ties(values: np.ndarray, spec: TransformSpec, side: Side) -> int:
    """How many stored values of one side sit at a bound of its last transform beyond the first per column
    (0 when the chain does not end in a bounded transform): the ties saturation created."""
    chain = spec.chain(side)
    bounds = TRANSFORMS.get(chain[-1]).bounds if chain else None
    if bounds is None or values.size == 0:
        return 0
    ties = 0
    for bound in bounds:
        per_column = np.sum(values == np.asarray(bound, dtype=values.dtype), axis=0)
        ties += int(np.sum(np.maximum(per_column - 1, 0)))
    return ties
