"""MIST's meta-dataset protocol (arXiv 2511.18945) at CPU scale: its entries and hyperparameter laws, d ≤ 8.

What is kept from the paper's data generation, exactly:

* **entries** ``<base>-<structure>-<transform>``: the 16 training entries, the 6 in-meta-distribution (IMD)
  test entries (all seen in training) and the 7 out-of-meta-distribution (OoMD) ones (none seen in training);
* **bases**: multivariate normal, multivariate Student-t (same scale structures), additive uniform noise
  (X_j ~ U(0, 1), Y_j = X_j + N_j, N_j ~ U(−ε_j, ε_j), one ε per dimension);
* **structures** (BMI's Gaussian latent-variable parametrisation, noise ε = 1): ``dense`` (all off-diagonal
  correlations c), ``sparse`` (k interacting pairs, α = β = 0, η = λ: pair correlation λ²/(1+λ²)),
  ``2pair`` (the same with k = 2), ``lvm`` (α, β, λ, η and k interacting pairs);
* **laws** (all uniform): Student df U(1, 10) real; dense c U(0, 0.5); sparse k randint(1, d), λ U(0.1, 5);
  lvm α U(0, 1), λ U(0.1, 3), β U(0, 1.5), η U(0.1, 5), k randint(1, d); additive ε_j U(0.1, 2);
* **dimensions**: dim_x = dim_y = d, d ~ U{2..d_max} (never d = 1, never dim_x ≠ dim_y);
* **transforms** (BMI's, coordinate-wise, MI-preserving): halfcube sign(x)|x|^{3/2}, asinh, wiggly
  f(x) = x + 0.4 sin x + 0.2 sin(1.7x+1) + 0.03 sin(3.3x−2.5) on X and
  g(y) = y − 0.4 sin(0.4y) + 0.17 sin(1.3y+3.5) + 0.02 sin(4.3y−2.5) on Y;
* **splits**: training draws the entry uniformly, then n ~ U{n_min..n_max} and d; test splits are *grids*:
  for each n of ``linspace(n_min, n_max, grid_points)`` (integer truncation) and each entry one d is drawn,
  and the ``replicates`` share (n, entry, d) while each draws its own hyperparameters and sample.

What changes for a CPU: d ≤ ``d_max`` (8) per side instead of 32, n ≤ ``n_max`` (200) instead of 500,
smaller grids. Exact MI comes from mibench's tested closed forms (``gaussian_mi``, ``student_t_correction``,
``additive_uniform_mi_1d``). Seeds are ``numpy`` ``SeedSequence`` keys, so every sample is a pure function
of (root seed, split, indices); training streams and test grids never share a key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from mibench.tasks.additive import additive_uniform_mi_1d
from mibench.tasks.gaussian import gaussian_mi
from mibench.tasks.student import student_t_correction
from mibench.tasks.transforms import bmi_wiggly_x, bmi_wiggly_y

TRAIN_ENTRIES: tuple[str, ...] = (
    "normal-dense-base",
    "normal-dense-halfcube",
    "normal-dense-asinh",
    "normal-sparse-wiggly",
    "normal-sparse-base",
    "normal-lvm-wiggly",
    "normal-lvm-base",
    "normal-2pair-base",
    "student-dense-base",
    "student-dense-wiggly",
    "student-sparse-halfcube",
    "student-sparse-base",
    "student-sparse-asinh",
    "student-2pair-asinh",
    "student-2pair-halfcube",
    "additive-noise-wiggly",
)
IMD_ENTRIES: tuple[str, ...] = (
    "normal-dense-base",
    "normal-lvm-wiggly",
    "normal-dense-halfcube",
    "student-dense-base",
    "student-sparse-base",
    "student-sparse-asinh",
)
OOMD_ENTRIES: tuple[str, ...] = (
    "normal-dense-wiggly",
    "normal-sparse-halfcube",
    "normal-sparse-asinh",
    "student-sparse-wiggly",
    "student-dense-halfcube",
    "additive-noise-base",
    "additive-noise-halfcube",
)
SPLITS = {"train": TRAIN_ENTRIES, "imd": IMD_ENTRIES, "oomd": OOMD_ENTRIES}
_SPLIT_KEY = {"train": 0, "imd": 1, "oomd": 2}


# -- transforms (BMI's definitions; wiggly is mibench's bmi_wiggly, the same formulas) ------------------------------
def _halfcube(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.abs(v) ** 1.5


TRANSFORMS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "base": (lambda v: v, lambda v: v),
    "halfcube": (_halfcube, _halfcube),
    "asinh": (np.arcsinh, np.arcsinh),
    "wiggly": (bmi_wiggly_x, bmi_wiggly_y),
}


# -- structures and hyperparameter laws ---------------------------------------------------------------------------
def lvm_covariance(d: int, k: int, alpha: float, beta: float, lambd: float, eta: float) -> np.ndarray:
    """BMI's ``GaussianLVMParametrization(d, d, k, alpha, lambd, beta_x=beta_y=beta, eta, epsilon=1)`` covariance."""
    cov = np.full((2 * d, 2 * d), alpha**2)
    cov[:d, :d] += beta**2
    cov[d:, d:] += beta**2
    cov[np.diag_indices(2 * d)] += 1.0
    for i in range(k):
        cov[i, d + i] += lambd**2
        cov[d + i, i] += lambd**2
        cov[i, i] += lambd**2
        cov[d + i, d + i] += lambd**2
    for i in list(range(k, d)) + list(range(d + k, 2 * d)):
        cov[i, i] += eta**2
    return cov


