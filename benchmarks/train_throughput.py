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

Inference: batched datasets/s through :func:`mibench.learned.infer.predict` and single-dataset latency, on
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
from _reference import ReferenceShape, reference_batch  # the reference's shape, shared with mist_vs_reference
from mibench.config.learned import PRESETS
from mibench.learned.batching import Batch, buckets, collate, prepare
from mibench.learned.infer import predict
from mibench.learned.model import MISTModel

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE_THROUGHPUT_H100 = 1760.0  # datasets/s, the reference on one H100 in fp32 (issue 4)


# -- workloads -------------------------------------------------------------------------------------------------------
def random_samples(count: int, n_range, d_range, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Correlated Gaussian samples of MIST's sizes: n ~ U{n_range}, dim_x = dim_y = d ~ U{d_range} (the values
    do not change the throughput)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(n_range[0], n_range[1] + 1))
        dx = dy = int(rng.integers(d_range[0], d_range[1] + 1))
        x = rng.normal(size=(n, dx)).astype(np.float32)
        y = (0.5 * x[:, [i % dx for i in range(dy)]] + rng.normal(size=(n, dy))).astype(np.float32)
        out.append((x, y))
    return out


def mist_batches(samples, batch: int, normalisation: str, pool: int = 16, limit: int | None = None) -> list[Batch]:
    """Full batches bucketed from pools of ``pool`` batches, as training makes them (at most ``limit``)."""
    out = []
    for start in range(0, len(samples), batch * pool):
        chunk = [prepare(x, y, normalisation) for x, y in samples[start : start + batch * pool]]
        sizes = [(zx.shape[0], zx.shape[1], zy.shape[1]) for zx, zy in chunk]
        for g in buckets(sizes, batch):
            if len(g) == batch:
                out.append(collate([chunk[i] for i in g], [0.5] * len(g)))
        if limit is not None and len(out) >= limit:
            return out[:limit]
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


