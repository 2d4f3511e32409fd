"""Learned vs neural, per dataset: MIST's single-dataset inference against MINE and InfoNCE, on the CPU.

Seconds per dataset (thread CPU time, torch threads = 1) of

* MIST: one forward pass on one dataset (``mibench.learned.infer.predict`` with one sample: copula
  normalisation, dependence statistics, padding, forward), the model trained beforehand (once, amortised
  over every dataset it ever sees; its training time is reported beside);
* MINE and InfoNCE with mibench's default settings (BMI's: concat critic 16-8, batch 256, lr 0.1, up to
  10,000 steps with early stopping on a held-out half),

on the same datasets: MIST's in-meta-distribution (IMD) entries of ``benchmarks/_mist_protocol.py`` at
n = 100 and n = 500 (d ≤ 8 per side), with their accuracies (MSE, bias, MAE against the exact MI) beside.
The MIST model is trained here on the same protocol with n ~ U{10..500} for ``--train-budget`` CPU-seconds
(or read from ``--checkpoint``). Target: MIST ≥ 1000× faster per dataset at no worse MSE on the IMD cells.

    python benchmarks/learned_vs_neural.py            # about 20 min of one core
    python benchmarks/learned_vs_neural.py --smoke    # every code path in seconds

Every dataset is timed for all estimators back to back, MIST's calls repeated (median), so a host that slows
down mid-run slows both sides of each comparison. Beside the trained model, smaller untrained shapes time
their forward pass on the same datasets: how small MIST would have to be to fit a per-call budget.

Writes benchmarks/results/learned_vs_neural.md and .parquet (one row per dataset × estimator) and
learned_vs_neural_sizes.parquet (one row per dataset × shape).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mist_protocol import SMOKE, Protocol, Sample
from mibench.config.learned import Architecture
from mibench.estimators import make_estimator
from mibench.io import atomic_write_text
from mibench.learned.batching import collate, prepare
from mibench.learned.checkpoint import load_model, save_checkpoint
from mibench.learned.infer import predict
from mibench.learned.model import MISTModel
from mist_vs_reference import CPU_ARCH, SMOKE_ARCH, VARIANTS, Settings, build_model, machine_line, save, train_run

RESULTS = Path(__file__).resolve().parent / "results"
NEURAL = ("mine", "infonce")


def mist_model(args, protocol: Protocol) -> tuple[torch.nn.Module, str]:
    """The MIST model: a checkpoint, or one trained here on the protocol (n up to 500) for the budget."""
    if args.checkpoint:
        model, config = load_model(args.checkpoint)
        trained = config.get("training") or {}
        how = (
            f", {trained['steps_done']} steps in {trained['cpu_seconds']:.0f} CPU-seconds"
            if "cpu_seconds" in trained
            else ""
        )
        return model, f"checkpoint {args.checkpoint} ({config['parameters']:,} parameters{how})"
    ours = next(v for v in VARIANTS if v.name == "ours")
    settings = Settings(protocol, SMOKE_ARCH if args.smoke else CPU_ARCH, args.train_budget, (0,), (0,))
    if args.smoke:
        settings.batch_size, settings.pool = 4, 2
    model = build_model(ours, settings, 0, 0)
    info = train_run(ours, settings, 0, model)
    args.save.parent.mkdir(parents=True, exist_ok=True)
    protocol_text = f"benchmarks/_mist_protocol.py, n ~ U{{{protocol.n_min}..{protocol.n_max}}}, d <= {protocol.d_max}"
    training = {"steps_done": info.steps, "cpu_seconds": info.cpu_s, "batch_size": settings.batch_size}
    save_checkpoint(model, args.save, {"training": training, "data": {"protocol": protocol_text}})
    text = (
        f"trained here: {model.parameter_count():,} parameters, {info.steps} steps of {settings.batch_size} in "
        f"{info.cpu_s:.0f} CPU-seconds on the protocol with n ~ U{{{protocol.n_min}..{protocol.n_max}}} "
        f"(saved to {args.save})"
    )
    return model.eval(), text


def time_one(fn) -> tuple[float, float, float]:
    """(value, thread CPU seconds, wall seconds) of one call."""
    c0, w0 = time.thread_time(), time.perf_counter()
    value = fn()
    return value, time.thread_time() - c0, time.perf_counter() - w0


@torch.inference_mode()
def forward(model, batch) -> float:
    """The network alone on one prepared dataset: the floor under a single `predict` call."""
    return float(model(batch)[0][0])


#: MIST calls per dataset and timing; the median is kept (the first calls after a neural fit read caches the
#: fit evicted: a 1.1 ms forward pass read 2.4 ms right after a MINE fit)
REPEATS = 15

#: smaller shapes than the full run's model (changes to ``CPU_ARCH``, whatever model the run times), timed
#: untrained (a forward pass's cost does not depend on the weights' values): how far down the model size
#: would have to go for the single-dataset budget
SMALLER = {
    "one row block": {"layers": 1},
    "width 32, one block": {"dim": 32, "layers": 1, "inducing": 8, "seeds": 2, "ffn_mult": 2, "head_hidden": 64},
    "width 16, minimal": {"dim": 16, "heads": 2, "layers": 1, "inducing": 4, "seeds": 1, "ffn_mult": 1,
                          "head_hidden": 16, "tau_dim": 8},
}  # fmt: skip


def shapes(arch: Architecture) -> dict[str, MISTModel]:
    """The timed model's shape and the :data:`SMALLER` ones (its normalisation), untrained (seeded), for timing."""
    base = {**CPU_ARCH.model_dump(), "normalisation": arch.normalisation}
    chosen = {"this benchmark's model": arch} | {
        label: Architecture(**{**base, **change}) for label, change in SMALLER.items()
    }
    out = {}
    for label, shape in chosen.items():
        torch.manual_seed(0)
        out[label] = MISTModel(shape).eval()
    return out


