"""Training data: samples generated on the fly from a split's plan, or streamed from its shards.

Both sources are cut the same way: epoch ``e`` is a permutation (seeded by ``(seed, e)``) of the source's
samples; consecutive runs of ``bucket_pool × batch_size`` samples form a *pool*; a pool is normalised,
bucketed by size (:func:`~mibench.learned.batching.buckets`) and cut into ``bucket_pool`` batches whose order
is shuffled. Batch number g of the whole run is therefore a pure function of (seed, g): training is
deterministic given seeds, and a resumed run sees exactly the batches an uninterrupted one would have.
Memory is bounded by a pool per worker; a 625k-sample split is never loaded at once.

* ``generate``: sample ``i`` is ``plan.sample(i)`` built and drawn with its own seed - the very sample the
  shard generator writes for index ``i`` (indices beyond the split's ``count`` continue the same seed stream).
* ``shards``: the epoch permutes shards (not rows); a pool reads only the shards that cover its rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mibench.learned.batching import Batch, buckets, collate, prepare
from mibench.meta.generate import stored_sample
from mibench.meta.plan import SplitPlan, build_checked
from mibench.meta.shards import read_shard_meta, read_shards, shard_paths


class Source:
    """A finite, indexable collection of training samples (x, y, mi)."""

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def fetch(self, positions: np.ndarray, order: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        raise NotImplementedError  # pragma: no cover - interface

    def describe(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError


class GeneratedSource(Source):
    """Samples ``0..count-1`` of a split plan, drawn on demand."""

    def __init__(self, plan: SplitPlan, count: int | None = None) -> None:
        count = plan.total if count is None else int(count)
        if plan.is_grid:  # a grid has exactly its planned samples (MIST's validation split is one)
            if count > plan.total:
                raise ValueError(f"split {plan.name!r} is a grid split of {plan.total} samples; asked for {count}")
            self.plan = plan
        else:  # indices beyond a random split's count continue its seed stream
            self.plan = dataclasses.replace(plan, count=max(count, plan.total))
        self.count = count

    def __len__(self) -> int:
        return self.count

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch, 0x5EED]).permutation(self.count)

    def draw(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        planned = self.plan.sample(int(index))
        task = build_checked(self.plan, planned)
        x, y = stored_sample(self.plan, planned, task)  # the same float32 values a shard stores for this sample
        return x, y, float(task.mi)

    def fetch(self, positions: np.ndarray, order: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        return [self.draw(order[p]) for p in positions]

    def describe(self) -> dict[str, Any]:
        return {"source": "generate", "split": self.plan.name, "root_seed": self.plan.root_seed, "count": self.count}


class ShardSource(Source):
    """Rows of a split's shards; epochs permute the shard order, pools read only the shards they need."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("no shards given")
        self.rows = np.array([read_shard_meta(p, ["n"]).num_rows for p in self.paths])
        self.count = int(self.rows.sum())

    def __len__(self) -> int:
        return self.count

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        shard_order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(self.paths))
        starts = np.concatenate([[0], np.cumsum(self.rows)[:-1]])
        # global row ids in the epoch's order: whole shards, shuffled
        return np.concatenate([starts[s] + np.arange(self.rows[s]) for s in shard_order])

    def fetch(self, positions: np.ndarray, order: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        wanted = order[positions]
        ends = np.cumsum(self.rows)
        shard_of = np.searchsorted(ends, wanted, side="right")
        out: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
        for shard in dict.fromkeys(shard_of.tolist()):  # in order of first appearance
            start = int(ends[shard] - self.rows[shard])
            need = set((wanted[shard_of == shard] - start).tolist())
            for row, (x, y, meta) in enumerate(read_shards(self.paths[shard])):
                if row in need:
                    out[start + row] = (x, y, float(meta["mi"]))
        return [out[int(g)] for g in wanted]

    def describe(self) -> dict[str, Any]:
        return {"source": "shards", "shards": [str(p) for p in self.paths], "count": self.count}


def make_source(kind: str, plan: SplitPlan, count: int | None = None, shard_root: str | Path = "results/meta"):
    """The configured source for ``plan``'s split (``shards`` reads ``shard_root/<split>/shard-*.parquet``)."""
    if kind == "generate":
        return GeneratedSource(plan, count)
    paths = shard_paths(str(Path(shard_root) / plan.name / "shard-*.parquet"))
    if not paths:
        raise ValueError(f"no shards for split {plan.name!r} under {Path(shard_root) / plan.name}")
    return ShardSource(paths)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How global batch numbers map onto epochs and pools."""

    count: int
    batch_size: int
    pool: int  # batches per pool

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.count // self.batch_size)

    @property
    def pools_per_epoch(self) -> int:
        return -(-self.batches_per_epoch // self.pool)

    def locate(self, batch: int) -> tuple[int, int, int]:
        """Global batch number -> (epoch, pool in epoch, slot in pool)."""
        epoch, within = divmod(batch, self.batches_per_epoch)
        pool, slot = divmod(within, self.pool)
        return epoch, pool, slot

    def pool_batches(self, pool: int) -> int:
        return min(self.pool, self.batches_per_epoch - pool * self.pool)


class PoolDataset(torch.utils.data.Dataset):
    """Map-style dataset whose item ``(epoch, pool)`` is the list of that pool's padded batches."""

    def __init__(self, source: Source, schedule: Schedule, seed: int, normalisation: str) -> None:
        self.source, self.schedule, self.seed, self.normalisation = source, schedule, seed, normalisation
        self._order_cache: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        if self._order_cache is None or self._order_cache[0] != epoch:
            self._order_cache = (epoch, self.source.epoch_order(self.seed, epoch))
        return self._order_cache[1]

    def __len__(self) -> int:  # not used by the sampler; keeps DataLoader happy
        return 1 << 62

    def __getitem__(self, key: tuple[int, int]) -> list[Batch]:
        epoch, pool = key
        sch = self.schedule
        n_batches = sch.pool_batches(pool)
        start = pool * sch.pool * sch.batch_size
        positions = np.arange(start, start + n_batches * sch.batch_size)
        samples = self.source.fetch(positions, self.order(epoch))
        prepared = [prepare(x, y, self.normalisation) for x, y, _ in samples]
        sizes = [(zx.shape[0], zx.shape[1], zy.shape[1]) for zx, zy in prepared]
        groups = buckets(sizes, sch.batch_size)
        rng = np.random.default_rng([self.seed, epoch, pool, 0xB0C])
        groups = [groups[i] for i in rng.permutation(len(groups))]
        return [collate([prepared[i] for i in g], [samples[i][2] for i in g]) for g in groups]


def _one_thread(_: int) -> None:
    """Data workers draw samples with numpy/scipy: one BLAS/torch thread each, or 12 workers oversubscribe."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    torch.set_num_threads(1)


class _PoolKeys:
    """Lazy (epoch, pool) keys covering batches ``start..stop-1`` (``stop`` may be huge: steps: auto)."""

    def __init__(self, schedule: Schedule, start: int, stop: int) -> None:
        self.schedule, self.start, self.stop = schedule, start, stop

    def __iter__(self) -> Iterator[tuple[int, int]]:
        first_epoch, first_pool, _ = self.schedule.locate(self.start)
        last_epoch, last_pool, _ = self.schedule.locate(self.stop - 1)
        for epoch in range(first_epoch, last_epoch + 1):
            lo = first_pool if epoch == first_epoch else 0
            hi = last_pool if epoch == last_epoch else self.schedule.pools_per_epoch - 1
            for pool in range(lo, hi + 1):
                yield epoch, pool


def batch_stream(
    source: Source,
    *,
    batch_size: int,
    pool: int,
    seed: int,
    normalisation: str,
    start: int,
    stop: int,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Batches number ``start..stop-1`` of the run, in order, prepared by ``workers`` processes."""
    schedule = Schedule(len(source), batch_size, pool)
    if stop <= start:
        return
    _, _, skip = schedule.locate(start)
    keys = _PoolKeys(schedule, start, stop)
    dataset = PoolDataset(source, schedule, seed, normalisation)
    loader = torch.utils.data.DataLoader(
        dataset,
        sampler=keys,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
        worker_init_fn=_one_thread if workers else None,
    )
    produced = start
    for i, batches in enumerate(loader):
        for batch in batches[skip if i == 0 else 0 :]:
            if produced >= stop:
                return
            yield batch
            produced += 1


def fixed_set(source: Source, count: int, normalisation: str, batch_size: int, seed: int = 0) -> list[Batch]:
    """The first ``count`` samples of a source (its natural order), bucketed into padded batches."""
    count = min(count, len(source))
    order = np.arange(len(source))
    samples = source.fetch(np.arange(count), order)
    prepared = [prepare(x, y, normalisation) for x, y, _ in samples]
    sizes = [(zx.shape[0], zx.shape[1], zy.shape[1]) for zx, zy in prepared]
    return [collate([prepared[i] for i in g], [samples[i][2] for i in g]) for g in buckets(sizes, batch_size)]
