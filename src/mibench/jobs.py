"""What each Snakemake job computes: its ``params``, with a fingerprint of everything its output depends on.

The workflow's rerun trigger ``params`` re-runs a job when its params change, so each job's params hold
exactly what determines its output, and nothing that does not:

=================  ====================================================================================
job                identity (``params.job``: compared by Snakemake)
=================  ====================================================================================
generate_shard     the split's resolved plan (defaults filled in), the shard's index and size, and the
                   code fingerprint of the generator (task families, transforms, shard format)
estimate_part      the part's cells (task spec, params, n, seed, true MI; or the shard it reads and that
                   shard's generation fingerprint), the resolved estimator entry (every default written
                   out), the time budget, the code fingerprint of the runner and the estimator's module,
                   and the fingerprint of the checkpoint it reads (the training job's, or the file's hash)
evaluate_benchmark levels, n bins, dim bins, the planned parts and their fingerprints, the evaluation code
train_model        the model spec that changes weights (not device, threads or time guards), the plans of
                   the splits it learns from, and the training code
=================  ====================================================================================

Settings that do not change results (checkpoint interval, provenance to record) travel in
``params.runtime``, a :class:`Runtime` object: Snakemake records only plain values for its params trigger,
so a change there does not re-run anything. Provenance (git commit and dirty flag, config fingerprint) is
recorded in rows and runs, never part of an identity.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mibench.benchmark import Cell, shard_cells
from mibench.config import Config, config_fingerprint
from mibench.layout import shard_path, weights_model
from mibench.provenance import code_fingerprint, git_sha, package_version
from mibench.resolve import Resolved
from mibench.tasks import Task, TaskSpec, canonical_json

#: modules whose code (with everything they import) determines each kind of job's output
GENERATE_MODULES = ("mibench.meta.generate",)
RUNNER_MODULES = ("mibench.runner",)
EVALUATE_MODULES = ("mibench.evaluate", "mibench.evaluate.figures")
TRAIN_MODULES = ("mibench.learned.trainer",)
#: hyperparameters whose value is a file another job (or the user) provides
FILE_HYPERPARAMETERS = ("checkpoint",)


def fingerprint(data: Any) -> str:
    """16 hex characters of SHA-256 over canonical JSON (sorted keys, exact floats)."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:16]


class Runtime:
    """Params a job needs that are not part of its identity (Snakemake skips non-builtin params when it
    compares params, so changing these re-runs nothing)."""

    def __init__(self, **values: Any) -> None:
        self.values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def __repr__(self) -> str:
        return f"Runtime({self.values!r})"


