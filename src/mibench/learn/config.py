"""Model specifications: architecture presets, training and data settings (torch-free, cheap to import).

The Snakefile imports this module to plan the ``train_model`` rule (resources, inputs), so it must not import
torch. A model entry of ``config.yaml: models:`` is parsed by :func:`model_spec`; every unknown or malformed
key is a :class:`~mibench.config.ConfigError` naming ``config.models.<name>.<key>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from mibench.config import ConfigError

#: τ grid of the quantile head: central intervals at 50/80/90/95 % plus a finer grid for calibration curves.
DEFAULT_TAUS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.75,
    0.8,
    0.9,
    0.95,
    0.975,
    0.99,
)
NORMALISATIONS = ("copula", "robust")


@dataclass(frozen=True)
class Architecture:
    """Shape of a :class:`~mibench.learn.model.MISTModel`; stored verbatim in every checkpoint's JSON."""

    # cell stage: one token per (row, column), 2-D attention (columns within a row, rows within a column)
    cell_dim: int = 16
    cell_heads: int = 2
    cell_layers: int = 1
    cell_inducing: int = 8
    # row stage: one token per row (pooled over columns), induced set attention blocks over rows
    dim: int = 32
    heads: int = 4
    layers: int = 1
    inducing: int = 8
    seeds: int = 2
    ffn_mult: int = 2
    # heads: point (MSE) and quantile (pinball) heads on a shared trunk
    head_hidden: int = 64
    tau_dim: int = 16
    taus: tuple[float, ...] = DEFAULT_TAUS
    normalisation: str = "copula"
    # the trunk also reads permutation-invariant dependence statistics of the sample (canonical correlations
    # of the normalised columns and of their squares; mibench.learn.batching.dependence_stats)
    dependence_stats: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                raise ConfigError(f"architecture.{f.name}: must be true or false, got {value!r}")
            low = 0 if f.name == "cell_layers" else 1  # 0: no 2-D cell stage (cells embedded, averaged per side)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"architecture.{f.name}: must be an integer >= {low}, got {value!r}")
        for name, dim, heads in (("cell", self.cell_dim, self.cell_heads), ("row", self.dim, self.heads)):
            if dim % heads:
                raise ConfigError(f"architecture: {name} width {dim} is not divisible by its {heads} heads")
        taus = tuple(float(t) for t in self.taus)
        if not taus or any(not 0.0 < t < 1.0 for t in taus) or list(taus) != sorted(set(taus)):
            raise ConfigError(f"architecture.taus: need strictly increasing values in (0, 1), got {list(self.taus)}")
        if 0.5 not in taus:
            raise ConfigError("architecture.taus: must contain 0.5 (the median is MIST-QR's point estimate)")
        object.__setattr__(self, "taus", taus)
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(
                f"architecture.normalisation: unknown {self.normalisation!r}; known: {', '.join(NORMALISATIONS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["taus"] = list(self.taus)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "architecture") -> Architecture:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {', '.join(sorted(known))}")
        try:
            return cls(**{k: (tuple(v) if k == "taus" else v) for k, v in data.items()})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


PRESETS: dict[str, Architecture] = {
    # ~51k parameters: trains in a couple of minutes on 2 CPU cores (config/config.yaml). Every preset reads the
    # dependence statistics: in benchmarks/mist_vs_reference.py they cut the MSE at equal compute (ours-no-stats)
    "tiny": Architecture(dependence_stats=True),
    # ~1.2M parameters: CPU experiments, quick GPU runs
    "small": Architecture(
        cell_dim=32,
        cell_heads=4,
        cell_layers=2,
        cell_inducing=16,
        dim=128,
        heads=8,
        layers=2,
        inducing=16,
        seeds=4,
        ffn_mult=4,
        head_hidden=128,
        tau_dim=32,
        dependence_stats=True,
    ),
    # ~5.51M parameters, the reference's size (config/paper.yaml): 2 row ISABs at D=256 with 32 inducing points
    # and PMA with 10 seeds, like the reference; the cell stage is kept narrow (32) because it runs on n·(dx+dy)
    # tokens and dominates the cost, while the parameters sit in the row stage and heads (n tokens, cheap)
    "paper": Architecture(
        cell_dim=32,
        cell_heads=4,
        cell_layers=2,
        cell_inducing=16,
        dim=256,
        heads=16,
        layers=2,
        inducing=32,
        seeds=10,
        ffn_mult=4,
        head_hidden=384,
        tau_dim=32,
        dependence_stats=True,
    ),
}


