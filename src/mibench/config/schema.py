"""The typed workflow config: every section, every key, its type, range and default, stated once.

``config/*.yaml`` (what ``snakemake --configfile`` reads) is parsed into :class:`Config`. Each default lives
here and only here: the Snakefile, the library, ``mibench`` commands, the docs and the generated JSON Schema
(``workflow/schemas/config.schema.json``) all read these models. Checks that need the registries (task
families, estimators) or the split plans live in :mod:`mibench.resolve`, which builds on this.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from mibench.config.base import StrictModel
from mibench.config.learned import ModelEntry

#: Nominal levels of the central intervals scored for coverage (the one place this default is stated).
DEFAULT_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
DEFAULT_DIM_BINS: tuple[int, ...] = (2, 4, 10, 20, 40, 65)


def central_taus(level: float) -> tuple[float, float]:
    """The quantile levels (τ_lo, τ_hi) = ((1 - L)/2, (1 + L)/2) bounding a central interval at level L,
    rounded to 10 digits so that they compare equal wherever they are computed (dict keys, τ grids)."""
    return round((1 - level) / 2, 10), round((1 + level) / 2, 10)


#: Keys of an estimator entry that are not hyperparameters.
RESERVED_ESTIMATOR_KEYS = ("estimator", "module", "bootstrap", "resources")

PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
SampleSize = Annotated[int, Field(ge=2)]
Level = Annotated[float, Field(gt=0, lt=1)]
Label = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


def _unique(values: list[Any], what: str) -> list[Any]:
    seen, dupes = set(), []
    for v in values:
        key = repr(v)
        if key in seen and v not in dupes:
            dupes.append(v)
        seen.add(key)
    if dupes:
        raise ValueError(f"{what} listed more than once: {dupes}")
    return values


def _increasing(values: list[float], what: str) -> list[float]:
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{what} must be strictly increasing, got {values}")
    return values


# -- limits --------------------------------------------------------------------------------------------
class Limits(StrictModel):
    """Upper bounds that stop a typo (``n: 1000000000``, ``seeds: 1e9``, ``dims: [100000, 1]``) before it
    allocates memory or hangs the DAG build. Raise them here when a study really needs more."""

    max_n: PositiveInt = Field(1_000_000, description="Largest sample size of a cell or meta-dataset sample.")
    max_dim: PositiveInt = Field(1_024, description="Largest dimension of X or of Y.")
    max_seeds: PositiveInt = Field(10_000, description="Largest `seeds` of a task grid.")
    max_cells: PositiveInt = Field(1_000_000, description="Most cells of one benchmark (and samples of one split).")
    max_sample_mib: PositiveFloat = Field(
        2_048, description="Largest memory of one sample, n x (dim_x + dim_y) x 8 bytes, in MiB."
    )


# -- meta-dataset splits ---------------------------------------------------------------------------
class NRange(StrictModel):
    """Random mode: each sample's n is drawn uniformly from {low..high}."""

    low: SampleSize = Field(description="Smallest n.")
    high: SampleSize = Field(description="Largest n.")

    @model_validator(mode="after")
    def _ordered(self) -> NRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        return self


class Linspace(StrictModel):
    """Grid mode: `num` sample sizes evenly spaced from `low` to `high`."""

    linspace: Annotated[list[float], Field(min_length=3, max_length=3)] = Field(description="[low, high, num].")
    rounding: Literal["round", "truncate"] = Field(
        "round",
        description="How the points become integers: round (nearest) or truncate (numpy.linspace(..., dtype=int), "
        "MIST's grid 10, 35, 61, ...).",
    )

    @model_validator(mode="after")
    def _valid(self) -> Linspace:
        lo, hi, num = self.linspace
        if num < 1 or num != int(num) or lo < 2 or hi < lo:
            raise ValueError(f"linspace: need [low >= 2, high >= low, num >= 1 (integer)], got {self.linspace}")
        return self


IntRange = Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]


