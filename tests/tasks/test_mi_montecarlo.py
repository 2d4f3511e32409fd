"""Independent verification of every closed form: Monte Carlo of E[log p(x,y) − log p(x) − log p(y)].

Densities come from scipy.stats, not from our code; samples come from our samplers (so the samplers are
checked too). 10^5 draws per case; agreement within 4 standard errors (plus the stated error bound of the
family's own MI value, which is 0 for closed forms).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from mibench.tasks import TaskSpec, get_family

DRAWS = 100_000
DIMS = [(1, 1), (3, 3), (10, 10), (1, 3), (3, 10)]


def _mc_check(spec: TaskSpec, log_ratio) -> None:
    task = spec.build()
    x, y = task.distribution.sample(DRAWS, np.random.default_rng(int(spec.key, 16)))
    r = log_ratio(task, x, y)
    mean, se = float(np.mean(r)), float(np.std(r) / math.sqrt(DRAWS))
    bound = 4 * se + task.distribution.mi_error_bound + 1e-9
    assert abs(mean - task.mi) <= bound, (
        f"{spec.entry} {spec.dim_x}x{spec.dim_y}: MC {mean:.5f} ± {se:.5f} vs exact {task.mi:.5f}"
    )


def _draws(family: str, structure: str, dx: int, dy: int, count: int = 2, seed: int = 0):
    fam = get_family(family)
    rng = np.random.default_rng([seed, dx, dy])
    return [fam.draw_params(rng, structure, dx, dy, {}) for _ in range(count)]


def _gaussian_ratio(task, x, y):
    cov = task.distribution.cov
    dx = task.spec.dim_x
    z = np.hstack([x, y])
    return (
        stats.multivariate_normal(cov=cov).logpdf(z)
        - stats.multivariate_normal(cov=cov[:dx, :dx]).logpdf(x)
        - stats.multivariate_normal(cov=cov[dx:, dx:]).logpdf(y)
    ).reshape(-1)


def _student_ratio(task, x, y):
    scale, df = task.distribution.scale, task.distribution.df
    dx = task.spec.dim_x
    z = np.hstack([x, y])
    return (
        stats.multivariate_t(shape=scale, df=df).logpdf(z)
        - stats.multivariate_t(shape=scale[:dx, :dx], df=df).logpdf(x)
        - stats.multivariate_t(shape=scale[dx:, dx:], df=df).logpdf(y)
    ).reshape(-1)


STRUCTURES = ["dense", "sparse", "2pair", "lvm", "bmi_sparse", "bmi_2pair", "bmi_lvm"]


@pytest.mark.parametrize(("dx", "dy"), DIMS)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_multinormal_mc(structure: str, dx: int, dy: int) -> None:
    if structure.endswith("2pair") and min(dx, dy) < 2:
        pytest.skip("2pair needs dims >= 2")
    for params in _draws("multinormal", structure, dx, dy):
        _mc_check(TaskSpec("multinormal", structure, dx, dy, params), _gaussian_ratio)


@pytest.mark.parametrize(("dx", "dy"), DIMS)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_student_mc(structure: str, dx: int, dy: int) -> None:
    if structure.endswith("2pair") and min(dx, dy) < 2:
        pytest.skip("2pair needs dims >= 2")
    for params in _draws("student", structure, dx, dy):
        _mc_check(TaskSpec("student", structure, dx, dy, params), _student_ratio)


@pytest.mark.parametrize("df", [0.7, 1.0, 2.5, 10.0])
def test_student_zero_correlation_mc(df: float) -> None:
    """Uncorrelated scale: all MI comes from the shared chi-square (the df correction term)."""
    _mc_check(TaskSpec("student", "dense", 2, 3, {"rho": 0.0, "df": df}), _student_ratio)


@pytest.mark.parametrize("dim", [1, 3, 10])
@pytest.mark.parametrize("epsilon", [0.15, 0.5, 0.8, 1.7])
def test_additive_uniform_mc(dim: int, epsilon: float) -> None:
    def ratio(task, x, y):
        eps = task.distribution.epsilon
        trap = stats.trapezoid(
            c=min(2 * eps, 1) / (1 + 2 * eps), d=max(2 * eps, 1) / (1 + 2 * eps), loc=-eps, scale=1 + 2 * eps
        )
        log_joint_cond = -dim * math.log(2 * eps)  # p(y|x) on its support, p(x) = 1
        return log_joint_cond - trap.logpdf(y).sum(axis=1)

    _mc_check(TaskSpec("additive_uniform", "diag", dim, dim, {"epsilon": epsilon}), ratio)


@pytest.mark.parametrize("dim", [1, 4, 12])
def test_additive_uniform_perdim_mc(dim: int) -> None:
    """One ε_j per coordinate (MIST's additive noise), ε_j on both sides of ½."""

    def ratio(task, x, y):
        out = np.zeros(x.shape[0])
        for j, eps in enumerate(task.distribution.epsilon):
            trap = stats.trapezoid(
                c=min(2 * eps, 1) / (1 + 2 * eps), d=max(2 * eps, 1) / (1 + 2 * eps), loc=-eps, scale=1 + 2 * eps
            )
            out += -math.log(2 * eps) - trap.logpdf(y[:, j])
        return out

    for params in _draws("additive_uniform", "perdim", dim, dim, count=2):
        _mc_check(TaskSpec("additive_uniform", "perdim", dim, dim, params), ratio)


def _mixture_ratio(task, x, y):
    dist = task.distribution
    dx = task.spec.dim_x
    z = np.hstack([x, y])

    def log_mix(points, sl):
        comps = [
            math.log(w) + stats.multivariate_normal(mean=mu[sl], cov=cov[sl, sl]).logpdf(points)
            for w, mu, cov in zip(dist.weights, dist.means, dist.covs, strict=True)
        ]
        return logsumexp(np.stack(comps).reshape(len(comps), -1), axis=0)

    return log_mix(z, slice(None)) - log_mix(x, slice(0, dx)) - log_mix(y, slice(dx, None))


@pytest.mark.parametrize(("dx", "dy"), [(1, 1), (3, 3), (10, 10), (1, 3)])
@pytest.mark.parametrize("structure", ["bimodal", "random"])
def test_mixture_mc_matches_independent_scipy_mc(structure: str, dx: int, dy: int) -> None:
    """The family's MI is itself Monte Carlo: an independent scipy MC (other seed) must agree."""
    for params in _draws("mixture", structure, dx, dy, count=1):
        _mc_check(TaskSpec("mixture", structure, dx, dy, params), _mixture_ratio)


def test_mixture_1d_against_quadrature() -> None:
    """In 1x1 the mixture MI is a 2-D integral: check the MC value against a fine grid integral."""
    spec = TaskSpec("mixture", "bimodal", 1, 1, {"weight": 0.4, "separation": 3.0, "rho": 0.5})
    task = spec.build()
    dist = task.distribution
    g = np.linspace(-9, 9, 1201)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    pj = sum(
        w * stats.multivariate_normal(mu, c).pdf(pts)
        for w, mu, c in zip(dist.weights, dist.means, dist.covs, strict=True)
    ).reshape(xx.shape)
    px = np.trapezoid(pj, g, axis=1)
    py = np.trapezoid(pj, g, axis=0)
    integrand = np.where(pj > 0, pj * (np.log(pj) - np.log(px)[:, None] - np.log(py)[None, :]), 0.0)
    exact = np.trapezoid(np.trapezoid(integrand, g, axis=1), g)
    assert abs(task.mi - exact) <= dist.mi_error_bound, (task.mi, exact, dist.mi_error_bound)


@pytest.mark.parametrize("dy", [1, 3, 10])
def test_categorical_mc(dy: int) -> None:
    def ratio(task, x, y):
        dist = task.distribution
        u = np.full(dy, 1.0 / math.sqrt(dy))
        means = [k * dist.spacing * u for k in range(dist.classes)]
        labels = x[:, 0].astype(int)
        comps = np.stack([stats.multivariate_normal(mean=m, cov=np.eye(dy)).logpdf(y).reshape(-1) for m in means])
        log_cond = comps[labels, np.arange(len(labels))]
        log_marg = logsumexp(comps, axis=0) - math.log(dist.classes)
        return log_cond - log_marg

    for params in _draws("categorical", "line", 1, dy, count=3):
        _mc_check(TaskSpec("categorical", "line", 1, dy, params), ratio)
