"""Pipeline overhead per cell: what the runner and Snakemake add on top of an estimator's own time.

Two measurements on the same task grid with a near-free estimator (Pearson correlation, ~0.1 ms):

* runner: ``run_part`` over all cells in one process: (wall − Σ estimator seconds) / cells, which includes
  data generation from the cell's seed, input validation, timeouts, row building and the Parquet write;
* workflow: a whole ``snakemake`` run (estimate parts, evaluate, report; tracking off) with
  ``cells_per_job`` cells per job: wall / cells, which includes Python start-up per job.

Writes benchmarks/results/pipeline_overhead.{parquet,md}. Target (issue 3): ≤ 10 ms per classical cell.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))


def config(cells_per_job: int, seeds: int) -> dict:
    tasks = [
        {"entry": "multinormal-dense", "dims": [1, 1], "params": {"rho": 0.5}},
        {"entry": "student-sparse-asinh", "dims": [5, 5], "params": {"k": 2, "strength": 0.6, "df": 4}},
        {"entry": "additive_uniform-diag", "dims": [3, 3], "params": {"epsilon": 0.4}},
        {
            "entry": "multinormal-lvm-wiggly",
            "dims": [2, 2],
            "params": {"latent_dim": 1, "loadings_x": [[1.0], [0.5]], "loadings_y": [[0.8], [0.2]]},
        },
    ]
    return {
        "estimators": {"corr": {"estimator": "first_column_corr", "module": "tests.support.estimators"}},
        "benchmarks": {
            "overhead": {
                "tasks": tasks,
                "n": [100, 1000],
                "seeds": seeds,
                "cells_per_job": cells_per_job,
                "estimators": ["corr"],
            }
        },
        "tracking": {"enabled": False},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=250, help="replicates per (task, n): cells = 8 x seeds")
    parser.add_argument("--cells-per-job", type=int, default=500)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()

    import tests.support.estimators  # noqa: F401 - registers first_column_corr

    from mibench.benchmark import BenchmarkPlan
    from mibench.config import parse_config

    cfg = parse_config(config(args.cells_per_job, args.seeds))
    plan = BenchmarkPlan.from_config("overhead", cfg)
    cells = plan.n_cells
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from mibench.runner import run_part

        t0 = time.perf_counter()
        own = 0.0
        for part in range(plan.n_parts):
            table = run_part(plan, "corr", cfg.estimators["corr"], part, Path(tmp) / f"p{part}.parquet")
            own += sum(table.column("seconds").to_pylist())
        wall = time.perf_counter() - t0
        rows.append(
            {
                "measurement": "runner (one process)",
                "cells": cells,
                "wall_s": wall,
                "estimator_s": own,
                "overhead_ms_per_cell": 1000 * (wall - own) / cells,
            }
        )

        work = Path(tmp) / "wf"
        (work / "config").mkdir(parents=True)
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(config(args.cells_per_job, args.seeds)))
        env = {
            **os.environ,
            "PYTHONPATH": f"{REPO / 'src'}:{REPO}",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "-s",
                str(REPO / "workflow" / "Snakefile"),
                "--directory",
                str(work),
                "--cores",
                str(args.cores),
                "--quiet",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        wall = time.perf_counter() - t0
        own = pl.read_parquet(work / "results" / "estimates" / "overhead" / "corr" / "*.parquet")["seconds"].sum()
        rows.append(
            {
                "measurement": f"snakemake run ({plan.n_parts} estimate jobs, {args.cores} cores, incl. evaluate+report)",
                "cells": cells,
                "wall_s": wall,
                "estimator_s": own,
                "overhead_ms_per_cell": 1000 * (wall - own) / cells,
            }
        )

    RESULTS.mkdir(parents=True, exist_ok=True)
    df = pl.DataFrame(rows).with_columns(
        pl.lit(platform.node()).alias("host"), pl.lit(dt.date.today().isoformat()).alias("date")
    )
    df.write_parquet(RESULTS / "pipeline_overhead.parquet")
    lines = [
        "# Pipeline overhead per cell",
        "",
        f"- date: {dt.date.today().isoformat()}; machine: {platform.platform()}, {os.cpu_count()} CPU cores",
        f"- command: `python benchmarks/pipeline_overhead.py --seeds {args.seeds} --cells-per-job {args.cells_per_job} --cores {args.cores}`",
        "- estimator: Pearson-correlation plug-in (~0.1 ms), so nearly all time is pipeline; tasks 1x1 to 5x5, n ∈ {100, 1000}",
        "",
        "| measurement | cells | wall s | estimator s | overhead ms/cell |",
        "|---|---|---|---|---|",
        *[
            f"| {r['measurement']} | {r['cells']} | {r['wall_s']:.1f} | {r['estimator_s']:.2f} | {r['overhead_ms_per_cell']:.2f} |"
            for r in rows
        ],
        "",
        "Target (issue 3): ≤ 10 ms per classical cell, amortised.",
        "",
    ]
    (RESULTS / "pipeline_overhead.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
