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


# -- BMI's latent-variable structures ----------------------------------------------------------------
def _bmi_mixing(dx: int, dy: int, k: int, alpha: float, lambd: float, beta: float, eta: float) -> np.ndarray:
    """BMI's GaussianLVMParametrization.mixing, written from its latent-variable description (epsilon = 1):
    latents U_all, U_X, U_Y, Z_1..Z_k, E_1..E_dx, F_1..F_dy, V_(k+1..dx), W_(k+1..dy)."""
    n_latent = 3 + k + dx + dy + (dx - k) + (dy - k)
    rows = []
    for side, dim in (("x", dx), ("y", dy)):
        for i in range(dim):
            row = np.zeros(n_latent)
            row[0] = alpha
            row[1 if side == "x" else 2] = beta
            if i < k:
                row[3 + i] = lambd
            row[3 + k + (i if side == "x" else dx + i)] = 1.0
            if i >= k:
                offset = 3 + k + dx + dy + (0 if side == "x" else dx - k)
                row[offset + i - k] = eta
            rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize(
    ("dx", "dy", "k", "alpha", "lambd", "beta", "eta"),
    [
        (2, 2, 1, 0.5, 1.0, 0.3, 2.0),
        (4, 3, 3, 0.9, 2.5, 1.4, 0.2),
        (5, 5, 0, 0.0, 1.0, 1.0, 4.0),
        (3, 6, 2, 0.0, 3.0, 0.0, 3.0),
    ],
)
def test_bmi_lvm_is_the_correlation_of_bmis_latent_model(dx, dy, k, alpha, lambd, beta, eta) -> None:
    mixing = _bmi_mixing(dx, dy, k, alpha, lambd, beta, eta)
    cov = mixing @ mixing.T
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    params = {"n_interacting": k, "alpha": alpha, "lambd": lambd, "beta": beta, "eta": eta}
    task = TaskSpec("multinormal", "bmi_lvm", dx, dy, params).build()
    assert np.allclose(task.distribution.cov, corr, atol=1e-14)
    _, logdet = np.linalg.slogdet(corr)
    expected = 0.5 * (np.linalg.slogdet(corr[:dx, :dx])[1] + np.linalg.slogdet(corr[dx:, dx:])[1] - logdet)
    assert task.mi == pytest.approx(expected, rel=1e-10, abs=1e-13)


@pytest.mark.parametrize(("k", "lam"), [(1, 0.1), (2, 2.0), (5, 5.0)])
def test_bmi_sparse_pairs_have_correlation_lambda_squared_over_one_plus(k: int, lam: float) -> None:
    rho = lam**2 / (1 + lam**2)
    sparse = TaskSpec("multinormal", "bmi_sparse", 5, 6, {"n_interacting": k, "strength": lam}).build()
    assert sparse.mi == pytest.approx(-0.5 * k * math.log(1 - rho**2), rel=1e-12)
    expected = np.eye(11)
    expected[np.arange(k), 5 + np.arange(k)] = expected[5 + np.arange(k), np.arange(k)] = rho
    assert np.allclose(sparse.distribution.cov, expected, atol=1e-15)
    two = TaskSpec("student", "bmi_2pair", 3, 3, {"strength": lam, "df": 4.0}).build()
    assert two.mi == pytest.approx(-math.log(1 - rho**2) + student_t_correction(4.0, 3, 3), rel=1e-12)


def test_bmi_structures_validate_before_sampling() -> None:
    with pytest.raises(TaskParameterError, match="'n_interacting'=4 is outside"):
        TaskSpec("multinormal", "bmi_sparse", 3, 5, {"n_interacting": 4, "strength": 1.0}).build()
    with pytest.raises(TaskParameterError, match="missing parameter 'eta'"):
        TaskSpec("multinormal", "bmi_lvm", 3, 3, {"n_interacting": 1, "alpha": 0, "lambd": 1, "beta": 0}).build()
    with pytest.raises(TaskParameterError, match="needs dim_x >= 2"):
        TaskSpec("student", "bmi_2pair", 1, 3, {"strength": 1.0, "df": 3}).build()


