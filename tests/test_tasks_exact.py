"""Closed-form MI values against textbook formulas, and parameter validation before sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mibench.registry import UnknownNameError
from mibench.tasks import FAMILIES, TaskParameterError, TaskSpec, get_family, parse_entry
from mibench.tasks.additive import additive_uniform_mi_1d
from mibench.tasks.student import student_t_correction


@pytest.mark.parametrize("rho", [-0.9, -0.3, 0.0, 0.25, 0.5, 0.8, 0.99])
def test_bivariate_normal_textbook(rho: float) -> None:
    task = TaskSpec("multinormal", "dense", 1, 1, {"rho": rho}).build()
    assert task.mi == pytest.approx(-0.5 * math.log(1 - rho**2), abs=1e-12)


@pytest.mark.parametrize(
    ("structure", "params"),
    [("dense", {"rho": 0.0}), ("sparse", {"k": 2, "strength": 0.0}), ("2pair", {"strength": 0.0, "within": 0.4})],
)
def test_independent_gaussians_have_zero_mi(structure: str, params: dict) -> None:
    assert TaskSpec("multinormal", structure, 3, 4, params).build().mi == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("dx", "dy", "rho"), [(1, 3, 0.4), (3, 3, 0.7), (10, 2, 0.2), (5, 8, -0.05)])
def test_dense_closed_form(dx: int, dy: int, rho: float) -> None:
    d = dx + dy
    expected = 0.5 * (
        math.log(1 + (dx - 1) * rho) + math.log(1 + (dy - 1) * rho) - math.log(1 + (d - 1) * rho) - math.log(1 - rho)
    )
    assert TaskSpec("multinormal", "dense", dx, dy, {"rho": rho}).build().mi == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(("k", "s"), [(1, 0.5), (3, 0.9), (4, -0.6)])
def test_sparse_closed_form(k: int, s: float) -> None:
    mi = TaskSpec("multinormal", "sparse", 5, 4, {"k": k, "strength": s}).build().mi
    assert mi == pytest.approx(-0.5 * k * math.log(1 - s * s), rel=1e-10)


def test_lvm_with_zero_loadings_is_independent() -> None:
    params = {"latent_dim": 2, "loadings_x": np.zeros((3, 2)).tolist(), "loadings_y": [[1.0, 0.5]] * 2}
    assert TaskSpec("multinormal", "lvm", 3, 2, params).build().mi == pytest.approx(0.0, abs=1e-12)


def test_student_correction_properties() -> None:
    # positive for finite df, vanishes as df -> infinity, grows as df -> 0
    values = [student_t_correction(df, 2, 3) for df in (0.5, 1.0, 3.0, 30.0, 1e6)]
    assert all(v > 0 for v in values[:-1])
    assert values == sorted(values, reverse=True)
    assert values[-1] == pytest.approx(0.0, abs=1e-5)
    # bivariate t with zero correlation, df=1 (Cauchy-like): known value log(2)+... check symmetry in dims
    assert student_t_correction(4.0, 2, 5) == pytest.approx(student_t_correction(4.0, 5, 2), rel=1e-14)


def test_student_mi_adds_correction_to_gaussian_part() -> None:
    gauss = TaskSpec("multinormal", "sparse", 3, 3, {"k": 2, "strength": 0.6}).build().mi
    t = TaskSpec("student", "sparse", 3, 3, {"k": 2, "strength": 0.6, "df": 5.0}).build().mi
    assert t == pytest.approx(gauss + student_t_correction(5.0, 3, 3), rel=1e-12)


@pytest.mark.parametrize(("eps", "expected"), [(0.1, 0.1 - math.log(0.2)), (0.5, 0.5), (1.0, 0.25), (2.0, 0.125)])
def test_additive_uniform_both_regimes(eps: float, expected: float) -> None:
    assert additive_uniform_mi_1d(eps) == pytest.approx(expected, rel=1e-12)
    assert TaskSpec("additive_uniform", "diag", 3, 3, {"epsilon": eps}).build().mi == pytest.approx(3 * expected)


def test_additive_uniform_is_continuous_at_one_half() -> None:
    assert additive_uniform_mi_1d(0.5 - 1e-12) == pytest.approx(additive_uniform_mi_1d(0.5 + 1e-12), abs=1e-9)


def test_categorical_limits() -> None:
    far = TaskSpec("categorical", "line", 1, 2, {"classes": 4, "spacing": 30.0}).build()
    near = TaskSpec("categorical", "line", 1, 2, {"classes": 4, "spacing": 1e-3}).build()
    assert far.mi == pytest.approx(math.log(4), abs=1e-9)
    assert near.mi == pytest.approx(0.0, abs=1e-6)
    mid = TaskSpec("categorical", "line", 1, 5, {"classes": 3, "spacing": 2.0}).build()
    assert 0 < mid.mi < math.log(3)
    assert mid.distribution.mi_error_bound < 1e-9


def test_categorical_two_classes_matches_independent_quadrature() -> None:
    # I = H(X) - H(X|Y); for 2 classes H(X|Y) = E_y[h2(posterior)], integrate on a fine grid
    delta = 1.5
    t = np.linspace(-15, 15 + delta, 400_001)
    p0 = np.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    p1 = np.exp(-0.5 * (t - delta) ** 2) / math.sqrt(2 * math.pi)
    p = 0.5 * (p0 + p1)
    post = np.clip(0.5 * p0 / p, 1e-300, 1)
    h2 = -(post * np.log(post) + (1 - post) * np.log(np.clip(1 - post, 1e-300, 1)))
    expected = math.log(2) - np.trapezoid(p * h2, t)
    mi = TaskSpec("categorical", "line", 1, 1, {"classes": 2, "spacing": delta}).build().mi
    assert mi == pytest.approx(expected, abs=1e-8)


# -- validation before sampling ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TaskSpec("multinormal", "dense", 2, 2, {"rho": -0.5}), "not positive definite"),
        (TaskSpec("multinormal", "dense", 1, 1, {"rho": 1.0}), "outside"),
        (TaskSpec("multinormal", "2pair", 2, 2, {"strength": 0.8, "within": 0.5}), "not positive definite"),
        (TaskSpec("multinormal", "sparse", 2, 3, {"k": 3, "strength": 0.5}), "'k'=3 is outside"),
        (TaskSpec("multinormal", "2pair", 1, 3, {"strength": 0.5, "within": 0.0}), "needs dim_x >= 2"),
        (TaskSpec("student", "dense", 2, 2, {"rho": 0.5, "df": 0.0}), "'df'=0.0 is outside"),
        (TaskSpec("student", "dense", 2, 2, {"rho": 0.5, "df": -3}), "'df'=-3 is outside"),
        (TaskSpec("student", "dense", 2, 2, {"rho": 0.5}), "missing parameter 'df'"),
        (TaskSpec("additive_uniform", "diag", 2, 3, {"epsilon": 0.3}), "dim_x == dim_y"),
        (TaskSpec("additive_uniform", "diag", 2, 2, {"epsilon": 0.0}), "'epsilon'=0.0"),
        (TaskSpec("multinormal", "dense", 2, 2, {"rho": float("nan")}), "must be finite"),
        (TaskSpec("multinormal", "dense", 2, 2, {"rho": "0.5"}), "must be a number"),
        (
            TaskSpec(
                "multinormal", "lvm", 2, 2, {"latent_dim": 1, "loadings_x": [[1.0]], "loadings_y": [[1.0], [2.0]]}
            ),
            "shape (2, 1)",
        ),
        (
            TaskSpec(
                "mixture",
                "random",
                2,
                2,
                {"components": 2, "weights": [0.5, 0.6], "means": [[0] * 4] * 2, "rhos": [0, 0]},
            ),
            "sum to 1",
        ),
        (TaskSpec("multinormal", "spiral", 2, 2, {}), "unknown structure 'spiral'"),
        (TaskSpec("multinormal", "dense", 1, 2, {"rho": 0.3}, "spiral"), "needs dims >= 2x2"),
        (TaskSpec("categorical", "line", 2, 2, {"classes": 2, "spacing": 1.0}), "dim_x == 1"),
    ],
)
def test_impossible_parameters_are_rejected(spec: TaskSpec, message: str) -> None:
    with pytest.raises(TaskParameterError, match=__import__("re").escape(message)):
        spec.build()


@pytest.mark.parametrize("n", [0, 1, 2.5, True])
def test_sample_size_below_two_is_rejected(n) -> None:
    task = TaskSpec("multinormal", "dense", 1, 1, {"rho": 0.5}).build()
    with pytest.raises(TaskParameterError, match="n must be an integer >= 2"):
        task.sample(n, seed=0)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_family("gaussian")
    for name in FAMILIES.names():
        assert name in str(info.value)
    with pytest.raises(UnknownNameError, match="Did you mean 'halfcube'"):
        parse_entry("multinormal-dense-halfcub")


def test_parse_entry() -> None:
    assert parse_entry("student-2pair-asinh+wiggly") == ("student", "2pair", "asinh+wiggly")
    assert parse_entry("multinormal-dense") == ("multinormal", "dense", "base")
    assert parse_entry("multinormal-dense-x:halfcube,y:base") == ("multinormal", "dense", "x:halfcube,y:base")
    with pytest.raises(TaskParameterError):
        parse_entry("multinormal")


def test_samples_are_seeded_and_shaped() -> None:
    task = TaskSpec(
        "student", "lvm", 3, 2, {"latent_dim": 1, "loadings_x": [[1.0]] * 3, "loadings_y": [[0.5]] * 2, "df": 3.0}
    ).build()
    x1, y1 = task.sample(50, seed=7)
    x2, y2 = task.sample(50, seed=7)
    x3, _ = task.sample(50, seed=8)
    assert x1.shape == (50, 3) and y1.shape == (50, 2)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_draw_params_always_builds() -> None:
    rng = np.random.default_rng(0)
    for name, family in FAMILIES.items():
        for structure in family.structures:
            for _ in range(3 if name == "mixture" else 20):
                dx = family.fixed_dim_x or int(rng.integers(max(2, family.min_dims(structure)[0]), 12))
                dy = dx if family.same_dims else int(rng.integers(max(2, family.min_dims(structure)[1]), 12))
                params = family.draw_params(rng, structure, dx, dy, {})
                mi = TaskSpec(name, structure, dx, dy, params).build().mi
                assert math.isfinite(mi) and mi >= 0
