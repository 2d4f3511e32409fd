"""Kraskov–Stögbauer–Grassberger (KSG) nearest-neighbour MI estimator, algorithms 1 and 2.

Both algorithms use the max-norm in the joint space ‖(x, y)‖ = max(‖x‖∞, ‖y‖∞) and the k-th nearest
neighbour of every point (Kraskov, Stögbauer & Grassberger, Phys. Rev. E 69, 066138, 2004):

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

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator
from scipy.special import digamma

from mibench.config.learned import DEVICE_PATTERN
from mibench.devices import resolve_device
from mibench.estimators.base import Estimate, Estimator, EstimatorParams, register_estimator

#: Joint dimension from which the tree backend uses sklearn's dual-tree BallTree instead of scipy's cKDTree
#: for k-NN (measured, 1 thread: cKDTree wins at 16-D by 1.6x, dual-tree BallTree at 24-D and 1.5x at 50-D).
TREE_SWITCH_DIM = 20
#: Below this n (and from 3 joint dimensions) sklearn's KDTree answers the joint k-NN faster than cKDTree
#: (measured, 10-D, 1 thread: 8 vs 10 ms at n = 1k, 45 vs 69 ms at 3k; cKDTree wins from ~10k: 35 vs 80 s at 100k).
KD_SMALL_N = 5000
#: Joint dimension from which ``backend="auto"`` uses the torch brute force even on the CPU (measured, 1
#: thread: tree/torch time 0.97 at 30-D, 1.2-1.5 at 50-D for n = 1k-5k).
CPU_TORCH_MIN_DIM = 40
#: Up to this n the tree backend answers with dense numpy distance matrices instead of trees (measured, 1
#: thread, algorithm 1: 0.29 vs 1.2 ms at 5x5, n = 100; 0.9 vs 2.1 ms at 25x25; even at n ~ 400). Meta-dataset
#: cells (n = 10..500) are mostly this small.
DENSE_MAX_N = 256
#: Bytes of distance matrices one torch chunk may hold (CPU / CUDA).
CHUNK_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}

BACKENDS = ("auto", "tree", "torch")


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


def ksg_counts_dense(x: np.ndarray, y: np.ndarray, k: int, algorithm: int) -> tuple[np.ndarray, np.ndarray]:
    """Marginal neighbour counts (self excluded) from dense distance matrices: for small n, where building
    trees costs more than comparing every pair. Same rules (and, without exact ties, the same numbers) as
    :func:`ksg_counts_tree` and :func:`ksg_counts_torch`."""
    dx, dy = _maxnorm_distances(x), _maxnorm_distances(y)
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


def ksg_counts_tree(
    x: np.ndarray, y: np.ndarray, k: int, algorithm: int, workers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Marginal neighbour counts (self excluded) with trees / sorted arrays (dense matrices for n ≤ DENSE_MAX_N)."""
    if x.shape[0] <= DENSE_MAX_N:
        return ksg_counts_dense(x, y, k, algorithm)
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
    x: np.ndarray, y: np.ndarray, k: int, algorithm: int, device: str = "cpu", chunk_bytes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Marginal neighbour counts (self excluded) by chunked brute force in float64 on ``device``."""
    import torch

    dev = torch.device(device)
    X = torch.as_tensor(x, dtype=torch.float64, device=dev)
    Y = torch.as_tensor(y, dtype=torch.float64, device=dev)
    n = X.shape[0]
    budget = chunk_bytes or CHUNK_BYTES["cuda" if dev.type == "cuda" else "cpu"]
    rows = int(max(1, min(n, budget // (8 * 4 * n))))  # dx, dy, joint and one comparison buffer
    nx = torch.empty(n, dtype=torch.int64, device=dev)
    ny = torch.empty(n, dtype=torch.int64, device=dev)
    inf = float("inf")
    with torch.no_grad():
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            dx = torch.cdist(X[start:stop], X, p=inf)
            dy = torch.cdist(Y[start:stop], Y, p=inf)
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
    """KSG k-nearest-neighbour estimator (algorithm 1 or 2), max-norm, exact tree or brute-force search.

    Hyperparameters: ``k`` neighbours (default 3); ``algorithm`` 1 or 2; ``standardize`` divides every
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
        self.k, self.algorithm = hp.k, hp.algorithm
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
        if dim < min(self.torch_min_dim, CPU_TORCH_MIN_DIM):
            return "tree"  # without touching the device
        if self.device.startswith("cuda"):
            return "torch" if dim >= self.torch_min_dim else "tree"
        return "torch" if dim >= CPU_TORCH_MIN_DIM else "tree"

    def estimate(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> Estimate:
        return self.estimate_with_terms(x, y, seed=seed)[0]

    def estimate_with_terms(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> tuple[Estimate, np.ndarray]:
        """The estimate and its per-sample terms (the bootstrap resamples these, see ``bootstrap.py``)."""
        xs, ys = prepare(x, y, standardize=self.standardize, jitter=self.jitter, seed=seed)
        backend = self.choose_backend(x.shape[1] + y.shape[1], x.shape[0])
        if backend == "tree":
            nx, ny = ksg_counts_tree(xs, ys, self.k, self.algorithm, self.workers)
            device = "cpu"
        else:
            device = self.device
            nx, ny = ksg_counts_torch(xs, ys, self.k, self.algorithm, device)
        extras: dict[str, Any] = {"backend": backend, "device": device, "mean_nx": float(nx.mean())}
        terms = ksg_terms(nx, ny, self.k, self.algorithm)
        return Estimate(float(np.mean(terms)), extras=extras), terms
