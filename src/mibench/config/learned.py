"""Typed entries of ``config.models``: what MIST / MIST-QR model to train, on what, where (torch-free).

The Snakefile plans the ``train_model`` rule from these (resources, inputs), so nothing here imports torch.
An entry is a ``preset`` (``tiny`` ~51k, ``small`` ~1.2M, ``paper`` ~5.5M parameters) plus ``architecture``
overrides, ``training``, ``data``, ``device``, ``threads`` and ``resources``; :meth:`ModelEntry.spec`
merges the preset and the overrides into the :class:`ModelSpec` the trainer uses. Each default is stated
once, here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mibench.config.base import ConfigError, StrictModel, parse_model

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
PositiveInt = Annotated[int, Field(ge=1)]
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:\d+)$"


class Architecture(StrictModel):
    """Shape of a :class:`~mibench.learned.model.MISTModel`; stored verbatim in every checkpoint's JSON."""

    # cell stage: one token per (row, column), 2-D attention (columns within a row, rows within a column)
    cell_dim: PositiveInt = Field(16, description="Width of the cell tokens (one per row x column).")
    cell_heads: PositiveInt = Field(2, description="Attention heads of the cell stage.")
    cell_layers: Annotated[int, Field(ge=0)] = Field(
        1,
        description="2-D attention blocks (within rows, within columns); 0: no cell stage (cells embedded, averaged per side).",
    )
    cell_inducing: PositiveInt = Field(8, description="Inducing points of the cell stage's row attention.")
    # row stage: one token per row (pooled over columns), induced set attention blocks over rows
    dim: PositiveInt = Field(32, description="Width of the row tokens.")
    heads: PositiveInt = Field(4, description="Attention heads of the row stage.")
    layers: PositiveInt = Field(1, description="Induced set attention blocks over rows.")
    inducing: PositiveInt = Field(8, description="Inducing points of each row block.")
    seeds: PositiveInt = Field(2, description="Seed vectors of the pooling (PMA).")
    ffn_mult: PositiveInt = Field(2, description="Feed-forward width as a multiple of the token width.")
    # heads: point (MSE) and quantile (pinball) heads on a shared trunk
    head_hidden: PositiveInt = Field(64, description="Hidden width of the point and quantile heads.")
    tau_dim: PositiveInt = Field(16, description="Embedding size of the quantile level τ.")
    taus: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=lambda: list(DEFAULT_TAUS), description="Quantile levels of the quantile head (with 0.5)."
    )
    normalisation: Literal["copula", "robust", "copula+robust"] = Field(
        "copula+robust",
        description="Per-dataset input normalisation of every cell: normal scores of ranks, median/IQR scaling, "
        "or both as two channels (ranks for the dependence, median/IQR for the marginals' shape).",
    )
    dependence_stats: bool = Field(
        False,
        description="The trunk also reads permutation-invariant dependence statistics of the sample (canonical "
        "correlations of the normalised columns and of their squares, and their Gaussian MI); on in every preset.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Architecture:
        for name, dim, heads in (("cell_dim", self.cell_dim, self.cell_heads), ("dim", self.dim, self.heads)):
            if dim % heads:
                raise ValueError(f"{name} {dim} is not divisible by its {heads} heads")
        if not self.taus or self.taus != sorted(set(self.taus)):
            raise ValueError(f"taus: need strictly increasing values in (0, 1), got {self.taus}")
        if 0.5 not in self.taus:
            raise ValueError("taus: must contain 0.5 (the median is MIST-QR's point estimate)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **changes: Any) -> Architecture:
        """A validated copy with ``changes`` (what ``dataclasses.replace`` did for the former dataclass)."""
        return Architecture.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, data: Any, where: str = "architecture") -> Architecture:
        return parse_model(cls, data, where)


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


class LossWeights(StrictModel):
    """Weights of the point (MSE) and quantile (pinball) losses; a loss left out weighs 0 (``{mse: 1}`` trains
    a pure MIST model)."""

    mse: Annotated[float, Field(ge=0)] = Field(0.0, description="Weight of the point head's MSE.")
    pinball: Annotated[float, Field(ge=0)] = Field(0.0, description="Weight of the quantile head's pinball loss.")

    def __getitem__(self, key: str) -> float:  # the trainer reads weights["mse"]
        return float(getattr(self, key))

    @model_validator(mode="after")
    def _not_all_zero(self) -> LossWeights:
        if self.mse + self.pinball <= 0:
            raise ValueError("need non-negative weights, not all zero")
        return self


class Training(StrictModel):
    """Optimisation settings (AdamW, linear warm-up then cosine decay, gradient clipping)."""

    steps: PositiveInt | Literal["auto"] = Field(
        1000, description="Optimizer steps, or auto: fit time_budget_minutes after measuring throughput."
    )
    batch_size: PositiveInt = Field(32, description="Datasets per step.")
    lr: Annotated[float, Field(gt=0)] = Field(3e-4, description="Peak AdamW learning rate.")
    weight_decay: Annotated[float, Field(ge=0)] = Field(0.01, description="AdamW weight decay.")
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)] = Field(
        default_factory=lambda: [0.9, 0.98], description="AdamW betas."
    )
    warmup_steps: Annotated[int, Field(ge=0)] = Field(100, description="Linear warm-up steps.")
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = Field(0.05, description="Final lr / peak lr (cosine).")
    grad_clip: Annotated[float, Field(gt=0)] = Field(1.0, description="Gradient norm clip.")
    seed: Annotated[int, Field(ge=0)] = Field(0, description="Seed of the weights' initialisation and of batching.")
    loss_weights: LossWeights = Field(LossWeights(mse=1.0, pinball=1.0), description="Weights of the two losses.")
    validate_every: PositiveInt | Literal["epoch"] = Field("epoch", description="Steps between validations, or epoch.")
    time_budget_minutes: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Wall-time budget over all chunks of the run."
    )
    checkpoint_every_minutes: Annotated[float, Field(ge=0)] = Field(
        2.0, description="Resumable state saved at least this often (and at every validation)."
    )
    bucket_pool: PositiveInt = Field(16, description="Batches sorted together by size (bucketing cuts padding).")
    workers: Annotated[int, Field(ge=0)] = Field(
        0, description="Data worker processes (0: generate samples in the training process)."
    )
    calibration_steps: PositiveInt = Field(30, description="With steps: auto, steps timed to fix the schedule length.")
    compile: bool = Field(False, description="torch.compile the model (CUDA only).")
    log_every: PositiveInt = Field(
        10, description="Steps between progress lines in the job log (mean losses, lr, datasets/s, ETA)."
    )

    @model_validator(mode="after")
    def _auto_needs_budget(self) -> Training:
        if self.steps == "auto" and not self.time_budget_minutes:
            raise ValueError("steps: 'auto' needs training.time_budget_minutes")
        return self