class Dims(StrictModel):
    """Dimensions drawn per distribution (uniform integers), tightened by what each entry needs."""

    x: IntRange = Field(description="[low, high] of dim_x.")
    y: IntRange = Field(description="[low, high] of dim_y.")
    tied: bool = Field(False, description="Draw dim_y equal to dim_x.")

    @model_validator(mode="after")
    def _ordered(self) -> Dims:
        for side, (lo, hi) in (("x", self.x), ("y", self.y)):
            if lo > hi:
                raise ValueError(f"{side}: low {lo} > high {hi}")
        return self


class MixtureEntry(StrictModel):
    """A weighted mixture entry (random mode draws entries with these weights)."""

    entry: str = Field(description="family-structure[-transform].")
    weight: PositiveFloat = Field(1.0, description="Relative weight of the entry.")


def _kind(value: Any) -> str:
    return "<text>" if isinstance(value, str) else ("<list>" if isinstance(value, list) else "<mapping>")


MixtureItem = Annotated[Annotated[str, Tag("<text>")] | Annotated[MixtureEntry, Tag("<mapping>")], Discriminator(_kind)]
NGrid = Annotated[
    Annotated[list[SampleSize], Tag("<list>")] | Annotated[Linspace, Tag("<mapping>")], Discriminator(_kind)
]
ParamRange = Annotated[list[float], Field(min_length=2, max_length=2)]


