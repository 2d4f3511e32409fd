"""The MI "staircase" of Poole et al. (2019) / Song & Ermon (2020) for our six variational bounds.

A 20-D Gaussian (20 independent pairs (X_i, Y_i) with a common correlation ρ) and its cubic version
(Y → Y³, same MI) whose MI steps 2 → 4 → 6 → 8 → 10 nats in blocks of ``--steps-per-block`` training
steps; every step draws a fresh batch of 64 pairs, takes one Adam step (lr 5e-4) for each bound's critic
and records the bound's value on that batch (fresh data, so the value is not fitted to it). Per bound and
MI level we report bias, variance and MSE of the per-step estimates; a PNG shows the traces.

Full protocol: ``--steps-per-block 4000`` (20 000 steps). On a CPU the concat critic (all 64² pairs through
a 256-unit MLP, six bounds at once: ~0.4 s/step on one core, ~2 h per variant) is out of reach, so the
committed CPU run is the full protocol with the separable critic only; the concat rows need a GPU. The
results file states what was run.

    python benchmarks/neural_staircase.py --critics separable --device cpu --threads 1   # committed CPU run
    python benchmarks/neural_staircase.py --device cuda                                   # both critics (GPU)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _machine import cpu_model  # benchmarks/_machine.py (scripts run from benchmarks/)

RESULTS = Path(__file__).resolve().parent / "results"
BOUNDS = ["mine", "dv", "nwj", "infonce", "js", "smile"]
MI_LEVELS = [2.0, 4.0, 6.0, 8.0, 10.0]
DIM = 20


def torch_setup(device_name: str, threads: int) -> tuple[str, dict]:
    """Cap torch's CPU threads (0: torch's default), resolve the device, describe the machine."""
    import torch

    from mibench.devices import resolve_device

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device_name)
    return device, machine(device)


def machine(device: str) -> dict:
    """Where and when this ran (recorded next to every number)."""
    import torch

    cpu = cpu_model()
    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
    }
    try:
        info["git_sha"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                check=False,
            ).stdout.strip()
            or None
        )
    except OSError:
        info["git_sha"] = None
    return info


def rho_for(mi: float, dim: int = DIM) -> float:
    """Per-pair correlation giving total MI ``mi`` over ``dim`` independent pairs: −(d/2)·log(1 − ρ²) = mi."""
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def run_stack(
    critic: str,
    variant: str,
    steps_per_block: int,
    batch: int,
    lr: float,
    hidden: list[int],
    embed_dim: int,
    device: str,
    seed: int,
) -> np.ndarray:
    """Train the six bounds' critics side by side on the same fresh batches; returns (steps, bounds)."""
    import torch

    from mibench.tasks import TaskSpec
    from mibench.variational import Bound, CriticSpec, CriticStack

    spec = CriticSpec(kind=critic, hidden=tuple(hidden), embed_dim=embed_dim, activation="relu")
    bounds = [Bound(b, tau=5.0) for b in BOUNDS]
    stack = CriticStack(
        spec, DIM, DIM, [seed * 100 + i for i in range(len(bounds))], bounds, learning_rate=lr, device=device
    )
    rng = np.random.default_rng(seed)
    out = np.empty((steps_per_block * len(MI_LEVELS), len(bounds)), dtype=np.float32)
    step = 0
    for mi in MI_LEVELS:
        task = TaskSpec("multinormal", "sparse", DIM, DIM, {"k": DIM, "strength": rho_for(mi)}).build()
        for _ in range(steps_per_block):
            x, y = task.sample(batch, rng)
            if variant == "cubic":
                y = y**3
            xt = torch.as_tensor(x, dtype=torch.float32, device=device)[None].expand(len(bounds), -1, -1)
            yt = torch.as_tensor(y, dtype=torch.float32, device=device)[None].expand(len(bounds), -1, -1)
            out[step] = stack.step(xt, yt).detach().cpu().numpy()
            step += 1
    return out


