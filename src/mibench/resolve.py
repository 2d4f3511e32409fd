"""Everything a config implies, resolved and checked before any job runs.

:func:`resolve_config` turns a typed :class:`~mibench.config.Config` into the plans the workflow runs: split
plans, resolved estimator entries (class found, hyperparameters validated, defaults filled in), benchmark
plans and model specs. It is what the Snakefile calls at parse time (so ``snakemake -n`` fails too) and what
``mibench check`` runs. Every problem found is reported at once, each with its key path, the value and what
is allowed:

* unknown estimator classes or modules that cannot be imported, bad hyperparameters (did-you-mean);
* unknown task families, structures, transforms and parameters a family would silently ignore;
* references to estimators, splits or models that do not exist;
* ``n`` below the smallest sample an estimator accepts;
* sizes over ``config.limits`` (n, dims, seeds, cells per benchmark, bytes per sample), checked *before*
  anything is built, so ``dims: [100000, 1]`` or ``seeds: 1000000000`` fail in milliseconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mibench.benchmark import BenchmarkPlan
from mibench.config import (
    BenchmarkConfig,
    Config,
    ConfigError,
    Limits,
    ModelSpec,
    SplitConfig,
    as_config,
    missing_model_splits,
)
from mibench.estimators import ResolvedEstimator, resolve_entry
from mibench.layout import model_files, weights_model
from mibench.meta.plan import SplitPlan, split_plans

#: Bytes of one sample value (float64) used to estimate a sample's memory before allocating it.
BYTES_PER_VALUE = 8
#: Arrow list offsets of a shard column are int32: a shard may hold at most this many values of x (or y).
SHARD_VALUES_LIMIT = 2**31 - 1


def sample_mib(n: int, dim_x: int, dim_y: int) -> float:
    """Memory of one sample of ``n`` rows as float64, in MiB (what ``limits.max_sample_mib`` bounds)."""
    return n * (dim_x + dim_y) * BYTES_PER_VALUE / 2**20


@dataclass
class Resolved:
    """A checked config and the plans it implies."""

    config: Config
    splits: dict[str, SplitPlan] = field(default_factory=dict)
    estimators: dict[str, ResolvedEstimator] = field(default_factory=dict)
    benchmarks: dict[str, BenchmarkPlan] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, message: str) -> None:
        for line in str(message).splitlines():
            line = line.strip()
            if line and not re.fullmatch(r"(\S+: )?\d+ problems:", line):  # a nested list's header
                self.lines.append(line)

    @contextmanager
    def collect(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as exc:
            self.add(str(exc).removeprefix("error: "))
        except ValueError as exc:
            self.add(str(exc))

    def raise_if_any(self, source: str | None) -> None:
        if not self.lines:
            return
        lines = list(dict.fromkeys(self.lines))
        head = f"{source}: " if source else ""
        if len(lines) == 1:
            raise ConfigError(head + lines[0])
        raise ConfigError(f"{head}{len(lines)} problems:\n  " + "\n  ".join(lines))


def check_limits(config: Config, source: str | None = None) -> None:
    """Only the size checks of :func:`resolve_config` (what a command that samples without resolving runs first)."""
    problems = _Problems()
    _limit_checks(config, problems)
    problems.raise_if_any(source)


def _limit_checks(config: Config, problems: _Problems) -> None:
    """Sizes against ``config.limits``, from the typed config alone (nothing is built yet)."""
    for name, bench in config.benchmarks.items():
        _benchmark_limits(f"config.benchmarks.{name}", bench, config.limits, problems)
    if config.meta is None:
        return
    for name, split in config.meta.splits.items():
        _split_limits(f"config.meta.splits.{name}", split, config.meta.shard_size, config.limits, problems)


def _over(problems: _Problems, where: str, what: str, value: float, key: str, limit: float) -> None:
    """One size over its limit, named by where it is set and by the limit that would allow it."""
    shown = f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"
    hint = "raise config.limits.{key} if you really need more"
    problems.add(f"{where}: {what} {shown} exceeds config.limits.{key} = {limit:,}; " + hint.format(key=key))


def _benchmark_limits(where: str, bench: BenchmarkConfig, lim: Limits, problems: _Problems) -> None:
    """A benchmark's dims, n, seeds, cells and sample memory; a sample too large only because a dim or n is
    already over its own limit is not reported twice."""
    for i, task in enumerate(bench.tasks or ()):
        for side, dim in zip("xy", task.dims, strict=True):
            if dim > lim.max_dim:
                _over(problems, f"{where}.tasks[{i}].dims", f"dim_{side}", dim, "max_dim", lim.max_dim)
    for i, n in enumerate(bench.n or ()):
        if n > lim.max_n:
            _over(problems, f"{where}.n[{i}]", "n", n, "max_n", lim.max_n)
    if bench.tasks is None:
        return
    if bench.seeds > lim.max_seeds:
        _over(problems, f"{where}.seeds", "seeds", bench.seeds, "max_seeds", lim.max_seeds)
    cells = len(bench.tasks) * len(bench.n or ()) * bench.seeds
    if cells > lim.max_cells:
        _over(problems, where, "cells (tasks x n x seeds)", cells, "max_cells", lim.max_cells)
    for i, task in enumerate(bench.tasks):
        for n in bench.n or ():
            if n > lim.max_n:
                continue  # reported above
            mib = sample_mib(n, *task.dims)
            if mib > lim.max_sample_mib and task.dims[0] <= lim.max_dim and task.dims[1] <= lim.max_dim:
                _over(
                    problems,
                    f"{where}.tasks[{i}] at n={n}",
                    "sample memory (MiB)",
                    round(mib),
                    "max_sample_mib",
                    lim.max_sample_mib,
                )


def _split_n_max(split: SplitConfig) -> int | None:
    """The largest n a meta split draws: ``n_grid`` (a list or a linspace) wins over the ``n`` range."""
    n_max = split.n.high if split.n is not None else None
    if isinstance(split.n_grid, list):
        n_max = max(split.n_grid)
    elif split.n_grid is not None:
        n_max = round(split.n_grid.linspace[1])
    return n_max


def _split_limits(where: str, split: SplitConfig, default_shard_size: int, lim: Limits, problems: _Problems) -> None:
    """A meta split's dims, largest n, sample count, sample memory and shard size (a Parquet column caps the
    values one shard can hold)."""
    for side, (_, hi) in (("x", split.dims.x), ("y", split.dims.y)):
        if hi > lim.max_dim:
            _over(problems, f"{where}.dims.{side}", f"dim_{side}", hi, "max_dim", lim.max_dim)
    n_max = _split_n_max(split)
    if n_max is not None and n_max > lim.max_n:
        _over(problems, f"{where}", "largest n", n_max, "max_n", lim.max_n)
    if split.count is not None and split.count > lim.max_cells:
        _over(problems, f"{where}.count", "samples", split.count, "max_cells", lim.max_cells)
    if split.n_grid is not None:
        grid_len = len(split.n_grid) if isinstance(split.n_grid, list) else int(split.n_grid.linspace[2])
        total = len(split.mixture) * split.distributions_per_entry * grid_len * split.replicates
        if total > lim.max_cells:
            what = "samples (entries x distributions x n_grid x replicates)"
            _over(problems, where, what, total, "max_cells", lim.max_cells)
    if n_max is not None and split.dims.x[1] <= lim.max_dim and split.dims.y[1] <= lim.max_dim:
        mib = sample_mib(n_max, split.dims.x[1], split.dims.y[1])
        if mib > lim.max_sample_mib:
            _over(problems, where, "largest sample memory (MiB)", round(mib), "max_sample_mib", lim.max_sample_mib)
        shard = split.shard_size or default_shard_size
        values = shard * n_max * max(split.dims.x[1], split.dims.y[1])
        if values > SHARD_VALUES_LIMIT:
            problems.add(
                f"{where}: a shard of {shard} samples of up to n={n_max} x {max(split.dims.x[1], split.dims.y[1])} "
                f"dims holds {values:,} values per column, over Parquet's {SHARD_VALUES_LIMIT:,}; lower "
                f"{where}.shard_size"
            )


def _smallest_n(plan: BenchmarkPlan) -> tuple[int, str]:
    if plan.from_splits:
        assert plan.split_plans is not None
        low, split = min((p.n_bounds[0], name) for name, p in plan.split_plans.items())
        return low, f"config.meta.splits.{split}"
    return min(plan.ns), f"config.benchmarks.{plan.name}.n"


def _checkpoint_check(label: str, resolved: ResolvedEstimator, config: Config, problems: _Problems) -> None:
    """A ``checkpoint`` must be a model this config trains, or a file that exists."""
    path = resolved.params.get("checkpoint")
    if not isinstance(path, str):
        return
    if weights_model(path) in config.models or Path(path).exists():
        return
    trained = ", ".join(sorted(str(model_files(name)[0]) for name in config.models)) or "none (config.models is empty)"
    problems.add(
        f"config.estimators.{label}.checkpoint: {path!r} does not exist and no config.models entry trains it "
        f"(trained here: {trained})"
    )


def resolve_config(
    config: Config | Mapping[str, Any] | str | os.PathLike | Sequence[str | os.PathLike],
    source: str | None = None,
) -> Resolved:
    """Check a whole config and build its plans; one :class:`ConfigError` lists every problem found."""
    problems = _Problems()
    config = as_config(config)
    resolved = Resolved(config)
    _limit_checks(config, problems)
    if problems.lines:  # sizes first: building plans of an oversized config is what must not happen
        problems.raise_if_any(source)
    with problems.collect():
        resolved.splits = split_plans(config)
    for label, entry in config.estimators.items():
        with problems.collect():
            resolved.estimators[label] = resolve_entry(label, entry)
            _checkpoint_check(label, resolved.estimators[label], config, problems)
    for name, entry in config.models.items():
        with problems.collect():
            spec = entry.spec(name)
            resolved.models[name] = spec
            for problem in missing_model_splits(config, name, spec):
                problems.add(problem)
    for name in config.benchmarks:
        with problems.collect():
            plan = BenchmarkPlan.from_config(name, config)
            resolved.benchmarks[name] = plan
            low, where = _smallest_n(plan)
            too_small = [
                f"{label} ({resolved.estimators[label].min_n})"
                for label in plan.estimators
                if label in resolved.estimators and low < resolved.estimators[label].min_n
            ]
            if too_small:
                problems.add(
                    f"{where}: n = {low} is below the smallest sample of estimator(s) {', '.join(too_small)} "
                    f"(benchmark {name!r}); raise n or drop them from config.benchmarks.{name}.estimators"
                )
    problems.raise_if_any(source)
    return resolved
