"""What the content check of meta shards costs, relative to reading the same shards (same run, same machine).

For each split: generate its shards (paper-scale mixtures by default, config/paper.yaml, on a limited count), then
time (a) streaming every sample with :func:`mibench.meta.shards.read_shards` once the shards are known to be
checked, i.e. the plain read, and (b) :func:`check_shard_content` on every shard with its MI cache cleared, i.e.
the first read in a process. Reports the ratio check / read and the check time per row. Writes
benchmarks/results/shard_checks.{parquet,md}.

    python benchmarks/shard_checks.py                  # train (random mode) and test_imd (grid mode), 2,000 rows
    python benchmarks/shard_checks.py --rows 10000
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from _machine import cpu_model
from mibench import __version__
from mibench.config import parse_config, read_config_files
from mibench.meta import generate_split
from mibench.meta import shards as shard_module
from mibench.meta.shards import META_COLUMNS, check_shard_content, read_shards

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def split_config(name: str, rows: int, shard_size: int) -> dict:
    """config/paper.yaml's split ``name`` cut to about ``rows`` samples (grid splits: fewer distributions)."""
    config = read_config_files([REPO / "config" / "paper.yaml"])
    split = copy.deepcopy(config["meta"]["splits"][name])
    if "count" in split:
        split["count"] = rows
    else:
        per_dist = len(split["n_grid"]) if isinstance(split["n_grid"], list) else split["n_grid"]["linspace"][2]
        per_dist *= split.get("replicates", 1)
        split["distributions_per_entry"] = max(1, rows // (per_dist * len(split["mixture"])))
    data = {"meta": {"shard_size": shard_size, "splits": {name: split}}}
    parse_config(data)  # checked; the plain data is what the benchmark edits
    return data


def measure(name: str, rows: int, shard_size: int, where: Path) -> dict:
    config = split_config(name, rows, shard_size)
    paths = generate_split(config, name, where, progress=False)
    for path in paths:  # the plain read: every shard already checked in this process
        list(read_shards(path))
    start = time.perf_counter()
    n = sum(1 for path in paths for _ in read_shards(path))
    read_s = time.perf_counter() - start
    shard_module.expected_mi.cache_clear()
    start = time.perf_counter()
    for path in paths:
        check_shard_content(path, pq.read_table(path, columns=META_COLUMNS))
    check_s = time.perf_counter() - start
    return {
        "split": name,
        "rows": n,
        "shards": len(paths),
        "read_s": round(read_s, 3),
        "check_s": round(check_s, 3),
        "check_over_read": round(check_s / read_s, 2),
        "check_ms_per_row": round(1000 * check_s / n, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--splits", nargs="+", default=["train", "test_imd"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(s, args.rows, args.shard_size, Path(tmp)) for s in args.splits]
    df = pl.DataFrame(rows).with_columns(
        pl.lit(__version__).alias("mibench_version"),
        pl.lit(cpu_model()).alias("cpu"),
        pl.lit(dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")).alias("date"),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    df.write_parquet(RESULTS / "shard_checks.parquet")
    table = "| split | rows | shards | read (s) | check (s) | check / read | check per row (ms) |\n|---|---|---|---|---|---|---|\n"
    table += "\n".join(
        f"| {r['split']} | {r['rows']} | {r['shards']} | {r['read_s']} | {r['check_s']} | {r['check_over_read']} | "
        f"{r['check_ms_per_row']} |"
        for r in rows
    )
    text = (
        "# Shard content checks: cost relative to reading\n\n"
        f"config/paper.yaml splits cut to ~{args.rows} rows, shards of {args.shard_size}; {platform.node()}, "
        f"{cpu_model()}, 1 thread, {dt.datetime.now(dt.UTC):%Y-%m-%d}; `python benchmarks/shard_checks.py`.\n\n"
        "`read`: streaming every sample (x, y decoded) of shards already checked in the process; `check`: the "
        "content check of the same shards on their first read (ids rehashed, MI recomputed per distinct "
        "distribution). The check runs once per shard file and process.\n\n" + table + "\n"
    )
    (RESULTS / "shard_checks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