@functools.cache
def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Jobs:
    """Params of every job of one resolved config (cached: the Snakefile asks once per job)."""

    def __init__(self, resolved: Resolved, config_files: tuple[str, ...] = ()) -> None:
        self.resolved = resolved
        self.config: Config = resolved.config
        self.config_fingerprint = config_fingerprint(self.config)
        self.config_files = config_files
        self._cache: dict[tuple, dict[str, Any]] = {}

    # -- provenance ---------------------------------------------------------------------------------------
    def provenance(self) -> dict[str, str]:
        return {
            "mibench_version": package_version(),
            "git_sha": git_sha(),
            "config_fingerprint": self.config_fingerprint,
            "config_files": ", ".join(self.config_files),
        }

    def _cached(self, key: tuple, make) -> dict[str, Any]:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # -- generate -------------------------------------------------------------------------------------
    def shard(self, split: str, shard: int) -> dict[str, Any]:
        """Identity of one meta-dataset shard (its bytes are a pure function of this)."""

        def make() -> dict[str, Any]:
            plan_cfg = self.config.split_config(split).model_dump(mode="json", exclude_none=True)
            size = self.config.shard_size(split)
            job = {
                "split": split,
                "shard": int(shard),
                "shard_size": size,
                "plan": plan_cfg,
                "code": code_fingerprint(*GENERATE_MODULES),
            }
            return {**job, "fingerprint": fingerprint(job)}

        return self._cached(("shard", split, int(shard)), make)

    # -- estimate -------------------------------------------------------------------------------------
    def checkpoint_identity(self, path: str) -> str:
        """The training job's fingerprint for a model this config trains; else the file's SHA-256."""
        model = weights_model(path)
        if model in self.config.models:
            return "train:" + self.train(model)["fingerprint"]
        return "file:" + file_sha256(path)[:16] if Path(path).exists() else "missing:" + path

    def estimate(self, benchmark: str, label: str, part: int) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            plan = self.resolved.benchmarks[benchmark]
            est = self.resolved.estimators[label]
            where = plan.part_shard(part)
            if where is None:
                cells: Any = [cell_record(c) for c in plan.part_grid_cells(part)]
                data: dict[str, Any] = {"cells": cells}
            else:
                split, shard = where
                data = {
                    "shard": {"split": split, "index": shard, "fingerprint": self.shard(split, shard)["fingerprint"]},
                    # what the shard must hold: a copied-in shard of another configuration is refused by name
                    "sample_ids": plan.part_sample_ids(part),
                }
            files = {k: self.checkpoint_identity(str(est.params[k])) for k in FILE_HYPERPARAMETERS if k in est.params}
            job = {
                "benchmark": benchmark,
                "estimator": label,
                "part": int(part),
                "entry": est.entry_dict(),
                **data,
                "budget": {"timeout_s": plan.timeout_s, "hard_timeout_s": plan.hard_limit_s},
                "files": files,
                "code": code_fingerprint(*RUNNER_MODULES, est.module),
            }
            return {**job, "fingerprint": fingerprint(job)}

        return self._cached(("estimate", benchmark, label, int(part)), make)

    def estimate_runtime(self, benchmark: str) -> Runtime:
        plan = self.resolved.benchmarks[benchmark]
        return Runtime(checkpoint_s=plan.checkpoint_s, provenance=self.provenance())

    # -- evaluate ------------------------------------------------------------------------------------
    def evaluate(self, benchmark: str) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            plan = self.resolved.benchmarks[benchmark]
            parts = {
                label: [self.estimate(benchmark, label, p)["fingerprint"] for p in range(plan.n_parts)]
                for label in plan.estimators
            }
            job = {
                "benchmark": benchmark,
                "config": self.benchmark_config(benchmark),
                "levels": list(plan.levels),
                "n_bins": list(plan.n_bins) if plan.n_bins else None,
                "dim_bins": list(plan.dim_bins),
                "parts": parts,
                "code": code_fingerprint(*EVALUATE_MODULES),
            }
            return {**job, "fingerprint": fingerprint(job)}

        return self._cached(("evaluate", benchmark), make)

    def evaluate_runtime(self) -> Runtime:
        """The whole config (for the report and MLflow, which show every benchmark) and the provenance."""
        return Runtime(config=self.config.as_written(), provenance=self.provenance())

    def benchmark_config(self, benchmark: str) -> dict[str, Any]:
        """The part of the config one benchmark reads: itself, its estimators, the splits it scores."""
        bench = self.config.benchmarks[benchmark]
        data: dict[str, Any] = {
            # checkpoint_s only paces the estimate jobs' checkpoints: not part of any result
            "benchmarks": {benchmark: bench.model_dump(mode="json", exclude_none=True, exclude={"checkpoint_s"})},
            "estimators": {label: self.resolved.estimators[label].entry_dict() for label in bench.estimators},
        }
        if bench.splits and self.config.meta is not None:
            data["meta"] = {
                "shard_size": self.config.meta.shard_size,
                "splits": {
                    s: self.config.meta.splits[s].model_dump(mode="json", exclude_none=True) for s in bench.splits
                },
            }
        return data

    # -- train --------------------------------------------------------------------------------------------
    def train(self, model: str) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            spec = self.resolved.models[model]
            identity = spec.identity()
            splits = {}
            for split in (spec.data.train_split, spec.data.validation_split):
                if split and self.config.meta is not None and split in self.config.meta.splits:
                    splits[split] = self.shard_plan_identity(split)
            job = {"model": model, "spec": identity, "splits": splits, "code": code_fingerprint(*TRAIN_MODULES)}
            return {**job, "fingerprint": fingerprint(job)}

        return self._cached(("train", model), make)

    def shard_plan_identity(self, split: str) -> dict[str, Any]:
        return {
            "plan": self.config.split_config(split).model_dump(mode="json", exclude_none=True),
            "shard_size": self.config.shard_size(split),
        }

    def train_runtime(self, model: str) -> Runtime:
        """Everything the training script needs: the model entry and the splits, as a small config."""
        spec = self.resolved.models[model]
        data: dict[str, Any] = {"models": {model: self.config.models[model].model_dump(mode="json")}}
        if self.config.meta is not None:
            wanted = [s for s in (spec.data.train_split, spec.data.validation_split) if s]
            data["meta"] = {
                "shard_size": self.config.meta.shard_size,
                "splits": {
                    s: self.config.meta.splits[s].model_dump(mode="json", exclude_none=True)
                    for s in wanted
                    if s in self.config.meta.splits
                },
            }
        data["tracking"] = self.config.tracking.model_dump(mode="json")
        return Runtime(config=data, provenance=self.provenance())


