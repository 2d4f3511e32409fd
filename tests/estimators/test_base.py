"""The estimator base: bad input is a clear error, bootstrap intervals, `Estimate`, the registry, the docs' examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mibench.estimators import (
    DEFAULT_LEVELS,
    Bootstrapped,
    Estimate,
    EstimatorInputError,
    build_estimator,
    check_inputs,
    make_estimator,
    taus_for_levels,
)
from tests.support.classical import (
    RHO06,
    SPARSE33,
)
from tests.support.configs import REPO

# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bootstrap", [False, True], ids=["plain", "bootstrapped"])
@pytest.mark.parametrize("name", ["ksg", "histogram", "kde", "gaussian"])
def test_bad_input_is_a_clear_value_error(name: str, bootstrap: bool) -> None:
    """Issue 3 §5: every classical estimator (and its bootstrap wrapper) rejects unusable samples with a
    ValueError naming the problem, before any estimation (the runner turns it into an error row)."""
    est = build_estimator(name, {"bootstrap": {"resamples": 10}} if bootstrap else {})
    x, y = RHO06.build().sample(50, 0)
    bad_nan, bad_inf = x.copy(), y.copy()
    bad_nan[7, 0] = np.nan
    bad_inf[3, 0] = -np.inf
    too_few = est.min_n - 1  # ksg: n <= k
    cases = [
        ((bad_nan, y), r"X has 1 non-finite value\(s\), first at row 7, column 0 \(nan\)"),
        ((x, bad_inf), r"Y has 1 non-finite value\(s\), first at row 3, column 0 \(-inf\)"),
        ((x, y[:40]), "X has 50 rows but Y has 40"),
        ((x[:too_few], y[:too_few]), rf"needs at least {est.min_n} samples, got n={too_few}"),
        ((np.hstack([x, np.ones((50, 1))]), y), r"column\(s\) \[1\] of X are constant"),
        ((x, np.full(50, 2.5)), r"column\(s\) \[0\] of Y are constant"),
        ((np.array(["a"] * 50), y), "X must be numeric, got dtype <U1"),
        ((x.astype(object), y), "X must be numeric, got dtype object"),
        ((x, y.astype(complex)), "Y must be real"),
        ((x[:, :, None], y), "must be 1-D or 2-D"),
        ((x, y[:, :0]), "Y has no columns"),
    ]
    for (bx, by), match in cases:
        with pytest.raises(EstimatorInputError, match=f"^{name}: .*{match}"):
            est(bx, by)
    # integer and boolean data are fine (converted to float64)
    ints = np.round(x * 10).astype(np.int32)
    assert math.isfinite(est(ints, (y > 0).astype(bool) ^ (np.arange(50)[:, None] % 3 == 0)).value)


def test_ksg_n_not_above_k_is_refused_for_every_k() -> None:
    """KSG needs k neighbours besides the point itself: n = k is refused, n = k + 1 works."""
    for k in (1, 3, 10):
        est = make_estimator("ksg", {"k": k})
        x, y = RHO06.build().sample(k + 1, 0)
        assert math.isfinite(est(x, y).value)
        with pytest.raises(ValueError, match=rf"^ksg: needs at least {k + 1} samples, got n={k}$"):
            est(x[:k], y[:k])


def test_kde_singular_covariance_is_a_clear_error() -> None:
    x, y = SPARSE33.build().sample(5, 0)  # n = 5 <= joint dim 6
    with pytest.raises(ValueError, match=r"kde: the sample covariance of a 6-dimensional space is singular \(n=5\)"):
        make_estimator("kde")(x, y)
    x, y = SPARSE33.build().sample(200, 0)
    x[:, 2] = x[:, 0] - x[:, 1]  # collinear columns, none constant
    with pytest.raises(ValueError, match=r"kde: the sample covariance of a 6-dimensional space is singular \(n=200\)"):
        make_estimator("kde")(x, y)


def test_estimator_errors_become_error_slots_not_crashes() -> None:
    """A bad sample among good ones (estimate_many, the runner's batching hook) fails alone, with its message."""
    good = RHO06.build().sample(100, 0)
    nan_x = good[0].copy()
    nan_x[0, 0] = np.nan
    wide = SPARSE33.build().sample(100, 0)
    for name in ("ksg", "histogram", "kde", "gaussian"):
        out = make_estimator(name).estimate_many([good, (nan_x, good[1]), wide, good], [0, 1, 2, 3])
        assert isinstance(out[0], Estimate) and isinstance(out[3], Estimate)
        assert isinstance(out[1], EstimatorInputError) and "non-finite" in str(out[1])
        if name == "histogram":  # 3x3 is above max_dim
            assert isinstance(out[2], ValueError) and "exceeds max_dim=4" in str(out[2])
        else:
            assert isinstance(out[2], Estimate)


# ------------------------------------------------------------------------------- bootstrap intervals


def test_bootstrap_ksg_terms_cover_truth_and_levels() -> None:
    """KSG + bootstrap: the per-sample-term bootstrap gives intervals at the requested levels that cover
    the true MI most of the time (row resampling would not: duplicated rows are 0 apart)."""
    est = build_estimator("ksg", {"bootstrap": {"resamples": 200, "levels": [0.5, 0.9]}})
    assert isinstance(est, Bootstrapped) and est.params["bootstrap"] == {"resamples": 200, "levels": [0.5, 0.9]}
    task = RHO06.build()
    covered = {0.5: 0, 0.9: 0}
    for seed in range(30):
        result = est(*task.sample(500, seed), seed=seed)
        assert result.level == 0.9 and result.extras["bootstrap_mode"] == "terms"
        assert sorted(result.quantiles) == [0.05, 0.25, 0.5, 0.75, 0.95]
        for level in covered:
            lo, hi = result.interval_at(level)
            assert lo < hi
            covered[level] += lo <= task.mi <= hi
    assert covered[0.9] >= 21, covered  # nominal 27/30; measured term-bootstrap coverage ≈ 0.8-0.9
    assert 8 <= covered[0.5] <= 24, covered
    assert covered[0.9] >= covered[0.5]


def test_bootstrap_rows_for_gaussian_covers_truth() -> None:
    est = build_estimator("gaussian", {"bootstrap": {"resamples": 60, "levels": [0.9]}})
    task = RHO06.build()
    hits = 0
    for seed in range(20):
        r = est(*task.sample(300, seed), seed=seed)
        assert r.extras["bootstrap_mode"] == "rows" and r.extras["bootstrap_failures"] == 0
        hits += r.interval[0] <= task.mi <= r.interval[1]
    assert hits >= 15


def test_bootstrap_defaults_and_validation() -> None:
    est = build_estimator("histogram", {"bootstrap": True})
    r = est(*RHO06.build().sample(300, 0), seed=0)
    assert r.level == max(DEFAULT_LEVELS)
    assert sorted(r.quantiles) == taus_for_levels(DEFAULT_LEVELS)
    with pytest.raises(ValueError, match=r"config.estimators.ksg.bootstrap.levels\[0\]: input should be less than 1"):
        build_estimator("ksg", {"bootstrap": {"levels": [1.5]}})
    with pytest.raises(
        ValueError,
        match=r"config.estimators.ksg.bootstrap.resamples: input should be greater than or equal to 2 \(got 1\)",
    ):
        build_estimator("ksg", {"bootstrap": {"resamples": 1}})(*RHO06.build().sample(50, 0))


# ------------------------------------------------------------------------------ base.py itself


def test_estimate_interval_at() -> None:
    e = Estimate(1.0, interval=(0.5, 1.5), level=0.9, quantiles={0.05: 0.4, 0.25: 0.8, 0.75: 1.2, 0.95: 1.6})
    assert e.interval_at(0.9) == (0.5, 1.5)  # native interval wins at its own level
    assert e.interval_at(0.5) == (0.8, 1.2)  # read from quantiles
    assert e.interval_at(0.8) is None  # quantiles 0.1/0.9 missing
    assert Estimate(1.0).interval_at(0.5) is None
    with pytest.raises(ValueError, match="needs its confidence level"):
        Estimate(1.0, interval=(0.0, 2.0))
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        Estimate(1.0, interval=(0.0, 2.0), level=1.0)


def test_make_estimator_errors_name_accepted_hyperparameters() -> None:
    with pytest.raises(ValueError, match=r"ksg.kk: unknown key; did you mean 'k'\?"):
        make_estimator("ksg", {"kk": 3})
    with pytest.raises(ValueError, match="unknown estimator 'ksgg'. Did you mean 'ksg'"):
        make_estimator("ksgg")
    est = build_estimator("ksg_k10", {"estimator": "ksg", "k": 10})
    assert est.params["k"] == 10 and est.name == "ksg" and est.min_n == 11


def test_check_inputs_shapes_and_messages() -> None:
    x, y = check_inputs([1.0, 2.0, 3.0], np.array([[1, 0], [2, 1], [0, 3]], dtype=np.int32), who="t")
    assert x.shape == (3, 1) and y.shape == (3, 2) and x.dtype == y.dtype == np.float64
    with pytest.raises(EstimatorInputError, match="^t: Y has no columns$"):
        check_inputs(np.ones((3, 1)), np.ones((3, 0)), who="t")
    with pytest.raises(
        EstimatorInputError, match=r"^t: Y has 1 non-finite value\(s\), first at row 1, column 0 \(inf\)"
    ):
        check_inputs(np.arange(3.0), [0.0, np.inf, 1.0], who="t")
    # constant columns are allowed where an estimator says so
    check_inputs(np.ones((3, 1)), np.arange(3.0), reject_constant=False)


def test_estimate_many_returns_errors_in_their_slot() -> None:
    est = make_estimator("gaussian")
    good = RHO06.build().sample(100, 0)
    out = est.estimate_many([good, (good[0][:, :0], good[1]), good], [0, 1, 2])
    assert isinstance(out[0], Estimate) and isinstance(out[1], ValueError) and isinstance(out[2], Estimate)
    assert out[0].value == out[2].value


# ------------------------------------------------------------------------------------------ the docs


def test_docs_examples_run() -> None:
    """docs/estimators.md: every python block runs as written, in order, in one namespace; the YAML block's
    entries build."""
    import re

    import yaml

    text = (REPO / "docs" / "estimators.md").read_text()
    python = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(python) >= 7
    namespace: dict = {}
    for block in python:
        exec(compile(block, "docs/estimators.md", "exec"), namespace)
    entries = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", text, flags=re.S)[0])["estimators"]
    built = {label: build_estimator(label, entry) for label, entry in entries.items()}
    assert built["ksg_k10"].params["k"] == 10 and isinstance(built["kde_loo"], Bootstrapped)