def draw_structure(structure: str, d: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """(scale matrix, hyperparameters) of a normal/Student structure under MIST's laws."""
    if structure == "dense":
        c = float(rng.uniform(0.0, 0.5))
        cov = np.full((2 * d, 2 * d), c)
        np.fill_diagonal(cov, 1.0)
        return cov, {"c": c}
    if structure in ("sparse", "2pair"):
        k = 2 if structure == "2pair" else int(rng.integers(1, d + 1))
        lambd = float(rng.uniform(0.1, 5.0))
        return lvm_covariance(d, k, 0.0, 0.0, lambd, lambd), {"k": k, "lambda": lambd}
    if structure == "lvm":
        alpha, lambd = float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.1, 3.0))
        beta, eta = float(rng.uniform(0.0, 1.5)), float(rng.uniform(0.1, 5.0))
        k = int(rng.integers(1, d + 1))
        params = {"alpha": alpha, "lambda": lambd, "beta": beta, "eta": eta, "k": k}
        return lvm_covariance(d, k, alpha, beta, lambd, eta), params
    raise ValueError(f"unknown structure {structure!r}")


@dataclass(frozen=True)
class Distribution:
    """One drawn distribution of an entry: base, its parameters and the exact MI (nats)."""

    entry: str
    d: int
    params: dict[str, float] = field(default_factory=dict)
    scale: np.ndarray | None = None  # normal / Student scale matrix (2d × 2d)
    df: float | None = None
    epsilon: np.ndarray | None = None  # additive: one half-width per dimension
    mi: float = 0.0

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n rows of (X, Y), transforms applied, float32 like the shards."""
        base, _, transform = self.entry.split("-")
        d = self.d
        if base == "additive":
            x = rng.uniform(0.0, 1.0, size=(n, d))
            y = x + rng.uniform(-self.epsilon, self.epsilon, size=(n, d))
        else:
            z = rng.standard_normal((n, 2 * d)) @ np.linalg.cholesky(self.scale).T
            if base == "student":
                z = z / np.sqrt(rng.chisquare(self.df, size=n) / self.df)[:, None]
            x, y = z[:, :d], z[:, d:]
        fx, fy = TRANSFORMS[transform]
        return fx(x).astype(np.float32), fy(y).astype(np.float32)


def draw_distribution(entry: str, d: int, rng: np.random.Generator) -> Distribution:
    """Hyperparameters of ``entry`` at dimension d drawn from MIST's laws, with the exact MI."""
    base, structure, transform = entry.split("-")
    if transform not in TRANSFORMS:
        raise ValueError(f"{entry}: unknown transform {transform!r}")
    if base == "additive":
        eps = rng.uniform(0.1, 2.0, size=d)
        mi = float(sum(additive_uniform_mi_1d(float(e)) for e in eps))
        return Distribution(entry, d, {"epsilon_mean": float(eps.mean())}, epsilon=eps, mi=mi)
    scale, params = draw_structure(structure, d, rng)
    mi = gaussian_mi(scale, d)
    if base == "student":
        df = float(rng.uniform(1.0, 10.0))
        params["df"] = df
        return Distribution(entry, d, params, scale, df, mi=mi + student_t_correction(df, d, d))
    if base != "normal":
        raise ValueError(f"{entry}: unknown base {base!r}")
    return Distribution(entry, d, params, scale, mi=mi)