def cell_record(cell: Cell) -> dict[str, Any]:
    """A task-grid cell as plain data (what an estimate job's params list)."""
    spec = cell.spec
    return {
        "sample_id": cell.sample_id,
        "task": cell.task,
        "family": spec.family,
        "structure": spec.structure,
        "transform": spec.transform,
        "params": spec.params_json,
        "dim_x": spec.dim_x,
        "dim_y": spec.dim_y,
        "n": int(cell.n),
        "seed": int(cell.seed),
        "mi": float(cell.mi),
    }


@dataclass
class EstimateJob:
    """One estimate job as the runner sees it: the part's cells (or shard), the budget, the provenance.

    Built from ``params.job`` alone (:meth:`from_params`), so the job computes exactly what its params
    say, not what the config on disk says now.
    """

    name: str  # benchmark
    label: str
    entry: Mapping[str, Any]
    part: int
    timeout_s: float
    hard_limit_s: float
    checkpoint_s: float = 30.0
    cells: list[dict[str, Any]] | None = None
    shard: tuple[str, int] | None = None
    sample_ids: list[str] | None = None  # a shard part's planned samples
    fingerprint: str = ""
    code: str = ""
    provenance: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_params(cls, job: Mapping[str, Any], runtime: Runtime | None = None) -> EstimateJob:
        runtime = runtime or Runtime()
        shard = job.get("shard")
        return cls(
            name=job["benchmark"],
            label=job["estimator"],
            entry=dict(job["entry"]),
            part=int(job["part"]),
            timeout_s=float(job["budget"]["timeout_s"]),
            hard_limit_s=float(job["budget"]["hard_timeout_s"]),
            checkpoint_s=float(runtime.get("checkpoint_s", 30.0)),
            cells=list(job["cells"]) if "cells" in job else None,
            shard=(shard["split"], int(shard["index"])) if shard else None,
            sample_ids=list(job["sample_ids"]) if "sample_ids" in job else None,
            fingerprint=str(job["fingerprint"]),
            code=str(job["code"]),
            provenance=dict(runtime.get("provenance") or {}),
        )

    @property
    def row_provenance(self) -> dict[str, str]:
        """Columns every row of this job records."""
        return {
            "job_fingerprint": self.fingerprint,
            "code_fingerprint": self.code,
            "config_fingerprint": str(self.provenance.get("config_fingerprint", "")),
        }

    def part_size(self, part: int) -> int:
        """Cells in this job's part."""
        return len(self.cells) if self.cells is not None else len(self.sample_ids or ())

    def part_cells(
        self, part: int, meta_root: str | os.PathLike = "results/meta"
    ) -> Iterator[tuple[Cell, np.ndarray, np.ndarray] | tuple[Cell, BaseException, None]]:
        """The same iteration contract as :meth:`BenchmarkPlan.part_cells`, from the job's own cells."""
        if self.shard is not None:
            split, shard = self.shard
            yield from shard_cells(shard_path(meta_root, split, shard), split, self.sample_ids, shard)
            return
        tasks: dict[str, Task] = {}
        for record in self.cells or ():
            spec = TaskSpec.from_row(record)
            cell = Cell(record["sample_id"], record["task"], spec, int(record["n"]), int(record["seed"]), record["mi"])
            try:
                task = tasks.get(spec.key) or tasks.setdefault(spec.key, spec.build())
                x, y = task.sample(cell.n, cell.seed)
            except Exception as exc:  # recorded as an error row
                yield cell, exc, None
                continue
            yield cell, x, y
