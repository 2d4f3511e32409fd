"""MI-preserving transforms applied to one side (X or Y) of a sample.

Mutual information is invariant under injective (differentiable, invertible) maps applied separately to X
and to Y. Every transform here is such a map:

* ``base``       — identity;
* ``halfcube``   — x·sqrt(|x|) per coordinate (strictly increasing);
* ``asinh``      — arcsinh per coordinate (strictly increasing);
* ``wiggly``     — x + 0.4 sin x + 0.15 sin(1.7x + 1) + 0.08 sin(3x + 2) per coordinate; its derivative is
  ≥ 1 − 0.4 − 0.255 − 0.24 = 0.105 > 0, so it is strictly increasing;
* ``normal_cdf`` — the standard normal CDF Φ per coordinate (strictly increasing onto (0, 1));
* ``spiral``     — rotates each coordinate pair (x₁, x₂), (x₃, x₄), … by the angle 2·‖x‖²/d; rotations keep
  ‖x‖, so the map is inverted by rotating back by the same angle. Needs dim ≥ 2.

A transform spec is a ``+``-separated chain applied left to right (``asinh+wiggly``) used for both sides,
or ``x:SPEC,y:SPEC`` for different chains per side. Specs are normalised to a canonical string, which is
what the ``transform`` column of every Parquet file holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from mibench.registry import Registry
from mibench.tasks.base import TaskParameterError


@dataclass(frozen=True)
class Transform:
    name: str
    doc: str
    fn: Callable[[np.ndarray], np.ndarray]
    #: strictly increasing in every coordinate separately (tested); False for mixing maps like spiral.
    per_coordinate_monotone: bool = True
    min_dim: int = 1
    inverse: Callable[[np.ndarray], np.ndarray] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] < self.min_dim:
            raise TaskParameterError(f"transform {self.name!r} needs dim >= {self.min_dim}, got {x.shape[1]}")
        return self.fn(x)


TRANSFORMS: Registry[Transform] = Registry("transform")

SPIRAL_SPEED = 2.0


def _wiggly(x: np.ndarray) -> np.ndarray:
    return x + 0.4 * np.sin(x) + 0.15 * np.sin(1.7 * x + 1.0) + 0.08 * np.sin(3.0 * x + 2.0)


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


for _t in (
    Transform("base", "identity", lambda x: x, inverse=lambda x: x),
    Transform(
        "halfcube",
        "x·sqrt(|x|) per coordinate",
        lambda x: x * np.sqrt(np.abs(x)),
        inverse=lambda y: np.sign(y) * np.abs(y) ** (2.0 / 3.0),
    ),
    Transform("asinh", "arcsinh per coordinate", np.arcsinh, inverse=np.sinh),
    Transform(
        "wiggly", "x + 0.4 sin x + 0.15 sin(1.7x+1) + 0.08 sin(3x+2) per coordinate (derivative ≥ 0.105)", _wiggly
    ),
    Transform("normal_cdf", "standard normal CDF per coordinate", ndtr),
    Transform(
        "spiral",
        "rotate coordinate pairs by 2·|x|²/d (norm-preserving, invertible; dim ≥ 2)",
        lambda x: _rotate_pairs(x, 1.0),
        per_coordinate_monotone=False,
        min_dim=2,
        inverse=lambda y: _rotate_pairs(y, -1.0),
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
        return tuple(name for name in names if name != "base")

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

    def min_dims(self) -> tuple[int, int]:
        def need(chain: tuple[str, ...]) -> int:
            return max((TRANSFORMS.get(name).min_dim for name in chain), default=1)

        return need(self.x), need(self.y)

    def apply(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for name in self.x:
            x = TRANSFORMS.get(name)(x)
        for name in self.y:
            y = TRANSFORMS.get(name)(y)
        return x, y
