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
from pathlib import Path

import polars as pl
import torch

from mibench.devices import resolve_device
from mibench.learned.checkpoint import load_model
from mibench.learned.evaluate import nbin_table, predict_shards

RESULTS = Path(__file__).resolve().parent / "results"
SPLITS = ("test_imd", "test_oomd", "test_heldout")


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
