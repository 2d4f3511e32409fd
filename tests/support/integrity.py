"""Helpers of the integrity tests: build a small results folder, hash it, edit shards and parts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.benchmark import BenchmarkPlan, benchmark_plans
from mibench.cli import app
from mibench.config import parse_config
from mibench.evaluate import evaluate_benchmark
from mibench.evaluate.parts import planned_parts
from mibench.meta import generate_split
from mibench.meta.shards import sample_id
from mibench.runner import run_part


def validate(config: dict) -> dict:
    """The config, checked by the typed models (plain data is kept: the tests index and edit it)."""
    parse_config(config)
    return config


ID_COLUMNS = ("family", "structure", "transform", "params", "dim_x", "dim_y", "n", "seed")


def build_results(root: Path, config: dict) -> Path:
    """Estimate and evaluate every benchmark of ``config`` into ``root/results`` (what the workflow does)."""
    results = root / "results"
    generate_split(config, "test_imd", results / "meta", progress=False)
    for name, plan in benchmark_plans(config).items():
        for label in plan.estimators:
            for part in range(plan.n_parts):
                out = planned_parts(plan, results)[plan.estimators.index(label) * plan.n_parts + part]
                run_part(plan, label, config["estimators"][label], part, out, meta_root=results / "meta")
        evaluate_benchmark(
            plan,
            planned_parts(plan, results),
            results / "metrics" / f"{name}.parquet",
            results / "calibration" / f"{name}.parquet",
            results / "figures" / name,
        )
    return results


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def lost(before: dict[str, str], root: Path, *damaged: Path) -> int:
    """Completed result files the fault (or its handling) changed or removed, besides the ones it damaged."""
    skip = {str(p.relative_to(root)) for p in damaged}
    after = snapshot(root)
    return sum(1 for rel, digest in before.items() if rel not in skip and after.get(rel) != digest)


def clean(text: str, root: Path, tmp: Path | None = None) -> str:
    """A message as the docs show it: results/ for the results folder, /tmp for the test's own temp folder."""
    text = " ".join(text.split()).replace(str(root), "results")
    return text.replace(str(tmp), "/tmp") if tmp is not None else text


def shard_of(results: Path, shard: int = 1) -> Path:
    return results / "meta" / "test_imd" / f"shard-{shard:04d}.parquet"


def rewrite_shard(path: Path, edit) -> None:
    """Apply ``edit(rows: list[dict]) -> list[dict]`` to a shard's rows and write it back as valid Parquet."""
    table = pq.read_table(path)
    rows = edit(table.to_pylist())
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path, write_page_checksum=True)


def reid(row: dict) -> dict:
    """The row with its sample id recomputed from its columns (a consistent, deliberate edit)."""
    return {**row, "sample_id": sample_id(*(row[c] for c in ID_COLUMNS))}


def mist_part(results: Path, config: dict, part: int = 1) -> tuple[BenchmarkPlan, Path]:
    plan = BenchmarkPlan.from_config("mist", config)
    return plan, planned_parts(plan, results)[part]


def cli(*args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output, result.exception


def cli_outcome(code: int, output: str, exc: BaseException | None, *names: str) -> str:
    if exc is not None and not isinstance(exc, SystemExit):
        return "traceback"
    if code == 0:
        return "silently wrong"
    return "clear error" if all(n in " ".join(output.split()) for n in names) else "traceback"
