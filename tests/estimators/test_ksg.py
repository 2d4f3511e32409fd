"""KSG: invariances, agreement with sklearn/BMI, the dense/tree/torch paths, metrics, ties, hyperparameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.feature_selection import mutual_info_regression
from sklearn.feature_selection._mutual_info import _compute_mi_cc

from mibench.estimators import (
    make_estimator,
)
from mibench.estimators.ksg import KD_SMALL_N, _count_1d, ksg_counts_torch, ksg_counts_tree, ksg_value, prepare
from mibench.tasks import TaskSpec
from tests.support.classical import (
    RHO06,
    SPARSE33,
)

# ------------------------------------------------------------------------------------- KSG specifics


@pytest.mark.parametrize("transform", ["halfcube", "asinh", "normal_cdf", "wiggly"])
def test_ksg_nearly_invariant_to_monotone_marginal_transforms(transform: str) -> None:
    """Same underlying sample, marginals transformed: KSG moves by noise only (measured ≤ 0.045 at n=2000)."""
    est = make_estimator("ksg", {"jitter": 0.0})
    base = TaskSpec("multinormal", "dense", 2, 2, {"rho": 0.5})
    moved = TaskSpec("multinormal", "dense", 2, 2, {"rho": 0.5}, transform=transform)
    diffs = [est(*moved.build().sample(2000, s)).value - est(*base.build().sample(2000, s)).value for s in range(3)]
    assert max(abs(d) for d in diffs) < 0.07, diffs
    # the transform really changed the data (otherwise this test would prove nothing)
    assert not np.allclose(moved.build().sample(50, 0)[0], base.build().sample(50, 0)[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ksg_matches_sklearn_mutual_info_regression(seed: int) -> None:
    """1-D KSG algorithm 1 equals sklearn to 1e-6 on the same data and k.

    sklearn scales both variables by their std (``scale(with_mean=False)``, ddof 0, as ``standardize``) and
    adds 1e-10·max(1, mean|x|) noise, which moves neighbour counts only if another point lies within ~1e-10
    of a k-NN radius (never here); it also clips negative values at 0, so the data are dependent. Its
    private ``_compute_mi_cc`` on our standardised data removes the noise and must agree to rounding.
    """
    x, y = RHO06.build().sample(1500, seed)
    for k in (3, 5):
        ours = make_estimator("ksg", {"k": k, "jitter": 0.0, "backend": "tree"})(x, y).value
        theirs = mutual_info_regression(x, y[:, 0], n_neighbors=k, random_state=seed)[0]
        assert ours == pytest.approx(theirs, abs=1e-6)
        xs, ys = prepare(x, y, standardize=True, jitter=0.0, seed=0)
        assert ours == pytest.approx(_compute_mi_cc(xs[:, 0], ys[:, 0], k), abs=1e-12)


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize(
    ("dims", "n"),
    # k-NN paths: (1, 1) and (2, 2) at n > KD_SMALL_N cKDTree, (2, 3) sklearn KDTree, (11, 10) dual-tree BallTree
    [((1, 1), 700), ((2, 3), 700), ((2, 2), KD_SMALL_N + 200), ((11, 10), 700)],
)
def test_ksg_torch_backend_equals_tree_on_cpu(algorithm: int, dims: tuple[int, int], n: int) -> None:
    x, y = TaskSpec("multinormal", "dense", *dims, {"rho": 0.3}).build().sample(n, 11)
    xs, ys = prepare(x, y, standardize=True, jitter=0.0, seed=0)
    tree = ksg_counts_tree(xs, ys, 4, algorithm)
    brute = ksg_counts_torch(xs, ys, 4, algorithm, "cpu", chunk_bytes=8 * 4 * n * 50)  # 50-row chunks
    np.testing.assert_array_equal(tree[0], brute[0])
    np.testing.assert_array_equal(tree[1], brute[1])
    a = make_estimator("ksg", {"k": 4, "algorithm": algorithm, "backend": "tree"})(x, y, seed=3)
    b = make_estimator("ksg", {"k": 4, "algorithm": algorithm, "backend": "torch", "device": "cpu"})(x, y, seed=3)
    assert a.value == b.value
    assert (a.extras["backend"], b.extras["backend"]) == ("tree", "torch")


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("dims", [(1, 1), (2, 3), (11, 10)])
def test_ksg_dense_small_n_path_equals_trees_and_torch(
    monkeypatch: pytest.MonkeyPatch, algorithm: int, dims: tuple[int, int]
) -> None:
    """Small samples take dense distance matrices; the trees (forced) and torch give the same counts."""
    import mibench.estimators.ksg as ksg_module

    x, y = TaskSpec("multinormal", "dense", *dims, {"rho": 0.3}).build().sample(ksg_module.DENSE_MAX_N, 5)
    xs, ys = prepare(x, y, standardize=True, jitter=0.0, seed=0)
    dense = ksg_counts_tree(xs, ys, 3, algorithm)  # n == DENSE_MAX_N: the dense path
    monkeypatch.setattr(ksg_module, "DENSE_MAX_N", 0)
    trees = ksg_counts_tree(xs, ys, 3, algorithm)
    torch_counts = ksg_counts_torch(xs, ys, 3, algorithm, "cpu")
    for other in (trees, torch_counts):
        np.testing.assert_array_equal(dense[0], other[0])
        np.testing.assert_array_equal(dense[1], other[1])


def test_ksg_dense_path_with_exact_ties_matches_trees(monkeypatch: pytest.MonkeyPatch) -> None:
    """Algorithm 1 with many exact ties (rounded data, no jitter): ε and strict counts agree exactly."""
    import mibench.estimators.ksg as ksg_module

    rng = np.random.default_rng(9)
    x = np.round(rng.standard_normal((200, 2)), 1)
    y = np.round(x[:, :1] + rng.standard_normal((200, 1)), 1)
    dense = ksg_counts_tree(x, y, 3, 1)
    monkeypatch.setattr(ksg_module, "DENSE_MAX_N", 0)
    trees = ksg_counts_tree(x, y, 3, 1)
    np.testing.assert_array_equal(dense[0], trees[0])
    np.testing.assert_array_equal(dense[1], trees[1])


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "chebyshev"])
@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize(("dims", "n"), [((1, 1), 700), ((1, 3), 700), ((4, 4), 600), ((2, 3), 200)])
def test_ksg_metric_dense_tree_and_torch_agree(
    monkeypatch: pytest.MonkeyPatch, metric: str, algorithm: int, dims: tuple[int, int], n: int
) -> None:
    """Per-side metric: the dense (n ≤ DENSE_MAX_N), tree and torch paths give identical counts."""
    import mibench.estimators.ksg as ksg_module

    x, y = TaskSpec("multinormal", "dense", *dims, {"rho": 0.4}).build().sample(n, 21)
    xs, ys = prepare(x, y, standardize=True, jitter=1e-10, seed=0)
    dense = ksg_module.ksg_counts_dense(xs, ys, 4, algorithm, metric)
    torch_counts = ksg_counts_torch(xs, ys, 4, algorithm, "cpu", chunk_bytes=8 * 4 * n * 64, metric=metric)
    monkeypatch.setattr(ksg_module, "DENSE_MAX_N", 0)
    monkeypatch.setattr(ksg_module, "CANDIDATE_BUDGET", 5_000)  # several row chunks in the tree path
    trees = ksg_counts_tree(xs, ys, 4, algorithm, metric=metric)
    for other in (trees, torch_counts):
        np.testing.assert_array_equal(dense[0], other[0])
        np.testing.assert_array_equal(dense[1], other[1])


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
def test_ksg_metric_is_bmis_estimator(metric: str) -> None:
    """Independent brute force of BMI's KSGEnsembleFirstEstimator for one k: per-side ``metric`` distances,
    their maximum in the joint space, strict counts, algorithm 1 (scipy's cdist, not our distance code)."""
    from scipy.spatial.distance import cdist
    from scipy.special import digamma

    x, y = TaskSpec("multinormal", "dense", 3, 2, {"rho": 0.5}).build().sample(400, 8)
    xs, ys = (x - x.mean(axis=0)) / x.std(axis=0), (y - y.mean(axis=0)) / y.std(axis=0)
    scipy_metric = {"euclidean": "euclidean", "manhattan": "cityblock"}[metric]
    dx, dy = cdist(xs, xs, scipy_metric), cdist(ys, ys, scipy_metric)
    dz = np.maximum(dx, dy)
    eps = np.sort(dz, axis=1)[:, 5]  # 5th neighbour; index 0 is the point itself
    nx, ny = (dx < eps[:, None]).sum(axis=1) - 1, (dy < eps[:, None]).sum(axis=1) - 1
    expected = digamma(5) + digamma(400) - np.mean(digamma(nx + 1) + digamma(ny + 1))
    ours = make_estimator("ksg", {"k": 5, "metric": metric, "jitter": 0.0})(x, y).value
    assert ours == pytest.approx(expected, abs=1e-12)
    cheb = make_estimator("ksg", {"k": 5, "jitter": 0.0})(x, y).value
    assert abs(cheb - ours) > 1e-3  # a different estimator, not a relabelled one


def test_ksg_default_metric_is_unchanged() -> None:
    est = make_estimator("ksg", {})
    assert est.params["metric"] == "chebyshev" and est.metric == "chebyshev"
    x, y = SPARSE33.build().sample(300, 4)
    assert est(x, y, seed=1).value == make_estimator("ksg", {"metric": "chebyshev"})(x, y, seed=1).value


def test_ksg_counts_against_brute_force_numpy() -> None:
    """Counts are exactly the definition (strict for alg 1, inclusive for alg 2), checked in O(n²) numpy."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((300, 2)), rng.standard_normal((300, 1))
    dx = np.abs(x[:, None, :] - x[None, :, :]).max(-1)
    dy = np.abs(y[:, None, :] - y[None, :, :]).max(-1)
    dj = np.maximum(dx, dy)
    np.fill_diagonal(dj, np.inf)
    order = np.argsort(dj, axis=1)[:, :3]
    eps = np.take_along_axis(dj, order, 1)[:, -1:]
    nx1, ny1 = ksg_counts_tree(x, y, 3, 1)
    np.testing.assert_array_equal(nx1, (dx < eps).sum(1) - 1)
    np.testing.assert_array_equal(ny1, (dy < eps).sum(1) - 1)
    ex = np.take_along_axis(dx, order, 1).max(1, keepdims=True)
    ey = np.take_along_axis(dy, order, 1).max(1, keepdims=True)
    nx2, ny2 = ksg_counts_tree(x, y, 3, 2)
    np.testing.assert_array_equal(nx2, (dx <= ex).sum(1) - 1)
    np.testing.assert_array_equal(ny2, (dy <= ey).sum(1) - 1)


def test_count_1d_exact_at_boundaries() -> None:
    """The sorted-array counter equals the definition even when radii are exact pairwise distances."""
    rng = np.random.default_rng(0)
    v = np.round(rng.standard_normal(2000), 2)  # many ties
    r = np.abs(v - v[rng.permutation(2000)])
    brute = (np.abs(v[None, :] - v[:, None]) <= r[:, None]).sum(1)
    np.testing.assert_array_equal(_count_1d(v, r), brute)


def test_ksg_alg2_sanity() -> None:
    """Algorithm 2 differs from 1 (different formula) yet both agree within noise; n_x ≥ 1 always."""
    x, y = RHO06.build().sample(3000, 8)
    xs, ys = prepare(x, y, standardize=True, jitter=0.0, seed=0)
    nx, ny = ksg_counts_tree(xs, ys, 3, 2)
    assert nx.min() >= 1 and ny.min() >= 1
    v1 = ksg_value(*ksg_counts_tree(xs, ys, 3, 1), 3, 1)
    v2 = ksg_value(nx, ny, 3, 2)
    assert v1 != v2
    assert abs(v1 - v2) < 0.03


def test_ksg_duplicates_and_jitter() -> None:
    """Rows repeated more than k times (ε = 0) give a finite value; jitter breaks the ties, seeded."""
    x, y = RHO06.build().sample(40, 1)
    x, y = np.repeat(x, 5, axis=0), np.repeat(y, 5, axis=0)
    for algorithm in (1, 2):
        exact = make_estimator("ksg", {"jitter": 0.0, "algorithm": algorithm})
        brute = make_estimator("ksg", {"jitter": 0.0, "algorithm": algorithm, "backend": "torch", "device": "cpu"})
        assert math.isfinite(exact(x, y).value) and exact(x, y).value == brute(x, y).value
    est = make_estimator("ksg", {"jitter": 1e-6})
    assert est(x, y, seed=1).value == est(x, y, seed=1).value
    assert est(x, y, seed=1).value != est(x, y, seed=2).value
    assert est(x, y, seed=1).value != make_estimator("ksg", {"jitter": 0.0})(x, y).value


def test_ksg_standardize_makes_it_scale_free() -> None:
    x, y = RHO06.build().sample(800, 2)
    on, off = make_estimator("ksg", {"jitter": 0.0}), make_estimator("ksg", {"jitter": 0.0, "standardize": False})
    assert on(x * 1000.0, y).value == pytest.approx(on(x, y).value, abs=1e-9)
    assert off(x * 1000.0, y).value != pytest.approx(off(x, y).value, abs=1e-3)


def test_ksg_bad_hyperparameters_and_min_n() -> None:
    for params, match in [
        ({"k": 0}, r"ksg.k: input should be greater than or equal to 1 \(got 0\)"),
        ({"algorithm": 3}, r"ksg.algorithm: input should be 1 or 2 \(got 3\)"),
        ({"backend": "gpu"}, r"ksg.backend: input should be 'auto', 'tree' or 'torch'"),
        ({"jitter": -1.0}, "ksg.jitter"),
        ({"jitter": float("nan")}, "ksg.jitter: must be a finite number"),
        ({"k": 2.5}, r"ksg.k: must be an integer \(got 2.5\)"),
        ({"k": True}, r"ksg.k: must be an integer \(got True\)"),
        ({"workers": 0}, "ksg.workers: must be a positive integer or -1"),
        ({"metric": "cosine"}, r"ksg.metric: input should be 'chebyshev', 'euclidean' or 'manhattan' \(got 'cosine'\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            make_estimator("ksg", params)
    est = make_estimator("ksg", {"k": 5})
    assert est.min_n == 6
    x, y = RHO06.build().sample(6, 0)
    assert math.isfinite(est(x, y).value)
    with pytest.raises(ValueError, match=r"needs at least 6 samples, got n=5"):
        est(x[:5], y[:5])


def test_ksg_auto_backend_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIBENCH_DEVICE", "cpu")
    est = make_estimator("ksg")
    assert est.device == "cpu"
    assert est.choose_backend(30) == "tree"
    assert est.choose_backend(50) == "torch"  # brute force beats the trees in 40+ joint dimensions on a CPU
    assert make_estimator("ksg", {"backend": "tree"}).choose_backend(50) == "tree"
    x, y = TaskSpec("multinormal", "dense", 25, 25, {"rho": 0.1}).build().sample(300, 0)
    assert est(x, y).extras["backend"] == "torch"
    assert est(x[:200], y[:200]).extras["backend"] == "tree"  # small n: dense matrices, whatever the dimension
    monkeypatch.setenv("MIBENCH_DEVICE", "cuda")
    est = make_estimator("ksg")
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:  # pragma: no cover - only on GPU machines
        assert est.choose_backend(50) == "torch" and est.choose_backend(2) == "tree"
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            est.choose_backend(50)
        assert est.choose_backend(2) == "tree"  # low dimension never touches the device
