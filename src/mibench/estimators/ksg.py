"""Kraskov–Stögbauer–Grassberger (KSG) nearest-neighbour MI estimator, algorithms 1 and 2.

Both algorithms use the maximum over the sides in the joint space, ‖(x, y)‖ = max(‖x‖, ‖y‖), and the k-th
nearest neighbour of every point (Kraskov, Stögbauer & Grassberger, Phys. Rev. E 69, 066138, 2004). The norm
*within* a side is the ``metric`` hyperparameter: ``chebyshev`` (max-norm, the default and KSG's own choice),
``euclidean`` (BMI's default, ``KSGEnsembleFirstEstimator``) or ``manhattan``. Both are valid KSG; they differ
a lot in high dimension (on one sample of BMI's dense 25×25 task, n = 5,000, k = 5: 1.076 Euclidean, 0.966
Chebyshev):

* algorithm 1: ε_i = distance to the k-th neighbour; n_x(i) = #{j ≠ i : ‖x_i − x_j‖ < ε_i} (strict), same
  for y;  Î = ψ(k) + ψ(n) − ⟨ψ(n_x + 1) + ψ(n_y + 1)⟩;
* algorithm 2: ε_x(i), ε_y(i) = largest x- and y-distance among the k joint neighbours;
  n_x(i) = #{j ≠ i : ‖x_i − x_j‖ ≤ ε_x(i)};  Î = ψ(k) − 1/k + ψ(n) − ⟨ψ(n_x) + ψ(n_y)⟩.

Two exact backends give the same numbers (tested):

* ``tree`` — scipy ``cKDTree`` for the joint k-NN (sklearn's ``KDTree`` for small n, its dual-tree
  ``BallTree`` from ``TREE_SWITCH_DIM`` joint dimensions, where cKDTree's max-norm query degrades), sklearn ``KDTree.query_radius(count_only=True)``
  for marginal counts (2-3× faster than ``cKDTree.query_ball_point``), and sorted arrays + binary search
  for 1-D marginals; O(n log n) in low dimension;
* ``torch`` — chunked brute force: per block of rows, max-norm distance matrices to all points
  (``torch.cdist(p=inf)``, float64), top-(k+1) in the joint space and marginal counts by comparison.
  O(n²·d) but dimension-agnostic and fast on a GPU, where trees degrade in high dimension.

``backend="auto"`` picks ``torch`` when the device is CUDA and dim_x + dim_y ≥ ``torch_min_dim``, ``torch``
on the CPU from ``CPU_TORCH_MIN_DIM`` joint dimensions (there the trees prune almost nothing and the
brute force's regular loops win), else ``tree``. The estimate is not clipped at 0 (sklearn clips; a
benchmark wants the raw bias).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator
from scipy.special import digamma

from mibench.config.learned import DEVICE_PATTERN
from mibench.devices import resolve_device
from mibench.estimators.base import Estimate, Estimator, EstimatorParams, register_estimator
from mibench.extras import available, require

#: Joint dimension from which the tree backend uses sklearn's dual-tree BallTree instead of scipy's cKDTree
#: for k-NN (measured, 1 thread: cKDTree wins at 16-D by 1.6x, dual-tree BallTree at 24-D and 1.5x at 50-D).
TREE_SWITCH_DIM = 20
#: Below this n (and from 3 joint dimensions) sklearn's KDTree answers the joint k-NN faster than cKDTree
#: (measured, 10-D, 1 thread: 8 vs 10 ms at n = 1k, 45 vs 69 ms at 3k; cKDTree wins from ~10k: 35 vs 80 s at 100k).
KD_SMALL_N = 5000
#: Joint dimension from which ``backend="auto"`` uses the torch brute force even on the CPU (measured, 1
#: thread: tree/torch time 0.97 at 30-D, 1.2-1.5 at 50-D for n = 1k-5k).
CPU_TORCH_MIN_DIM = 40
#: The same switch for the euclidean/manhattan metrics, whose tree path ranks ball-query candidates (measured,
#: 1 thread, n = 5k, algorithm 1: tree/torch time 0.98 at 5x5, 4.8 at 10x10).
CPU_TORCH_MIN_DIM_METRIC = 10
#: Up to this n the tree backend answers with dense numpy distance matrices instead of trees (measured, 1
#: thread, algorithm 1: 0.29 vs 1.2 ms at 5x5, n = 100; 0.9 vs 2.1 ms at 25x25; even at n ~ 400). Meta-dataset
#: cells (n = 10..500) are mostly this small.
DENSE_MAX_N = 256
#: Bytes of distance matrices one torch chunk may hold (CPU / CUDA).
CHUNK_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}

#: Norms within a side, and their Minkowski p (the joint norm is always the maximum over the sides).
METRICS = {"chebyshev": math.inf, "euclidean": 2.0, "manhattan": 1.0}
#: Non-Chebyshev tree counts compare sklearn's distances, not ours, with ε: a relative margin this small keeps
#: the point that defines ε on the right side of a strict (<) or inclusive (≤) comparison.
RADIUS_MARGIN = 1e-12
#: Candidate coordinates (floats) the non-Chebyshev tree path gathers at once.
CANDIDATE_BUDGET = 2**24


def prepare(
    x: np.ndarray, y: np.ndarray, *, standardize: bool, jitter: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column scaling (divide by the std, like sklearn's ``scale(with_mean=False)``) and optional jitter.

    Scaling matters because the max-norm mixes columns; jitter (``jitter`` × column std, seeded) breaks
    exact ties, e.g. the duplicated rows of a bootstrap resample or a discrete column.
    """
    out = []
    for arr in (x, y):
        scale = arr.std(axis=0)
        scale[scale == 0] = 1.0
        if standardize:
            arr = arr / scale
            scale = np.ones_like(scale)
        out.append(arr)
    if jitter:
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED])
        for i, arr in enumerate(out):
            scale = np.ones(arr.shape[1]) if standardize else arr.std(axis=0)
            scale[scale == 0] = 1.0
            out[i] = arr + jitter * scale * rng.standard_normal(arr.shape)
    return out[0], out[1]