def _precision(device: torch.device, precision: str):
    """Autocast context of a precision row: ``fp32`` (TF32 off, as the reference ran) or ``bf16`` autocast."""
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _train_row(model_name: str, model: nn.Module, step, batches, device, args, precision: str, **extra) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def one(b) -> None:
        with _precision(device, precision):
            loss = step(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    times = time_steps(one, batches, device, args.warmup)
    return dict(
        kind="train",
        model=model_name,
        precision="bf16 autocast" if precision == "bf16" else "fp32 (TF32 off)",
        parameters=sum(p.numel() for p in model.parameters()),
        batch=args.batch,
        ms_per_step=1e3 * statistics.median(times),
        datasets_per_s=args.batch / statistics.median(times),
        **extra,
    )


def bench_train(args, device: torch.device) -> list[dict]:
    """Full training steps of ours and of the reference's shape, at every precision of ``--precisions``."""
    rows = []
    count = args.batch * (args.steps + args.warmup)
    samples = random_samples(count + args.batch * 16, (args.n_low, args.n_high), (args.d_low, args.d_high), 0)
    batches = mist_batches(samples, args.batch, PRESETS[args.preset].normalisation, limit=args.steps + args.warmup)
    real = sum(int((b.rows.sum(1) * (b.xcols.sum(1) + b.ycols.sum(1))).sum()) for b in batches)
    padding = sum(b.cells for b in batches) / real  # padded cells ÷ real cells of the timed batches
    ref_batches = [
        reference_batch(samples[i : i + args.batch])
        for i in range(0, (args.steps + args.warmup) * args.batch, args.batch)
    ]
    for precision in args.precisions:
        for cell_layers in args.cell_layers:  # the preset's cell stage, and others (0: none) to size its cost
            torch.manual_seed(0)
            arch = PRESETS[args.preset]
            name = f"mist-{args.preset}"
            if cell_layers != arch.cell_layers:
                arch, name = arch.replace(cell_layers=cell_layers), f"{name} (cell_layers={cell_layers})"
            model = MISTModel(arch).to(device)

            def mist_step(b: Batch, model=model) -> torch.Tensor:
                b = b.to(device, non_blocking=True)
                point, q = model(b)
                err = b.target[:, None] - q
                pin = torch.maximum(model.taus * err, (model.taus - 1) * err).mean()
                return ((point - b.target) ** 2).mean() + pin

            rows.append(_train_row(name, model, mist_step, batches, device, args, precision, padding_overhead=padding))
            model = None  # free the memory before the next model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        ref = ReferenceShape().to(device)  # unbucketed random batches, padded to the largest n, raw values

        def ref_step(b, ref=ref) -> torch.Tensor:
            rows_, pad, target = (t.to(device) for t in b)
            return ((ref(rows_, pad).float() - target) ** 2).mean()

        rows.append(_train_row("reference-shape", ref, ref_step, ref_batches, device, args, precision))
        ref = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
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
    parser.add_argument("--precisions", default=None, help="fp32,bf16 (default: both on CUDA, fp32 on the CPU)")
    parser.add_argument(
        "--cell-layers", default=None, help="ours with these cell_layers too, e.g. 2,0 (default: the preset's, 0)"
    )
    parser.add_argument("--infer-count", type=int, default=2048)
    parser.add_argument("--cpu-infer-count", type=int, default=64, help="Batched-inference samples on the CPU")
    parser.add_argument("--max-cells", type=int, default=1 << 24)
    parser.add_argument("--no-mine", action="store_true", help="skip MINE's seconds per dataset")
    parser.add_argument("--small", "--smoke", action="store_true", help="smoke scale: batch 16, n<=100, d<=8, 4 steps")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tag", default=None, help="file name: train_throughput-<tag> (default: the device type)")
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
    default_precisions = "fp32,bf16" if device.type == "cuda" else "fp32"
    args.precisions = [p.strip() for p in (args.precisions or default_precisions).split(",") if p.strip()]
    if set(args.precisions) - {"fp32", "bf16"}:
        parser.error(f"--precisions: fp32 and/or bf16, got {args.precisions}")
    preset_layers = PRESETS[args.preset].cell_layers
    args.cell_layers = [int(v) for v in (args.cell_layers or f"{preset_layers},0").split(",") if v.strip()]
    rows = bench_train(args, device)
    # inference on this device, and on the CPU too when this device is a GPU; then MINE's time per dataset
    for where in [device] + ([torch.device("cpu")] if device.type == "cuda" else []):
        rows += bench_inference(args, where)
    if not args.no_mine:
        rows.append(mine_row(args))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine(device)
    workload = (
        f"batch {args.batch}, n~U{{{args.n_low}..{args.n_high}}}, dim_x = dim_y = d~U{{{args.d_low}..{args.d_high}}}"
    )
    frame = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.lit(str(device)).alias("device"),
        pl.lit(info).alias("machine"),
        pl.lit(stamp).alias("date"),
        pl.lit(workload).alias("workload"),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or f"{device.type}{'-small' if args.small else ''}"
    stem = args.out / f"train_throughput-{tag}"
    frame.write_parquet(stem.with_suffix(".parquet"))
    lines = [
        f"# MIST training/inference throughput ({device.type})",
        "",
        f"- date: {stamp}",
        f"- machine: {info}",
        f"- workload: {workload}; {args.steps} timed steps after {args.warmup} warm-up steps (median)",
        *_verdicts(frame, device),
        "",
        _markdown(frame.drop("machine", "date", "workload", "device")),
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


def _verdicts(frame: pl.DataFrame, device: torch.device) -> list[str]:
    """Ours ÷ the reference's shape per precision (same run), and ours vs the published H100 figure."""
    train = frame.filter(pl.col("kind") == "train")
    lines = []
    for precision in train["precision"].unique(maintain_order=True):
        rows = train.filter(pl.col("precision") == precision)
        ref = rows.filter(pl.col("model") == "reference-shape")["datasets_per_s"][0]
        for name, ours in rows.filter(pl.col("model").str.starts_with("mist")).select("model", "datasets_per_s").rows():
            line = f"- {precision}, {name}: {ours:,.0f} datasets/s, reference shape {ref:,.0f}: **{ours / ref:.2f}x**"
            if device.type == "cuda":
                verdict = "meets" if ours >= 5 * REFERENCE_THROUGHPUT_H100 else "MISSES"
                line += (
                    f"; vs the reference's published 1,760 datasets/s (H100, fp32): "
                    f"{ours / REFERENCE_THROUGHPUT_H100:.2f}x ({verdict} >= 5x)"
                )
            lines.append(line)
    if device.type != "cuda":
        lines.append("- CPU run: absolute numbers are not the GPU target (benchmarks/gpu_suite.sh measures those)")
    return lines


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