def test_bmi_structure_draws_follow_mists_laws_by_default() -> None:
    fam, rng = get_family("multinormal"), np.random.default_rng(1)
    draws = [fam.draw_params(rng, "bmi_sparse", 4, 4, {}) for _ in range(400)]
    assert {d["n_interacting"] for d in draws} == {1, 2, 3, 4}  # randint(1, d), capped at min(dim_x, dim_y)
    assert all(0.1 <= d["strength"] <= 5.0 for d in draws)
    lvm = fam.draw_params(rng, "bmi_lvm", 6, 6, {"lambd": (0.5, 0.6, "uniform")})
    assert set(lvm) == {"n_interacting", "alpha", "lambd", "beta", "eta"} and 0.5 <= lvm["lambd"] <= 0.6


# -- per-dimension additive noise --------------------------------------------------------------------
def test_additive_uniform_perdim_sums_the_coordinates() -> None:
    eps = [0.1, 0.5, 0.9, 2.0]
    task = TaskSpec("additive_uniform", "perdim", 4, 4, {"epsilons": eps}).build()
    assert task.mi == pytest.approx(sum(additive_uniform_mi_1d(e) for e in eps), rel=1e-14)
    x, y = task.sample(20_000, seed=1)
    assert np.all(np.abs(y - x) <= np.array(eps)) and np.all(np.abs(y - x).max(axis=0) > 0.99 * np.array(eps))
    with pytest.raises(TaskParameterError, match=r"shape \(3,\)"):
        TaskSpec("additive_uniform", "perdim", 3, 3, {"epsilons": eps}).build()
    with pytest.raises(TaskParameterError, match="must be > 0"):
        TaskSpec("additive_uniform", "perdim", 2, 2, {"epsilons": [0.5, 0.0]}).build()


# -- Student-t correction at extreme df ---------------------------------------------------------------
@pytest.mark.parametrize("df", [0.3, 1.0, 7.0, 19.9, 20.0, 20.1, 99.0, 1e3, 1e5, 1e7, 1e9, 1e12])
@pytest.mark.parametrize(("dx", "dy"), [(1, 1), (1, 3), (3, 10), (32, 32)])
def test_student_correction_matches_high_precision_arithmetic(df: float, dx: int, dy: int) -> None:
    """Against 120-digit mpmath of the defining formula (the float64 formula loses every digit at large df)."""
    import mpmath

    with mpmath.workdps(120):
        a, p, q = mpmath.mpf(df) / 2, mpmath.mpf(dx) / 2, mpmath.mpf(dy) / 2

        def g(x):
            return mpmath.loggamma(x) - x * mpmath.digamma(x)

        exact = float(g(a) + g(a + p + q) - g(a + p) - g(a + q))
    value = student_t_correction(df, dx, dy)
    assert value > 0
    assert value == pytest.approx(exact, rel=1e-10)


def test_student_mi_is_never_negative_at_huge_df() -> None:
    previous = math.inf
    for df in (1e6, 1e7, 1e9, 1e12, 1e15, 1e300):
        mi = TaskSpec("student", "dense", 1, 1, {"rho": 0.0, "df": df}).build().mi
        assert 0.0 <= mi <= previous
        previous = mi


# -- Monte-Carlo labels carry their error before .mi is read ------------------------------------------
def test_mixture_error_is_available_before_the_value_is_read() -> None:
    params = {"weight": 0.37, "separation": 2.71, "rho": 0.123}  # not used elsewhere: nothing cached
    dist = TaskSpec("mixture", "bimodal", 2, 2, params).build().distribution
    assert dist.mi_method == "monte_carlo"
    bound, se = dist.mi_error_bound, dist.mi_std_error  # read first
    assert 0 < se < 0.01 and bound == pytest.approx(4 * se)
    assert dist.mi > 0
    assert dist.mi_std_error == se  # one computation, consistent
    closed = TaskSpec("multinormal", "dense", 2, 2, {"rho": 0.3}).build().distribution
    assert closed.mi_error_bound == 0.0 and closed.mi_std_error is None
