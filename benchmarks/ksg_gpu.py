"""The torch brute-force KSG on a GPU at n = 20k and 100k, 25×25, against the CPU times committed in
``benchmarks/results/estimators.parquet`` (same data, same k).

Data as in ``benchmarks/estimators.py``: dense Gaussian (ρ = 0.3 between all variables), d × d, sample seed
n + d, columns standardised beforehand, KSG k = 3 with ``standardize=False, jitter=0``. The GPU call is timed
once after a warm-up call at a small n (CUDA context, kernels); its value is checked against the CPU tree
backend at ``--check-n`` (the counts are exact, so the MI must agree to rounding). CPU references: bmi's
brute-force KSG and our CPU default measured at n = 20k on the committed CPU run; at 100k neither was run on
the CPU (minutes to hours), so their times are extrapolated from 20k by the O(n²) of a brute force and
marked as such. Targets: ≥ 10× bmi's CPU time, ≥ 50× our CPU time.

    python benchmarks/ksg_gpu.py                 # GPU: about a minute
    python benchmarks/ksg_gpu.py --smoke         # CPU, small n: the same code path in seconds

Writes benchmarks/results/ksg_gpu[-smoke].md and .parquet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model
from mibench.estimators import make_estimator
from mibench.tasks import TaskSpec

RESULTS = Path(__file__).resolve().parent / "results"
RHO, K = 0.3, 3
REFERENCE_N = 20_000


def sample(d: int, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    task = TaskSpec("multinormal", "dense", d, d, {"rho": RHO}).build()
    x, y = task.sample(n, seed=n + d)
    return x / x.std(axis=0), y / y.std(axis=0), task.mi


def cpu_references(path: Path, d: int) -> dict[str, float]:
    """Seconds at n = 20k of bmi's KSG and of our CPU default, from the committed CPU benchmark."""
    if not path.exists():
        return {}
    table = pl.read_parquet(path).filter(
        (pl.col("dim_x") == d) & (pl.col("n") == REFERENCE_N) & (pl.col("status") == "ok")
    )
    return {row["estimator"]: row["seconds"] for row in table.iter_rows(named=True) if row["seconds"] is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ns", default="20000,100000")
    parser.add_argument("--dim", type=int, default=25)
    parser.add_argument("--check-n", type=int, default=5000)
    parser.add_argument("--smoke", action="store_true", help="CPU, n = 400/800, 3×3: the code path in seconds")
    parser.add_argument("--cpu-results", type=Path, default=RESULTS / "estimators.parquet")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    if args.smoke:
        args.device, args.ns, args.dim, args.check_n = "cpu", "400,800", 3, 300
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("ksg_gpu: no CUDA device (use --smoke for the CPU code path)", file=sys.stderr)
        return 3
    torch.set_num_threads(1)
    gpu = make_estimator("ksg", {"k": K, "jitter": 0.0, "standardize": False, "backend": "torch", "device": device})
    tree = make_estimator("ksg", {"k": K, "jitter": 0.0, "standardize": False, "backend": "tree"})
    d = args.dim
    x, y, _ = sample(d, args.check_n)
    gpu(x, y, seed=0)  # warm-up: CUDA context and kernels
    agreement = abs(gpu(x, y, seed=0).value - tree(x, y, seed=0).value)
    refs = cpu_references(args.cpu_results, d)
    rows = []
    for n in (int(v) for v in args.ns.split(",")):
        x, y, mi = sample(d, n)
        t0 = time.perf_counter()
        value = gpu(x, y, seed=0).value  # returns numpy: the device work is finished
        seconds = time.perf_counter() - t0
        scale = (n / REFERENCE_N) ** 2
        row = dict(dims=f"{d}x{d}", n=n, mi_true=mi, estimate=value, seconds=seconds, device=device)
        for name, label in (("bmi_ksg", "bmi"), ("ksg", "ours_cpu")):
            if name in refs:
                row[f"{label}_cpu_seconds"] = refs[name] * scale
                row[f"{label}_extrapolated"] = n != REFERENCE_N
                row[f"speedup_vs_{label}"] = refs[name] * scale / seconds
        rows.append(row)
        print(f"n={n}: {seconds:.3f} s on {device}", file=sys.stderr, flush=True)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "none"
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"GPU {name}; CPU {cpu_model()}; torch {torch.__version__}"
    frame = frame.with_columns(pl.lit(machine).alias("machine"), pl.lit(date).alias("date"))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"ksg_gpu{'-smoke' if args.smoke else ''}"
    frame.write_parquet(stem.with_suffix(".parquet"))
    lines = [
        f"# Torch KSG on {device}" + (" — SMOKE RUN (CPU)" if args.smoke else ""),
        "",
        f"- date: {date}; machine: {machine}.",
        f"- data: dense Gaussian ρ = {RHO}, {d}×{d}, standardised; k = {K}; |Δ MI| vs the CPU tree at n = "
        f"{args.check_n}: {agreement:.1e}.",
        f"- CPU references (`{args.cpu_results.name}`, n = {REFERENCE_N:,}): "
        + (", ".join(f"{k} {v:.1f} s" for k, v in refs.items() if k in ("bmi_ksg", "ksg")) or "none found")
        + "; other n: × (n / 20k)², extrapolated.",
        "",
        "| n | seconds | estimate | true MI | × bmi CPU (target ≥ 10) | × our CPU (target ≥ 50) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in frame.iter_rows(named=True):

        def speed(label: str, r=r) -> str:
            if r.get(f"speedup_vs_{label}") is None:
                return "n/a"
            return f"{r[f'speedup_vs_{label}']:.0f}{' (extrapolated)' if r[f'{label}_extrapolated'] else ''}"

        lines.append(
            f"| {r['n']:,} | {r['seconds']:.3f} | {r['estimate']:.4f} | {r['mi_true']:.4f} | {speed('bmi')} | "
            f"{speed('ours_cpu')} |"
        )
    lines.append("")
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
