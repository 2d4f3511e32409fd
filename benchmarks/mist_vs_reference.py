"""Ours vs the reference design, same data, same compute, one run: MIST's protocol at CPU scale.

Trains our MIST/MIST-QR model and the reference-shaped model (``benchmarks/_reference.py``: rows [x, y]
zero-padded to a fixed width, raw values, 2 ISABs, PMA, MLP head) at matched parameter counts on the same
generated training stream (MIST's 16 training entries and hyperparameter laws, d ≤ 8 per side, n ≤ 200:
``benchmarks/_mist_protocol.py``), for

* (a) the same number of optimizer steps (the reference gets as many steps as ours took), and
* (b) the same compute: ``--budget`` seconds of one CPU thread each (torch threads = 1),

3 seeds each, then evaluates both, the trivial predictor (mean MI of the training meta-distribution),
KSG (k = 3) and marginals-only diagnostics (MI regressed on each column's own statistics) on the same IMD and OoMD
test grids, and on the IMD cells in other units (every column multiplied
by its own factor: the same MI). Ablations at the same compute locate what the accuracy comes from: ours
with the 2-D cell stage, ours without the dependence statistics, ours without copula normalisation
(``robust`` median/IQR scaling), and the design as it was before this comparison (cell stage, no statistics).

Compute is measured as CPU time of the training thread (``time.thread_time``: data preparation, forward,
backward, optimizer step; sample generation, shared by all models, is excluded). With one torch thread that
is the wall-clock of an unloaded core, and it does not move when other jobs share the machine. Schedules:
linear warm-up over the first 5 % and cosine decay to 5 % of the learning rate, as a function of the used
fraction of the budget (same-compute runs) or of the steps (same-steps runs).

    python benchmarks/mist_vs_reference.py              # the committed run: about 50 min of one core
    python benchmarks/mist_vs_reference.py --smoke      # every code path in under a minute

Writes benchmarks/results/mist_vs_reference.md and .parquet (per-cell predictions: _cells.parquet).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their thread pools

import numpy as np
import polars as pl
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model
from _mist_protocol import SMOKE, Protocol, Sample, rescaled
from _reference import ReferenceShape, matched_reference, reference_batch
from mibench import __version__
from mibench.config.learned import Architecture
from mibench.config.schema import central_taus
from mibench.estimators import make_estimator
from mibench.io import atomic_write_file, atomic_write_text
from mibench.learned.batching import buckets, collate, prepare
from mibench.learned.calibration import fit_calibration
from mibench.learned.infer import predict
from mibench.learned.model import MISTModel
from mibench.learned.normalise import normalise
from mibench.learned.trainer import pinball

RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = (0.5, 0.8, 0.9, 0.95)
#: our CPU-scale model: no 2-D cell stage (on n·2d tokens it costs 2.5-3× per step on a CPU and, next to the
#: dependence statistics, bought no accuracy in pilot runs: the `ours+cell-stage` row measures it), the row
#: stage and heads wider than the tiny preset's (n tokens: cheap)
CPU_ARCH = Architecture(
    cell_dim=16, cell_heads=2, cell_layers=0, cell_inducing=8,
    dim=64, heads=4, layers=2, inducing=16, seeds=4, ffn_mult=4, head_hidden=128, tau_dim=16, dependence_stats=True,
)  # fmt: skip
SMOKE_ARCH = Architecture(
    cell_dim=8, cell_heads=2, cell_layers=0, dim=16, heads=2, inducing=4, seeds=2, head_hidden=16, tau_dim=8,
    dependence_stats=True,
)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One trained contender: which model, which input normalisation, which budget."""

    name: str
    kind: str  # mist | reference
    normalisation: str = "copula+robust"  # copula+robust | copula | robust | raw (reference only)
    budget: str = "time"  # time: --budget CPU seconds; steps: as many steps as `ours` took (same seed)
    cell_layers: int | None = None  # mist only: blocks of the 2-D cell stage (None: the arch's; 0: none)
    pinball_weight: float = 1.0  # mist only: weight of the quantile head's pinball loss (0: point head only)
    dependence_stats: bool = True  # mist only: the trunk reads the dependence statistics (if the arch has them)
    note: str = ""


VARIANTS: tuple[Variant, ...] = (
    Variant("ours", "mist", note="MIST/MIST-QR at CPU scale: copula+robust channels, excess dependence statistics, "
            "no cell stage, bucketing, conformal calibration of the quantiles"),
    Variant("reference", "reference", "raw", note="reference shape, raw values, random batches"),
    Variant("reference-same-steps", "reference", "raw", "steps", note="reference, as many steps as ours"),
    Variant("ours+cell-stage", "mist", cell_layers=1, note="ablation: with one block of the 2-D cell stage"),
    Variant("ours-no-stats", "mist", dependence_stats=False, note="ablation: without the dependence statistics"),
    Variant("ours-copula-only", "mist", "copula", note="ablation: the copula channel alone (the default before)"),
    Variant("ours-robust-only", "mist", "robust", note="ablation: the median/IQR channel alone (no copula)"),
    Variant(
        "ours-before-issue-12",
        "mist",
        "copula",
        cell_layers=1,
        dependence_stats=False,
        note="the design before this comparison: copula, 2-D cell stage, no dependence statistics",
    ),
)  # fmt: skip
#: contenders trained on every seed (the others on ``--ablation-seeds``)
MAIN = ("ours", "reference", "reference-same-steps")