def repeated(fn, repeats: int = REPEATS) -> tuple[float, float, float, float]:
    """(value, median thread CPU seconds, median wall seconds, first call's CPU seconds) of ``repeats`` calls."""
    runs = [time_one(fn) for _ in range(repeats)]
    median = [float(np.median([r[i] for r in runs])) for i in (1, 2)]
    return runs[-1][0], *median, runs[0][1]


def measure(model, cells: list[Sample], neural_params: dict) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One row per dataset × estimator (estimate, truth, CPU and wall seconds), and per dataset × shape.

    Every dataset is timed for all estimators back to back, so a change in the machine's speed (a shared
    host: one run saw thread CPU time 2.5× slower for minutes) hits both sides of each comparison alike.
    MIST's calls are repeated (:data:`REPEATS`, median): the first ones after a neural fit read cold caches.
    The smaller shapes (:func:`shapes`) time their forward pass on the same prepared dataset.
    """
    rows, size_rows = [], []

    def record(name: str, cell: Sample, value: float, cpu: float, wall: float, first: float | None = None) -> None:
        rows.append(dict(estimator=name, entry=cell.entry, n=cell.n, d=cell.d, replicate=cell.replicate,
                         mi_true=cell.mi, estimate=value, cpu_s=cpu, wall_s=wall,
                         first_cpu_s=cpu if first is None else first))  # fmt: skip

    untrained = shapes(model.arch)
    estimators = {name: make_estimator(name, neural_params) for name in NEURAL}
    predict(model, [(cells[0].x, cells[0].y)])  # warm-up (lazy initialisation, allocator)
    for i, cell in enumerate(cells):
        record("mist", cell, *repeated(lambda c=cell: float(predict(model, [(c.x, c.y)])[0][0])))
        batch = collate([prepare(cell.x, cell.y, model.arch.normalisation)])
        record("mist (forward only)", cell, *repeated(lambda b=batch: forward(model, b)))
        for label, shape in untrained.items():
            _, cpu, _, _ = repeated(lambda b=batch, m=shape: forward(m, b))
            size_rows.append(dict(shape=label, parameters=shape.parameter_count(), n=cell.n, entry=cell.entry,
                                  replicate=cell.replicate, forward_s=cpu))  # fmt: skip
        x64, y64 = cell.x.astype(np.float64), cell.y.astype(np.float64)
        for name, est in estimators.items():
            record(name, cell, *time_one(lambda e=est, x=x64, y=y64, s=i: float(e(x, y, seed=s).value)))
        print(f"{i + 1}/{len(cells)} {cell.entry} n={cell.n} d={cell.d}", file=sys.stderr, flush=True)
    for n in sorted({c.n for c in cells}):  # MIST's natural use: many datasets, one call (per-dataset share)
        group = [c for c in cells if c.n == n]
        values, cpu, wall, _ = repeated(lambda g=group: predict(model, [(c.x, c.y) for c in g])[0], repeats=5)
        for c, value in zip(group, values, strict=True):
            record("mist (batched)", c, float(value), cpu / len(group), wall / len(group))
    return pl.DataFrame(rows), pl.DataFrame(size_rows)


def size_floor(sizes: pl.DataFrame) -> pl.DataFrame:
    """Per shape and n: parameters and the median over datasets of the forward pass's CPU seconds."""
    return (
        sizes.group_by("shape", "n", maintain_order=True)
        .agg(pl.col("parameters").first(), pl.col("forward_s").median())
        .select("shape", "parameters", "n", "forward_s")
    )