class Data(StrictModel):
    """Where training samples come from: generated on the fly from a split's plan, or streamed from shards."""

    source: Literal["generate", "shards"] = Field(
        "generate", description="Generate samples on the fly from the split's plan, or stream its shards."
    )
    train_split: str = Field("train", description="Split the training samples come from.")
    validation_split: str | None = Field("validation", description="Split validated on (null: none).")
    train_count: PositiveInt | None = Field(
        None, description="generate: distinct training samples (default: the split's count)."
    )
    validation_count: PositiveInt = Field(200, description="Validation samples.")

    def shard_splits(self) -> list[str]:
        """Splits whose shards training reads (none when samples are generated on the fly)."""
        if self.source != "shards":
            return []
        return [self.train_split] + ([self.validation_split] if self.validation_split else [])


class ModelResources(StrictModel):
    """Snakemake resources of the training job."""

    mem_mb: PositiveInt = Field(4000, description="Memory of the training job.")
    runtime: PositiveInt = Field(30, description="Minutes (SLURM time limit).")


class ModelEntry(StrictModel):
    """One entry of ``config.models`` as written (architecture overrides not yet merged with the preset)."""

    preset: Literal["tiny", "small", "paper"] = Field(
        "tiny", description="Architecture preset: tiny ~51k, small ~1.2M, paper ~5.5M parameters."
    )
    architecture: dict[str, Any] = Field(default_factory=dict, description="Overrides of the preset's keys.")
    training: Training = Field(Training(), description="Optimisation settings.")
    data: Data = Field(Data(), description="Where the training samples come from.")
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = Field(
        "auto", description="auto (CUDA if available), cpu, cuda or cuda:N; anything but cpu requests gpu=1."
    )
    threads: PositiveInt = Field(2, description="Threads of the training job.")
    resources: ModelResources = Field(ModelResources(), description="Snakemake resources of the training job.")

    def spec(self, name: str) -> ModelSpec:
        """The preset merged with the overrides (errors name ``config.models.<name>.architecture.<key>``)."""
        arch = Architecture.from_dict(
            {**PRESETS[self.preset].to_dict(), **self.architecture}, f"config.models.{name}.architecture"
        )
        return ModelSpec(
            name=name,
            architecture=arch,
            training=self.training,
            data=self.data,
            device=self.device,
            threads=self.threads,
            mem_mb=self.resources.mem_mb,
            runtime=self.resources.runtime,
            preset=self.preset,
        )


class ModelSpec(StrictModel):
    """A resolved model entry: what to train, on what, where."""

    name: str
    architecture: Architecture
    training: Training
    data: Data
    device: str = "auto"
    threads: PositiveInt = 2
    mem_mb: PositiveInt = 4000
    runtime: PositiveInt = 30
    preset: str | None = None

    @property
    def wants_gpu(self) -> bool:
        return self.device != "cpu"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude={"mem_mb", "runtime"})

    def identity(self) -> dict[str, Any]:
        """Everything that changes the trained weights (not the device, threads, time limits or logging): what
        the trainer's resume check and the train job's rerun trigger both compare."""
        data = self.to_dict()
        for key in ("device", "threads", "name"):
            data.pop(key)
        for key in ("time_budget_minutes", "checkpoint_every_minutes", "workers", "log_every"):
            data["training"].pop(key)
        return data

    def fingerprint(self) -> str:
        """Hash of :meth:`identity`."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


def model_spec(name: str, entry: Any) -> ModelSpec:
    """Parse one ``config.models.<name>`` entry (a mapping or a :class:`ModelEntry`) into its spec."""
    if not isinstance(entry, ModelEntry):
        entry = parse_model(ModelEntry, entry or {}, f"config.models.{name}")
    return entry.spec(name)


__all__ = [
    "DEFAULT_TAUS",
    "PRESETS",
    "Architecture",
    "ConfigError",
    "Data",
    "ModelEntry",
    "ModelSpec",
    "Training",
    "model_spec",
]
