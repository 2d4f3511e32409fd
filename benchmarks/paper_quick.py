"""A 5-minute paper-preset training run, evaluated on the paper's test splits (M_test), in one command.

Reads ``config/paper.yaml`` (the paper's splits and the ~5.5M-parameter ``paper`` preset), overrides only the
training length: ``steps: auto`` with ``time_budget_minutes: --minutes`` (the schedule is fitted to the
budget after timing the first steps). Generates the ``test_imd`` and ``test_oomd`` shards, trains (samples
generated on the fly by data workers, as the paper config does), then writes MSE/bias/MAE per n-bin next
to the paper's numbers, and MIST-QR coverage, through ``benchmarks/mist_accuracy.py``. The derived config,
shards and model go under ``--work`` (git-ignored ``results/``); the accuracy tables under ``--out``.

    python benchmarks/paper_quick.py                 # one GPU: about 6 minutes
    python benchmarks/paper_quick.py --smoke         # CPU, tiny preset and splits: the same code path in seconds
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mist_accuracy
from mibench.config import parse_config, read_config_files
from mibench.learned.trainer import train_from_config
from mibench.meta import generate_split

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TEST_SPLITS = ("test_imd", "test_oomd")


def derive(config: dict, minutes: float, smoke: bool, model: str) -> dict:
    """The paper config with a ``minutes``-long training (smoke: tiny preset, tiny splits, CPU)."""
    cfg = copy.deepcopy(config)
    entry = cfg["models"][model]
    entry.setdefault("training", {}).update({"steps": "auto", "time_budget_minutes": minutes})
    if smoke:
        entry.update({"preset": "tiny", "device": "cpu", "threads": 1})
        entry["training"].update(
            {
                "batch_size": 4,
                "workers": 0,
                "bucket_pool": 2,
                "calibration_steps": 2,
                "warmup_steps": 1,
                "validate_every": 5,
                "log_every": 5,
            }
        )
        entry.setdefault("data", {}).update({"validation_count": 8, "train_count": 64})
        for split in cfg["meta"]["splits"].values():
            split["dims"] = {"x": [2, 3], "y": [2, 3]}
            if "n_grid" in split:
                split.update({"n_grid": [10, 40], "replicates": 1, "distributions_per_entry": 1})
            else:
                split["n"] = {"low": 10, "high": 40}
    parse_config(cfg)  # checked; the plain data is what is written and trained from
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "paper.yaml")
    parser.add_argument("--model", default="mist")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget (steps: auto fits it)")
    parser.add_argument("--jobs", type=int, default=16, help="processes generating the test shards")
    parser.add_argument("--work", type=Path, default=REPO / "results" / "paper_quick")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default=None, help="results name mist_accuracy-<tag> (default: paper5min-<device>)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.minutes, args.jobs = 0.05, 1
    cfg = derive(read_config_files([args.config]), args.minutes, args.smoke, args.model)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.perf_counter()
    for split in TEST_SPLITS:
        generate_split(cfg, split, args.work / "meta", jobs=args.jobs, progress=False)
    print(f"test shards generated in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    result = train_from_config(cfg, args.model, args.work / "models", fresh=True, tracking=False, progress=False)
    if result.status != "complete":
        print(f"training ended {result.status} at step {result.step}", file=sys.stderr)
        return 1
    device = "cpu" if args.smoke else "auto"
    tag = args.tag or ("smoke" if args.smoke else "paper5min-gpu")
    return mist_accuracy.main(
        [
            "--checkpoint",
            str(result.weights),
            "--meta",
            str(args.work / "meta"),
            "--splits",
            *TEST_SPLITS,
            "--device",
            device,
            "--tag",
            tag,
            "--out",
            str(args.out),
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