def summary(frame: pl.DataFrame) -> pl.DataFrame:
    err = pl.col("estimate") - pl.col("mi_true")
    return (
        frame.group_by("estimator", "n")
        .agg(
            pl.len().alias("datasets"),
            pl.col("cpu_s").median().alias("cpu_s_median"),
            pl.col("cpu_s").mean().alias("cpu_s_mean"),
            (err**2).mean().alias("mse"),
            err.mean().alias("bias"),
            err.abs().mean().alias("mae"),
        )
        .sort("n", "estimator")
    )


def budgets(table: pl.DataFrame) -> dict[int, tuple[float, float]]:
    """Per n: (1000× budget = fastest neural median / 1000, MIST's preparation = call − forward medians), seconds."""
    out = {}
    for n in sorted(table["n"].unique()):
        at = table.filter(pl.col("n") == n)
        median = dict(zip(at["estimator"], at["cpu_s_median"], strict=True))
        fastest = min(median[name] for name in NEURAL)
        out[n] = (fastest / 1000, max(0.0, median["mist"] - median["mist (forward only)"]))
    return out


def size_lines(sizes: pl.DataFrame, limits: dict[int, tuple[float, float]]) -> list[str]:
    """The table of :func:`size_floor`: forward time per shape and n, and whether a call fits (:func:`budgets`)."""
    ns = sorted(sizes["n"].unique())
    lines = ["", "## How small would the model have to be?", "",
             "Forward pass per dataset (median CPU ms, untrained: the time does not depend on the weights) of "
             "this benchmark's shape and of smaller ones, on the same datasets. A call also pays MIST's "
             "preparation (normalisation, statistics, padding: the `mist` call's median minus its forward "
             "median). ✓: forward + preparation fits 1000× the fastest neural estimator: fast enough, which "
             "says nothing of accuracy (these shapes are not trained here).", "",
             "| shape | parameters | " + " | ".join(f"n = {n} forward (ms)" for n in ns) + " |",
             "|---|---:|" + "---:|" * len(ns)]  # fmt: skip
    for shape in sizes["shape"].unique(maintain_order=True):
        rows = sizes.filter(pl.col("shape") == shape)
        cells = []
        for n in ns:
            forward_s = rows.filter(pl.col("n") == n)["forward_s"][0]
            budget, prep = limits[n]
            cells.append(f"{forward_s * 1e3:.2f} {'✓' if forward_s + prep <= budget else '✗'}")
        lines.append(f"| {shape} | {rows['parameters'][0]:,} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- n = {n}: budget {budget * 1e3:.3g} ms per call, of which MIST's preparation takes "
                     f"{prep * 1e3:.2f} ms." for n, (budget, prep) in limits.items()]  # fmt: skip
    return lines


