"""The results layout: where every output lives, stated once (the Snakemake rules, the library and the
``mibench`` commands all build paths here).

::

    results/meta/{split}/shard-{shard:04d}.parquet          meta-dataset shards
    results/models/{model}/model.safetensors + model.json   trained learned estimators
    results/estimates/{benchmark}/{estimator}/part-{part:04d}.parquet
    results/metrics/{benchmark}.parquet, results/calibration/{benchmark}.parquet,
    results/task_metrics/{benchmark}.parquet                 per task and n: mean over seeds, samples needed
    results/figures/{benchmark}/{figure}.png
    results/tracking/{benchmark}.json                       what was logged to MLflow
    results/report/index.html
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = "results"

# patterns with Snakemake wildcards (relative to the working directory)
SHARD = "results/meta/{split}/shard-{shard}.parquet"
WEIGHTS = "results/models/{model}/model.safetensors"
MODEL_JSON = "results/models/{model}/model.json"
PART = "results/estimates/{benchmark}/{estimator}/part-{part}.parquet"
METRICS = "results/metrics/{benchmark}.parquet"
CALIBRATION = "results/calibration/{benchmark}.parquet"
TASK_METRICS = "results/task_metrics/{benchmark}.parquet"  # BMI's per-task conventions (task grids)
FIGURE = "results/figures/{benchmark}/{name}.png"
TRACKING = "results/tracking/{benchmark}.json"
REPORT = "results/report/index.html"


def shard_path(root: str | os.PathLike, split: str, shard: int) -> Path:
    """``root`` is the meta folder (``results/meta``)."""
    return Path(root) / split / f"shard-{shard:04d}.parquet"


def part_path(benchmark: str, estimator: str, part: int, results: str | os.PathLike = RESULTS) -> Path:
    return Path(results) / "estimates" / benchmark / estimator / f"part-{part:04d}.parquet"


def model_files(model: str, results: str | os.PathLike = RESULTS) -> tuple[Path, Path]:
    base = Path(results) / "models" / model
    return base / "model.safetensors", base / "model.json"


def weights_model(path: str | os.PathLike) -> str | None:
    """The model name if ``path`` is ``results/models/<model>/model.safetensors`` (a train job's output)."""
    match = re.fullmatch(r"results/models/([A-Za-z][A-Za-z0-9_]*)/model\.safetensors", os.path.normpath(path))
    return match.group(1) if match else None


@dataclass
class Orphans:
    """Outputs on disk that the current config no longer plans (not read by anything that runs now)."""

    benchmarks: list[str] = field(default_factory=list)  # results of a benchmark the config does not name
    estimators: list[tuple[str, str]] = field(default_factory=list)  # (benchmark, estimator) no longer listed
    parts: list[Path] = field(default_factory=list)  # parts beyond the planned ones (after re-partitioning)
    splits: list[str] = field(default_factory=list)
    shards: list[Path] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # every file or folder to remove, deepest first

    def __bool__(self) -> bool:
        return bool(self.paths)


def find_orphans(
    results: str | os.PathLike,
    benchmarks: dict[str, tuple[Iterable[str], int]],
    splits: dict[str, int],
    models: Iterable[str],
) -> Orphans:
    """Compare ``results/`` with what a config plans.

    ``benchmarks`` maps each planned benchmark to (its estimators, its number of parts); ``splits`` each
    planned split to its number of shards; ``models`` the trained models.
    """
    root = Path(results)
    out = Orphans()
    planned_models = set(models)
    estimates = root / "estimates"
    for bench_dir in sorted(p for p in estimates.glob("*") if p.is_dir()):
        name = bench_dir.name
        if name not in benchmarks:
            out.benchmarks.append(name)
            out.paths.append(bench_dir)
            continue
        labels, n_parts = benchmarks[name]
        labels = set(labels)
        for est_dir in sorted(p for p in bench_dir.glob("*") if p.is_dir()):
            if est_dir.name not in labels:
                out.estimators.append((name, est_dir.name))
                out.paths.append(est_dir)
                continue
            for part in sorted(est_dir.glob("part-*.parquet*")):
                match = re.fullmatch(r"part-(\d{4})\.parquet(\..*)?", part.name)
                if match and int(match.group(1)) >= n_parts:
                    out.parts.append(part)
                    out.paths.append(part)
    for kind in ("metrics", "calibration", "task_metrics"):
        for path in sorted((root / kind).glob("*.parquet")):
            if path.stem not in benchmarks:
                if path.stem not in out.benchmarks:
                    out.benchmarks.append(path.stem)
                out.paths.append(path)
    for folder in ("figures",):
        for path in sorted(p for p in (root / folder).glob("*") if p.is_dir()):
            if path.name not in benchmarks:
                out.paths.append(path)
    for path in sorted((root / "tracking").glob("*.json")):
        if path.stem not in benchmarks:
            out.paths.append(path)
    meta = root / "meta"
    for split_dir in sorted(p for p in meta.glob("*") if p.is_dir()):
        if split_dir.name not in splits:
            out.splits.append(split_dir.name)
            out.paths.append(split_dir)
            continue
        for shard in sorted(split_dir.glob("shard-*.parquet")):
            match = re.fullmatch(r"shard-(\d{4})\.parquet", shard.name)
            if match and int(match.group(1)) >= splits[split_dir.name]:
                out.shards.append(shard)
                out.paths.append(shard)
    for model_dir in sorted(p for p in (root / "models").glob("*") if p.is_dir()):
        if model_dir.name not in planned_models:
            out.models.append(model_dir.name)
            out.paths.append(model_dir)
    out.benchmarks = sorted(set(out.benchmarks))
    return out
