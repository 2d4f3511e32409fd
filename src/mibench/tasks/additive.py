"""Additive uniform noise: X ~ U(0, 1)^d, Y = X + U, U ~ U(−ε, ε)^d independently per coordinate.

Per coordinate, h(Y | X) = log(2ε) and Y has a trapezoidal density, whose entropy integrates in closed
form. With coordinates independent, I(X; Y) = d · i(ε) where

    i(ε) = ε − log(2ε)   for ε ≤ ½   (ramps of width 2ε around a flat top of height 1),
    i(ε) = 1 / (4ε)      for ε > ½   (ramps of width 1 around a flat top of height 1/(2ε)).

Both branches give ½ at ε = ½ (continuity is tested).

Structures: ``diag`` uses one ε for every coordinate; ``perdim`` draws one ε_j per coordinate (stored as the
list ``epsilons``; MIST's multi-dimensional additive noise), and I = Σ_j i(ε_j).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from mibench.tasks.base import (
    Distribution,
    Family,
    Param,
    TaskParameterError,
    register_family,
    require_number,
    require_vector,
)


def additive_uniform_mi_1d(epsilon: float) -> float:
    """I(X; X + U) for X ~ U(0, 1), U ~ U(−ε, ε), in nats."""
    return epsilon - math.log(2.0 * epsilon) if epsilon <= 0.5 else 1.0 / (4.0 * epsilon)


class AdditiveUniform(Distribution):
    def __init__(self, dim: int, epsilon: float | np.ndarray) -> None:
        self.dim_x = self.dim_y = dim
        self.epsilon = epsilon  # a float (diag) or one per coordinate (perdim)
        eps = np.broadcast_to(np.asarray(epsilon, dtype=np.float64), (dim,))
        self._mi = float(sum(additive_uniform_mi_1d(float(e)) for e in eps))

    @property
    def mi(self) -> float:
        return self._mi

    def tail_probability(self, t: float, side: str) -> float:
        reach = 1.0 if side == "x" else 1.0 + float(np.max(self.epsilon))  # X in [0, 1], Y in [-ε, 1 + ε]
        return 0.0 if t >= reach else 1.0

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(0.0, 1.0, size=(n, self.dim_x))
        eps = np.asarray(self.epsilon, dtype=np.float64)
        y = x + rng.uniform(-eps, eps, size=(n, self.dim_x))
        return x, y


@register_family
class AdditiveUniformFamily(Family):
    name = "additive_uniform"
    summary = "Y = X + U(−ε_j, ε_j) per coordinate, X ~ U(0,1)^d; I = Σ_j (ε_j − log 2ε_j) (ε_j ≤ ½) or 1/(4ε_j)"
    structures: ClassVar[dict[str, str]] = {
        "diag": "coordinate i of Y depends only on coordinate i of X; one ε for all coordinates",
        "perdim": "as diag, with one ε_j per coordinate (parameter `epsilons`, each drawn from `epsilon`'s law)",
    }
    parameters: ClassVar[dict[str, Param]] = {
        "epsilon": Param(0.1, 2.0, log=True, doc="noise half-width ε > 0 (both regimes ε ≤ ½ and ε > ½)"),
    }
    same_dims = True

    def build(self, structure: str, dim_x: int, dim_y: int, params: Mapping[str, Any]) -> AdditiveUniform:
        self.check_structure(structure)
        self.check_dims(structure, dim_x, dim_y)
        label = f"{self.name}-{structure}"
        if structure == "perdim":
            eps = require_vector(label, params, "epsilons", dim_x)
            if np.any(eps <= 0):
                raise TaskParameterError(f"{label}: every entry of 'epsilons' must be > 0, got {eps.tolist()}")
            return AdditiveUniform(dim_x, eps)
        epsilon = require_number(label, params, "epsilon", low=0.0, low_open=True)
        return AdditiveUniform(dim_x, epsilon)

    def draw_params(self, rng, structure, dim_x, dim_y, ranges):
        if structure == "perdim":
            return {"epsilons": [float(self.draw("epsilon", rng, ranges)) for _ in range(dim_x)]}
        return {"epsilon": self.draw("epsilon", rng, ranges)}