def report(
    frame: pl.DataFrame,
    table: pl.DataFrame,
    sizes: pl.DataFrame,
    model_text: str,
    date: str,
    smoke: bool,
    neural: dict,
) -> str:
    lines = [
        "# Learned vs neural, per dataset (CPU)" + (" — SMOKE RUN" if smoke else ""),
        "",
        f"- date: {date}; machine: {machine_line()}.",
        f"- datasets: MIST's IMD entries (d ≤ 8 per side) at n = {' and '.join(map(str, sorted(frame['n'].unique())))}, "
        f"{frame['replicate'].n_unique()} "
        f"replicate(s) each: {frame.filter(pl.col('estimator') == 'mist').height} datasets; the same for every estimator.",
        f"- MIST: {model_text}; timed: one `predict` call per dataset (normalisation, statistics, forward), "
        f"repeated {REPEATS} times, median (repeats find the data in cache; the first call at each size also draws "
        "that size's null statistics, once per process: see the first-call line).",
        f"- MINE, InfoNCE: mibench's defaults{' (overridden for the smoke run: ' + str(neural) + ')' if neural else ''}; "
        "timed: one estimate per dataset (training on half, held-out read-out).",
        "- `mist (forward only)`: the network alone on the already normalised dataset (no normalisation, "
        "statistics or padding): the floor of a single call for this model size.",
        "- `mist (batched)`: the same datasets of one n in a single `predict` call, its time divided by their "
        "number (what evaluating many datasets costs per dataset; not the target's single-dataset time).",
        "- seconds are thread CPU time (torch threads = 1): other processes here do not inflate them, but a busy "
        "host can slow the CPU itself, so every dataset is timed for all estimators back to back (a slowdown "
        "hits both sides of each comparison).",
        "",
        "## Targets",
        "",
    ]
    limits = budgets(table)
    for n in sorted(table["n"].unique()):
        mist = table.filter((pl.col("n") == n) & (pl.col("estimator") == "mist")).row(0, named=True)
        for name in NEURAL:
            other = table.filter((pl.col("n") == n) & (pl.col("estimator") == name)).row(0, named=True)
            speed = other["cpu_s_median"] / mist["cpu_s_median"]
            ok = "meets" if speed >= 1000 and mist["mse"] <= other["mse"] else "MISSES"
            lines.append(f"- n = {n}: MIST is **{speed:,.0f}×** faster per dataset than {name} (median CPU seconds) "
                         f"with MSE {mist['mse']:.3g} vs {other['mse']:.3g} ({ok} ≥ 1000× at no worse MSE)")  # fmt: skip
        alone = table.filter((pl.col("n") == n) & (pl.col("estimator") == "mist (forward only)"))["cpu_s_median"][0]
        call_ms, forward_ms, budget_ms = mist["cpu_s_median"] * 1e3, alone * 1e3, limits[n][0] * 1e3
        first = frame.filter((pl.col("n") == n) & (pl.col("estimator") == "mist"))["first_cpu_s"].median() * 1e3
        lines.append(f"- n = {n}: 1000× the fastest neural estimator needs ≤ {budget_ms:.3g} ms per call; this "
                     f"model's call takes {call_ms:.2f} ms, of which the network {forward_ms:.2f} ms "
                     f"({'fits' if call_ms <= budget_ms else 'does not fit'}; the network alone "
                     f"{'fits' if forward_ms <= budget_ms else 'does not fit'}). The first of the repeated calls per "
                     f"dataset (caches cold after the neural fits; a new size's null statistics drawn): median "
                     f"{first:.2f} ms")  # fmt: skip
    lines += size_lines(sizes, limits)
    lines += ["", "## Per estimator and n", "",
              "| estimator | n | datasets | CPU s per dataset (median) | mean | MSE | bias | MAE |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in table.iter_rows(named=True):
        lines.append(f"| {r['estimator']} | {r['n']} | {r['datasets']} | {r['cpu_s_median']:.4g} | {r['cpu_s_mean']:.4g} "
                     f"| {r['mse']:.3g} | {r['bias']:+.3g} | {r['mae']:.3g} |")  # fmt: skip
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a mibench MIST checkpoint (skips training)")
    parser.add_argument("--train-budget", type=float, default=None, help="CPU-seconds of MIST training (default 300)")
    parser.add_argument("--replicates", type=int, default=None, help="datasets per (entry, n) (default 3)")
    parser.add_argument("--save", type=Path, default=Path("results/benchmarks/learned_vs_neural/mist.safetensors"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    protocol = replace(SMOKE, n_max=60) if args.smoke else Protocol(n_max=500)
    args.train_budget = args.train_budget or (2.0 if args.smoke else 300.0)
    model, model_text = mist_model(args, protocol)
    replicates = args.replicates or (1 if args.smoke else 3)
    sizes = [20, 60] if args.smoke else [100, 500]
    cells = list(replace(protocol, replicates=replicates).test_cells("imd", n_grid=sizes))
    if args.smoke:
        cells = cells[:4]
    neural = {"steps": 20, "eval_every": 10} if args.smoke else {}
    frame, per_dataset_sizes = measure(model, cells, {"device": "cpu", **neural})
    sizes = size_floor(per_dataset_sizes)
    table = summary(frame)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = [pl.lit(date).alias("date"), pl.lit(machine_line()).alias("machine")]
    # atomic (mibench.io): a run that dies while writing keeps the committed results readable and unchanged
    save(frame.with_columns(stamp), args.out / "learned_vs_neural.parquet")
    save(per_dataset_sizes.with_columns(stamp), args.out / "learned_vs_neural_sizes.parquet")
    text = report(frame, table, sizes, model_text, date, args.smoke, neural)
    atomic_write_text(text, args.out / "learned_vs_neural.md")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
