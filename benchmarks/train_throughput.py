"""Training and inference throughput of MIST vs a re-implementation of the reference architecture's shape.

Measured in one run on one device, so the ratio is meaningful on any machine; absolute numbers only count
from a GPU. Training: datasets/s of a full optimizer step (forward, backward, AdamW) at batch ``--batch``
with n ~ U{n_low..n_high} and dims ~ U{d_low..d_high} per side.

* ``mist``: our model (``--preset``, ~5.5M parameters for ``paper``), per-dataset copula inputs, batches
  bucketed by size (pools of 16 batches, as in training), bf16 autocast on CUDA.
* ``reference``: the reference's shape — each row [x, y] zero-padded to 64 columns, linear to D=256,
  2 ISABs (16 heads, FFN 1024, 32 inducing points), PMA with 10 seeds, a 3-layer head, fp32 (TF32 off),
  random (unbucketed) batches padded to the largest n, nn.MultiheadAttention with key padding masks.
  It exists only here, to be measured next to ours.

Inference: batched datasets/s through :func:`mibench.learn.infer.predict` and single-dataset latency, on
CPU and (if present) GPU, next to the neural MINE estimator's seconds per dataset when it is available.

    python benchmarks/train_throughput.py                       # GPU if present, paper scale
    python benchmarks/train_throughput.py --small --device cpu  # CPU smoke scale (what a laptop can run)

Writes benchmarks/results/train_throughput-<device>.parquet and .md (machine, date, torch version).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from _machine import cpu_model  # benchmarks/_machine.py (scripts run from benchmarks/)
from mibench.config.learned import PRESETS
from mibench.learn.batching import Batch, buckets, collate, prepare
from mibench.learn.infer import predict
from mibench.learn.model import MISTModel

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE_THROUGHPUT_H100 = 1760.0  # datasets/s, the reference on one H100 in fp32 (issue 4)


# -- the reference architecture's shape (benchmark only) ----------------------------------------------------------
class RefMAB(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 16, ffn: int = 1024) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Linear(ffn, dim))

    def forward(self, q, k, pad=None):
        h = self.ln1(q + self.attn(q, k, k, key_padding_mask=pad, need_weights=False)[0])
        return self.ln2(h + self.ffn(h))


class RefISAB(nn.Module):
    def __init__(self, dim: int = 256, inducing: int = 32) -> None:
        super().__init__()
        self.points = nn.Parameter(torch.randn(1, inducing, dim) * 0.02)
        self.mab1, self.mab2 = RefMAB(dim), RefMAB(dim)

    def forward(self, x, pad):
        h = self.mab1(self.points.expand(x.shape[0], -1, -1), x, pad)
        return self.mab2(x, h)


class ReferenceShape(nn.Module):
    """[x, y] padded to 64 columns -> 256 -> 2 ISAB(32) -> PMA(10) -> 3-layer head."""

    def __init__(self, width: int = 64, dim: int = 256, seeds: int = 10) -> None:
        super().__init__()
        self.width = width
        self.inp = nn.Linear(width, dim)
        self.isabs = nn.ModuleList([RefISAB(dim), RefISAB(dim)])
        self.seeds = nn.Parameter(torch.randn(1, seeds, dim) * 0.02)
        self.pma = RefMAB(dim)
        self.head = nn.Sequential(
            nn.Linear(seeds * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1)
        )

    def forward(self, rows: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.inp(rows)
        for isab in self.isabs:
            h = isab(h, pad)
        pooled = self.pma(self.seeds.expand(h.shape[0], -1, -1), h, pad)
        return self.head(pooled.flatten(1)).squeeze(-1)


def reference_batch(samples, width: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows [x, y] zero-padded (silently truncated beyond ``width`` columns, as the reference does)."""
    big_n = max(x.shape[0] for x, _ in samples)
    rows = np.zeros((len(samples), big_n, width), np.float32)
    pad = np.ones((len(samples), big_n), bool)
    for i, (x, y) in enumerate(samples):
        joint = np.concatenate([x, y], axis=1)[:, :width]
        rows[i, : len(joint), : joint.shape[1]] = joint
        pad[i, : len(joint)] = False
    return torch.from_numpy(rows), torch.from_numpy(pad), torch.zeros(len(samples))


