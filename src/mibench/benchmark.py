"""Benchmarks: which cells (task, n, seed) each estimator sees, and how cells are grouped into jobs.

A benchmark is configured under ``benchmarks: {name: {...}}`` in one of two forms:

* **task grid** — explicit ``tasks`` (family, structure, dims, params, transform) × ``n`` × ``seeds``
  replicates. Data are generated on the fly from each cell's seed (cheap, exact, nothing stored), so a
  100k-cell benchmark needs no disk for samples. Cells are grouped into parts of ``cells_per_job``.
* **meta splits** — ``splits: [test_imd, ...]``: every sample of those meta-dataset splits is a cell;
  one part per shard, so the estimate job depends on exactly the shard it reads.

Seeds of task-grid cells come from ``SeedSequence(root_seed).spawn`` keys ``(task, n index, replicate)``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import numpy as np

from mibench.config import Config, ConfigError, TaskConfig, as_config
from mibench.layout import shard_path
from mibench.meta.plan import SplitPlan, split_plans
from mibench.meta.shards import ShardError, read_shard_meta, read_shards, sample_id
from mibench.tasks import Task, TaskSpec, parse_entry


@dataclass(frozen=True)
class Cell:
    """One estimation problem: a sample of a task at size n with a seed, and its true MI."""

    sample_id: str
    task: str
    spec: TaskSpec
    n: int
    seed: int
    mi: float
    split: str | None = None


@dataclass(frozen=True)
class NamedTask:
    name: str
    spec: TaskSpec
    task: Task

    @property
    def mi(self) -> float:
        """Exact MI (computed on first use: Monte-Carlo families cost a fraction of a second)."""
        return float(self.task.mi)


def task_from_config(item: TaskConfig, where: str) -> NamedTask:
    """A grid task built strictly (unknown families, structures or parameters are errors naming ``where``)."""
    try:
        family, structure, transform = parse_entry(item.entry_text)
        dim_x, dim_y = item.dims
        spec = TaskSpec(family, structure, int(dim_x), int(dim_y), dict(item.params), transform)
        task = spec.build(strict=True)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    name = item.name or f"{spec.entry}-{spec.dim_x}x{spec.dim_y}"
    return NamedTask(str(name), spec, task)


@dataclass(frozen=True)
class BenchmarkPlan:
    name: str
    estimators: tuple[str, ...]
    levels: tuple[float, ...]
    timeout_s: float
    n_bins: tuple[float, ...] | None
    dim_bins: tuple[int, ...]
    hard_timeout_s: float | None = None
    checkpoint_s: float = 30.0
    # task grid
    tasks: tuple[NamedTask, ...] = ()
    ns: tuple[int, ...] = ()
    seeds: int = 1
    root_seed: int = 0
    cells_per_job: int = 200
    # meta splits
    splits: tuple[str, ...] = ()
    split_plans: Mapping[str, SplitPlan] | None = None

    @classmethod
    def from_config(cls, name: str, config: Config | Mapping[str, Any]) -> BenchmarkPlan:
        """The plan of ``config.benchmarks.<name>``; every reference (estimators, splits, tasks) is checked."""
        config = as_config(config)
        where = f"config.benchmarks.{name}"
        if name not in config.benchmarks:
            raise ConfigError(
                f"config.benchmarks has no benchmark {name!r}; benchmarks: {', '.join(config.benchmarks)}"
            )
        bench = config.benchmarks[name]
        for i, label in enumerate(bench.estimators):
            if label not in config.estimators:
                close = get_close_matches(label, list(config.estimators), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"{where}.estimators[{i}]: {label!r} is not defined under config.estimators.{hint} "
                    f"(defined: {', '.join(sorted(config.estimators)) or 'none'})"
                )
        common = dict(
            name=name,
            estimators=tuple(bench.estimators),
            levels=tuple(bench.levels),
            timeout_s=float(bench.timeout_s),
            n_bins=tuple(bench.n_bins) if bench.n_bins else None,
            dim_bins=tuple(bench.dim_bins),
            hard_timeout_s=bench.hard_timeout_s,
            checkpoint_s=float(bench.checkpoint_s),
        )
        if bench.splits is not None:
            plans = split_plans(config)
            for i, split in enumerate(bench.splits):
                if split not in plans:
                    raise ConfigError(
                        f"{where}.splits[{i}]: no meta split {split!r} (splits: {', '.join(plans) or 'none'})"
                    )
            return cls(**common, splits=tuple(bench.splits), split_plans={s: plans[s] for s in bench.splits})
        assert bench.tasks is not None and bench.n is not None
        tasks = tuple(task_from_config(item, f"{where}.tasks[{i}]") for i, item in enumerate(bench.tasks))
        names = [t.name for t in tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{where}.tasks: duplicate task names {dupes}; give each a distinct 'name'")
        return cls(
            **common,
            tasks=tasks,
            ns=tuple(bench.n),
            seeds=bench.seeds,
            root_seed=bench.root_seed,
            cells_per_job=bench.cells_per_job,
        )

    @property
    def hard_limit_s(self) -> float:
        """Wall time after which a cell that ignores its ``timeout_s`` (stuck in C code) has its process stopped."""
        return self.hard_timeout_s or 2 * self.timeout_s + 60

    # -- sizes and parts ---------------------------------------------------------------------------
    @property
    def from_splits(self) -> bool:
        return bool(self.splits)

    @property
    def n_cells(self) -> int:
        if self.from_splits:
            assert self.split_plans is not None
            return sum(p.total for p in self.split_plans.values())
        return len(self.tasks) * len(self.ns) * self.seeds

    @property
    def n_parts(self) -> int:
        if self.from_splits:
            assert self.split_plans is not None
            return sum(p.n_shards for p in self.split_plans.values())
        return math.ceil(self.n_cells / self.cells_per_job)

    def part_shard(self, part: int) -> tuple[str, int] | None:
        """For split benchmarks, the (split, shard) a part reads; None for task grids."""
        if not self.from_splits:
            return None
        assert self.split_plans is not None
        for split in self.splits:
            count = self.split_plans[split].n_shards
            if part < count:
                return split, part
            part -= count
        raise IndexError(f"benchmark {self.name!r} has parts 0..{self.n_parts - 1}")

    def part_inputs(self, part: int, meta_root: str = "results/meta") -> list[str]:
        where = self.part_shard(part)
        return [] if where is None else [str(shard_path(meta_root, *where))]

    def _grid_draw(self, index: int) -> tuple[NamedTask, int, int, str]:
        """(task, n, seed, sample id) of grid cell ``index``; no data and no MI computed."""
        per_task = len(self.ns) * self.seeds
        t, rest = divmod(index, per_task)
        n_idx, rep = divmod(rest, self.seeds)
        task, n = self.tasks[t], self.ns[n_idx]
        seed_seq = np.random.SeedSequence(self.root_seed, spawn_key=(t, n_idx, rep))
        seed = int(seed_seq.generate_state(1, np.uint64)[0] >> np.uint64(1))
        spec = task.spec
        sid = sample_id(spec.family, spec.structure, spec.transform, spec.params_json, spec.dim_x, spec.dim_y, n, seed)
        return task, n, seed, sid

    def grid_cell(self, index: int) -> Cell:
        task, n, seed, sid = self._grid_draw(index)
        return Cell(sid, task.name, task.spec, n, seed, task.mi)

    def part_size(self, part: int) -> int:
        """Cells in a part (from the plan alone)."""
        where = self.part_shard(part)
        if where is None:
            return max(0, min(self.cells_per_job, self.n_cells - part * self.cells_per_job))
        assert self.split_plans is not None
        return len(self.split_plans[where[0]].shard_range(where[1]))

    def part_sample_ids(self, part: int) -> list[str]:
        """The sample ids of a part's cells in order, from the plan alone (no data drawn, no shard read).

        What a complete estimates part of this benchmark holds, each exactly once.
        """
        if not 0 <= part < self.n_parts:
            raise IndexError(f"benchmark {self.name!r} has parts 0..{self.n_parts - 1}, asked for {part}")
        where = self.part_shard(part)
        if where is None:
            start = part * self.cells_per_job
            return [self._grid_draw(i)[3] for i in range(start, min(start + self.cells_per_job, self.n_cells))]
        split, shard = where
        assert self.split_plans is not None
        plan, ids = self.split_plans[split], []
        for i in plan.shard_range(shard):
            p = plan.sample(i)
            s = p.spec
            ids.append(sample_id(s.family, s.structure, s.transform, s.params_json, s.dim_x, s.dim_y, p.n, p.seed))
        return ids

    def grid_truths(self) -> dict[str, float]:
        """Task name -> exact MI for task grids (empty for meta splits, whose truths live in the shards)."""
        return {t.name: t.mi for t in self.tasks}

    def part_grid_cells(self, part: int) -> list[Cell]:
        """The cells of a task-grid part (nothing sampled)."""
        if not 0 <= part < self.n_parts:
            raise IndexError(f"benchmark {self.name!r} has parts 0..{self.n_parts - 1}, asked for {part}")
        start = part * self.cells_per_job
        return [self.grid_cell(i) for i in range(start, min(start + self.cells_per_job, self.n_cells))]

    def part_cells(
        self, part: int, meta_root: str | os.PathLike = "results/meta"
    ) -> Iterator[tuple[Cell, np.ndarray, np.ndarray] | tuple[Cell, BaseException, None]]:
        """Yield (cell, x, y) for every cell of a part; a cell whose data cannot be made yields the error."""
        if not 0 <= part < self.n_parts:
            raise IndexError(f"benchmark {self.name!r} has parts 0..{self.n_parts - 1}, asked for {part}")
        where = self.part_shard(part)
        if where is None:
            per_task = len(self.ns) * self.seeds
            start = part * self.cells_per_job
            for offset, cell in enumerate(self.part_grid_cells(part)):
                try:
                    x, y = self.tasks[(start + offset) // per_task].task.sample(cell.n, cell.seed)
                except Exception as exc:  # recorded as an error row
                    yield cell, exc, None
                    continue
                yield cell, x, y
            return
        split, shard = where
        yield from shard_cells(shard_path(meta_root, split, shard), split, self.part_sample_ids(part), shard)


def shard_cells(
    path: str | os.PathLike, split: str, planned: Sequence[str] | None = None, shard: int | None = None
) -> Iterator[tuple[Cell, np.ndarray, np.ndarray] | tuple[Cell, BaseException, None]]:
    """Yield (cell, x, y) for every sample of one meta-dataset shard (x, y as float64).

    ``planned``: the sample ids the plan puts in this shard, in order; a well-formed shard of another
    configuration (other seeds, mixture, shard size) is then refused by name.
    """
    check = None
    if planned is not None:  # runs after read_shards' own content checks (more specific messages), even for no rows

        def check(_: Path, held: list[str]) -> None:
            check_shard_is_planned(Path(path), split, shard, planned, held)

    for x, y, meta in read_shards(path, check_ids=check):
        spec = TaskSpec.from_row(meta)
        cell = Cell(meta["sample_id"], spec.entry, spec, int(meta["n"]), int(meta["seed"]), meta["mi"], split=split)
        yield cell, x.astype(np.float64), y.astype(np.float64)


def check_shard_is_planned(
    path: Path, split: str, shard: int | None, planned: Sequence[str], held: Sequence[str] | None = None
) -> None:
    """A well-formed shard of another configuration (other seeds, mixture, shard size) is refused by name.

    ``held``: the shard's sample ids when already read (else they are read from ``path``).
    """
    if held is None:
        held = read_shard_meta(path, ["sample_id"]).column("sample_id").to_pylist()
    held = list(held)
    if held != list(planned):
        planned_set = set(planned)
        foreign = [sid for sid in held if sid not in planned_set]
        detail = (
            f"{len(foreign)} of its {len(held)} samples (e.g. {foreign[0]}) are not planned there"
            if foreign
            else f"it holds {len(held)} samples, the plan {len(planned)} (or another order)"
        )
        raise ShardError(
            f"{path}: not shard {shard} of split {split!r} as configured: {detail}. It comes from another "
            "configuration or was copied in: delete it and re-run to regenerate it"
        )


def benchmark_plans(config: Config | Mapping[str, Any]) -> dict[str, BenchmarkPlan]:
    config = as_config(config)
    return {name: BenchmarkPlan.from_config(name, config) for name in config.benchmarks}


def bin_label(value: float, edges: Sequence[float], closed: str = "left") -> str:
    """Label of the bin holding ``value``; 'other' outside the edges.

    ``closed="left"``: half-open bins [a, b), the last one closed ('[10,300)', '[300,1000]').
    ``closed="right"``: bins (a, b], the first one closed ('[10,100]', '(100,300]': the MIST paper's n-bins).
    """
    if closed not in ("left", "right"):
        raise ValueError(f"closed must be 'left' or 'right', got {closed!r}")
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        if closed == "right":
            if (lo < value or (i == 0 and value == lo)) and value <= hi:
                return f"{'[' if i == 0 else '('}{lo:g},{hi:g}]"
        elif lo <= value < hi or (hi == edges[-1] and value == hi):
            return f"[{lo:g},{hi:g}{']' if hi == edges[-1] else ')'}"
    return "other"