# -- splits ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    x: np.ndarray
    y: np.ndarray
    mi: float
    entry: str
    n: int
    d: int
    split: str
    replicate: int = 0


@dataclass(frozen=True)
class Protocol:
    """The CPU-scale protocol: sizes of the training stream and of the IMD/OoMD grids."""

    d_max: int = 8
    n_min: int = 10
    n_max: int = 200
    grid_points: int = 10
    replicates: int = 6
    root_seed: int = 1202

    def __post_init__(self) -> None:
        if not 2 <= self.d_max or not 2 <= self.n_min <= self.n_max or self.grid_points < 1 or self.replicates < 1:
            raise ValueError(f"invalid protocol {self}")

    @property
    def n_grid(self) -> list[int]:
        """linspace(n_min, n_max, grid_points) with integer truncation, as the paper's ``dtype=int``."""
        return [int(v) for v in np.linspace(self.n_min, self.n_max, self.grid_points)]

    def rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.root_seed, spawn_key=key))

    def train_sample(self, stream: int, index: int) -> Sample:
        """Sample ``index`` of training stream ``stream`` (entry uniform, n ~ U{n_min..n_max}, d ~ U{2..d_max})."""
        rng = self.rng(_SPLIT_KEY["train"], stream, index)
        entry = TRAIN_ENTRIES[int(rng.integers(len(TRAIN_ENTRIES)))]
        n = int(rng.integers(self.n_min, self.n_max + 1))
        d = int(rng.integers(2, self.d_max + 1))
        dist = draw_distribution(entry, d, rng)
        x, y = dist.sample(n, rng)
        return Sample(x, y, dist.mi, entry, n, d, "train")

    def train_batch(self, stream: int, step: int, batch_size: int) -> list[Sample]:
        return [self.train_sample(stream, step * batch_size + i) for i in range(batch_size)]

    def test_cells(self, split: str, n_grid: list[int] | None = None) -> Iterator[Sample]:
        """The grid of ``split`` ('imd' or 'oomd'): n × entry × replicate; replicates share (n, entry, d).

        ``n_grid`` replaces the protocol's grid (other benchmarks draw the same entries at other sizes, from
        seeds of their own).
        """
        entries = SPLITS[split]
        key = _SPLIT_KEY[split] + (10 if n_grid is not None else 0)
        for i, n in enumerate(self.n_grid if n_grid is None else n_grid):
            for j, entry in enumerate(entries):
                d = int(self.rng(key, i, j).integers(2, self.d_max + 1))
                for r in range(self.replicates):
                    rng = self.rng(key, i, j, r + 1)
                    dist = draw_distribution(entry, d, rng)
                    x, y = dist.sample(n, rng)
                    yield Sample(x, y, dist.mi, entry, n, d, split, r)


def rescaled(cells: list[Sample], seed: int) -> list[Sample]:
    """The same cells in other units: every column multiplied by its own factor 10^U(−1, 1).

    MI does not change, so an estimator that reads MI (rather than the meta-distribution's marginal scales)
    gives the same answers; split ``imd-rescaled`` when the input cells are IMD cells.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(99,)))
    out = []
    for c in cells:
        ax, ay = 10.0 ** rng.uniform(-1, 1, c.x.shape[1]), 10.0 ** rng.uniform(-1, 1, c.y.shape[1])
        x, y = (c.x * ax).astype(np.float32), (c.y * ay).astype(np.float32)
        out.append(Sample(x, y, c.mi, c.entry, c.n, c.d, f"{c.split}-rescaled", c.replicate))
    return out


SMOKE = Protocol(d_max=3, n_min=10, n_max=40, grid_points=2, replicates=1)
