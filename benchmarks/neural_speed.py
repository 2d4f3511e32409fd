"""Speed of the neural estimators: training steps/s, wall time per estimate, and cells/s.

1. Steps/s and wall time per estimate of the default critic (BMI's concat MLP 16-8, all B² pairs) for
   batch 64/256/1024 and dims 1×1, 5×5, 25×25, one cell at a time (``estimate``).
2. Cells/s for many cells at once: our stacked path (``estimate_many``: one critic stack, batched matmuls)
   against a plain PyTorch loop over the same cells — one ``nn.Sequential`` on the tiled [x, y] pairs and
   one ``torch.optim.Adam`` per cell, same critic, batch, bound and number of steps — measured in one run,
   so the ratio is meaningful on any machine (absolute times only mean something on the stated hardware).

    python benchmarks/neural_speed.py                     # CPU, reduced step counts
    python benchmarks/neural_speed.py --device cuda       # GPU (adds a GPU section, more cells)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neural_staircase import torch_setup

RESULTS = Path(__file__).resolve().parent / "results"


def gaussian_sample(dim: int, n: int, seed: int, mi: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    from mibench.tasks import TaskSpec

    rho = math.sqrt(1.0 - math.exp(-2.0 * mi / dim))
    return TaskSpec("multinormal", "sparse", dim, dim, {"k": dim, "strength": rho}).build().sample(n, seed)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(dim: int, batch: int, steps: int, device: str) -> float:
    """Seconds per training step of one default critic (after 3 warm-up steps)."""
    import torch

    from mibench.variational import Bound, CriticSpec, CriticStack

    stack = CriticStack(CriticSpec(), dim, dim, [0], [Bound("mine")], learning_rate=0.1, device=device)
    x, y = gaussian_sample(dim, batch, 0)
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)[None]
    yt = torch.as_tensor(y, dtype=torch.float32, device=device)[None]
    for _ in range(3):
        stack.step(xt, yt)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        stack.step(xt, yt)
    sync(device)
    return (time.perf_counter() - t0) / steps


def plain_loop(samples, seeds, *, dim: int, batch: int, steps: int, lr: float, hidden: list[int], device: str) -> list:
    """The reference: a straightforward per-cell PyTorch loop (tiled pairs → nn.Sequential, torch Adam)."""
    import torch
    from torch import nn

    from mibench.variational.bounds import dv_value

    out = []
    for (x, y), seed in zip(samples, seeds, strict=True):
        torch.manual_seed(seed)
        layers, width = [], 2 * dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        net = nn.Sequential(*layers, nn.Linear(width, 1)).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        n = x.shape[0] // 2
        xt = torch.as_tensor(x, dtype=torch.float32, device=device)
        yt = torch.as_tensor(y, dtype=torch.float32, device=device)
        for _ in range(steps):
            idx = torch.randperm(n, device=device)[:batch]
            xb, yb = xt[idx], yt[idx]
            pairs = torch.cat([xb[:, None, :].expand(-1, batch, -1), yb[None, :, :].expand(batch, -1, -1)], dim=-1)
            scores = net(pairs).reshape(1, batch, batch)
            loss = -dv_value(scores).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():  # one held-out evaluation, like the stacked path's single evaluation
            xb, yb = xt[n : n + batch], yt[n : n + batch]
            pairs = torch.cat([xb[:, None, :].expand(-1, batch, -1), yb[None, :, :].expand(batch, -1, -1)], dim=-1)
            out.append(float(dv_value(net(pairs).reshape(1, batch, batch)).item()))
    sync(device)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--dims", type=int, nargs="+", default=[1, 5, 25])
    p.add_argument("--step-budget", type=float, default=2.0, help="seconds of timed steps per (batch, dim)")
    p.add_argument("--estimate-steps", type=int, default=200, help="steps of the timed single estimate")
    p.add_argument("--n", type=int, default=4000, help="sample size of the timed estimates")
    p.add_argument("--cells", type=int, default=None, help="cells for cells/s (default: 32 CPU, 512 GPU)")
    p.add_argument("--cell-batch", type=int, default=64)
    p.add_argument("--cell-dim", type=int, default=5)
    p.add_argument("--cell-steps", type=int, default=200)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    import polars as pl

    from mibench.estimators import build_estimator
    from mibench.io import atomic_write_table, atomic_write_text

    device, info = torch_setup(args.device, args.threads)
    rows: list[dict] = []

    # 1. steps/s and wall time per estimate, one cell
    for dim in args.dims:
        for batch in args.batches:
            probe = time_steps(dim, batch, 2, device)
            steps = max(3, min(2000, int(args.step_budget / max(probe, 1e-6))))
            per_step = time_steps(dim, batch, steps, device)
            est = build_estimator(
                "mine",
                {
                    "batch_size": batch,
                    "steps": args.estimate_steps,
                    "eval_every": args.estimate_steps,
                    "device": device,
                },
            )
            x, y = gaussian_sample(dim, max(args.n, 2 * batch), 1)
            sync(device)
            t0 = time.perf_counter()
            est(x, y, seed=0)
            sync(device)
            wall = time.perf_counter() - t0
            rows.append(
                {
                    "section": "single",
                    "dim": dim,
                    "batch": batch,
                    "steps_timed": steps,
                    "steps_per_s": 1.0 / per_step,
                    "estimate_steps": args.estimate_steps,
                    "estimate_seconds": wall,
                    "estimate_seconds_per_10k_steps": wall / args.estimate_steps * 1e4,
                    "n": max(args.n, 2 * batch),
                }
            )
            print(
                f"dim {dim:>2} batch {batch:>4}: {1 / per_step:8.1f} steps/s, estimate "
                f"({args.estimate_steps} steps) {wall:.2f}s",
                file=sys.stderr,
            )

    # 2. cells/s: stacked estimate_many vs a plain per-cell loop, same critic/batch/bound/steps
    cells = args.cells or (512 if device.startswith("cuda") else 32)
    samples = [gaussian_sample(args.cell_dim, 1000, 100 + i) for i in range(cells)]
    seeds = list(range(cells))
    hidden = [16, 8]
    est = build_estimator(
        "dv",
        {
            "batch_size": args.cell_batch,
            "steps": args.cell_steps,
            "hidden": hidden,
            "eval_every": args.cell_steps,
            "patience": None,
            "device": device,
            "learning_rate": 0.01,
        },
    )
    est.estimate_many(samples[:2], seeds[:2])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    results = est.estimate_many(samples, seeds)
    sync(device)
    stacked = time.perf_counter() - t0
    failures = sum(isinstance(r, BaseException) for r in results)
    plain_loop(
        samples[:1], seeds[:1], dim=args.cell_dim, batch=args.cell_batch, steps=5, lr=0.01, hidden=hidden, device=device
    )
    t0 = time.perf_counter()
    plain_loop(
        samples,
        seeds,
        dim=args.cell_dim,
        batch=args.cell_batch,
        steps=args.cell_steps,
        lr=0.01,
        hidden=hidden,
        device=device,
    )
    plain = time.perf_counter() - t0
    rows.append(
        {
            "section": "cells",
            "dim": args.cell_dim,
            "batch": args.cell_batch,
            "cells": cells,
            "cell_steps": args.cell_steps,
            "stacked_seconds": stacked,
            "plain_seconds": plain,
            "stacked_cells_per_s": cells / stacked,
            "plain_cells_per_s": cells / plain,
            "speedup": plain / stacked,
            "failures": failures,
        }
    )
    print(
        f"{cells} cells x {args.cell_steps} steps: stacked {cells / stacked:.2f} cells/s, plain loop "
        f"{cells / plain:.2f} cells/s (x{plain / stacked:.2f})",
        file=sys.stderr,
    )

    table = pl.DataFrame(rows, infer_schema_length=None).with_columns(**{k: pl.lit(v) for k, v in info.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if device == "cpu" else "_gpu"
    atomic_write_table(table.to_arrow(), args.out / f"neural_speed{suffix}.parquet")
    gpu = f" ({info['gpu']})" if info["gpu"] else ""
    lines = [
        f"# Neural estimator speed ({device}{gpu})",
        "",
        f"- Machine: {info['cpu']} ({info['cpu_count']} cores), torch {info['torch']} with {info['torch_threads']} "
        f"thread(s); device `{device}`{gpu}. Date: {info['date']}; git {info['git_sha']}.",
        "- Critic: BMI's default concat MLP (hidden 16, 8, ReLU), scores on all B² pairs of a batch.",
        ""
        if device.startswith("cuda")
        else "- CPU numbers: absolute times hold for this shared 2-core machine only; "
        "GPU numbers are pending (no GPU in this session): run with `--device cuda`.",
        "",
        "## Training speed, one cell",
        "",
        f"Steps/s over ≥ {args.step_budget:g} s of steps; wall time of one `mine` estimate with {args.estimate_steps} "
        f"steps (n = {args.n}, one held-out evaluation), and that time scaled to BMI's 10 000 steps.",
        "",
        "| dims | batch | steps/s | estimate (s) | per 10k steps (s) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["section"] == "single":
            lines.append(
                f"| {r['dim']}×{r['dim']} | {r['batch']} | {r['steps_per_s']:.1f} | {r['estimate_seconds']:.2f} "
                f"| {r['estimate_seconds_per_10k_steps']:.0f} |"
            )
    c = rows[-1]
    lines += [
        "",
        "## Many cells at once",
        "",
        f"{c['cells']} cells ({c['dim']}×{c['dim']} Gaussian, n = 1000), `dv`, batch {c['batch']}, {c['cell_steps']} "
        "steps each, hidden [16, 8]. *Stacked*: our `estimate_many` (all cells' critics in one stack, batched "
        "matmuls, includes data split/standardisation and one held-out evaluation). *Plain*: a per-cell PyTorch loop "
        "(tiled pairs through `nn.Sequential`, `torch.optim.Adam`), same critic, batch, bound and steps. Same run.",
        "",
        "| path | seconds | cells/s |",
        "|---|---|---|",
        f"| stacked (ours) | {c['stacked_seconds']:.2f} | {c['stacked_cells_per_s']:.2f} |",
        f"| plain loop | {c['plain_seconds']:.2f} | {c['plain_cells_per_s']:.2f} |",
        "",
        f"Speed-up of the stacked path: **×{c['speedup']:.2f}** (failures: {c['failures']}).",
        "",
    ]
    atomic_write_text("\n".join(lines), args.out / f"neural_speed{suffix}.md")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
