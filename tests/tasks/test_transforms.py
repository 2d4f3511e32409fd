"""Transforms are injective on their side, so samples change and MI does not; BMI's maps follow their formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.linalg import expm
from scipy.special import log_ndtr, ndtr

from mibench.tasks import TRANSFORMS, TaskParameterError, TaskSpec, TransformSpec
from mibench.tasks.transforms import (
    BIMODAL_COMPONENTS,
    NORMAL_CDF_SATURATION,
    _wiggly,
    bmi_wiggly_x,
    bmi_wiggly_y,
    saturation_ties,
)

MONOTONE = [name for name, t in TRANSFORMS.items() if t.per_coordinate_monotone]


@pytest.mark.parametrize("side", ["x", "y"])
@pytest.mark.parametrize("name", MONOTONE)
def test_strictly_increasing_per_coordinate(name: str, side: str) -> None:
    # near 1, steps of Φ fall below float64 resolution (ulp(1) = 1.1e-16): test it where they are resolvable
    hi = 5.0 if name == "normal_cdf" else 50.0
    grid = np.linspace(-hi, hi, 200_001)
    values = TRANSFORMS.get(name)(np.stack([grid, -grid], axis=1), side)
    assert np.all(np.diff(values[:, 0]) > 0), name
    assert np.all(np.diff(values[:, 1]) < 0), name  # coordinates are transformed independently


def test_wiggly_derivatives_are_bounded_away_from_zero() -> None:
    x = np.linspace(-40, 40, 400_001)
    assert np.gradient(_wiggly(x), x).min() >= 0.105 - 1e-6
    assert np.gradient(bmi_wiggly_x(x), x).min() >= 0.161 - 1e-6
    assert np.gradient(bmi_wiggly_y(x), x).min() >= 0.533 - 1e-6


def test_bmi_wiggly_is_bmis_formula_per_side() -> None:
    v = np.linspace(-7, 7, 29)
    f = v + 0.4 * np.sin(v) + 0.2 * np.sin(1.7 * v + 1) + 0.03 * np.sin(3.3 * v - 2.5)
    g = v - 0.4 * np.sin(0.4 * v) + 0.17 * np.sin(1.3 * v + 3.5) + 0.02 * np.sin(4.3 * v - 2.5)
    x, y = TransformSpec.parse("bmi_wiggly").apply(v[:, None], v[:, None])
    assert np.array_equal(x[:, 0], f) and np.array_equal(y[:, 0], g)
    assert not np.allclose(f, _wiggly(v))  # mibench's own wiggly is a different map, kept under its name


def _domain(name: str, side: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if name == "swissroll":
        return rng.uniform(1e-9, 1 - 1e-9, (1000, 1))
    x = rng.standard_normal((1000, 5)) * 2
    return np.clip(x, -4, 4) if name == "normal_cdf" else x


@pytest.mark.parametrize("side", ["x", "y"])
@pytest.mark.parametrize("name", [n for n, t in TRANSFORMS.items() if t.inverse is not None])
def test_inverses(name: str, side: str) -> None:
    t = TRANSFORMS.get(name)
    x = _domain(name, side)
    assert np.allclose(t.side_inverse(side)(t(x, side)), x, atol=1e-9, rtol=1e-9)


def test_spiral_preserves_norm_and_needs_two_dims() -> None:
    spiral = TRANSFORMS.get("spiral")
    x = np.random.default_rng(1).standard_normal((500, 3))
    assert np.allclose(np.linalg.norm(spiral(x), axis=1), np.linalg.norm(x, axis=1))
    assert not np.allclose(spiral(x), x)
    assert np.array_equal(spiral(x)[:, 2], x[:, 2])  # odd dimension: last coordinate untouched
    with pytest.raises(TaskParameterError, match="needs dim >= 2"):
        spiral(x[:, :1])


@pytest.mark.parametrize(
    ("side", "plane", "dim"), [("x", (0, 1), 2), ("x", (0, 1), 5), ("y", (1, 2), 3), ("y", (1, 2), 7)]
)
def test_bmi_spiral_is_the_matrix_exponential_of_bmis_generator(side: str, plane, dim: int) -> None:
    """x ↦ exp(‖x‖²/d · A) x, A the so(d) generator with A[i, j] = −1, A[j, i] = 1 (bmi.transforms.so_generator)."""
    i, j = plane
    a = np.zeros((dim, dim))
    a[i, j], a[j, i] = -1.0, 1.0
    x = np.random.default_rng(2).standard_normal((40, dim)) * 1.5
    expected = np.stack([expm(a * (row @ row) / dim) @ row for row in x])
    out = TRANSFORMS.get("bmi_spiral")(x, side)
    assert np.allclose(out, expected, atol=1e-12)
    assert np.allclose(np.linalg.norm(out, axis=1), np.linalg.norm(x, axis=1))  # injective: rotate back by ‖x‖²/d
    untouched = [c for c in range(dim) if c not in plane]
    assert np.array_equal(out[:, untouched], x[:, untouched])


def test_bmi_spiral_needs_three_dims_on_y() -> None:
    with pytest.raises(TaskParameterError, match="needs dim >= 3 on y"):
        TRANSFORMS.get("bmi_spiral")(np.ones((4, 2)), "y")
    with pytest.raises(TaskParameterError, match="needs dims >= 2x3"):
        TaskSpec("multinormal", "dense", 2, 2, {"rho": 0.3}, "bmi_spiral").build()


@pytest.mark.parametrize("side", ["x", "y"])
def test_bimodal_is_the_quantile_of_bmis_mixture_even_in_the_tails(side: str) -> None:
    comps = BIMODAL_COMPONENTS[side]
    assert comps == (((0.3, 0.0), (0.7, 5.0)) if side == "x" else ((0.5, -1.0), (0.5, 3.0)))
    v = np.linspace(-35, 35, 7001)  # Φ(v) is exactly 1.0 in float64 beyond 8.3: the map must not saturate
    t = TRANSFORMS.get("bimodal")(v[:, None], side)[:, 0]
    assert np.all(np.isfinite(t)) and np.all(np.diff(t) > 0)
    # F(t) = Φ(v), compared in log space on the side where it is resolvable
    log_cdf = np.logaddexp.reduce([np.log(w) + log_ndtr(t - m) for w, m in comps], axis=0)
    log_sf = np.logaddexp.reduce([np.log(w) + log_ndtr(m - t) for w, m in comps], axis=0)
    lower = v <= 0
    assert np.allclose(log_cdf[lower], log_ndtr(v[lower]), rtol=1e-12, atol=1e-12)
    assert np.allclose(log_sf[~lower], log_ndtr(-v[~lower]), rtol=1e-12, atol=1e-12)


def test_bimodal_marginals_follow_the_mixtures() -> None:
    task = TaskSpec("multinormal", "dense", 1, 1, {"rho": 0.75}, "bimodal").build()
    x, y = task.sample(20_000, seed=4)
    for values, side in ((x[:, 0], "x"), (y[:, 0], "y")):
        comps = BIMODAL_COMPONENTS[side]
        cdf = lambda t, c=comps: sum(w * ndtr(t - m) for w, m in c)  # noqa: E731
        assert stats.kstest(values, cdf).pvalue > 1e-3, side
    assert task.mi == pytest.approx(-0.5 * math.log(1 - 0.75**2), rel=1e-15)


def test_swissroll_formula_dimension_change_and_injectivity() -> None:
    u = np.linspace(1e-6, 1 - 1e-6, 100_001)[:, None]
    z = TRANSFORMS.get("swissroll")(u)
    t = 1.5 * np.pi * (1 + 2 * u[:, 0])
    assert z.shape == (u.shape[0], 2)
    assert np.allclose(z, np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 21, atol=1e-15)
    radius = np.hypot(z[:, 0], z[:, 1])
    assert np.all(np.diff(radius) > 0)  # the radius is t/21, strictly increasing: no two inputs meet
    with pytest.raises(TaskParameterError, match="strictly inside"):
        TRANSFORMS.get("swissroll")(np.array([[1.2]]))
    with pytest.raises(TaskParameterError, match="must follow a transform onto that interval"):
        TransformSpec.parse("x:swissroll,y:base")


def test_dimension_changing_transforms_set_the_sample_dims() -> None:
    spec = TransformSpec.parse("x:normal_cdf+swissroll,y:normal_cdf")
    assert spec.base_dims(2, 1) == (1, 1) and spec.output_dims(1, 1) == (2, 1)
    task = TaskSpec("multinormal", "dense", 2, 1, {"rho": 0.75}, str(spec)).build()
    x, y = task.sample(300, seed=0)
    assert x.shape == (300, 2) and y.shape == (300, 1)
    assert task.mi == pytest.approx(-0.5 * math.log(1 - 0.75**2), rel=1e-15)
    for dims in ((1, 1), (3, 1), (4, 2)):
        with pytest.raises(TaskParameterError, match="dim_x must be 2"):
            TaskSpec("multinormal", "dense", *dims, {"rho": 0.75}, str(spec)).build()


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
        if TRANSFORMS.get(name).in_dim is not None:
            continue  # dimension-changing (swissroll): tested above
        task = TaskSpec("multinormal", "dense", 3, 3, {"rho": 0.6}, name).build()
        assert task.mi == base.mi
        x0, y0 = base.sample(200, seed=3)
        x1, y1 = task.sample(200, seed=3)
        expected_x, expected_y = TRANSFORMS.get(name)(x0, "x"), TRANSFORMS.get(name)(y0, "y")
        assert np.allclose(x1, expected_x) and np.allclose(y1, expected_y)


# -- normal_cdf saturation --------------------------------------------------------------------------
def test_saturation_threshold_is_where_float32_rounds_phi_to_one() -> None:
    assert NORMAL_CDF_SATURATION == pytest.approx(5.42, abs=0.01)
    assert np.float32(ndtr(NORMAL_CDF_SATURATION + 0.01)) == 1.0
    assert np.float32(ndtr(NORMAL_CDF_SATURATION - 0.01)) < 1.0


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (TaskSpec("student", "dense", 1, 1, {"rho": 0.0, "df": 1}, "normal_cdf"), "probability up to 0.1"),
        (TaskSpec("student", "dense", 3, 3, {"rho": 0.2, "df": 10}, "normal_cdf"), "saturates"),
        (TaskSpec("multinormal", "dense", 2, 2, {"rho": 0.5}, "halfcube+normal_cdf"), "saturates"),
        (
            TaskSpec(
                "multinormal",
                "lvm",
                2,
                2,
                {"latent_dim": 1, "loadings_x": [[2.0], [2.0]], "loadings_y": [[2.0], [0.0]]},
                "normal_cdf",
            ),
            "saturates",
        ),
    ],
)
def test_normal_cdf_is_refused_where_it_saturates(spec: TaskSpec, why: str) -> None:
    with pytest.raises(TaskParameterError, match=why):
        spec.build()


def test_normal_cdf_is_allowed_on_light_tails() -> None:
    for spec in (
        TaskSpec("multinormal", "bmi_sparse", 25, 25, {"n_interacting": 2, "strength": 2.0}, "normal_cdf"),
        TaskSpec("multinormal", "dense", 3, 3, {"rho": 0.5}, "asinh+normal_cdf"),
        TaskSpec("student", "dense", 2, 2, {"rho": 0.0, "df": 1e7}, "normal_cdf"),  # Gaussian in the limit
        TaskSpec("additive_uniform", "diag", 2, 2, {"epsilon": 0.5}, "normal_cdf"),  # bounded
    ):
        spec.build()


def test_saturation_ties_counts_repeated_values_at_a_bound() -> None:
    spec = TransformSpec.parse("x:normal_cdf,y:base")
    stored = np.array([[0.2, 1.0], [1.0, 1.0], [1.0, 0.3], [0.0, 1.0]], dtype=np.float32)
    assert saturation_ties(stored[:, :1], spec, "x") == 1  # column 0: two values at 1.0 (0.0 once: no tie)
    assert saturation_ties(stored[:, 1:], spec, "x") == 2  # column 1: three at 1.0
    assert saturation_ties(stored, spec, "x") == 3
    assert saturation_ties(stored, spec, "y") == 0  # no bounded transform on y
