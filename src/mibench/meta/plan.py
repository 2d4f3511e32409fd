"""From a split's config to the exact list of samples: entry, dims, n, parameters and seed for each.

Seeding (never the global RNG): with ``root = SeedSequence(root_seed)`` and ``params_root, data_root =
root.spawn(2)``,

* every *distribution* d draws its entry, dims, n and parameters from ``params_root.spawn(...)[d]``
  (spawn key ``(0, d)``);
* every *sample* i draws its data from ``default_rng(seed_i)``, where ``seed_i`` is a 63-bit integer from
  ``data_root.spawn(...)[i]`` (spawn key ``(1, i)``) and is stored in the ``seed`` column, so any row can be
  regenerated from (family, structure, transform, dims, params, n, seed) alone.

In *random* mode (training) every sample is its own distribution. In *grid* mode (test splits) each
entry gets ``distributions_per_entry`` draws, each used at every n of ``n_grid`` with ``replicates`` samples:

* ``replicates_share: distribution`` (default): a draw is a whole distribution (dims and parameters) and its
  replicates are independent samples of it, so the sampling distribution of an estimator can be studied;
* ``replicates_share: dims`` (MIST's grid): a draw is only the dims, made afresh for every (entry, n), and
  each replicate draws its own parameters and sample: different distributions sharing (n, entry, d). Spawn
  key ``(0, g)`` draws group g's dims and ``(0, g, r)`` replicate r's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

import numpy as np

from mibench.config import Config, ConfigError, SplitConfig, as_config
from mibench.config.base import parse_model
from mibench.config.schema import Linspace
from mibench.tasks import TaskParameterError, TaskSpec, TransformSpec, get_family, parse_entry
from mibench.tasks.base import LAWS


def spawned(root_seed: int, *key: int) -> np.random.SeedSequence:
    """The child ``SeedSequence(root_seed).spawn(...)`` reaches by the spawn key path ``key``."""
    return np.random.SeedSequence(root_seed, spawn_key=key)


def sample_seed(root_seed: int, index: int) -> int:
    """The 63-bit data seed of sample ``index`` (fits the int64 ``seed`` column)."""
    return int(spawned(root_seed, 1, index).generate_state(1, np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class Entry:
    family: str
    structure: str
    transform: str
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.family}-{self.structure}-{self.transform}"


@dataclass(frozen=True)
class PlannedSample:
    index: int
    spec: TaskSpec
    n: int
    seed: int
    distribution: int  # index of the parameter draw this sample belongs to


@dataclass(frozen=True)
class SplitPlan:
    name: str
    root_seed: int
    entries: tuple[Entry, ...]
    dims_x: tuple[int, int]
    dims_y: tuple[int, int]
    tied: bool
    #: parameter overrides keyed by family or ``family-structure``: name -> (lo, hi) or (lo, hi, law)
    ranges: Mapping[str, Mapping[str, tuple]]
    shard_size: int
    # random mode
    count: int | None = None
    n_range: tuple[int, int] | None = None
    # grid mode
    n_grid: tuple[int, ...] | None = None
    replicates: int = 1
    distributions_per_entry: int = 1
    replicates_share: str = "distribution"

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, split: SplitConfig | Mapping[str, Any], default_shard_size: int = 500) -> SplitPlan:
        """The plan of ``config.meta.splits.<name>`` (typed, or plain data validated here)."""
        where = f"config.meta.splits.{name}"
        if not isinstance(split, SplitConfig):
            split = parse_model(SplitConfig, split, where)
        entries = []
        for i, item in enumerate(split.mixture):
            text, weight = (item, 1.0) if isinstance(item, str) else (item.entry, item.weight)
            try:
                family, structure, transform = parse_entry(text)
            except ValueError as exc:
                raise ConfigError(f"{where}.mixture[{i}]: {exc}") from None
            entries.append(Entry(family, structure, transform, weight))

        ranges = _parameter_overrides(where, split.plain_params())

        common = dict(
            name=name,
            root_seed=split.root_seed,
            entries=tuple(entries),
            dims_x=tuple(split.dims.x),
            dims_y=tuple(split.dims.y),
            tied=split.dims.tied,
            ranges=ranges,
            shard_size=split.shard_size or default_shard_size,
        )
        if split.n_grid is None:
            assert split.count is not None and split.n is not None
            plan = cls(**common, count=split.count, n_range=(split.n.low, split.n.high))
        else:
            plan = cls(
                **common,
                n_grid=_n_grid(where, split.n_grid),
                replicates=split.replicates,
                distributions_per_entry=split.distributions_per_entry,
                replicates_share=split.replicates_share,
            )
        for i, entry in enumerate(plan.entries):
            try:
                plan.dim_bounds(entry)
                plan.probe(entry)
            except (ConfigError, TaskParameterError) as exc:
                raise ConfigError(f"{where}.mixture[{i}] {entry.name!r}: {exc}") from None
        return plan

    @property
    def n_bounds(self) -> tuple[int, int]:
        """Smallest and largest sample size of the split."""
        if self.n_grid is not None:
            return min(self.n_grid), max(self.n_grid)
        assert self.n_range is not None
        return self.n_range

    # -- sizes -------------------------------------------------------------------------------------
    @property
    def is_grid(self) -> bool:
        return self.n_grid is not None

    @property
    def total(self) -> int:
        if self.is_grid:
            assert self.n_grid is not None
            return len(self.entries) * self.distributions_per_entry * len(self.n_grid) * self.replicates
        assert self.count is not None
        return self.count

    @property
    def n_distributions(self) -> int:
        """Distinct distributions (a ``replicates_share: dims`` grid draws one per sample)."""
        if self.is_grid and self.replicates_share == "distribution":
            return len(self.entries) * self.distributions_per_entry
        return self.total

    @property
    def n_shards(self) -> int:
        return math.ceil(self.total / self.shard_size)

    def shard_range(self, shard: int) -> range:
        if not 0 <= shard < self.n_shards:
            raise IndexError(f"split {self.name!r} has shards 0..{self.n_shards - 1}, asked for {shard}")
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.total))

    # -- drawing -----------------------------------------------------------------------------------
    def dim_bounds(self, entry: Entry) -> tuple[tuple[int, int], tuple[int, int]]:
        """Feasible (dim_x, dim_y) ranges of the *distribution* of an entry: config ranges tightened by the
        family's and the transforms' needs (a dimension-changing transform such as swissroll fixes its side's
        base dimension; the sample then has the transform's output dimension)."""
        family = get_family(entry.family)
        fam_x, fam_y = family.min_dims(entry.structure)
        spec = TransformSpec.parse(entry.transform)
        try:
            (tr_x, fix_x), (tr_y, fix_y) = spec.base_dim_bounds("x"), spec.base_dim_bounds("y")
        except TaskParameterError as exc:
            raise ConfigError(str(exc)) from None
        lo_x, hi_x = max(self.dims_x[0], fam_x, tr_x), self.dims_x[1]
        lo_y, hi_y = max(self.dims_y[0], fam_y, tr_y), self.dims_y[1]
        if fix_x is not None:
            lo_x, hi_x = max(lo_x, fix_x), min(hi_x, fix_x)
        if fix_y is not None:
            lo_y, hi_y = max(lo_y, fix_y), min(hi_y, fix_y)
        if family.fixed_dim_x is not None:
            lo_x = hi_x = family.fixed_dim_x
            if tr_x > lo_x:
                raise ConfigError(f"transform needs dim_x >= {tr_x} but {family.name} has dim_x = {lo_x}")
        if family.same_dims or (self.tied and family.fixed_dim_x is None):
            lo_x = lo_y = max(lo_x, lo_y)
            hi_x = hi_y = min(hi_x, hi_y)
        if lo_x > hi_x or lo_y > hi_y:
            raise ConfigError(
                f"no feasible dimensions: needs dim_x in [{lo_x}, {hi_x}] and dim_y in [{lo_y}, {hi_y}] "
                f"(config dims x={list(self.dims_x)}, y={list(self.dims_y)}, tied={self.tied})"
            )
        return (lo_x, hi_x), (lo_y, hi_y)

    def entry_ranges(self, entry: Entry) -> dict[str, tuple]:
        """The overrides an entry draws with: its family's, then its ``family-structure``'s on top."""
        return {**self.ranges.get(entry.family, {}), **self.ranges.get(f"{entry.family}-{entry.structure}", {})}

    def _draw_dims(self, rng: np.random.Generator, entry: Entry) -> tuple[int, int]:
        family = get_family(entry.family)
        (lo_x, hi_x), (lo_y, hi_y) = self.dim_bounds(entry)
        dim_x = int(rng.integers(lo_x, hi_x + 1))
        tied = family.same_dims or (self.tied and family.fixed_dim_x is None)
        dim_y = dim_x if tied else int(rng.integers(lo_y, hi_y + 1))
        return dim_x, dim_y

    def _draw_params(self, rng: np.random.Generator, entry: Entry, dims: tuple[int, int]) -> TaskSpec:
        family = get_family(entry.family)
        params = family.draw_params(rng, entry.structure, dims[0], dims[1], self.entry_ranges(entry))
        out_x, out_y = TransformSpec.parse(entry.transform).output_dims(*dims)
        return TaskSpec(entry.family, entry.structure, out_x, out_y, params, entry.transform)

    def _draw_distribution(self, rng: np.random.Generator, entry: Entry) -> TaskSpec:
        return self._draw_params(rng, entry, self._draw_dims(rng, entry))

    def probe(self, entry: Entry, draws: int = 4) -> None:
        """Build a few draws of an entry whose transforms can saturate (normal_cdf), so a combination that is
        always refused fails when the config is read, not when its shard is generated. Uses its own seeds."""
        if "normal_cdf" not in entry.transform:
            return
        rng = np.random.default_rng([0x9B0BE, self.root_seed])
        for _ in range(draws):
            self._draw_distribution(rng, entry).build()

    def sample(self, index: int) -> PlannedSample:
        """The fully determined sample ``index`` (no data drawn yet)."""
        if not 0 <= index < self.total:
            raise IndexError(f"split {self.name!r} has samples 0..{self.total - 1}, asked for {index}")
        if self.is_grid and self.replicates_share == "dims":
            assert self.n_grid is not None
            # groups in entry-major order: (entry, draw, n); each group shares its dims across replicates
            group, rep = divmod(index, self.replicates)
            entry_draw, n_idx = divmod(group, len(self.n_grid))
            entry = self.entries[entry_draw // self.distributions_per_entry]
            dims = self._draw_dims(np.random.default_rng(spawned(self.root_seed, 0, group)), entry)
            spec = self._draw_params(np.random.default_rng(spawned(self.root_seed, 0, group, rep)), entry, dims)
            n, distribution = self.n_grid[n_idx], index
        elif self.is_grid:
            assert self.n_grid is not None
            per_dist = len(self.n_grid) * self.replicates
            distribution, rest = divmod(index, per_dist)
            n = self.n_grid[rest // self.replicates]
            entry = self.entries[distribution // self.distributions_per_entry]
            rng = np.random.default_rng(spawned(self.root_seed, 0, distribution))
            spec = self._draw_distribution(rng, entry)
        else:
            assert self.n_range is not None
            distribution = index
            rng = np.random.default_rng(spawned(self.root_seed, 0, index))
            weights = np.array([e.weight for e in self.entries])
            entry = self.entries[int(rng.choice(len(self.entries), p=weights / weights.sum()))]
            n = int(rng.integers(self.n_range[0], self.n_range[1] + 1))
            spec = self._draw_distribution(rng, entry)
        return PlannedSample(index, spec, int(n), sample_seed(self.root_seed, index), distribution)


def _parameter_overrides(where: str, raw: Mapping[str, Any]) -> dict[str, dict[str, tuple]]:
    """``params: {family or family-structure: {name: [lo, hi] | {law: [lo, hi]}}}`` checked and normalised."""
    ranges: dict[str, dict[str, tuple]] = {}
    for key, overrides in raw.items():
        family_name, _, structure = str(key).partition("-")
        try:
            family = get_family(family_name)
            if structure:
                family.check_structure(structure)
        except ValueError as exc:
            raise ConfigError(f"{where}.params: {exc}") from None
        known = family.parameter_names(structure or None)
        for name, value in overrides.items():
            if name not in known:
                close = get_close_matches(name, list(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"{where}.params.{key}.{name}: unknown parameter{hint} {key} draws: {', '.join(known)}"
                )
            law = None
            if isinstance(value, Mapping):
                if len(value) != 1 or next(iter(value)) not in LAWS:
                    raise ConfigError(
                        f"{where}.params.{key}.{name}: give [low, high] or one of "
                        f"{', '.join(f'{{{law}: [low, high]}}' for law in LAWS)}, got {dict(value)}"
                    )
                law, value = next(iter(value.items()))
            lo, hi = value
            if lo > hi:
                raise ConfigError(f"{where}.params.{key}.{name}: low {lo} > high {hi}")
            if law == "log_uniform" and lo <= 0:
                raise ConfigError(f"{where}.params.{key}.{name}: a log_uniform law needs low > 0, got {lo}")
            ranges.setdefault(str(key), {})[name] = (lo, hi) if law is None else (lo, hi, law)
    return ranges


def _n_grid(where: str, grid: Linspace | list[int]) -> tuple[int, ...]:
    """A list of sizes, or ``{linspace: [lo, hi, num], rounding: round|truncate}`` (checked by the model).

    ``truncate`` is ``numpy.linspace(lo, hi, num, dtype=int)`` (MIST's grid: 10, 35, 61, ...), ``round`` (the
    default) rounds to the nearest integer (10, 36, 62, ...).
    """
    if not isinstance(grid, Linspace):
        return tuple(int(v) for v in grid)
    lo, hi, num = grid.linspace
    if grid.rounding == "truncate":
        return tuple(int(v) for v in np.linspace(lo, hi, int(num), dtype=int))
    return tuple(round(float(v)) for v in np.linspace(lo, hi, int(num)))


def split_plans(config: Config | Mapping[str, Any]) -> dict[str, SplitPlan]:
    """All split plans of a config; checks that seed roots are pairwise disjoint."""
    config = as_config(config)
    if config.meta is None:
        return {}
    plans = {
        name: SplitPlan.from_config(name, split, config.meta.shard_size) for name, split in config.meta.splits.items()
    }
    seen: dict[int, str] = {}
    for name, plan in plans.items():
        if plan.root_seed in seen:
            raise ConfigError(
                f"config.meta.splits.{name}.root_seed: {plan.root_seed} is also the root seed of split "
                f"{seen[plan.root_seed]!r}; every split needs its own seed root"
            )
        seen[plan.root_seed] = name
    return plans


def build_checked(plan: SplitPlan, planned: PlannedSample):
    """Build the task of a planned sample, turning a parameter error into one that names the sample."""
    try:
        return planned.spec.build()
    except TaskParameterError as exc:
        raise ConfigError(
            f"split {plan.name!r} sample {planned.index} ({planned.spec.entry}, dims "
            f"{planned.spec.dim_x}x{planned.spec.dim_y}): {exc}; check config.meta.splits.{plan.name}.params"
        ) from None
