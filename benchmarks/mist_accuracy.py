"""Accuracy of a trained MIST / MIST-QR checkpoint on the test splits, next to the MIST paper's MSE.

MSE (also bias, MAE) per n-bin [10,100], (100,300], (300,500] on test_imd, test_oomd and test_heldout for the
point head (MIST) and the median of the quantile head (MIST-QR), plus MIST-QR's coverage of the true MI by
its central 50/80/90/95 % intervals and their mean width. Paper MSE: MIST IMD 3.1/0.34/0.28, OoMD 8.0/7.3/8.8;
MIST-QR IMD 3.1/0.31/0.12 (target: at most half of each).

Paper-scale run on one GPU (see docs/learned.md):

    snakemake --cores 16 --configfile config/paper.yaml results/meta/test_imd/shard-0000.parquet ...  # or:
    mibench generate --config config/paper.yaml --split test_imd --split test_oomd --split test_heldout -j 16
    mibench train --config config/paper.yaml --model mist --max-minutes 9      # repeat while exit code is 75
    python benchmarks/mist_accuracy.py --checkpoint results/models/mist/model.safetensors --meta results/meta

Writes benchmarks/results/mist_accuracy-<tag>.parquet (+ .md with the machine, the date and the checkpoint).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import polars as pl
import torch

from mibench.benchmark import bin_label
from mibench.config.schema import DEFAULT_LEVELS
from mibench.devices import resolve_device
from mibench.evaluate.metrics import ALL, compute_metrics, level_key
from mibench.learned.checkpoint import load_model
from mibench.learned.infer import predict
from mibench.learned.model import MISTModel
from mibench.meta.shards import read_shards

RESULTS = Path(__file__).resolve().parent / "results"
SPLITS = ("test_imd", "test_oomd", "test_heldout")
#: The MIST paper's n-bins [10,100], (100,300], (300,500] (right-closed) and its reported MSE (arXiv 2511.18945).
N_EDGES = (10, 100, 300, 500)
PAPER_MSE: dict[tuple[str, str], tuple[float, float, float]] = {
    ("mist", "test_imd"): (3.1, 0.34, 0.28),
    ("mist", "test_oomd"): (8.0, 7.3, 8.8),
    ("mist_qr", "test_imd"): (3.1, 0.31, 0.12),
}
LEVELS = DEFAULT_LEVELS
QUANTILES = pl.List(pl.Struct({"tau": pl.Float64, "value": pl.Float64}))


def n_bin(n: int) -> str:
    """'[10,100]', '(100,300]', '(300,500]' (n above 500 or below 10: 'other')."""
    return bin_label(n, N_EDGES, closed="right")


def predict_shards(
    model: MISTModel,
    source: str | Path | Iterable,
    device: torch.device | str = "cpu",
    chunk: int = 2048,
    max_cells: int = 1 << 22,
) -> pl.DataFrame:
    """One row per sample of the shards: meta columns, true MI, MIST point, MIST-QR quantiles (memory: a chunk)."""
    taus = [round(t, 10) for t in model.arch.taus]
    frames: list[pl.DataFrame] = []
    samples, metas = [], []

    def flush() -> None:
        if not samples:
            return
        points, quantiles = predict(model, samples, device, max_cells)
        columns = {k: [m[k] for m in metas] for k in ("sample_id", "split", "family", "transform", "dim_x", "dim_y")}
        frames.append(
            pl.DataFrame(
                {
                    **columns,
                    "n": [m["n"] for m in metas],
                    "mi_true": [m["mi"] for m in metas],
                    "mist": points,
                    "mist_qr": quantiles[:, taus.index(0.5)],
                    "quantiles": quantiles.tolist(),
                }
            )
        )
        samples.clear()
        metas.clear()

    for x, y, meta in read_shards(source):
        samples.append((x, y))
        metas.append(meta)
        if len(samples) >= chunk:
            flush()
    flush()
    out = pl.concat(frames)
    return out.with_columns(pl.lit(taus).alias("taus"))


def as_estimates(predictions: pl.DataFrame) -> pl.DataFrame:
    """The predictions as estimates rows (one per sample and estimator), the layout mibench.evaluate reads:
    MIST's point estimate, MIST-QR's median with its quantiles."""
    taus = predictions["taus"][0].to_list()
    quantiles = [[{"tau": t, "value": v} for t, v in zip(taus, row, strict=True)] for row in predictions["quantiles"]]
    base = predictions.select("sample_id", "split", "family", "n", "dim_x", "dim_y", "mi_true").with_columns(
        pl.lit("mist_accuracy").alias("benchmark"),
        pl.lit("ok").alias("status"),
        pl.lit(None, pl.Float64).alias("ci_low"),
        pl.lit(None, pl.Float64).alias("ci_high"),
        pl.lit(None, pl.Float64).alias("ci_level"),
        pl.lit(0.0).alias("seconds"),
    )
    return pl.concat(
        [
            base.with_columns(
                pl.lit("mist").alias("estimator"),
                predictions["mist"].alias("mi_estimate"),
                pl.lit(None, QUANTILES).alias("quantiles"),
            ),
            base.with_columns(
                pl.lit("mist_qr").alias("estimator"),
                predictions["mist_qr"].alias("mi_estimate"),
                pl.Series("quantiles", quantiles, dtype=QUANTILES),
            ),
        ]
    )


def nbin_table(predictions: pl.DataFrame) -> pl.DataFrame:
    """MSE/bias/MAE per (split, estimator, n-bin) plus MIST-QR coverage of the true MI at each level and the
    intervals' width, through mibench.evaluate.metrics (the one metrics engine), next to the paper's MSE."""
    metrics = compute_metrics(as_estimates(predictions), LEVELS, n_bins=N_EDGES, n_closed="right")
    intervals = [f"{m}_{level_key(level)}" for level in LEVELS for m in ("coverage", "width")]
    labels = [n_bin(hi) for hi in N_EDGES[1:]]
    order = {label: i for i, label in enumerate(labels)}
    out = (
        metrics.filter(
            (pl.col("split") != ALL) & (pl.col("n_bin") != ALL) & (pl.col("family") == ALL) & (pl.col("dim_bin") == ALL)
        )
        .with_columns(pl.col("n_bin").replace_strict(order, default=len(order)).alias("_order"))
        .sort("split", "estimator", "_order")
        .select("split", "estimator", "n_bin", "count", "mse", "bias", "mae", *intervals)
    )
    paper = []
    for split, estimator, nb in out.select("split", "estimator", "n_bin").iter_rows():
        ref = PAPER_MSE.get((estimator, split))
        paper.append(ref[labels.index(nb)] if ref is not None and nb in labels else None)
    return out.with_columns(pl.Series("paper_mse", paper, dtype=pl.Float64)).with_columns(
        (pl.col("mse") / pl.col("paper_mse")).alias("ratio_to_paper")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("results/models/mist/model.safetensors"))
    parser.add_argument("--meta", type=Path, default=Path("results/meta"))
    parser.add_argument("--splits", nargs="*", default=list(SPLITS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tag", default=None, help="Name of the result files (default: the device type)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    device = torch.device(resolve_device(args.device))
    model, config = load_model(args.checkpoint, device)
    frames = []
    t0 = time.perf_counter()
    for split in args.splits:
        paths = sorted((args.meta / split).glob("shard-*.parquet"))
        if not paths:
            print(f"skipping {split}: no shards under {args.meta / split}", file=sys.stderr)
            continue
        frames.append(predict_shards(model, paths, device))
    if not frames:
        print(f"no test shards under {args.meta}", file=sys.stderr)
        return 2
    predictions = pl.concat(frames)
    seconds = time.perf_counter() - t0
    table = nbin_table(predictions)
    tag = args.tag or device.type
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"mist_accuracy-{tag}"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    table.with_columns(
        pl.lit(stamp).alias("date"), pl.lit(machine).alias("machine"), pl.lit(str(args.checkpoint)).alias("checkpoint")
    ).write_parquet(stem.with_suffix(".parquet"))
    training = config.get("training", {})
    lines = [
        f"# MIST / MIST-QR accuracy ({tag})",
        "",
        f"- date: {stamp}; machine: {machine}; inference over {predictions.height} samples in {seconds:.1f} s",
        f"- checkpoint: {args.checkpoint} ({config['parameters']:,} parameters, preset {config.get('preset')}, "
        f"{training.get('steps_done')} steps, {training.get('elapsed_seconds')} s on {training.get('device')})",
        f"- trained on: {json.dumps(config.get('data', {}).get('train', {}))}",
        "- paper MSE: MIST IMD 3.1/0.34/0.28, OoMD 8.0/7.3/8.8; MIST-QR IMD 3.1/0.31/0.12 (target ratio <= 0.5); "
        "the comparison is only like-for-like on config/paper.yaml's splits (dims 2..32 per side, n 10..500)",
        "",
        _markdown(table),
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _markdown(frame: pl.DataFrame) -> str:
    cols = frame.columns
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.iter_rows():
        out.append(
            "| " + " | ".join("" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row) + " |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
