"""Transforms are injective on their side, so samples change and MI does not."""

from __future__ import annotations

import numpy as np
import pytest

from mibench.tasks import TRANSFORMS, TaskParameterError, TaskSpec, TransformSpec
from mibench.tasks.transforms import _wiggly

MONOTONE = [name for name, t in TRANSFORMS.items() if t.per_coordinate_monotone]


@pytest.mark.parametrize("name", MONOTONE)
def test_strictly_increasing_per_coordinate(name: str) -> None:
    # near 1, steps of Φ fall below float64 resolution (ulp(1) = 1.1e-16): test it where they are resolvable
    hi = 5.0 if name == "normal_cdf" else 50.0
    grid = np.linspace(-hi, hi, 200_001)
    values = TRANSFORMS.get(name)(np.stack([grid, -grid], axis=1))
    assert np.all(np.diff(values[:, 0]) > 0), name
    assert np.all(np.diff(values[:, 1]) < 0), name  # coordinates are transformed independently


def test_wiggly_derivative_is_bounded_away_from_zero() -> None:
    x = np.linspace(-40, 40, 400_001)
    derivative = np.gradient(_wiggly(x), x)
    assert derivative.min() >= 0.105 - 1e-6


@pytest.mark.parametrize("name", [n for n, t in TRANSFORMS.items() if t.inverse is not None])
def test_inverses(name: str) -> None:
    t = TRANSFORMS.get(name)
    x = np.random.default_rng(0).standard_normal((1000, 5)) * 2
    assert np.allclose(t.inverse(t(x)), x, atol=1e-9)


def test_spiral_preserves_norm_and_needs_two_dims() -> None:
    spiral = TRANSFORMS.get("spiral")
    x = np.random.default_rng(1).standard_normal((500, 3))
    assert np.allclose(np.linalg.norm(spiral(x), axis=1), np.linalg.norm(x, axis=1))
    assert not np.allclose(spiral(x), x)
    assert np.array_equal(spiral(x)[:, 2], x[:, 2])  # odd dimension: last coordinate untouched
    with pytest.raises(TaskParameterError, match="needs dim >= 2"):
        spiral(x[:, :1])


def test_composition_and_per_side_specs() -> None:
    spec = TransformSpec.parse("asinh+wiggly")
    x = np.linspace(-3, 3, 7)[:, None]
    tx, ty = spec.apply(x, x)
    assert np.allclose(tx, _wiggly(np.arcsinh(x))) and np.allclose(ty, tx)
    per_side = TransformSpec.parse("x:halfcube,y:base+normal_cdf")
    assert str(per_side) == "x:halfcube,y:normal_cdf"
    assert str(TransformSpec.parse("base")) == "base"
    assert str(TransformSpec.parse("x:asinh,y:asinh")) == "asinh"
    for text in ("asinh+", "x:asinh,z:base", "x=asinh"):
        with pytest.raises(ValueError):
            TransformSpec.parse(text)


def test_transformed_task_keeps_mi_and_changes_samples() -> None:
    base = TaskSpec("multinormal", "dense", 3, 3, {"rho": 0.6}).build()
    for name in TRANSFORMS.names():
        task = TaskSpec("multinormal", "dense", 3, 3, {"rho": 0.6}, name).build()
        assert task.mi == base.mi
        x0, y0 = base.sample(200, seed=3)
        x1, y1 = task.sample(200, seed=3)
        expected_x, expected_y = TRANSFORMS.get(name)(x0), TRANSFORMS.get(name)(y0)
        assert np.allclose(x1, expected_x) and np.allclose(y1, expected_y)