class ParamLaw(StrictModel):
    """A parameter's law: exactly one of ``{uniform: [lo, hi]}``, ``{log_uniform: [lo, hi]}``, ``{integer: [lo, hi]}``."""

    uniform: ParamRange | None = Field(None, description="[low, high], uniform.")
    log_uniform: ParamRange | None = Field(None, description="[low, high], uniform in log (low > 0).")
    integer: ParamRange | None = Field(None, description="[low, high], uniform integers.")

    @model_validator(mode="after")
    def _one(self) -> ParamLaw:
        given = [k for k in ("uniform", "log_uniform", "integer") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one law: {uniform: [low, high]}, {log_uniform: [...]} or {integer: [...]}")
        return self

    @property
    def law(self) -> str:
        return next(k for k in ("uniform", "log_uniform", "integer") if getattr(self, k) is not None)

    @property
    def bounds(self) -> list[float]:
        return getattr(self, self.law)


ParamSpec = Annotated[
    Annotated[ParamRange, Tag("<list>")] | Annotated[ParamLaw, Tag("<mapping>")], Discriminator(_kind)
]
ParamKey = Annotated[str, Field(pattern=r"^[a-z_]+(-[a-z0-9_]+)?$")]


class SplitConfig(StrictModel):
    """One meta-dataset split: random mode (``count`` + ``n``) or grid mode (``n_grid``)."""

    root_seed: Seed = Field(description="Root of numpy's SeedSequence for this split; must differ between splits.")
    mixture: Annotated[list[MixtureItem], Field(min_length=1)] = Field(
        description="Task entries 'family-structure[-transform]', optionally weighted."
    )
    dims: Dims = Field(description="Dimension ranges of X and Y.")
    count: PositiveInt | None = Field(None, description="Random mode: number of samples.")
    n: NRange | None = Field(None, description="Random mode: sample size drawn uniformly from {low..high}.")
    n_grid: NGrid | None = Field(None, description="Grid mode: sample sizes, or {linspace: [low, high, num]}.")
    replicates: PositiveInt = Field(1, description="Grid mode: independent samples per (distribution, n).")
    replicates_share: Literal["distribution", "dims"] = Field(
        "distribution",
        description="Grid mode: what the replicates of an (entry, n) share: the distribution (independent samples "
        "of it), or only the dims (MIST's grid: each replicate draws its own parameters and sample).",
    )
    distributions_per_entry: PositiveInt = Field(1, description="Grid mode: parameter draws per mixture entry.")
    params: dict[ParamKey, dict[str, ParamSpec]] = Field(
        default_factory=dict,
        description="Parameter laws overriding the defaults, keyed by family (every structure) or family-structure "
        "(that structure, on top): [low, high] keeps the default law; {uniform|log_uniform|integer: [low, high]} "
        "sets it. E.g. {student: {df: {uniform: [1, 10]}}, multinormal-bmi_sparse: {strength: [0.1, 5]}}.",
    )
    shard_size: PositiveInt | None = Field(None, description="Overrides meta.shard_size for this split.")

    @model_validator(mode="after")
    def _one_mode(self) -> SplitConfig:
        random_mode = self.count is not None or self.n is not None
        grid_mode = self.n_grid is not None
        if random_mode == grid_mode:
            raise ValueError("give either 'count' and 'n' (random mode) or 'n_grid' (grid mode)")
        if random_mode and (self.count is None or self.n is None):
            raise ValueError("random mode needs both 'count' and 'n'")
        _unique([m if isinstance(m, str) else m.entry for m in self.mixture], "mixture entries")
        if isinstance(self.n_grid, list):
            _unique(self.n_grid, "n_grid values")
        for family, ranges in self.params.items():
            for key, spec in ranges.items():
                lo, hi = spec.bounds if isinstance(spec, ParamLaw) else spec
                if lo > hi:
                    raise ValueError(f"params.{family}.{key}: low {lo} > high {hi}")
                if isinstance(spec, ParamLaw) and spec.law == "log_uniform" and lo <= 0:
                    raise ValueError(f"params.{family}.{key}: a log_uniform law needs low > 0, got {lo}")
        return self

    def plain_params(self) -> dict[str, dict[str, Any]]:
        """``params`` as YAML writes it ([lo, hi] or {law: [lo, hi]})."""
        return {
            key: {
                name: ({spec.law: spec.bounds} if isinstance(spec, ParamLaw) else list(spec))
                for name, spec in ranges.items()
            }
            for key, ranges in self.params.items()
        }


class MetaConfig(StrictModel):
    shard_size: PositiveInt = Field(500, description="Samples per Parquet shard (one Snakemake job per shard).")
    splits: Annotated[dict[Label, SplitConfig], Field(min_length=1)] = Field(
        description="Splits by name (train, validation, test_*); test_* splits are checked disjoint from train."
    )


# -- estimators ----------------------------------------------------------------------------------------
class Bootstrap(StrictModel):
    """Percentile-bootstrap intervals around any estimator (`bootstrap: true` takes these defaults)."""

    resamples: Annotated[int, Field(ge=2)] = Field(100, description="Bootstrap resamples per cell.")
    levels: Annotated[list[Level], Field(min_length=1)] = Field(
        default_factory=lambda: list(DEFAULT_LEVELS), description="Central interval levels reported."
    )

    @model_validator(mode="after")
    def _levels(self) -> Bootstrap:
        _unique(self.levels, "levels")
        return self


class EstimatorResources(StrictModel):
    """Snakemake resources of the estimator's jobs (`gpu` > 0 routes them to the GPU rule)."""

    gpu: Annotated[int, Field(ge=0)] = Field(0, description="GPUs per estimate job.")
    mem_mb: PositiveInt | None = Field(None, description="Memory per estimate job (default 2000, GPU 8000).")
    runtime: PositiveInt | None = Field(None, description="Minutes (SLURM time limit; default 60, GPU 120).")


class EstimatorEntry(StrictModel):
    """One ``estimators: {label: {...}}`` entry: the registered estimator, its hyperparameters, resources.

    As written in YAML the hyperparameters sit next to the reserved keys; they are gathered under
    ``hyperparameters`` here and checked against the estimator's own ``Params`` model by
    :func:`mibench.resolve.resolve_config`.
    """

    estimator: str | None = Field(None, description="Registered estimator (default: the label).")
    module: str | None = Field(None, description="Extra module to import that registers the estimator.")
    bootstrap: Bootstrap | None = Field(None, description="Percentile-bootstrap intervals (true: defaults).")
    resources: EstimatorResources = Field(EstimatorResources(), description="Snakemake resources of its jobs.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather(cls, data: Any) -> Any:
        if data is None:
            return {}
        if not isinstance(data, dict):
            return data
        out = {k: v for k, v in data.items() if k in RESERVED_ESTIMATOR_KEYS}
        hyper = {k: v for k, v in data.items() if k not in RESERVED_ESTIMATOR_KEYS}
        if "hyperparameters" in hyper and isinstance(hyper["hyperparameters"], dict) and len(hyper) == 1:
            hyper = hyper["hyperparameters"]  # already gathered (a dumped entry)
        boot = out.get("bootstrap")
        if boot is True:
            out["bootstrap"] = {}
        elif boot is False:
            out["bootstrap"] = None
        return {**out, "hyperparameters": hyper}

    def name(self, label: str) -> str:
        return self.estimator or label

    def as_written(self) -> dict[str, Any]:
        """The flat YAML form (reserved keys next to hyperparameters)."""
        data = self.model_dump(exclude_none=True, exclude={"hyperparameters"})
        if data.get("resources") == EstimatorResources().model_dump(exclude_none=True):
            data.pop("resources")
        return {**data, **self.hyperparameters}


# -- benchmarks ----------------------------------------------------------------------------------------
class TaskConfig(StrictModel):
    """One task of a grid: ``entry: family-structure[-transform]`` or ``family`` + ``structure``."""

    name: str | None = Field(None, description="Name in reports (default: entry and dims).")
    entry: str | None = Field(None, description="family-structure[-transform], instead of the three keys.")
    family: str | None = Field(None, description="Task family (mibench tasks lists them).")
    structure: str | None = Field(None, description="Structure of the family.")
    transform: str | None = Field(None, description="MI-preserving transform (default base).")
    dims: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] = Field(
        description="[dim_x, dim_y] of the sample."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="The family's parameters (unknown ones are errors)."
    )

    @model_validator(mode="after")
    def _named_once(self) -> TaskConfig:
        if self.entry is not None and (self.family or self.structure or self.transform):
            raise ValueError("give 'entry' or 'family'/'structure'/'transform', not both")
        if self.entry is None and not (self.family and self.structure):
            raise ValueError("give 'entry' (family-structure[-transform]) or both 'family' and 'structure'")
        return self

    @property
    def entry_text(self) -> str:
        if self.entry is not None:
            return self.entry
        return f"{self.family}-{self.structure}-{self.transform or 'base'}"


class BenchmarkConfig(StrictModel):
    """A benchmark: a task grid (``tasks`` x ``n`` x ``seeds``) or meta-dataset ``splits``."""

    estimators: Annotated[list[Label], Field(min_length=1)] = Field(description="Labels defined under `estimators`.")
    tasks: Annotated[list[TaskConfig], Field(min_length=1)] | None = None
    n: Annotated[list[SampleSize], Field(min_length=1)] | None = Field(None, description="Sample sizes of a grid.")
    seeds: PositiveInt = Field(1, description="Independent samples per (task, n).")
    root_seed: Seed = 0
    cells_per_job: PositiveInt = Field(200, description="Cells of a task grid estimated by one job.")
    splits: Annotated[list[Label], Field(min_length=1)] | None = Field(
        None, description="Meta-dataset splits whose samples are the cells (one job per shard)."
    )
    levels: Annotated[list[Level], Field(min_length=1)] = Field(
        default_factory=lambda: list(DEFAULT_LEVELS), description="Nominal levels of central intervals scored."
    )
    timeout_s: PositiveFloat = Field(300, description="Time budget per cell; over it a cell is a `timeout` row.")
    hard_timeout_s: PositiveFloat | None = Field(
        None, description="Hard wall-time limit per cell (default 2 x timeout_s + 60): stops a cell stuck in C code."
    )
    checkpoint_s: Annotated[float, Field(ge=0)] = Field(30, description="Seconds between checkpoints of a part.")
    n_bins: Annotated[list[float], Field(min_length=2)] | None = Field(
        None, description="Edges of the n bins of the metrics (default: one bin per distinct n)."
    )
    dim_bins: Annotated[list[int], Field(min_length=2)] = Field(
        default_factory=lambda: list(DEFAULT_DIM_BINS), description="Edges of the dim_x + dim_y bins of the metrics."
    )

    @model_validator(mode="after")
    def _consistent(self) -> BenchmarkConfig:
        _unique(self.estimators, "estimators")
        _unique(self.levels, "levels")
        if (self.tasks is None) == (self.splits is None):
            raise ValueError("give either 'tasks' (with 'n' and 'seeds') or 'splits'")
        if self.tasks is not None and self.n is None:
            raise ValueError("a task grid needs 'n' (the sample sizes)")
        if self.splits is not None:
            _unique(self.splits, "splits")
            defaults = {
                k: type(self).model_fields[k].get_default() for k in ("n", "seeds", "cells_per_job", "root_seed")
            }
            given = sorted(k for k, default in defaults.items() if getattr(self, k) != default)
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply to task grids; a splits benchmark takes its cells from the shards"
                )
        if self.n is not None:
            _unique(self.n, "n values")
        if self.n_bins is not None:
            _increasing(self.n_bins, "n_bins")
        _increasing(self.dim_bins, "dim_bins")
        if self.hard_timeout_s is not None and self.hard_timeout_s <= self.timeout_s:
            raise ValueError(
                f"hard_timeout_s {self.hard_timeout_s:g} must exceed timeout_s {self.timeout_s:g}: it only stops "
                "cells the soft budget could not interrupt"
            )
        return self

    @property
    def hard_limit_s(self) -> float:
        return self.hard_timeout_s or 2 * self.timeout_s + 60