def block_metrics(trace: np.ndarray, steps_per_block: int) -> list[dict]:
    rows = []
    for j, bound in enumerate(BOUNDS):
        for b, mi in enumerate(MI_LEVELS):
            est = trace[b * steps_per_block : (b + 1) * steps_per_block, j].astype(np.float64)
            finite = est[np.isfinite(est)]
            rows.append(
                {
                    "bound": bound,
                    "mi_true": mi,
                    "steps": int(est.size),
                    "non_finite": int(est.size - finite.size),
                    "mean": float(finite.mean()) if finite.size else math.nan,
                    "median": float(np.median(finite)) if finite.size else math.nan,
                    "bias": float(finite.mean() - mi) if finite.size else math.nan,
                    "variance": float(finite.var()) if finite.size else math.nan,
                    "mse": float(np.mean((finite - mi) ** 2)) if finite.size else math.nan,
                }
            )
    return rows


def _fmt(v: float, signed: bool = False) -> str:
    """Two decimals, or scientific notation for the astronomically large values of diverging bounds."""
    if not math.isfinite(v):
        return str(v)
    if abs(v) >= 1e4:
        return f"{v:+.1e}" if signed else f"{v:.1e}"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def load_run(out: Path) -> tuple[dict, dict, dict, dict, dict]:
    """Traces, steps per block, wall times, machine info and config of a finished run (to re-render it)."""
    import polars as pl

    metrics = pl.read_parquet(out / "neural_staircase.parquet")
    steps = pl.read_parquet(out / "neural_staircase_steps.parquet")
    traces, blocks, timings = {}, {}, {}
    for (variant, critic), sub in steps.group_by(["variant", "critic"], maintain_order=True):
        key = f"{variant}/{critic}"
        cols = [sub.filter(pl.col("bound") == b).sort("step")["estimate"].to_numpy() for b in BOUNDS]
        traces[key] = np.stack(cols, axis=1)
        m = metrics.filter((pl.col("variant") == variant) & (pl.col("critic") == critic)).row(0, named=True)
        blocks[key], timings[key] = int(m["steps_per_block"]), float(m["seconds"])
    first = metrics.row(0, named=True)
    info = {k: first[k] for k in ("date", "cpu", "cpu_count", "torch", "torch_threads", "device", "gpu", "git_sha")}
    return traces, blocks, timings, info, json.loads(first["config"])