# -- workloads -------------------------------------------------------------------------------------------------------
def random_samples(count: int, n_range, d_range, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Correlated Gaussian samples of random size (throughput does not depend on the values)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(n_range[0], n_range[1] + 1))
        dx, dy = (int(v) for v in rng.integers(d_range[0], d_range[1] + 1, size=2))
        x = rng.normal(size=(n, dx)).astype(np.float32)
        y = (0.5 * x[:, [i % dx for i in range(dy)]] + rng.normal(size=(n, dy))).astype(np.float32)
        out.append((x, y))
    return out


def mist_batches(samples, batch: int, pool: int = 16) -> list[Batch]:
    prepared = [prepare(x, y, "copula") for x, y in samples]
    out = []
    for start in range(0, len(prepared), batch * pool):
        chunk = prepared[start : start + batch * pool]
        sizes = [(zx.shape[0], zx.shape[1], zy.shape[1]) for zx, zy in chunk]
        for g in buckets(sizes, batch):
            if len(g) == batch:
                out.append(collate([chunk[i] for i in g], [0.5] * len(g)))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, batches, device, warmup: int) -> list[float]:
    times = []
    for i, b in enumerate(batches):
        sync(device)
        t0 = time.perf_counter()
        step(b)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def bench_train(args, device: torch.device) -> list[dict]:
    rows = []
    count = args.batch * (args.steps + args.warmup)
    samples = random_samples(count + args.batch * 16, (args.n_low, args.n_high), (args.d_low, args.d_high), 0)
    # ours
    torch.backends.cuda.matmul.allow_tf32 = True
    model = MISTModel(PRESETS[args.preset]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    taus = model.taus

    def mist_step(b: Batch) -> None:
        b = b.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            point, q = model(b)
        err = b.target[:, None] - q
        loss = ((point - b.target) ** 2).mean() + torch.maximum(taus * err, (taus - 1) * err).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    batches = mist_batches(samples, args.batch)[: args.steps + args.warmup]
    real = sum(x.shape[0] * (x.shape[1] + y.shape[1]) for x, y in samples[: len(batches) * args.batch])
    padded = sum(b.cells for b in batches)
    times = time_steps(mist_step, batches, device, args.warmup)
    rows.append(
        dict(
            kind="train",
            model=f"mist-{args.preset}",
            precision="bf16 autocast" if device.type == "cuda" else "fp32",
            parameters=model.parameter_count(),
            batch=args.batch,
            ms_per_step=1e3 * statistics.median(times),
            datasets_per_s=args.batch / statistics.median(times),
            padding_overhead=padded / real,
        )
    )
    model = opt = None  # free the memory before the reference runs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # the reference's shape, fp32, unbucketed
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = ReferenceShape().to(device)
    ropt = torch.optim.AdamW(ref.parameters(), lr=1.1e-4)

    def ref_step(b) -> None:
        rows_, pad, target = (t.to(device) for t in b)
        loss = ((ref(rows_, pad) - target) ** 2).mean()
        ropt.zero_grad(set_to_none=True)
        loss.backward()
        ropt.step()

    ref_batches = [
        reference_batch(samples[i : i + args.batch])
        for i in range(0, (args.steps + args.warmup) * args.batch, args.batch)
    ]
    times = time_steps(ref_step, ref_batches, device, args.warmup)
    rows.append(
        dict(
            kind="train",
            model="reference-shape",
            precision="fp32",
            parameters=sum(p.numel() for p in ref.parameters()),
            batch=args.batch,
            ms_per_step=1e3 * statistics.median(times),
            datasets_per_s=args.batch / statistics.median(times),
            padding_overhead=float("nan"),
        )
    )
    torch.backends.cuda.matmul.allow_tf32 = True
    return rows


def bench_inference(args, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    model = MISTModel(PRESETS[args.preset]).to(device).eval()
    rows = []
    count = args.infer_count if device.type == "cuda" else min(args.infer_count, args.cpu_infer_count)
    samples = random_samples(count, (args.n_low, args.n_high), (args.d_low, args.d_high), 1)
    predict(model, samples[: min(32, len(samples))], device)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    predict(model, samples, device, max_cells=args.max_cells)
    sync(device)
    elapsed = time.perf_counter() - t0
    rows.append(
        dict(
            kind="inference-batched", model=f"mist-{args.preset}", datasets_per_s=len(samples) / elapsed, on=device.type
        )
    )
    for n in (100, 500):
        single = random_samples(12, (n, n), (args.d_low, args.d_high), 2)
        times = []
        for i, s in enumerate(single):
            sync(device)
            t0 = time.perf_counter()
            predict(model, [s], device)
            sync(device)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        rows.append(
            dict(
                kind=f"inference-single-n{n}",
                model=f"mist-{args.preset}",
                ms_per_dataset=1e3 * statistics.median(times),
                on=device.type,
            )
        )
    return rows


def mine_row(args) -> dict:
    """MINE's seconds per dataset, if the neural estimators are in this checkout (hook otherwise)."""
    try:
        from mibench.estimators import build_estimator

        mine = build_estimator("mine", {})
    except Exception as exc:  # not merged yet
        return dict(kind="inference-single-n500", model="mine", on="cpu", note=f"pending: {exc}"[:200])
    samples = random_samples(3, (500, 500), (args.d_low, args.d_high), 3)
    times = []
    for x, y in samples:
        t0 = time.perf_counter()
        mine(x.astype(np.float64), y.astype(np.float64), seed=0)
        times.append(time.perf_counter() - t0)
    return dict(kind="inference-single-n500", model="mine", on="cpu", ms_per_dataset=1e3 * statistics.median(times))


def machine(device: torch.device) -> str:
    cpu = cpu_model()
    text = f"{cpu}, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)}; {text}"
    return f"{text}; torch {torch.__version__}; python {platform.python_version()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--n-low", type=int, default=10)
    parser.add_argument("--n-high", type=int, default=500)
    parser.add_argument("--d-low", type=int, default=2)
    parser.add_argument("--d-high", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--infer-count", type=int, default=2048)
    parser.add_argument("--cpu-infer-count", type=int, default=64, help="Batched-inference samples on the CPU")
    parser.add_argument("--max-cells", type=int, default=1 << 24)
    parser.add_argument("--small", action="store_true", help="CPU smoke scale: batch 16, n<=100, d<=8, 4 steps")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.small:
        args.batch, args.n_high, args.d_high, args.steps, args.warmup = 16, 100, 8, 4, 1
        args.infer_count, args.max_cells = 64, 1 << 20
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    rows = bench_train(args, device)
    # inference on this device, and on the CPU too when this device is a GPU; then MINE's time per dataset
    for where in [device] + ([torch.device("cpu")] if device.type == "cuda" else []):
        rows += bench_inference(args, where)
    rows.append(mine_row(args))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine(device)
    workload = f"batch {args.batch}, n~U{{{args.n_low}..{args.n_high}}}, dims~U{{{args.d_low}..{args.d_high}}} per side"
    frame = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.lit(str(device)).alias("device"),
        pl.lit(info).alias("machine"),
        pl.lit(stamp).alias("date"),
        pl.lit(workload).alias("workload"),
    )
    ours = frame.filter((pl.col("kind") == "train") & pl.col("model").str.starts_with("mist"))["datasets_per_s"][0]
    ref = frame.filter(pl.col("model") == "reference-shape")["datasets_per_s"][0]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"train_throughput-{device.type}{'-small' if args.small else ''}"
    frame.write_parquet(stem.with_suffix(".parquet"))
    lines = [
        f"# MIST training/inference throughput ({device.type})",
        "",
        f"- date: {stamp}",
        f"- machine: {info}",
        f"- workload: {workload}; {args.steps} timed steps after {args.warmup} warm-up steps (median)",
        f"- ratio ours / reference shape, same run: **{ours / ref:.2f}x**",
    ]
    if device.type == "cuda":
        lines.append(
            f"- vs the reference's published 1,760 datasets/s on an H100: {ours / REFERENCE_THROUGHPUT_H100:.2f}x "
            "(target >= 5x)"
        )
    else:
        lines.append("- CPU run: absolute numbers are not the GPU target; GPU figures pending a GPU session")
    lines += ["", _markdown(frame.drop("machine", "date", "workload", "device")), ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


def _markdown(frame: pl.DataFrame) -> str:
    cols = frame.columns
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.iter_rows():
        out.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(out)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