def ksg_terms(nx: np.ndarray, ny: np.ndarray, k: int, algorithm: int) -> np.ndarray:
    """Per-sample KSG terms φ_i from marginal neighbour counts (self excluded); Î is their mean."""
    n = nx.shape[0]
    if algorithm == 1:
        return digamma(k) + digamma(n) - (digamma(nx + 1.0) + digamma(ny + 1.0))
    return digamma(k) - 1.0 / k + digamma(n) - (digamma(nx) + digamma(ny))


def ksg_value(nx: np.ndarray, ny: np.ndarray, k: int, algorithm: int) -> float:
    """The KSG estimate from marginal neighbour counts (self excluded)."""
    return float(np.mean(ksg_terms(nx, ny, k, algorithm)))


# --------------------------------------------------------------------------------------------------- tree


def _count_1d(values: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """#{j : |v_j − v_i| ≤ r_i} (self included) for a 1-D sample, exactly, in O(n log n).

    Binary search on the sorted values gives the window up to rounding of v ± r; because the rounded
    difference fl(v_j − v_i) is monotone in v_j, the exact window is contiguous and a few vectorised
    boundary fix-ups (each step moves by one position) make it exact.
    """
    s = np.sort(values)
    last = s.shape[0] - 1

    def inside(pos: np.ndarray) -> np.ndarray:
        valid = (pos >= 0) & (pos <= last)
        return valid & (np.abs(s[np.clip(pos, 0, last)] - values) <= radius)

    lo = np.searchsorted(s, values - radius, side="left")  # first index inside
    hi = np.searchsorted(s, values + radius, side="right")  # one past the last index inside
    while (grow := inside(lo - 1)).any():
        lo -= grow
    while (shrink := ~inside(lo)).any():  # stops at the point itself, which is always inside
        lo += shrink
    while (grow := inside(hi)).any():
        hi += grow
    while (shrink := ~inside(hi - 1)).any():
        hi -= shrink
    return hi - lo


def _count_within(points: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """#{j : ‖p_j − p_i‖∞ ≤ r_i} for every i (self included)."""
    if points.shape[1] == 1:
        return _count_1d(points[:, 0], radius)
    from sklearn.neighbors import KDTree

    # KDTree beats BallTree here even at 25-D (15 s vs 22 s at n=20k on our 2-core machine)
    return np.asarray(KDTree(points, metric="chebyshev").query_radius(points, radius, count_only=True))


def _knn(points: np.ndarray, k: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the k+1 nearest points (max-norm), self included."""
    n, dim = points.shape
    if 3 <= dim < TREE_SWITCH_DIM and n <= KD_SMALL_N:
        from sklearn.neighbors import KDTree

        return KDTree(points, metric="chebyshev").query(points, k=k + 1)
    if dim < TREE_SWITCH_DIM:
        from scipy.spatial import cKDTree

        dist, idx = cKDTree(points).query(points, k=k + 1, p=np.inf, workers=workers)
        return dist, idx
    from sklearn.neighbors import BallTree

    # dual-tree traversal: the queries are the tree's own points, so whole node pairs are pruned at once
    return BallTree(points, metric="chebyshev").query(points, k=k + 1, dualtree=True)


def _drop_self(idx: np.ndarray, k: int) -> np.ndarray:
    """The k neighbours of each row other than the row itself (with exact ties self may sit anywhere)."""
    is_self = idx == np.arange(idx.shape[0])[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")  # non-self entries first, original order kept
    return np.take_along_axis(idx, order, axis=1)[:, :k]


def _maxnorm_distances(m: np.ndarray) -> np.ndarray:
    """n × n max-norm distances, one column at a time (no n × n × d temporary)."""
    d = np.abs(m[:, 0, None] - m[None, :, 0])
    for c in range(1, m.shape[1]):
        np.maximum(d, np.abs(m[:, c, None] - m[None, :, c]), out=d)
    return d


def side_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distances between rows a[..., :] and b[..., :] (broadcast) in one side's norm, column by column.

    The same elementwise operations in the same order for a full matrix and for gathered pairs, so the dense
    path and the tree path's exact ε agree to the bit.
    """
    acc = np.abs(a[..., 0] - b[..., 0])
    if metric == "euclidean":
        acc = acc * acc
    for c in range(1, a.shape[-1]):
        diff = np.abs(a[..., c] - b[..., c])
        if metric == "chebyshev":
            np.maximum(acc, diff, out=acc)
        elif metric == "euclidean":
            acc += diff * diff
        else:
            acc += diff
    return np.sqrt(acc) if metric == "euclidean" else acc


def ksg_counts_dense(
    x: np.ndarray, y: np.ndarray, k: int, algorithm: int, metric: str = "chebyshev"
) -> tuple[np.ndarray, np.ndarray]:
    """Marginal neighbour counts (self excluded) from dense distance matrices: for small n, where building
    trees costs more than comparing every pair. Same rules (and, without exact ties, the same numbers) as
    :func:`ksg_counts_tree` and :func:`ksg_counts_torch`."""
    if metric == "chebyshev":
        dx, dy = _maxnorm_distances(x), _maxnorm_distances(y)
    else:
        dx, dy = (side_distances(m[:, None, :], m[None, :, :], metric) for m in (x, y))
    joint = np.maximum(dx, dy)
    np.fill_diagonal(joint, np.inf)  # a row is not its own neighbour
    if algorithm == 1:
        eps = np.partition(joint, k - 1, axis=1)[:, k - 1 : k]
        self_in = (eps[:, 0] > 0).astype(np.int64)  # self (distance 0) is strictly inside iff ε > 0
        return (dx < eps).sum(axis=1) - self_in, (dy < eps).sum(axis=1) - self_in
    nb = np.argpartition(joint, k - 1, axis=1)[:, :k]
    ex = np.take_along_axis(dx, nb, axis=1).max(axis=1, keepdims=True)
    ey = np.take_along_axis(dy, nb, axis=1).max(axis=1, keepdims=True)
    return (dx <= ex).sum(axis=1) - 1, (dy <= ey).sum(axis=1) - 1


def _joint_neighbours(x: np.ndarray, y: np.ndarray, k: int, metric: str, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (self excluded) in max(‖x‖, ‖y‖) for a per-side Minkowski norm.

    No tree indexes that norm, but the concatenated p-norm D bounds it: max ≤ D ≤ 2^(1/p)·max. With r the
    k-th neighbour's D, the k-th max-distance ε ≤ r, and every point within ε lies within 2^(1/p)·r in D: a
    ball query returns a superset of the neighbours, which are then ranked by exact max-distances.
    Returns (distances (n, k) ascending, indices (n, k)).
    """
    from scipy.spatial import cKDTree

    p = METRICS[metric]
    joint = np.hstack([x, y])
    n = joint.shape[0]
    tree = cKDTree(joint)
    r = tree.query(joint, k=k + 1, p=p, workers=workers)[0][:, k]
    balls = tree.query_ball_point(joint, r * 2.0 ** (1.0 / p) * (1 + RADIUS_MARGIN), p=p, workers=workers)
    sizes = np.fromiter((len(b) for b in balls), dtype=np.int64, count=n)
    out_dist, out_idx = np.empty((n, k)), np.empty((n, k), dtype=np.int64)
    # rows in chunks, so the gathered candidate coordinates stay within ~CANDIDATE_BUDGET floats
    ends = np.cumsum(sizes) * joint.shape[1]
    start = 0
    while start < n:
        stop = max(start + 1, int(np.searchsorted(ends, (ends[start - 1] if start else 0) + CANDIDATE_BUDGET)))
        rows = np.repeat(np.arange(start, stop), sizes[start:stop])
        cols = np.concatenate([np.asarray(b, dtype=np.int64) for b in balls[start:stop]])
        keep = rows != cols
        rows, cols = rows[keep], cols[keep]
        dist = np.maximum(side_distances(x[rows], x[cols], metric), side_distances(y[rows], y[cols], metric))
        order = np.lexsort((cols, dist, rows))  # per row by distance (ties: by index)
        firsts = np.concatenate([[0], np.cumsum(sizes[start:stop] - 1)[:-1]])
        pick = order[firsts[:, None] + np.arange(k)[None, :]]
        out_dist[start:stop], out_idx[start:stop] = dist[pick], cols[pick]
        start = stop
    return out_dist, out_idx


def _count_within_metric(points: np.ndarray, radius: np.ndarray, metric: str) -> np.ndarray:
    """#{j : ‖p_j − p_i‖ ≤ r_i} in a side's norm (self included); 1-D is exact whatever the norm."""
    if points.shape[1] == 1 or metric == "chebyshev":
        return _count_within(points, radius)
    from sklearn.neighbors import KDTree

    return np.asarray(KDTree(points, metric=metric).query_radius(points, radius, count_only=True))


def _ksg_counts_tree_metric(
    x: np.ndarray, y: np.ndarray, k: int, algorithm: int, metric: str, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    dist, nb = _joint_neighbours(x, y, k, metric, workers)
    if algorithm == 1:
        eps = dist[:, k - 1]
        counts = []
        for m in (x, y):
            # strictly inside ε: exact in 1-D (largest float below ε), with a relative margin otherwise
            r = np.nextafter(eps, 0.0) if m.shape[1] == 1 else eps * (1 - RADIUS_MARGIN)
            c = _count_within_metric(m, r, metric) - 1
            c[eps == 0] = 0
            counts.append(c)
        return counts[0], counts[1]
    counts = []
    for m in (x, y):
        eps_m = side_distances(m[:, None, :], m[nb], metric).max(axis=1)
        r = eps_m if m.shape[1] == 1 else eps_m * (1 + RADIUS_MARGIN)
        counts.append(_count_within_metric(m, r, metric) - 1)
    return counts[0], counts[1]


def ksg_counts_tree(
    x: np.ndarray, y: np.ndarray, k: int, algorithm: int, workers: int = 1, metric: str = "chebyshev"
) -> tuple[np.ndarray, np.ndarray]:
    """Marginal neighbour counts (self excluded) with trees / sorted arrays (dense matrices for n ≤ DENSE_MAX_N)."""
    if x.shape[0] <= DENSE_MAX_N:
        return ksg_counts_dense(x, y, k, algorithm, metric)
    if metric != "chebyshev":
        return _ksg_counts_tree_metric(x, y, k, algorithm, metric, workers)
    dist, idx = _knn(np.hstack([x, y]), k, workers)
    if algorithm == 1:
        eps = dist[:, k]
        # strict inequality: count ≤ the largest float below ε
        r = np.nextafter(eps, 0.0)
        nx, ny = _count_within(x, r) - 1, _count_within(y, r) - 1
        zero = eps == 0  # ≥ k+1 identical points: nothing is strictly closer than 0
        nx[zero], ny[zero] = 0, 0
        return nx, ny
    nb = _drop_self(idx, k)
    counts = []
    for m in (x, y):
        eps_m = np.abs(m[nb] - m[:, None, :]).max(axis=(1, 2))
        counts.append(_count_within(m, eps_m) - 1)
    return counts[0], counts[1]


# -------------------------------------------------------------------------------------------------- torch


def ksg_counts_torch(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    algorithm: int,
    device: str = "cpu",
    chunk_bytes: int | None = None,
    metric: str = "chebyshev",
) -> tuple[np.ndarray, np.ndarray]:
    """Marginal neighbour counts (self excluded) by chunked brute force in float64 on ``device``."""
    torch = require("torch", "KSG's torch backend")

    dev = torch.device(device)
    X = torch.as_tensor(x, dtype=torch.float64, device=dev)
    Y = torch.as_tensor(y, dtype=torch.float64, device=dev)
    n = X.shape[0]
    budget = chunk_bytes or CHUNK_BYTES["cuda" if dev.type == "cuda" else "cpu"]
    rows = int(max(1, min(n, budget // (8 * 4 * n))))  # dx, dy, joint and one comparison buffer
    nx = torch.empty(n, dtype=torch.int64, device=dev)
    ny = torch.empty(n, dtype=torch.int64, device=dev)
    p = METRICS[metric]
    # the matmul form of Euclidean cdist is inexact (catastrophic cancellation): compare real differences
    mode = "donot_use_mm_for_euclid_dist"
    with torch.no_grad():
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            dx = torch.cdist(X[start:stop], X, p=p, compute_mode=mode)
            dy = torch.cdist(Y[start:stop], Y, p=p, compute_mode=mode)
            vals, idx = torch.topk(torch.maximum(dx, dy), k + 1, dim=1, largest=False, sorted=True)
            if algorithm == 1:
                eps = vals[:, k : k + 1]
                self_in = (eps[:, 0] > 0).to(torch.int64)  # self (distance 0) is strictly inside iff ε > 0
                nx[start:stop] = (dx < eps).sum(dim=1) - self_in
                ny[start:stop] = (dy < eps).sum(dim=1) - self_in
            else:
                rows_idx = torch.arange(start, stop, device=dev)[:, None]
                order = torch.sort((idx == rows_idx).to(torch.int8), dim=1, stable=True).indices
                nb = torch.gather(idx, 1, order)[:, :k]  # column indices into the chunk's distance rows
                ex = torch.gather(dx, 1, nb).amax(dim=1, keepdim=True)
                ey = torch.gather(dy, 1, nb).amax(dim=1, keepdim=True)
                nx[start:stop] = (dx <= ex).sum(dim=1) - 1
                ny[start:stop] = (dy <= ey).sum(dim=1) - 1
    return nx.cpu().numpy(), ny.cpu().numpy()


# ---------------------------------------------------------------------------------------------- estimator


@register_estimator
class KSG(Estimator):
    """KSG k-nearest-neighbour estimator (algorithm 1 or 2), exact tree or brute-force search.

    Hyperparameters: ``k`` neighbours (default 3); ``algorithm`` 1 or 2; ``metric`` the norm within each side
    (``chebyshev`` default, ``euclidean`` as BMI's ``KSGEnsembleFirstEstimator``, ``manhattan``; the joint
    norm is the maximum over the sides either way); ``standardize`` divides every
    column by its std first (default on: the max-norm is not scale invariant); ``jitter`` adds
    ``jitter × std`` Gaussian noise seeded by the cell seed (default 1e-10, as sklearn, to break ties; 0
    disables it); ``backend`` ``auto|tree|torch``; ``device`` for the torch backend (``auto`` =
    $MIBENCH_DEVICE, else CUDA if available); ``torch_min_dim`` joint dimension from which ``auto`` uses
    torch on CUDA (on the CPU ``auto`` switches at ``CPU_TORCH_MIN_DIM``); ``workers`` threads of scipy's
    k-NN query.
    """

    name = "ksg"

    class Params(EstimatorParams):
        k: int = Field(3, ge=1, description="Neighbours in the joint space.")
        algorithm: Literal[1, 2] = Field(1, description="KSG algorithm 1 (strict radius) or 2 (per-side radii).")
        metric: Literal["chebyshev", "euclidean", "manhattan"] = Field(
            "chebyshev",
            description="Distance within each side (the joint distance is the max over the sides); euclidean is "
            "BMI's default KSG, chebyshev the max-norm of Kraskov et al.",
        )
        standardize: bool = Field(
            True, description="Divide every column by its std (the max-norm is not scale invariant)."
        )
        jitter: float = Field(
            1e-10, ge=0, description="Gaussian noise x std seeded by the cell seed, breaks ties; 0 disables."
        )
        backend: Literal["auto", "tree", "torch"] = Field(
            "auto", description="k-NN search: trees, torch brute force, or by size."
        )
        device: str = Field("auto", pattern=DEVICE_PATTERN, description="Device of the torch backend.")
        torch_min_dim: int = Field(4, ge=1, description="Joint dimension from which `auto` uses torch on CUDA.")
        workers: int = Field(1, ge=-1, description="Threads of scipy's k-NN query (-1: all cores).")

        @field_validator("workers")
        @classmethod
        def _workers(cls, value: int) -> int:
            if value == 0:
                raise ValueError("must be a positive integer or -1 (all cores)")
            return value

    @classmethod
    def min_n_for(cls, hp: Any) -> int:
        return int(hp.k) + 1

    def setup(self) -> None:
        hp = self.hp
        self.k, self.algorithm, self.metric = hp.k, hp.algorithm, hp.metric
        self.standardize, self.jitter = hp.standardize, hp.jitter
        self.backend, self.requested_device = hp.backend, hp.device
        self.torch_min_dim, self.workers = hp.torch_min_dim, hp.workers
        self._device: str | None = "cpu" if hp.backend == "tree" else None

    @property
    def device(self) -> str:
        """Device of the torch computations ('cpu' for the tree backend); resolved once, lazily."""
        if self._device is None:
            self._device = resolve_device(self.requested_device)
        return self._device

    def choose_backend(self, dim: int, n: int | None = None) -> str:
        """The backend a sample of joint dimension ``dim`` (and ``n`` rows, if known) runs on."""
        if self.backend != "auto":
            return self.backend
        if n is not None and n <= DENSE_MAX_N:
            return "tree"  # dense numpy matrices beat trees, torch kernels and a device round trip alike
        if dim < min(self.torch_min_dim, CPU_TORCH_MIN_DIM, CPU_TORCH_MIN_DIM_METRIC):
            return "tree"  # without touching the device
        if not available("torch"):
            return "tree"  # the same counts without the `learned` extra (torch is only faster here)
        if self.device.startswith("cuda"):
            return "torch" if dim >= self.torch_min_dim else "tree"
        switch = CPU_TORCH_MIN_DIM if self.metric == "chebyshev" else CPU_TORCH_MIN_DIM_METRIC
        return "torch" if dim >= switch else "tree"

    def estimate(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> Estimate:
        return self.estimate_with_terms(x, y, seed=seed)[0]

    def estimate_with_terms(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> tuple[Estimate, np.ndarray]:
        """The estimate and its per-sample terms (the bootstrap resamples these, see ``bootstrap.py``)."""
        xs, ys = prepare(x, y, standardize=self.standardize, jitter=self.jitter, seed=seed)
        backend = self.choose_backend(x.shape[1] + y.shape[1], x.shape[0])
        if backend == "tree":
            nx, ny = ksg_counts_tree(xs, ys, self.k, self.algorithm, self.workers, self.metric)
            device = "cpu"
        else:
            device = self.device
            nx, ny = ksg_counts_torch(xs, ys, self.k, self.algorithm, device, metric=self.metric)
        extras: dict[str, Any] = {"backend": backend, "device": device, "mean_nx": float(nx.mean())}
        terms = ksg_terms(nx, ny, self.k, self.algorithm)
        return Estimate(float(np.mean(terms)), extras=extras), terms