class TrackingConfig(StrictModel):
    """MLflow run ledger (``MLFLOW_TRACKING_URI`` overrides the default sqlite:///results/mlflow.db)."""

    enabled: bool = Field(True, description="Log every evaluated benchmark to MLflow (track_benchmark jobs).")


# -- the root ----------------------------------------------------------------------------------------------
class Config(StrictModel):
    """A whole workflow config (``config/config.yaml``, ``bmi.yaml``, ``paper.yaml``...)."""

    meta: MetaConfig | None = Field(None, description="Meta-datasets of distributions with known MI.")
    estimators: dict[Label, EstimatorEntry] = Field(default_factory=dict, description="Estimator runs by label.")
    benchmarks: dict[Label, BenchmarkConfig] = Field(default_factory=dict, description="Benchmarks by name.")
    models: dict[ModelName, ModelEntry] = Field(
        default_factory=dict, description="Learned estimators to train (MIST / MIST-QR); see docs/learned.md."
    )
    tracking: TrackingConfig = Field(TrackingConfig(), description="MLflow tracking.")
    limits: Limits = Field(Limits(), description="Upper bounds on sizes, checked before anything is built.")

    def split_config(self, name: str) -> SplitConfig:
        if self.meta is None or name not in self.meta.splits:
            raise KeyError(name)
        return self.meta.splits[name]

    def shard_size(self, split: str) -> int:
        assert self.meta is not None
        return self.meta.splits[split].shard_size or self.meta.shard_size

    def as_written(self) -> dict[str, Any]:
        """Plain data with defaults filled in, estimator entries in their flat YAML form."""
        data = self.model_dump(mode="json")
        data["estimators"] = {label: e.as_written() for label, e in self.estimators.items()}
        return data


__all__ = [
    "DEFAULT_DIM_BINS",
    "DEFAULT_LEVELS",
    "RESERVED_ESTIMATOR_KEYS",
    "BenchmarkConfig",
    "Bootstrap",
    "Config",
    "Dims",
    "EstimatorEntry",
    "EstimatorResources",
    "Limits",
    "Linspace",
    "MetaConfig",
    "MixtureEntry",
    "NRange",
    "SplitConfig",
    "TaskConfig",
    "TrackingConfig",
    "central_taus",
]
