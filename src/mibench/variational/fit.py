"""The one training loop shared by every bound: stacked critics, Adam, held-out evaluation, read-out.

:class:`CriticStack` holds C critics (one per cell) and advances them together; :func:`fit_cells` is the
estimator's loop on finite samples: mini-batches from each cell's training split, an evaluation of the
bound on each cell's held-out split every ``eval_every`` steps, early stopping on the smoothed held-out
curve, and a read-out at the best smoothed held-out value (Abdelaleem et al. 2025's "max smoothed test";
BMI reports the raw maximum, ``readout: max_test``). A cell's numbers depend only on its own data and seed,
never on which cells share its stack: its weights, optimiser state and batches come from its own seeded
streams, and every operation is batched per cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mibench.variational.bounds import Bound
from mibench.variational.critics import CriticSpec, init_params, scores


def _stream_seed(seed: int, stream: int) -> int:
    """Independent 63-bit seed for one random stream (init, batches, evaluation split) of one cell."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, stream]).generate_state(1, np.uint64)[0] >> 1)


class StackAdam:
    """Adam (Kingma & Ba 2015, PyTorch's defaults β = (0.9, 0.999), ε = 1e-8) on stacked parameters.

    Written out (rather than ``torch.optim.Adam``) so finished cells can be dropped from the stack with
    their optimiser state; every update is elementwise, so cells never interact.
    """

    def __init__(self, params: dict[str, torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, self.betas, self.eps, self.t = float(lr), betas, eps, 0
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for (k, p), g in zip(params.items(), grads, strict=True):
            m, v = self.m[k], self.v[k]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)

    def select(self, keep: torch.Tensor) -> None:
        self.m = {k: t[keep] for k, t in self.m.items()}
        self.v = {k: t[keep] for k, t in self.v.items()}


class CriticStack:
    """C critics of one architecture and input dims, trained together; cells may use different bounds."""

    def __init__(
        self,
        spec: CriticSpec,
        dim_x: int,
        dim_y: int,
        seeds: Sequence[int],
        bounds: Sequence[Bound],
        *,
        learning_rate: float,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if len(seeds) != len(bounds) or not seeds:
            raise ValueError("a critic stack needs one seed and one bound per cell (at least one cell)")
        self.spec, self.device, self.dtype = spec, torch.device(device), dtype
        gens = [torch.Generator().manual_seed(_stream_seed(s, 1)) for s in seeds]
        self.params = init_params(spec, dim_x, dim_y, gens, device=self.device, dtype=dtype)
        self.adam = StackAdam(self.params, learning_rate)
        self.bounds = list(bounds)
        self._regroup()
        self.log_ema = torch.full((len(seeds),), math.nan, device=self.device, dtype=dtype)
        self._ema_started = False

    def __len__(self) -> int:
        return len(self.bounds)

    def _regroup(self) -> None:
        groups: dict[Bound, list[int]] = {}
        for i, b in enumerate(self.bounds):
            groups.setdefault(b, []).append(i)
        n = len(self.bounds)
        self.groups = [
            (b, None if len(idx) == n else torch.tensor(idx, device=self.device)) for b, idx in groups.items()
        ]

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return scores(self.spec, self.params, x, y)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One Adam step on every cell's own batch (x (C, B, dx), y (C, B, dy)); returns the values (C,)."""
        s = self.scores(x, y)
        values = torch.empty(len(self), device=self.device, dtype=self.dtype)
        total = s.new_zeros(())
        for bound, idx in self.groups:
            sub = s if idx is None else s[idx]
            state = None
            if bound.stateful and self._ema_started:
                state = self.log_ema if idx is None else self.log_ema[idx]
            objective, value, new_state = bound.train(sub, state)
            total = total + objective.sum()  # a sum: each cell's gradient is its own objective's
            if idx is None:
                values.copy_(value)
                if bound.stateful:
                    self.log_ema = new_state.detach().clone()
            else:
                values[idx] = value
                if bound.stateful:
                    self.log_ema[idx] = new_state.detach()
        self._ema_started = True
        grads = torch.autograd.grad(-total, list(self.params.values()))  # Adam descends; we ascend
        self.adam.step(self.params, grads)
        return values

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The bound's reported value on one batch per cell, without training (C,)."""
        s = self.scores(x, y)
        values = torch.empty(len(self), device=self.device, dtype=self.dtype)
        for bound, idx in self.groups:
            if idx is None:
                values.copy_(bound.value(s))
            else:
                values[idx] = bound.value(s[idx])
        return values

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the cells at positions ``keep`` (finished cells leave the stack)."""
        idx = torch.as_tensor(list(keep), device=self.device, dtype=torch.long)
        with torch.no_grad():
            self.params = {k: p[idx].detach().requires_grad_(True) for k, p in self.params.items()}
        self.adam.select(idx)
        self.log_ema = self.log_ema[idx]
        self.bounds = [self.bounds[i] for i in keep]
        self._regroup()


# ----------------------------------------------------------------------------------------------------------
# finite-sample fitting with held-out evaluation


@dataclass
class Cell:
    """One sample, already split and standardised: what :func:`fit_cells` trains a critic on."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    seed: int
    bound: Bound


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 256
    steps: int = 10_000
    learning_rate: float = 0.1
    eval_every: int = 250
    patience: int | None = 2
    smooth_window: int = 5
    readout: str = "max_smoothed_test"
    dtype: str = "float32"


@dataclass
class CellResult:
    value: float
    extras: dict[str, Any] = field(default_factory=dict)


class TrainingDiverged(RuntimeError):
    """The critic produced non-finite values before any finite held-out evaluation."""


def batch_sizes(n_train: int, n_test: int, batch_size: int) -> tuple[int, int]:
    """Training and evaluation batch sizes of a cell (both capped by the split they draw from)."""
    return min(batch_size, n_train), min(batch_size, n_test)


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing median over the last ``window`` evaluations (fewer at the start); NaNs ignored, ±inf kept.

    Trailing, so a point's smoothed value never changes once later evaluations arrive (early stopping and
    the read-out see the same curve); a median, so one heavy-tailed evaluation (NWJ's E_Q[e^T] on held-out
    pairs can swing by orders of magnitude) neither wins the read-out nor ends training.
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.empty_like(v)
    for i in range(v.size):
        seg = v[max(0, i - window + 1) : i + 1]
        seg = seg[~np.isnan(seg)]
        out[i] = np.median(seg) if seg.size else np.nan
    return out


def _partition(n: int, size: int, rng: np.random.Generator, max_batches: int | None = None) -> np.ndarray:
    """Fixed evaluation batches covering all n rows: ceil(n/size) batches, the last one overlapping."""
    perm = rng.permutation(n)
    k = math.ceil(n / size)
    batches = [perm[i * size : (i + 1) * size] for i in range(k - 1)] + [perm[n - size :]]
    if max_batches is not None:
        batches = batches[:max_batches]
    return np.stack(batches)


class _Sampler:
    """Epoch-wise shuffling without replacement (no duplicate row inside a batch), from the cell's seed."""

    def __init__(self, n: int, size: int, seed: int) -> None:
        self.n, self.size, self.rng = n, size, np.random.default_rng(_stream_seed(seed, 2))
        self.perm, self.pos = self.rng.permutation(n), 0

    def take(self, steps: int) -> np.ndarray:
        """Row indices of the next ``steps`` batches, (steps, size); a new permutation when one runs out."""
        out, need = [], steps
        while need > 0:
            avail = (self.n - self.pos) // self.size
            if avail == 0:
                self.perm, self.pos = self.rng.permutation(self.n), 0
                continue
            k = min(avail, need)
            out.append(self.perm[self.pos : self.pos + k * self.size].reshape(k, self.size))
            self.pos += k * self.size
            need -= k
        return np.concatenate(out)


def _stack(arrays: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pad rows to a common length and stack: (C, n_max, dim)."""
    n_max = max(a.shape[0] for a in arrays)
    out = np.zeros((len(arrays), n_max, arrays[0].shape[1]), dtype=np.float64)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return torch.as_tensor(out, device=device, dtype=dtype)


class _Track:
    """Held-out curve of one cell and its early-stopping state."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.test: list[float] = []
        self.test_sem: list[float] = []
        self.train: list[float] = []
        self.done = False
        self.stopped_early = False
        self.diverged_at: int | None = None

    def best(self, cfg: TrainConfig) -> int | None:
        """Index of the read-out evaluation (None before any evaluation)."""
        if not self.test:
            return None
        if cfg.readout == "final_test":
            return len(self.test) - 1
        curve = smooth(self.test, cfg.smooth_window if cfg.readout == "max_smoothed_test" else 1)
        return int(np.argmax(np.where(np.isnan(curve), -np.inf, curve)))


def _gather(data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """data (C, n, d), idx (C, B) → (C, B, d)."""
    return torch.gather(data, 1, idx[:, :, None].expand(-1, -1, data.shape[2]))


def ghost_count(b_train: int, b_eval: int, spec: CriticSpec) -> int:
    """Ghost cells appended to a stack so that no real cell's elements are ever the scalar tail of a kernel.

    CPU kernels run exp/log/softplus/activations in SIMD over a contiguous tensor except its last < 2 x lanes
    elements: the (C, B, B) scores and (C, B, B, H) activations treated a stack's last cell differently
    from the others, and a stack of one cell took other matmul kernels altogether. Trailing ghosts (copies
    of the last cell, trained and discarded) with at least ``LANE_PAD`` elements per cell make a cell's
    arithmetic the same whatever stack it is in. Usually one ghost: a lone cell costs twice, a stack of C
    cells 1/C more. (Smaller per-cell tensors are padded where they are computed: ``bounds.per_cell``.)
    """
    from mibench.variational.bounds import LANE_PAD

    per_cell = max(1, min(b_train, b_eval)) * max(1, min((*spec.hidden, spec.embed_dim)))
    return max(1, math.ceil(LANE_PAD / per_cell))


def _stack_sizes(cells: Sequence[Cell], cfg: TrainConfig) -> tuple[int, int, int, int]:
    """(dim_x, dim_y, training batch, held-out batch) shared by the cells of one stack (else ValueError)."""
    dx, dy = cells[0].x_train.shape[1], cells[0].y_train.shape[1]
    sizes = {batch_sizes(c.x_train.shape[0], c.x_test.shape[0], cfg.batch_size) for c in cells}
    if len(sizes) != 1 or any(c.x_train.shape[1] != dx or c.y_train.shape[1] != dy for c in cells):
        raise ValueError("fit_cells: cells of one stack must share dims and batch sizes")
    b_train, b_eval = sizes.pop()
    if b_train < 2 or b_eval < 2:
        raise ValueError(f"need at least 2 training and 2 held-out rows, got batch sizes {b_train}/{b_eval}")
    return dx, dy, b_train, b_eval


def _padded(parts: list[np.ndarray], b_eval: int, dev: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """Per-cell evaluation batches as one (C, k_max, B) index tensor, and each cell's own batch count."""
    k_max = max(p.shape[0] for p in parts)
    idx = np.zeros((len(parts), k_max, b_eval), dtype=np.int64)
    for i, p in enumerate(parts):
        idx[i, : p.shape[0]] = p
        idx[i, p.shape[0] :] = p[0]  # padding batches are evaluated and dropped
    return torch.as_tensor(idx, device=dev), np.array([p.shape[0] for p in parts])


def _eval_batches(
    cells: Sequence[Cell], b_eval: int, dev: torch.device
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Evaluation batches: all held-out rows; the same number of batches from the training split."""
    test_parts, train_parts = [], []
    for c in cells:
        rng = np.random.default_rng(_stream_seed(c.seed, 3))
        tp = _partition(c.x_test.shape[0], b_eval, rng)
        test_parts.append(tp)
        train_parts.append(_partition(c.x_train.shape[0], b_eval, rng, max_batches=len(tp)))
    return (*_padded(test_parts, b_eval, dev), *_padded(train_parts, b_eval, dev))


def _evaluate(stack: CriticStack, xd, yd, idx, count) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's mean bound value over its own evaluation batches, and its standard error."""
    vals = torch.stack([stack.evaluate(_gather(xd, idx[:, k]), _gather(yd, idx[:, k])) for k in range(idx.shape[1])], 1)
    vals = vals.cpu().numpy().astype(np.float64)
    # each cell's own batches only, summed on their own: the mean does not depend on the neighbours'
    # batch counts; ±inf survives (NWJ's e^T can overflow on held-out pairs: a terrible estimate, not a crash)
    mean, sem = np.empty(len(vals)), np.empty(len(vals))
    for i, (row, k) in enumerate(zip(vals, count, strict=True)):
        own = row[:k]
        mean[i] = own.sum() / k
        with np.errstate(invalid="ignore"):
            sem[i] = math.sqrt(((own - mean[i]) ** 2).sum() / max(k - 1, 1) / k) if k else math.nan
    return mean, sem


def _track_step(
    t: _Track, step: int, finite: bool, te: float, te_sem: float, tr: float, cfg: TrainConfig, patience: int | None
) -> None:
    """Record one evaluation of a cell; mark it done when it diverged or stopped improving."""
    if not finite or math.isnan(te):
        t.diverged_at = step  # non-finite training values: the critic's weights are gone
        t.done = True
        return
    t.steps.append(step)
    t.test.append(float(te))
    t.test_sem.append(float(te_sem))
    t.train.append(float(tr))
    best = t.best(cfg)
    if patience is not None and best is not None and len(t.test) - 1 - best >= patience:
        t.done = t.stopped_early = True


# ~60 lines: the loop shares the stack, its data and index tensors, which shrink together as cells finish.
def fit_cells(
    cells: Sequence[Cell],
    spec: CriticSpec,
    cfg: TrainConfig,
    *,
    device: str = "cpu",
    on_result: Callable[[int, CellResult | BaseException], None] | None = None,
) -> list[CellResult | BaseException]:
    """Train one critic per cell (cells share dims and batch sizes) and read out each cell's estimate.

    ``on_result(i, result)`` is called as soon as cell ``i`` is read out (cells stop early at different
    steps), so a caller interrupted later keeps the cells already done.
    """
    if not cells:
        return []
    dev = torch.device(device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    dx, dy, b_train, b_eval = _stack_sizes(cells, cfg)
    n_real = len(cells)
    cells = [*cells, *[cells[-1]] * ghost_count(b_train, b_eval, spec)]
    seeds, bounds = [c.seed for c in cells], [c.bound for c in cells]
    stack = CriticStack(spec, dx, dy, seeds, bounds, learning_rate=cfg.learning_rate, device=device, dtype=dtype)
    xtr, ytr = _stack([c.x_train for c in cells], dev, dtype), _stack([c.y_train for c in cells], dev, dtype)
    xte, yte = _stack([c.x_test for c in cells], dev, dtype), _stack([c.y_test for c in cells], dev, dtype)
    samplers = [_Sampler(c.x_train.shape[0], b_train, c.seed) for c in cells]
    test_idx, test_count, train_idx, train_count = _eval_batches(cells, b_eval, dev)
    active = list(range(len(cells)))  # original cell index of each stack position (ghosts last)
    tracks = [_Track() for _ in cells]
    results: list[CellResult | BaseException | None] = [None] * n_real
    patience = cfg.patience if cfg.patience and cfg.patience > 0 else None
    step = 0
    while step < cfg.steps and active[0] < n_real:
        chunk = min(cfg.eval_every, cfg.steps - step)
        idx_t = torch.as_tensor(
            np.stack([samplers[i].take(chunk) for i in active], axis=1), device=dev
        )  # (chunk, C, B)
        train_vals = torch.empty((chunk, len(active)), device=dev, dtype=dtype)
        for s in range(chunk):
            train_vals[s] = stack.step(_gather(xtr, idx_t[s]), _gather(ytr, idx_t[s]))
        step += chunk
        finite_train = torch.isfinite(train_vals).all(0).cpu().numpy()
        te, te_sem = _evaluate(stack, xte, yte, test_idx, test_count)
        tr, _ = _evaluate(stack, xtr, ytr, train_idx, train_count)
        finished = []
        for pos, cell_i in enumerate(active):
            if cell_i >= n_real:  # a ghost: trained for the layout only
                continue
            _track_step(tracks[cell_i], step, finite_train[pos], te[pos], te_sem[pos], tr[pos], cfg, patience)
            if tracks[cell_i].done or step >= cfg.steps:
                finished.append(pos)
        for pos in finished:
            results[active[pos]] = result = _readout(tracks[active[pos]], cells[active[pos]], cfg, b_train, b_eval)
            if on_result is not None:
                on_result(active[pos], result)
        if finished:  # the finished cells leave the stack
            keep = [p for p in range(len(active)) if p not in set(finished)]
            sel = torch.as_tensor(keep, device=dev)
            stack.select(keep)
            xtr, ytr, xte, yte = xtr[sel], ytr[sel], xte[sel], yte[sel]
            test_idx, train_idx = test_idx[sel], train_idx[sel]
            test_count, train_count = test_count[keep], train_count[keep]
            active = [active[p] for p in keep]
    return [r if r is not None else RuntimeError("cell was not trained") for r in results]


def _readout(t: _Track, cell: Cell, cfg: TrainConfig, b_train: int, b_eval: int) -> CellResult | BaseException:
    best = t.best(cfg)
    if best is None:
        return TrainingDiverged(
            f"{cell.bound.name}: critic training diverged (non-finite values) at step {t.diverged_at} "
            f"before any finite held-out evaluation; lower learning_rate or use a bounded objective"
        )
    curve = smooth(t.test, cfg.smooth_window) if cfg.readout == "max_smoothed_test" else np.asarray(t.test)
    value = float(curve[best])
    if not math.isfinite(value):
        return TrainingDiverged(
            f"{cell.bound.name}: every held-out evaluation was non-finite ({value}); the bound's e^T overflowed "
            "on held-out pairs — lower learning_rate or use a bounded read-out (smile, infonce)"
        )
    extras: dict[str, Any] = {
        "bound": cell.bound.name,
        "test_mi": value,
        "test_mi_raw": t.test[best],
        "test_mi_sem": t.test_sem[best],
        "train_mi": t.train[best],
        "best_step": t.steps[best],
        "steps_run": t.steps[-1] if t.diverged_at is None else t.diverged_at,
        "stopped_early": t.stopped_early,
        "diverged": t.diverged_at is not None,
        "n_train": int(cell.x_train.shape[0]),
        "n_test": int(cell.x_test.shape[0]),
        "batch_size_used": b_train,
        "eval_batch_size": b_eval,
        "test_curve": [[s, v if math.isfinite(v) else None] for s, v in zip(t.steps, t.test, strict=True)],
    }
    ceiling = cell.bound.ceiling(b_eval)
    if ceiling is not None:
        extras["log_batch_ceiling"] = ceiling
    return CellResult(value=value, extras=extras)