def plot(traces: dict, blocks: dict[str, int], batch: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(traces)
    fig, axes = plt.subplots(
        len(keys), len(BOUNDS), figsize=(3.0 * len(BOUNDS), 2.4 * len(keys)), sharey=True, squeeze=False
    )
    for r, key in enumerate(keys):
        steps_per_block = blocks[key]
        truth = np.repeat(MI_LEVELS, steps_per_block)
        steps = np.arange(1, steps_per_block * len(MI_LEVELS) + 1)
        span = max(10, steps_per_block // 20)
        alpha = 2.0 / (span + 1)
        for c, bound in enumerate(BOUNDS):
            ax = axes[r, c]
            v = traces[key][:, c].astype(np.float64)
            shown = np.clip(np.where(np.isfinite(v), v, np.nan), -2, 14)
            ax.plot(steps, shown, color="C0", alpha=0.25, lw=0.5)
            ema = np.empty_like(v)
            acc = 0.0
            for i, val in enumerate(np.nan_to_num(np.clip(v, -50, 50), nan=0.0)):
                acc = val if i == 0 else (1 - alpha) * acc + alpha * val
                ema[i] = acc
            ax.plot(steps, np.clip(ema, -2, 14), color="C0", lw=1.2)
            ax.plot(steps, truth, color="k", lw=1)
            if bound == "infonce":
                ax.axhline(math.log(batch), color="C3", ls="--", lw=0.8)
            ax.set_ylim(-1, 12)
            if r == 0:
                ax.set_title(bound if bound != "smile" else "smile (τ=5)")
            if c == 0:
                ax.set_ylabel(f"{key.replace('/', chr(10))}\n({steps_per_block}/level)")
            if r == len(keys) - 1:
                ax.set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps-per-block", type=int, default=4000, help="steps per MI level (full protocol: 4000)")
    p.add_argument(
        "--concat-steps-per-block",
        type=int,
        default=None,
        help="steps per MI level for the concat critic (default: --steps-per-block)",
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--embed-dim", type=int, default=32)
    p.add_argument("--critics", nargs="+", default=["separable", "concat"])
    p.add_argument("--variants", nargs="+", default=["gaussian", "cubic"])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--render-only",
        action="store_true",
        help="do not train: rebuild the Markdown, Parquet metrics and PNG from the run saved in --out",
    )
    args = p.parse_args(argv)

    import polars as pl
    import torch

    from mibench.devices import resolve_device
    from mibench.io import atomic_write_table, atomic_write_text

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.render_only:
        traces, blocks, timings, info, config = load_run(args.out)
        device = info["device"]
        args.batch, args.lr, args.hidden, args.embed_dim = (
            config["batch"],
            config["lr"],
            config["hidden"],
            config["embed_dim"],
        )
        blocks_by_critic = {k.split("/")[1]: v for k, v in blocks.items()}
        critics = list(blocks_by_critic)
    else:
        device = resolve_device(args.device)
        info = machine(device)
        critics = list(args.critics)
        blocks_by_critic = {c: args.steps_per_block for c in critics}
        if args.concat_steps_per_block and "concat" in blocks_by_critic:
            blocks_by_critic["concat"] = args.concat_steps_per_block
        config = {
            "steps_per_block": blocks_by_critic,
            "batch": args.batch,
            "lr": args.lr,
            "hidden": args.hidden,
            "embed_dim": args.embed_dim,
            "dim": DIM,
            "mi_levels": MI_LEVELS,
            "full_protocol": min(blocks_by_critic.values()) >= 4000,
        }
        traces, timings, blocks = {}, {}, {}
        for variant in args.variants:
            for critic in critics:
                per_block = blocks_by_critic[critic]
                t0 = time.perf_counter()
                trace = run_stack(
                    critic, variant, per_block, args.batch, args.lr, args.hidden, args.embed_dim, device, args.seed
                )
                key = f"{variant}/{critic}"
                traces[key], timings[key], blocks[key] = trace, time.perf_counter() - t0, per_block
                print(f"{key}: {trace.shape[0]} steps x {len(BOUNDS)} bounds in {timings[key]:.0f}s", file=sys.stderr)
    full = min(blocks_by_critic.values()) >= 4000

    metric_rows, step_rows = [], []
    for key, trace in traces.items():
        variant, critic = key.split("/")
        per_block = blocks[key]
        for row in block_metrics(trace, per_block):
            metric_rows.append(
                {
                    "variant": variant,
                    "critic": critic,
                    **row,
                    "steps_per_block": per_block,
                    "full_protocol": per_block >= 4000,
                    "seconds": timings[key],
                }
            )
        for j, bound in enumerate(BOUNDS):
            step_rows.append(
                pl.DataFrame(
                    {
                        "variant": variant,
                        "critic": critic,
                        "bound": bound,
                        "step": np.arange(1, trace.shape[0] + 1, dtype=np.int32),
                        "mi_true": np.repeat(MI_LEVELS, per_block),
                        "estimate": trace[:, j].astype(np.float32),
                    }
                )
            )
    meta = {**info, "config": json.dumps(config)}
    metrics = pl.DataFrame(metric_rows).with_columns(**{k: pl.lit(v) for k, v in meta.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_table(metrics.to_arrow(), args.out / "neural_staircase.parquet")
    if not args.render_only:
        atomic_write_table(pl.concat(step_rows).to_arrow(), args.out / "neural_staircase_steps.parquet")
    scale = (
        "full protocol (4000 steps per MI level, 20 000 in all)"
        if full
        else (
            "REDUCED where marked: steps per MI level "
            + ", ".join(f"{c} {b}" for c, b in blocks_by_critic.items())
            + " (the full protocol is 4000, i.e. 20 000 steps)"
        )
    )
    plot(
        traces,
        blocks,
        args.batch,
        args.out / "neural_staircase.png",
        f"Staircase: {scale}; batch {args.batch}, Adam {args.lr:g}, hidden {args.hidden} ({device})",
    )

    non_finite = metrics.filter(pl.col("non_finite") > 0)
    lines = [
        "# Neural MI staircase (Poole et al. 2019; Song & Ermon 2020)",
        "",
        f"- **Scale: {scale}; critics run: {', '.join(critics)}.**",
        f"- Machine: {info['cpu']} ({info['cpu_count']} cores, torch {info['torch']}, "
        f"{info['torch_threads']} threads), device `{device}`{' (' + info['gpu'] + ')' if info['gpu'] else ''}.",
        f"- Date: {info['date']}; git {info['git_sha']}.",
        f"- Setup: {DIM}-D Gaussian (20 pairs, correlation ρ per pair) and its cubic version (Y → Y³); MI "
        f"{' → '.join(f'{m:g}' for m in MI_LEVELS)} nats; fresh batch of {args.batch} each step; Adam lr {args.lr:g}; "
        "critics: "
        + " and ".join(
            f"separable g(x)ᵀh(y) (hidden {args.hidden}, embedding {args.embed_dim})"
            if c == "separable"
            else f"concat MLP on [x, y] (hidden {args.hidden})"
            for c in critics
        )
        + "; all six bounds trained side by side on the same batches (one stack per critic/variant)."
        + (
            ""
            if "concat" in critics
            else " The concat critic (all 64² pairs through the 256-unit MLP) was not run: ~0.4 s per step for the "
            "six bounds on one CPU core, ~2 h per variant; run `--device cuda` in a GPU session."
        ),
        "- Metrics per MI level over all steps of its block (the first steps of a block still carry the previous "
        "level, as in the published plots): bias = mean − MI, variance of the per-step estimates, MSE; then the "
        "median per-step estimate (robust to the exponential outliers of NWJ-type read-outs).",
        "- Non-finite per-step values (excluded from the statistics): "
        + (
            ", ".join(
                f"{r['variant']}/{r['critic']} {r['bound']} at MI {r['mi_true']:g}: {r['non_finite']} of {r['steps']}"
                for r in non_finite.iter_rows(named=True)
            )
            if non_finite.height
            else "none"
        )
        + ".",
        "- Wall time per stack (six bounds; shared machine, so only indicative): "
        + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
        + ".",
        "- Plot: `neural_staircase.png` (light: per-step estimates, dark: EMA, black: true MI, red dashed: "
        f"InfoNCE ceiling log {args.batch} = {math.log(args.batch):.2f}).",
        "",
    ]
    for key in traces:
        variant, critic = key.split("/")
        sub = metrics.filter((pl.col("variant") == variant) & (pl.col("critic") == critic))
        header = ["| bound | " + " | ".join(f"MI {m:g}" for m in MI_LEVELS) + " |", "|---|" + "---|" * len(MI_LEVELS)]
        lines += [
            f"## {variant}, {critic} critic ({blocks[key]} steps per MI level"
            f"{'' if blocks[key] >= 4000 else ', reduced'})",
            "",
            *header,
        ]
        medians = []
        for bound in BOUNDS:
            cells, meds = [], []
            for mi in MI_LEVELS:
                r = sub.filter((pl.col("bound") == bound) & (pl.col("mi_true") == mi)).row(0, named=True)
                cells.append(f"{_fmt(r['bias'], True)} / {_fmt(r['variance'])} / {_fmt(r['mse'])}")
                meds.append(_fmt(r["median"]))
            lines.append(f"| {bound} | " + " | ".join(cells) + " |")
            medians.append(f"| {bound} | " + " | ".join(meds) + " |")
        lines += ["", "(bias / variance / MSE, nats and nats²)", "", "Median per-step estimate (nats):", "", *header]
        lines += [*medians, ""]
    atomic_write_text("\n".join(lines), args.out / "neural_staircase.md")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