@dataclass(frozen=True)
class Training:
    """Optimisation settings (AdamW, linear warm-up then cosine decay, gradient clipping)."""

    steps: int | str = 1000  # optimizer steps, or "auto": fit the time budget after measuring throughput
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    loss_weights: Mapping[str, float] = field(default_factory=lambda: {"mse": 1.0, "pinball": 1.0})
    validate_every: int | str = "epoch"  # steps, or "epoch"
    time_budget_minutes: float | None = None  # total training wall time over all chunks
    checkpoint_every_minutes: float = 2.0  # resumable state at least this often (and on every validation)
    bucket_pool: int = 16  # batches sorted together by size (bucketing cuts padding)
    workers: int = 0  # data worker processes (0: generate in the training process)
    calibration_steps: int = 30  # with steps: auto, steps timed before fixing the schedule length
    compile: bool = False  # torch.compile the model (CUDA only)
    log_every: int = 10  # steps between progress lines in the job log (mean losses, lr, datasets/s, ETA)

    def __post_init__(self) -> None:
        if self.steps != "auto" and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise ConfigError(f"training.steps: need an integer >= 1 or 'auto', got {self.steps!r}")
        if self.steps == "auto" and not self.time_budget_minutes:
            raise ConfigError("training.steps: 'auto' needs training.time_budget_minutes")
        if self.validate_every != "epoch" and (
            isinstance(self.validate_every, bool) or not isinstance(self.validate_every, int) or self.validate_every < 1
        ):
            raise ConfigError(f"training.validate_every: need an integer >= 1 or 'epoch', got {self.validate_every!r}")
        unknown = sorted(set(self.loss_weights) - {"mse", "pinball"})
        if unknown:
            raise ConfigError(f"training.loss_weights: unknown loss(es) {unknown}; known: mse, pinball")
        weights = {"mse": 0.0, "pinball": 0.0, **{k: float(v) for k, v in self.loss_weights.items()}}
        if min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ConfigError(f"training.loss_weights: need non-negative weights, not all zero, got {weights}")
        object.__setattr__(self, "loss_weights", weights)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("batch_size", "bucket_pool", "calibration_steps", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"training.{name}: must be >= 1, got {getattr(self, name)!r}")
        if self.warmup_steps < 0 or self.workers < 0:
            raise ConfigError("training.warmup_steps and training.workers must be >= 0")


@dataclass(frozen=True)
class Data:
    """Where training samples come from: generated on the fly from a split's plan, or streamed from shards."""

    source: str = "generate"  # generate | shards
    train_split: str = "train"
    validation_split: str | None = "validation"
    train_count: int | None = None  # generate: distinct samples (default: the split's count)
    validation_count: int = 200

    def __post_init__(self) -> None:
        if self.source not in ("generate", "shards"):
            raise ConfigError(f"data.source: must be 'generate' or 'shards', got {self.source!r}")
        if self.train_count is not None and self.train_count < 1:
            raise ConfigError(f"data.train_count: must be >= 1, got {self.train_count}")
        if self.validation_count < 1:
            raise ConfigError(f"data.validation_count: must be >= 1, got {self.validation_count}")

    def shard_splits(self) -> list[str]:
        """Splits whose shards training reads (none when samples are generated on the fly)."""
        if self.source != "shards":
            return []
        return [self.train_split] + ([self.validation_split] if self.validation_split else [])


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``config.models``: what to train, on what, where."""

    name: str
    architecture: Architecture
    training: Training
    data: Data
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 2
    mem_mb: int = 4000
    runtime: int = 30  # minutes (SLURM)
    preset: str | None = None

    @property
    def wants_gpu(self) -> bool:
        return self.device != "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "preset": self.preset,
            "architecture": self.architecture.to_dict(),
            "training": {**asdict(self.training), "betas": list(self.training.betas)},
            "data": asdict(self.data),
            "device": self.device,
            "threads": self.threads,
        }

    def fingerprint(self) -> str:
        """Hash of everything that changes the trained weights (not device/threads/time limits)."""
        data = self.to_dict()
        for key in ("device", "threads", "name"):
            data.pop(key)
        data["training"].pop("time_budget_minutes")
        data["training"].pop("checkpoint_every_minutes")
        data["training"].pop("workers")
        data["training"].pop("log_every")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def with_overrides(self, **changes: Any) -> ModelSpec:
        return replace(self, **changes)


def _section(cls, data: Mapping[str, Any] | None, where: str):
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {', '.join(sorted(known))}")
    try:
        return cls(**data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def model_spec(name: str, entry: Mapping[str, Any]) -> ModelSpec:
    """Parse ``config.models.<name>``: a preset plus architecture overrides, training, data, device."""
    where = f"config.models.{name}"
    entry = dict(entry)
    preset = entry.pop("preset", "tiny")
    if preset not in PRESETS:
        raise ConfigError(f"{where}.preset: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    arch_data = {**PRESETS[preset].to_dict(), **(entry.pop("architecture", None) or {})}
    architecture = Architecture.from_dict(arch_data, f"{where}.architecture")
    training = _section(Training, entry.pop("training", None), f"{where}.training")
    data = _section(Data, entry.pop("data", None), f"{where}.data")
    resources = dict(entry.pop("resources", None) or {})
    device = str(entry.pop("device", "auto"))
    threads = int(entry.pop("threads", 2))
    if entry:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(entry)}; known: preset, architecture, training, data, device, "
            "threads, resources"
        )
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"{where}.device: must be auto, cpu, cuda or cuda:N, got {device!r}")
    return ModelSpec(
        name=name,
        architecture=architecture,
        training=training,
        data=data,
        device=device,
        threads=threads,
        mem_mb=int(resources.get("mem_mb", 4000)),
        runtime=int(resources.get("runtime", 30)),
        preset=preset,
    )


def model_specs(config: Mapping[str, Any]) -> dict[str, ModelSpec]:
    """Every model of a config; checks that the splits they train/validate on exist."""
    splits = (config.get("meta") or {}).get("splits", {})
    specs = {}
    for name, entry in (config.get("models") or {}).items():
        spec = model_spec(name, entry or {})
        for key in ("train_split", "validation_split"):
            split = getattr(spec.data, key)
            if split is not None and split not in splits:
                raise ConfigError(
                    f"config.models.{name}.data.{key}: no split {split!r} in config.meta.splits "
                    f"(splits: {', '.join(splits) or 'none'})"
                )
        specs[name] = spec
    return specs
