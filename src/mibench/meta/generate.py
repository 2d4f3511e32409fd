"""Generate meta-dataset shards (one call per shard: what a Snakemake job or a worker process runs)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from mibench import __version__
from mibench.config import Config, ConfigError, as_config
from mibench.io import atomic_write_text
from mibench.layout import shard_path
from mibench.meta.plan import SplitPlan, build_checked, split_plans
from mibench.meta.shards import read_shard_meta, sample_id, write_shard
from mibench.tasks.transforms import saturation_ties


def stored_sample(plan: SplitPlan, planned, task) -> tuple[np.ndarray, np.ndarray]:
    """The float32 arrays a shard stores for a planned sample; refuses ties created by saturation.

    A side whose last transform maps onto an open interval (normal_cdf) must not hold two values at a bound
    of it in one column: they would be distinct inputs stored as one value (see ``check_saturation``).
    """
    x, y = task.sample(planned.n, planned.seed)
    x, y = x.astype(np.float32), y.astype(np.float32)
    for side, values in (("x", x), ("y", y)):
        ties = saturation_ties(values, task.transform, side)
        if ties:
            raise ConfigError(
                f"split {plan.name!r} sample {planned.index} ({planned.spec.entry}, dims {planned.spec.dim_x}x"
                f"{planned.spec.dim_y}, n={planned.n}): {ties} value(s) of {side} saturate at a bound of "
                f"{task.transform} in float32 and tie; this entry cannot be stored injectively"
            )
    return x, y


def monte_carlo_error(task) -> float | None:
    """The standard error a shard stores next to a Monte-Carlo label (None for exact labels)."""
    dist = task.distribution
    return float(dist.mi_std_error) if dist.mi_method == "monte_carlo" else None


def generate_shard(plan: SplitPlan, shard: int, path: str | os.PathLike) -> Path:
    """Write shard ``shard`` of ``plan`` to ``path``. Every task is validated before anything is sampled."""
    planned = [plan.sample(i) for i in plan.shard_range(shard)]
    tasks = [build_checked(plan, p) for p in planned]  # raises before any sampling
    rows, xs, ys = [], [], []
    for p, task in zip(planned, tasks, strict=True):
        x, y = stored_sample(plan, p, task)
        spec = p.spec
        params_json = spec.params_json
        rows.append(
            {
                "sample_id": sample_id(
                    spec.family, spec.structure, spec.transform, params_json, spec.dim_x, spec.dim_y, p.n, p.seed
                ),
                "split": plan.name,
                "family": spec.family,
                "structure": spec.structure,
                "transform": spec.transform,
                "params": params_json,
                "dim_x": spec.dim_x,
                "dim_y": spec.dim_y,
                "n": p.n,
                "seed": p.seed,
                "mi": float(task.mi),
                "mi_std_error": monte_carlo_error(task),
            }
        )
        xs.append(x)
        ys.append(y)
    metadata = {
        "mibench_version": __version__,
        "split": plan.name,
        "shard": str(shard),
        "root_seed": str(plan.root_seed),
    }
    return write_shard(path, rows, xs, ys, metadata)


def _worker(args: tuple[str, Mapping[str, Any], int, int, str]) -> str:
    name, split_cfg, default_size, shard, path = args  # plain data: crosses the process boundary
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    plan = SplitPlan.from_config(name, split_cfg, default_size)
    return str(generate_shard(plan, shard, path))


def generate_split(
    config: Config | Mapping[str, Any],
    split: str,
    out_root: str | os.PathLike = "results/meta",
    jobs: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Generate every shard of one split, in ``jobs`` worker processes, with a progress bar."""
    config = as_config(config)
    plans = split_plans(config)
    if split not in plans:
        raise ConfigError(f"config.meta.splits has no split {split!r}; splits: {', '.join(plans)}")
    plan = plans[split]
    assert config.meta is not None
    default_size = config.meta.shard_size
    split_cfg = config.meta.splits[split].model_dump(mode="json", exclude_none=True)
    work = [(split, split_cfg, default_size, s, str(shard_path(out_root, split, s))) for s in range(plan.n_shards)]
    from rich.progress import Progress

    done: list[Path] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"generate {split}", total=len(work))
        if jobs <= 1:
            for item in work:
                done.append(Path(_worker(item)))
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(_worker, item) for item in work]
                for future in as_completed(futures):
                    done.append(Path(future.result()))
                    bar.advance(task)
    return sorted(done)


class SplitOverlapError(ValueError):
    """A test split shares a (family, structure, transform, dims, params) distribution with train."""


def distribution_keys(source: str | os.PathLike | Iterable) -> set[tuple]:
    table = read_shard_meta(source, ["family", "structure", "transform", "dim_x", "dim_y", "params"])
    cols = table.to_pydict()
    return set(
        zip(
            cols["family"],
            cols["structure"],
            cols["transform"],
            cols["dim_x"],
            cols["dim_y"],
            cols["params"],
            strict=True,
        )
    )


def check_disjoint(
    train: Iterable, tests: Mapping[str, Iterable], report_path: str | os.PathLike | None = None
) -> dict:
    """Assert that no test distribution (family, params, …) also occurs in train; write a JSON report."""
    train_keys = distribution_keys(list(train))
    report: dict[str, Any] = {"train_distributions": len(train_keys), "splits": {}}
    overlaps = {}
    for name, paths in tests.items():
        keys = distribution_keys(list(paths))
        shared = keys & train_keys
        report["splits"][name] = {"distributions": len(keys), "shared_with_train": len(shared)}
        if shared:
            overlaps[name] = sorted(shared)[:3]
    if report_path is not None:
        atomic_write_text(json.dumps(report, indent=2) + "\n", report_path)
    if overlaps:
        raise SplitOverlapError(f"test splits share distributions with train: {overlaps}")
    return report