@dataclass
class Settings:
    protocol: Protocol
    arch: Architecture
    budget_s: float
    seeds: tuple[int, ...]
    ablation_seeds: tuple[int, ...]
    batch_size: int = 32
    pool: int = 16  # batches per pool: ours buckets a pool by size; the reference takes it in stream order
    lr: dict[str, float] = field(default_factory=lambda: {"mist": 1e-3, "reference": 1e-3})
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup: float = 0.05
    min_lr_ratio: float = 0.05
    trivial_samples: int = 4000
    marginal_samples: int = 8000  # training-stream datasets of the marginals-only diagnostics (:func:`marginals_only`)
    calibration_samples: int = 800  # held-out training-stream datasets for MIST-QR's conformal offsets
    fixed_steps: int | None = None  # train every variant exactly this many steps, not a CPU budget (tests)


# -- models -------------------------------------------------------------------------------------------------------
def build_model(variant: Variant, settings: Settings, seed: int, mist_params: int) -> nn.Module:
    """A freshly initialised contender (seeded); reference shapes match ``mist_params`` parameters."""
    torch.manual_seed(seed)
    if variant.kind == "mist":
        arch = settings.arch.replace(
            normalisation=variant.normalisation,
            cell_layers=settings.arch.cell_layers if variant.cell_layers is None else variant.cell_layers,
            dependence_stats=settings.arch.dependence_stats and variant.dependence_stats,
        )
        return MISTModel(arch)
    width = 2 * settings.protocol.d_max
    return matched_reference(mist_params, width, settings.arch.inducing, settings.arch.seeds)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms, inducing points and seeds (as mibench's training)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or name.endswith(("points", "seeds")) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))


def lr_factor(progress: float, warmup: float, min_ratio: float) -> float:
    """Linear warm-up over the first ``warmup`` of the run, cosine decay to ``min_ratio`` at its end."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    p = min(1.0, (progress - warmup) / (1.0 - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


# -- the training stream ---------------------------------------------------------------------------------------------
def pools(protocol: Protocol, stream: int, pool_samples: int) -> Iterator[list[Sample]]:
    """Consecutive pools of the training stream (the same samples for every contender of a seed)."""
    index = 0
    while True:
        yield [protocol.train_sample(stream, index + i) for i in range(pool_samples)]
        index += pool_samples


def mist_batches(samples: list[Sample], variant: Variant, settings: Settings, rng: np.random.Generator) -> list:
    """Ours: normalise, bucket the pool by size (wider side first), batches in a shuffled order."""
    prepared = [prepare(s.x, s.y, variant.normalisation) for s in samples]
    sizes = [(zx.shape[0], zx.shape[1], zy.shape[1]) for zx, zy in prepared]
    groups = buckets(sizes, settings.batch_size)
    return [
        collate([prepared[i] for i in groups[g]], [samples[i].mi for i in groups[g]])
        for g in rng.permutation(len(groups))
    ]


def reference_inputs(samples: Sequence[Sample | tuple], variant: Variant, width: int):
    pairs = [(s.x, s.y) if isinstance(s, Sample) else s for s in samples]
    if variant.normalisation != "raw":
        pairs = [(normalise(x, variant.normalisation), normalise(y, variant.normalisation)) for x, y in pairs]
    return reference_batch(pairs, width, [s.mi if isinstance(s, Sample) else 0.0 for s in samples])


def reference_batches(samples: list[Sample], variant: Variant, settings: Settings, rng) -> list:
    """The reference: random batches in stream order, padded to the batch's largest n."""
    b, width = settings.batch_size, 2 * settings.protocol.d_max
    return [reference_inputs(samples[i : i + b], variant, width) for i in range(0, len(samples), b)]


def step_loss(model: nn.Module, variant: Variant, batch) -> torch.Tensor:
    """MIST: MSE(point) + pinball(quantiles), as mibench trains; the reference: MSE (its MIST model)."""
    if variant.kind == "mist":
        point, quantiles = model(batch)
        mse = torch.mean((point - batch.target) ** 2)
        return mse + variant.pinball_weight * pinball(quantiles, batch.target, model.taus)
    rows, pad, target = batch
    return torch.mean((model(rows, pad) - target) ** 2)


# -- training ---------------------------------------------------------------------------------------------------
@dataclass
class RunInfo:
    steps: int
    cpu_s: float
    wall_s: float
    skipped: int  # steps whose loss was not finite (skipped, never applied)
    final_loss: float


def train_run(variant: Variant, settings: Settings, seed: int, model: nn.Module, steps: int | None = None) -> RunInfo:
    """Train ``model`` on stream ``seed`` until the CPU budget (or ``steps``) is used up.

    Compute counted: batch preparation + forward + backward + optimizer step (thread CPU time).
    """
    lr = settings.lr[variant.kind]
    optimizer = make_optimizer(model, lr, settings.weight_decay)
    make = mist_batches if variant.kind == "mist" else reference_batches
    rng = np.random.default_rng([seed, 0xB0C])
    model.train()
    done = skipped = 0
    used, wall0, losses = 0.0, time.perf_counter(), []
    for pool in pools(settings.protocol, seed, settings.batch_size * settings.pool):
        t0 = time.thread_time()
        batches = make(pool, variant, settings, rng)
        used += time.thread_time() - t0
        for batch in batches:
            progress = done / steps if steps is not None else used / settings.budget_s
            if progress >= 1.0:
                return RunInfo(done, used, time.perf_counter() - wall0, skipped, float(np.mean(losses[-50:])))
            t0 = time.thread_time()
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor(progress, settings.warmup, settings.min_lr_ratio)
            loss = step_loss(model, variant, batch)
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                optimizer.step()
                losses.append(float(loss.detach()))
            else:
                skipped += 1
            done += 1
            used += time.thread_time() - t0
    raise AssertionError("unreachable: the training stream is infinite")


# -- evaluation ------------------------------------------------------------------------------------------------------
#: training stream of the held-out calibration datasets of seed s: CALIBRATION_STREAM + s (never trained on)
CALIBRATION_STREAM = 20_000


def calibrate(model: MISTModel, settings: Settings, seed: int) -> float:
    """Fit MIST-QR's conformal offsets on fresh datasets of the training meta-distribution; returns CPU s.

    As mibench's trainer does on its validation split (:mod:`mibench.learned.calibration`). Not counted in
    the training budget: it is inference on ``calibration_samples`` datasets, after training.
    """
    t0 = time.thread_time()
    held_out = [
        settings.protocol.train_sample(CALIBRATION_STREAM + seed, i) for i in range(settings.calibration_samples)
    ]
    _, raw = predict(model, [(s.x, s.y) for s in held_out], "cpu", calibrated=False)
    model.calibration = fit_calibration(raw, [s.mi for s in held_out], [s.n for s in held_out], model.arch.taus,
                                        min_per_bin=max(20, settings.calibration_samples // 4))  # fmt: skip
    return time.thread_time() - t0


@torch.no_grad()
def predict_cells(model: nn.Module, variant: Variant, cells: list[Sample], width: int):
    """(point estimates, calibrated quantiles or None, raw quantiles or None) on the test cells."""
    model.eval()
    if variant.kind == "mist":
        point, raw = predict(model, [(c.x, c.y) for c in cells], "cpu", calibrated=False)
        calibrated = model.calibration.apply(raw, [c.n for c in cells]) if model.calibration is not None else raw
        return point, calibrated, raw
    order = np.argsort([c.n for c in cells], kind="stable")
    out = np.zeros(len(cells))
    for start in range(0, len(cells), 64):
        idx = order[start : start + 64]
        rows, pad, _ = reference_inputs([cells[i] for i in idx], variant, width)
        out[idx] = model(rows, pad).double().numpy()
    return out, None, None


def cell_frame(
    cells: list[Sample], name: str, seed: int | None, estimate, quantiles=None, taus=None, raw_quantiles=None
) -> pl.DataFrame:
    data = {
        "variant": name,
        "seed": seed,
        "split": [c.split for c in cells],
        "entry": [c.entry for c in cells],
        "n": [c.n for c in cells],
        "d": [c.d for c in cells],
        "replicate": [c.replicate for c in cells],
        "mi_true": [c.mi for c in cells],
        "estimate": np.asarray(estimate, dtype=np.float64),
    }
    frame = pl.DataFrame(data, schema_overrides={"seed": pl.Int64})
    if quantiles is not None:
        taus = [round(t, 10) for t in taus]
        for level in LEVELS:
            lo, hi = central_taus(level)
            inside = (quantiles[:, taus.index(lo)] <= frame["mi_true"].to_numpy()) & (
                frame["mi_true"].to_numpy() <= quantiles[:, taus.index(hi)]
            )
            frame = frame.with_columns(
                pl.Series(f"covered_{int(level * 100)}", inside),
                pl.Series(f"width_{int(level * 100)}", quantiles[:, taus.index(hi)] - quantiles[:, taus.index(lo)]),
            )
        frame = frame.with_columns(pl.Series("median", quantiles[:, taus.index(0.5)]))
        if raw_quantiles is not None:  # the quantile head before conformal calibration
            lo, hi = central_taus(0.9)
            truth = frame["mi_true"].to_numpy()
            inside = (raw_quantiles[:, taus.index(lo)] <= truth) & (truth <= raw_quantiles[:, taus.index(hi)])
            frame = frame.with_columns(pl.Series("covered_raw_90", inside))
    return frame


TRIVIAL, KSG = "trivial (mean training MI)", "ksg (k=3)"
#: diagnostics, not contenders: MI regressed on each column's own statistics, never a joint one; with the
#: columns' scales (units) and without them (shape only)
MARGINALS = "marginals only (scales and shape, no dependence)"
SHAPE_ONLY = "marginal shape only (no units, no dependence)"
DIAGNOSTICS = {MARGINALS: True, SHAPE_ONLY: False}


def marginal_features(x: np.ndarray, y: np.ndarray, units: bool) -> list[float]:
    """What each column says on its own, and nothing of how X and Y depend on each other: log n, dx, dy, per
    side the mean/max/min of the columns' log(std / IQR) (tail shape, unit-free), and with ``units`` also the
    mean/max/min of their log IQR and the mean/max of their log standard deviations (scale: units)."""
    out = [math.log(len(x)), float(x.shape[1]), float(y.shape[1])]
    for side in (x, y):
        side = side.astype(np.float64)
        q75, q25 = np.percentile(side, [75, 25], axis=0)
        iqr, sd = np.log(np.maximum(q75 - q25, 1e-12)), np.log(np.maximum(side.std(axis=0), 1e-12))
        shape = sd - iqr
        out += [shape.mean(), shape.max(), shape.min()]
        if units:
            out += [iqr.mean(), iqr.max(), iqr.min(), sd.mean(), sd.max()]
    return out


def marginals_only(settings: Settings, cells: list[Sample], units: bool = True) -> np.ndarray:
    """Diagnostic: gradient boosting from :func:`marginal_features` to MI, fitted on the training stream.

    It never sees a joint statistic, so whatever it predicts comes from the marginals alone. In MIST's laws
    their scales carry the hyperparameters that set the MI (a sparse pair's variance is 1 + λ², and λ sets its
    correlation); a model that reads raw values can use them, a unit-invariant one cannot. ``units=False`` is
    the control: the marginals' shape alone, which a unit-invariant model can read too.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    p = settings.protocol
    train = [p.train_sample(30_000 + i // 1000, i % 1000) for i in range(settings.marginal_samples)]
    features = np.array([marginal_features(s.x, s.y, units) for s in train])
    model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=0)
    model.fit(features, np.array([s.mi for s in train]))
    return model.predict(np.array([marginal_features(c.x, c.y, units) for c in cells]))


def diagnostic_frames(
    settings: Settings, cells: list[Sample], names: Sequence[str] = tuple(DIAGNOSTICS)
) -> list[pl.DataFrame]:
    """The named marginals-only diagnostics on the test cells."""
    return [cell_frame(cells, name, None, marginals_only(settings, cells, DIAGNOSTICS[name])) for name in names]


def baselines(settings: Settings, cells: list[Sample]) -> list[pl.DataFrame]:
    """The trivial predictor (mean MI of the training meta-distribution), KSG (k = 3) and the marginals-only
    diagnostics on the test cells."""
    p = settings.protocol
    mean_mi = float(np.mean([p.train_sample(10_000 + i // 1000, i % 1000).mi for i in range(settings.trivial_samples)]))
    ksg = make_estimator("ksg", {"k": 3})
    values = [ksg(c.x.astype(np.float64), c.y.astype(np.float64), seed=0).value for c in cells]
    return [cell_frame(cells, TRIVIAL, None, [mean_mi] * len(cells)),
            cell_frame(cells, KSG, None, values),
            *diagnostic_frames(settings, cells)]  # fmt: skip


# -- the run -------------------------------------------------------------------------------------------------------
def run_seed(settings: Settings, variants: Sequence[Variant], seed: int, cells: list[Sample], log=print):
    """Train and evaluate every variant of one seed (in order: same-steps variants need ``ours`` first)."""
    width = 2 * settings.protocol.d_max
    mist_params = parameter_count(MISTModel(settings.arch))
    frames, runs, ours_steps = [], [], None
    for variant in variants:
        if variant.name not in MAIN and seed not in settings.ablation_seeds:
            continue
        model = build_model(variant, settings, seed, mist_params)
        steps = settings.fixed_steps or (ours_steps if variant.budget == "steps" else None)
        info = train_run(variant, settings, seed, model, steps)
        if variant.name == "ours":
            ours_steps = info.steps
        calibration_s = calibrate(model, settings, seed) if variant.kind == "mist" else 0.0
        point, quantiles, raw = predict_cells(model, variant, cells, width)
        taus = model.arch.taus if variant.kind == "mist" else None
        frames.append(cell_frame(cells, variant.name, seed, point, quantiles, taus, raw))
        config = str(model.config) if isinstance(model, ReferenceShape) else str(model.arch.to_dict())
        runs.append(dict(variant=variant.name, seed=seed, parameters=parameter_count(model), steps=info.steps,
                         cpu_s=info.cpu_s, wall_s=info.wall_s, skipped_steps=info.skipped, calibration_cpu_s=calibration_s,
                         final_train_loss=info.final_loss, lr=settings.lr[variant.kind], config=config,
                         note=variant.note))  # fmt: skip
        log(f"seed {seed} {variant.name}: {info.steps} steps, {info.cpu_s:.0f} CPU s ({info.wall_s:.0f} s wall), "
            f"{parameter_count(model):,} parameters, final train loss {info.final_loss:.3f}")  # fmt: skip
    return frames, runs


def _log_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _seed_job(job):
    """Worker entry point of ``--jobs`` (one torch thread per process, as in the serial run)."""
    torch.set_num_threads(1)
    settings, variants, seed, cells = job
    return run_seed(settings, variants, seed, cells, _log_stderr)


def test_cells(settings: Settings) -> list[Sample]:
    """The IMD, OoMD and rescaled-IMD cells every contender is evaluated on."""
    imd = list(settings.protocol.test_cells("imd"))
    return imd + list(settings.protocol.test_cells("oomd")) + rescaled(imd, settings.protocol.root_seed)


def run(settings: Settings, variants: Sequence[Variant], log: Callable[[str], None] = print, jobs: int = 1):
    """Train every variant × seed, evaluate all on the same cells; returns (cells frame, runs frame).

    ``jobs`` > 1 trains the seeds in that many processes. With ``fixed_steps`` the numbers are the serial
    run's (tested); with CPU budgets they are close, since a budget is CPU time of each training thread, but
    contention for caches and cores can change how many steps a CPU-second buys.
    """
    cells = test_cells(settings)
    frames, runs = baselines(settings, cells), []
    if jobs > 1:
        import multiprocessing

        order = sorted(settings.seeds, key=lambda s: s not in settings.ablation_seeds)  # long seeds first
        with multiprocessing.get_context("spawn").Pool(min(jobs, len(order))) as pool:
            results = dict(
                zip(order, pool.map(_seed_job, [(settings, variants, s, cells) for s in order], 1), strict=True)
            )
    else:
        results = {seed: run_seed(settings, variants, seed, cells, log) for seed in settings.seeds}
    for seed in settings.seeds:
        frames += results[seed][0]
        runs += results[seed][1]
    return pl.concat(frames, how="diagonal"), pl.DataFrame(runs)


def pick_variants(names: str | None) -> tuple[Variant, ...]:
    """The ``--variants`` subset, in the standard order; same-steps variants need ``ours``."""
    if not names:
        return VARIANTS
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {v.name for v in VARIANTS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = tuple(v for v in VARIANTS if v.name in wanted)
    if any(v.budget == "steps" for v in chosen) and "ours" not in wanted:
        raise SystemExit("--variants: a same-steps variant needs 'ours' (it takes as many steps as ours did)")
    return chosen


# -- tables -------------------------------------------------------------------------------------------------------
def n_bin(n: int) -> str:
    return "[10,100]" if n <= 100 else "(100,200]" if n <= 200 else "(200,500]"


def metrics(cells: pl.DataFrame) -> pl.DataFrame:
    """MSE, bias, MAE (and coverage/width where there are quantiles) per variant × seed × split × n-bin (+ ALL)."""
    err = pl.col("estimate") - pl.col("mi_true")
    extra = [pl.col(c).cast(pl.Float64).mean() for c in cells.columns if c.startswith(("covered_", "width_"))]
    aggs = [
        pl.len().alias("count"),
        (err**2).mean().alias("mse"),
        err.mean().alias("bias"),
        err.abs().mean().alias("mae"),
        *extra,
    ]
    binned = cells.with_columns(pl.col("n").map_elements(n_bin, return_dtype=pl.String).alias("n_bin"))
    keys = ["variant", "seed", "split"]
    out = pl.concat(
        [
            binned.group_by(*keys, "n_bin").agg(aggs),
            binned.group_by(*keys).agg(aggs).with_columns(pl.lit("ALL").alias("n_bin")),
        ],
        how="diagonal",
    )
    return out.rename({c: c.replace("covered_", "coverage_") for c in out.columns}).sort(
        *keys, "n_bin", nulls_last=False
    )


def ratios(table: pl.DataFrame, numerator: str, denominator: str) -> pl.DataFrame:
    """MSE ratio numerator ÷ denominator per split × n-bin, paired by seed: mean, std, min, max over seeds."""
    a = table.filter(pl.col("variant") == numerator).select("seed", "split", "n_bin", pl.col("mse").alias("a"))
    b = table.filter(pl.col("variant") == denominator).select("seed", "split", "n_bin", pl.col("mse").alias("b"))
    r = a.join(b, on=["seed", "split", "n_bin"]).with_columns((pl.col("a") / pl.col("b")).alias("ratio"))
    return (
        r.group_by("split", "n_bin")
        .agg(
            pl.col("ratio").mean().alias("mean"),
            pl.col("ratio").std().alias("std"),
            pl.col("ratio").min().alias("min"),
            pl.col("ratio").max().alias("max"),
            pl.len().alias("seeds"),
        )
        .with_columns(pl.lit(f"{numerator} / {denominator}").alias("ratio_of"))
        .sort("split", "n_bin")
    )


def _pm(values: pl.Series, fmt: str = "{:.3g}") -> str:
    values = values.drop_nulls()
    if values.is_empty():
        return ""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(values.mean())} ± {fmt.format(values.std())}"


def accuracy_table(table: pl.DataFrame, split: str, variants: Sequence[str]) -> list[str]:
    """Markdown: MSE / bias / MAE per n-bin for every contender (mean ± std over seeds)."""
    bins = [b for b in ("[10,100]", "(100,200]", "(200,500]", "ALL") if b in set(table["n_bin"])]
    lines = ["| contender | seeds | " + " | ".join(f"MSE {b}" for b in bins) + " | bias (all) | MAE (all) |",
             "|---|---:|" + "---:|" * (len(bins) + 2)]  # fmt: skip
    for name in variants:
        rows = table.filter((pl.col("variant") == name) & (pl.col("split") == split))
        if rows.is_empty():
            continue
        cells = [_pm(rows.filter(pl.col("n_bin") == b)["mse"]) for b in bins]
        everything = rows.filter(pl.col("n_bin") == "ALL")
        seeds = everything["seed"].drop_nulls().n_unique() or "–"
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {_pm(everything['bias'], '{:+.3f}')} | "
                     f"{_pm(everything['mae'])} |")  # fmt: skip
    return lines


def coverage_table(table: pl.DataFrame, variant: str) -> list[str]:
    """Markdown: calibrated coverage at every level, the 90 % interval's width, and 90 % before calibration."""
    cols = [f"coverage_{int(level * 100)}" for level in LEVELS]
    raw = "coverage_raw_90" in table.columns
    lines = ["| split | n-bin | " + " | ".join(f"{c[9:]} %" for c in cols) + " | width 90 % (nats) |"
             + (" 90 % before calibration |" if raw else ""),
             "|---|---|" + "---:|" * (len(cols) + 1 + raw)]  # fmt: skip
    rows = table.filter(pl.col("variant") == variant)
    for (split, nb), group in rows.group_by("split", "n_bin", maintain_order=True):
        lines.append(f"| {split} | {nb} | " + " | ".join(_pm(group[c] * 100, "{:.1f}") for c in cols)
                     + f" | {_pm(group['width_90'])} |"
                     + (f" {_pm(group['coverage_raw_90'] * 100, '{:.1f}')} |" if raw else ""))  # fmt: skip
    return lines


def entry_table(cells: pl.DataFrame, split: str) -> list[str]:
    """Markdown: MSE per test entry (pooled over seeds) of ours, the reference and the baselines."""
    shown = ["ours", "reference", KSG, TRIVIAL, *[d for d in DIAGNOSTICS if d in set(cells["variant"])]]
    per = (
        cells.filter((pl.col("split") == split) & pl.col("variant").is_in(shown))
        .group_by("entry", "variant")
        .agg(((pl.col("estimate") - pl.col("mi_true")) ** 2).mean().alias("mse"), pl.col("mi_true").mean().alias("mi"))
        .pivot("variant", index="entry", values="mse")
    )
    mean_mi = cells.filter(pl.col("split") == split).group_by("entry").agg(pl.col("mi_true").mean().alias("mean MI"))
    per = per.join(mean_mi, on="entry").sort("entry")
    lines = [
        "| entry | mean true MI | " + " | ".join(shown) + " | ours ÷ reference |",
        "|---|" + "---:|" * (len(shown) + 2),
    ]
    for row in per.iter_rows(named=True):
        ratio = row["ours"] / row["reference"] if row.get("reference") else float("nan")
        lines.append(f"| {row['entry']} | {row['mean MI']:.2f} | " + " | ".join(f"{row.get(v, float('nan')):.3g}" for v in shown)
                     + f" | {ratio:.2f} |")  # fmt: skip
    return lines


def verdicts(table: pl.DataFrame) -> list[str]:
    """The issue's targets: ours ≤ 0.5× the reference's MSE at equal compute (IMD and OoMD), 90 % coverage ± 3."""
    lines = []
    for numerator, denominator, what in (
        ("ours", "reference", "equal compute"),
        ("ours", "reference-same-steps", "equal optimizer steps"),
    ):
        r = ratios(table, numerator, denominator).filter(pl.col("n_bin") == "ALL")
        for row in r.iter_rows(named=True):
            ok = "meets" if row["mean"] <= 0.5 else "MISSES"
            if row["split"] not in ("imd", "oomd"):
                ok = "not a target: the same IMD cells in other units, where only the reference can change"
            spread = f" ± {row['std']:.2f}" if row["std"] is not None else ""
            lines.append(f"- {row['split'].upper()} MSE ratio ours ÷ reference at {what}: **{row['mean']:.2f}{spread}** "
                         f"(seeds {row['min']:.2f}–{row['max']:.2f}; {ok} ≤ 0.5)")  # fmt: skip
    ours = table.filter((pl.col("variant") == "ours") & (pl.col("n_bin") == "ALL"))
    for split in ("imd", "oomd"):
        cov = ours.filter(pl.col("split") == split)["coverage_90"] * 100
        if cov.is_empty():
            continue
        ok = "meets" if abs(cov.mean() - 90) <= 3 else "MISSES"
        before = ""
        if "coverage_raw_90" in ours.columns:
            before = (
                f"; before calibration {ours.filter(pl.col('split') == split)['coverage_raw_90'].mean() * 100:.1f} %"
            )
        lines.append(f"- {split.upper()} MIST-QR 90 % coverage: **{cov.mean():.1f} %** (seeds {cov.min():.1f}–"
                     f"{cov.max():.1f}; {ok} 90 ± 3{before})")  # fmt: skip
    return lines


# -- the report ------------------------------------------------------------------------------------------------------
def machine_line() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores shared with other jobs; torch {torch.__version__} with "
            f"{torch.get_num_threads()} thread(s); python {platform.python_version()}; mibench {__version__}")  # fmt: skip


def smallest_n_lines(cells: pl.DataFrame) -> list[str]:
    """Diagnostic, not a target: the equal-compute ratios without the grid's smallest n, and that n's share.

    The smallest n (10) mostly has n < dx + dy; one column of the grid then decides the whole ratio.
    """
    both = cells.filter(pl.col("variant").is_in(["ours", "reference"]) & pl.col("split").is_in(["imd", "oomd"]))
    if both.filter(pl.col("variant") == "reference").is_empty() or both.filter(pl.col("variant") == "ours").is_empty():
        return []
    smallest = int(both["n"].min())
    without = ratios(metrics(both.filter(pl.col("n") > smallest)), "ours", "reference").filter(pl.col("n_bin") == "ALL")
    ours = both.filter(pl.col("variant") == "ours").with_columns(se=(pl.col("estimate") - pl.col("mi_true")) ** 2)
    lines = []
    for row in without.iter_rows(named=True):
        rows = ours.filter(pl.col("split") == row["split"])
        share = float(rows.filter(pl.col("n") == smallest)["se"].sum() / rows["se"].sum())
        spread = f" ± {row['std']:.2f}" if row["std"] is not None else ""
        lines.append(f"- diagnostic, not a target: {row['split'].upper()} MSE ratio at equal compute without "
                     f"n = {smallest}: {row['mean']:.2f}{spread} (seeds {row['min']:.2f}–{row['max']:.2f}); "
                     f"n = {smallest} holds {share:.0%} of ours' squared error")  # fmt: skip
    return lines


def marginal_lines(cells: pl.DataFrame) -> list[str]:
    """Diagnostic, not a target: how much of the smallest n's MSE the marginals alone explain, with and without
    their units."""
    if not set(DIAGNOSTICS) <= set(cells["variant"]):
        return []
    smallest = int(cells["n"].min())
    se = cells.filter(pl.col("n") == smallest).with_columns(se=(pl.col("estimate") - pl.col("mi_true")) ** 2)
    mse = {(r["split"], r["variant"]): r["se"] for r in se.group_by("split", "variant").agg(pl.col("se").mean()).iter_rows(named=True)}  # fmt: skip
    parts = [f"{name} {mse[('imd', name)]:.2f}" for name in ("ours", "reference", TRIVIAL) if ("imd", name) in mse]
    return [f"- diagnostic, not a target: at n = {smallest}, a predictor that reads each column on its own (no "
            f"dependence between X and Y) has IMD MSE {mse[('imd', MARGINALS)]:.2f} with the columns' scales, "
            f"{mse[('imd', SHAPE_ONLY)]:.2f} with their shape alone (no units), and "
            f"{mse[('imd-rescaled', MARGINALS)]:.2f} with scales on the same cells in other units "
            f"({'; '.join(parts)})"]  # fmt: skip


def _first(runs: pl.DataFrame, variant: str, column: str) -> str:
    """``column`` of ``variant``'s first run, or "(not run)" when ``--variants`` left it out."""
    values = runs.filter(pl.col("variant") == variant)[column]
    if values.is_empty():
        return "(not run)"
    return f"{values[0]:,}" if isinstance(values[0], int) else str(values[0])


def report(
    settings: Settings,
    table: pl.DataFrame,
    runs: pl.DataFrame,
    cells: pl.DataFrame,
    date: str,
    wall_s: float,
    smoke: bool,
    machine: str | None = None,
) -> str:
    """The results file (the run's settings, the targets, per-n-bin and per-entry tables, ratios, coverage, runs)."""
    p = settings.protocol
    present = set(table["variant"])
    seeded = [v.name for v in VARIANTS if v.name in present]
    contenders = [*seeded, KSG, TRIVIAL, *[d for d in DIAGNOSTICS if d in present]]
    counts = table.filter((pl.col("n_bin") == "ALL") & (pl.col("variant") == KSG))
    count = {row["split"]: row["count"] for row in counts.iter_rows(named=True)}
    lines = [
        "# MIST vs the reference design: same data, same compute (CPU)" + (" — SMOKE RUN" if smoke else ""),
        "",
        f"- date: {date}; machine: {machine or machine_line()}; the whole run took {wall_s / 60:.0f} min of "
        "wall-clock.",
        f"- protocol: MIST's entries and hyperparameter laws (16 training entries; IMD 6, OoMD 7 entries), "
        f"d ~ U{{2..{p.d_max}}} per side (dim_x = dim_y), training n ~ U{{{p.n_min}..{p.n_max}}}; test grids "
        f"n = {p.n_grid} × {p.replicates} replicates: {count.get('imd', 0)} IMD and {count.get('oomd', 0)} OoMD cells, "
        "the same cells for every contender.",
        f"- compute: **{settings.budget_s:.0f} CPU-seconds of one thread per model** (torch threads = 1; "
        "`time.thread_time` of preparation + forward + backward + step, sample generation excluded), "
        f"batch {settings.batch_size}, AdamW (lr {settings.lr['mist']:g} ours, {settings.lr['reference']:g} reference, "
        f"weight decay {settings.weight_decay:g}), warm-up 5 % then cosine, gradient clipping {settings.grad_clip:g}; "
        f"seeds {list(settings.seeds)} (ablations: {list(settings.ablation_seeds)}); each seed draws its own "
        "training stream and initialisation, shared by every contender of that seed.",
        f"- ours: {_first(runs, 'ours', 'parameters')} parameters ({settings.arch.to_dict()}); "
        f"reference shape matched to {_first(runs, 'reference', 'parameters')} parameters "
        f"({_first(runs, 'reference', 'config')}).",
        f"- trivial predictor: the mean MI of the training meta-distribution ({settings.trivial_samples:,} draws); "
        "KSG: k = 3, mibench's `ksg` with its defaults; marginals only (diagnostics, not contenders): gradient "
        f"boosting fitted on {settings.marginal_samples:,} training-stream datasets from each column's own "
        "statistics, never a joint one: log(std/IQR) per column (shape) with n, dx, dy, and with the columns' log "
        "IQR and log std (scale) or without them (shape only).",
        "",
        "## Targets",
        "",
        *verdicts(table),
        *smallest_n_lines(cells),
        *marginal_lines(cells),
        "",
    ]
    for split, title in (
        ("imd", "In-meta-distribution (IMD)"),
        ("oomd", "Out-of-meta-distribution (OoMD)"),
        ("imd-rescaled", "The IMD cells in other units (each column × 10^U(−1, 1): the same MI)"),
    ):
        lines += [f"## {title}: MSE per n-bin (nats², mean ± std over seeds)", "",
                  *accuracy_table(table, split, contenders), ""]  # fmt: skip
    for split in ("imd", "oomd", "imd-rescaled"):
        lines += [f"### MSE per entry, {split} (all n, pooled over seeds)", "", *entry_table(cells, split), ""]
    lines += ["## Ratios of MSE (paired by seed)", "", "| ratio | split | n-bin | mean | std | min | max |",
              "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for num, den in (("ours", "reference"), ("ours", "reference-same-steps"), ("ours+cell-stage", "ours"),
                     ("ours-no-stats", "ours"), ("ours-copula-only", "ours"), ("ours-robust-only", "ours"), ("ours-before-issue-12", "reference")):  # fmt: skip
        for row in ratios(table, num, den).iter_rows(named=True):
            std = "" if row["std"] is None else f"{row['std']:.2f}"
            lines.append(f"| {row['ratio_of']} | {row['split']} | {row['n_bin']} | {row['mean']:.2f} | {std} | "
                         f"{row['min']:.2f} | {row['max']:.2f} |")  # fmt: skip
    lines += ["", "## MIST-QR coverage of the true MI (ours; central intervals of the quantile head after conformal "
              f"calibration on {settings.calibration_samples} held-out training-stream datasets per seed)", "",
              *coverage_table(table, "ours"), "", "## Training runs", "",
              "| contender | seed | parameters | steps | CPU s | wall s | skipped steps (non-finite loss) | final train loss |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in runs.iter_rows(named=True):
        lines.append(f"| {r['variant']} | {r['seed']} | {r['parameters']:,} | {r['steps']:,} | {r['cpu_s']:.0f} | "
                     f"{r['wall_s']:.0f} | {r['skipped_steps']} | {r['final_train_loss']:.3f} |")  # fmt: skip
    lines += ["", "Contenders:", *[f"- `{v.name}`: {v.note}" for v in VARIANTS if v.name in present], ""]
    return "\n".join(lines)


def save(frame: pl.DataFrame, path: str | Path) -> None:
    """Parquet via a temp file and a rename: a re-render that dies mid-write keeps the run's only data."""
    atomic_write_file(path, frame.write_parquet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny protocol and budgets: every code path in seconds")
    parser.add_argument("--budget", type=float, default=None, help="CPU-seconds per model (default 150; smoke 0.5)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ablation-seeds", type=int, default=None, help="seeds of the ablation rows (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="mist_vs_reference", help="file stem of the results")
    parser.add_argument("--rerender", action="store_true", help="rewrite the .md from the run's parquet files")
    parser.add_argument("--variants", default=None, help="comma-separated contenders to train (default: all)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes training seeds in parallel (budgets stay CPU "
        "time per training thread; contention can still change steps per CPU-second)",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="peak learning rate of both designs (default 1e-3; a sensitivity check)"
    )
    args = parser.parse_args(argv)
    variants = pick_variants(args.variants)
    torch.set_num_threads(1)
    seeds = tuple(range(args.seeds))
    settings = Settings(
        protocol=SMOKE if args.smoke else Protocol(),
        arch=SMOKE_ARCH if args.smoke else CPU_ARCH,
        budget_s=args.budget or (0.5 if args.smoke else 150.0),
        seeds=seeds,
        ablation_seeds=seeds[: args.ablation_seeds] if args.ablation_seeds is not None else seeds,
    )
    if args.lr is not None:
        settings.lr = {kind: args.lr for kind in settings.lr}
    if args.smoke:
        settings.batch_size, settings.pool, settings.trivial_samples, settings.calibration_samples = 4, 2, 50, 40
        settings.marginal_samples = 60
    if args.rerender:
        return rerender(settings, args)
    wall0 = time.perf_counter()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cells, runs = run(settings, variants, log=_log_stderr, jobs=args.jobs)
    table = metrics(cells)
    wall_s = time.perf_counter() - wall0
    args.out.mkdir(parents=True, exist_ok=True)  # the data first: a report that fails can be --rerender-ed
    stamp = {"date": date, "machine": machine_line(), "total_wall_s": wall_s, "budget_s": settings.budget_s}
    save(table.with_columns(**{k: pl.lit(v) for k, v in stamp.items()}), args.out / f"{args.name}.parquet")
    save(runs.with_columns(**{k: pl.lit(v) for k, v in stamp.items()}), args.out / f"{args.name}_runs.parquet")
    save(cells, args.out / f"{args.name}_cells.parquet")
    text = report(settings, table, runs, cells, date, wall_s, args.smoke)
    atomic_write_text(text, args.out / f"{args.name}.md")
    print(text)
    return 0


def rerender(settings: Settings, args: argparse.Namespace) -> int:
    """Rewrite the results file from a finished run's parquet files.

    Seeds, ablation seeds, the budget and the learning rates are read from the run's data, never from this call's arguments
    (a re-render with other flags would mislabel the run); the protocol follows ``--smoke``.
    """
    stem = args.out / args.name
    cells = pl.read_parquet(f"{stem}_cells.parquet")
    runs = pl.read_parquet(f"{stem}_runs.parquet")
    missing = [d for d in DIAGNOSTICS if d not in set(cells["variant"])]
    if missing:  # diagnostics added after the run: they need no training, so the run's test cells suffice
        print(f"computing {', '.join(missing)} on the run's test cells", file=sys.stderr)
        cells = pl.concat([cells, *diagnostic_frames(settings, test_cells(settings), missing)], how="diagonal_relaxed")
        save(cells, f"{stem}_cells.parquet")
    table = metrics(cells)
    if missing:
        stamp = [c for c in ("date", "machine", "total_wall_s", "budget_s") if c in runs.columns]
        save(table.with_columns(**{c: pl.lit(runs[c][0]) for c in stamp}), f"{stem}.parquet")
    main_runs = runs.filter(pl.col("variant").is_in(MAIN))
    ablations = runs.filter(~pl.col("variant").is_in(MAIN))
    budget = (
        runs["budget_s"][0]
        if "budget_s" in runs.columns
        else round(float(runs.filter(pl.col("variant") == "ours")["cpu_s"].median()))
    )
    kinds = {v.name: v.kind for v in VARIANTS}
    trained_lr = dict(zip((kinds[v] for v in runs["variant"]), runs["lr"], strict=True)) if "lr" in runs.columns else {}
    settings = replace(
        settings,
        seeds=tuple(sorted(set(main_runs["seed"]))),
        ablation_seeds=tuple(sorted(set(ablations["seed"]))),
        budget_s=float(budget),
        lr={**settings.lr, **trained_lr},
    )
    date = runs["date"][0]
    if "total_wall_s" in runs.columns:
        wall_s = float(runs["total_wall_s"][0])
    else:  # runs written before the column existed: keep what the old file said
        import re

        found = re.search(r"the whole run took (\d+) min", stem.with_suffix(".md").read_text())
        wall_s = 60.0 * float(found.group(1)) if found else float("nan")
    text = report(settings, table, runs.drop("date", "machine", "total_wall_s", "budget_s", strict=False), cells, date, wall_s,
                  args.smoke, runs["machine"][0])  # fmt: skip
    atomic_write_text(text, stem.with_suffix(".md"))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
