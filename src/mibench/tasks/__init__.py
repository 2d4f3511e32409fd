"""Task families with exact MI, MI-preserving transforms, and the task specification used everywhere.

A *task* is a distribution (family, structure, dims, parameters) plus transforms for X and Y. Its MI is the
MI of the untransformed distribution, because every transform is injective on its side.

>>> from mibench.tasks import TaskSpec
>>> task = TaskSpec("multinormal", "dense", 1, 1, {"rho": 0.8}).build()
>>> round(task.mi, 6)  # -½ log(1 - 0.8²)
0.510826
>>> x, y = task.sample(100, seed=0)
>>> x.shape, y.shape
((100, 1), (100, 1))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# importing the family modules registers them
from mibench.tasks import additive, discrete, gaussian, mixture, student  # noqa: F401
from mibench.tasks.base import (
    FAMILIES,
    Distribution,
    Family,
    Param,
    TaskParameterError,
    canonical_json,
    get_family,
)
from mibench.tasks.transforms import TRANSFORMS, Transform, TransformSpec, check_saturation

__all__ = [
    "FAMILIES",
    "TRANSFORMS",
    "Distribution",
    "Family",
    "Param",
    "Task",
    "TaskParameterError",
    "TaskSpec",
    "Transform",
    "TransformSpec",
    "canonical_json",
    "get_family",
    "parse_entry",
]


#: config.limits.max_sample_mib's default, in bytes: the cap a caller without a config passes to :meth:`Task.sample`
#: (configured sizes are checked against ``config.limits`` by ``resolve`` before any job samples).
DEFAULT_MAX_SAMPLE_BYTES = 2048 * 2**20


def parse_entry(entry: str) -> tuple[str, str, str]:
    """Split a ``family-structure-transform`` entry (transform optional) and check every name."""
    parts = entry.strip().split("-", 2)
    if len(parts) < 2 or not all(parts):
        raise TaskParameterError(f"malformed task entry {entry!r}: expected 'family-structure[-transform]'")
    family_name, structure = parts[0], parts[1]
    family = get_family(family_name)
    family.check_structure(structure)
    transform = str(TransformSpec.parse(parts[2] if len(parts) == 3 else "base"))
    return family_name, structure, transform


class _ReadRecorder(dict):
    """A parameter mapping that remembers which keys a family read.

    Only explicit reads count (``[key]``, ``get``, ``in``): iterating the whole mapping (to serialise it as
    a distribution's key, or to show it in an error message) reads no parameter, so a mistyped one stays unread.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


@dataclass(frozen=True)
class TaskSpec:
    """Everything that defines a task; its JSON form is what Parquet rows store."""

    family: str
    structure: str
    dim_x: int
    dim_y: int
    params: Mapping[str, Any] = field(default_factory=dict)
    transform: str = "base"

    @property
    def entry(self) -> str:
        return f"{self.family}-{self.structure}-{self.transform}"

    @property
    def params_json(self) -> str:
        return canonical_json(self.params)

    @property
    def key(self) -> str:
        """Stable identity of the distribution (not of a sample): family, structure, transform, dims, params."""
        text = canonical_json([self.family, self.structure, self.transform, self.dim_x, self.dim_y, self.params])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def build(self, strict: bool = False) -> Task:
        """Validate everything and return a ready-to-sample :class:`Task` (no sampling happens here).

        ``dim_x``/``dim_y`` are the dimensions of the transformed sample; a dimension-changing transform
        (``swissroll``: 1 → 2) means the distribution underneath has :meth:`base_dims`. ``strict`` also
        refuses parameters the family never reads (``df`` on a multinormal): config validation builds
        strictly, so a parameter that would be silently ignored is an error instead.
        """
        family = get_family(self.family)
        transform = TransformSpec.parse(self.transform)
        (min_x, fixed_x), (min_y, fixed_y) = transform.base_dim_bounds("x"), transform.base_dim_bounds("y")
        if (fixed_x is None and self.dim_x < min_x) or (fixed_y is None and self.dim_y < min_y):
            raise TaskParameterError(
                f"{self.entry}: transform {self.transform!r} needs dims >= {min_x}x{min_y}, "
                f"got {self.dim_x}x{self.dim_y}"
            )
        try:
            base_x, base_y = transform.base_dims(int(self.dim_x), int(self.dim_y))
        except TaskParameterError as exc:
            raise TaskParameterError(f"{self.entry}: {exc}") from None
        params = _ReadRecorder(self.params) if strict else self.params
        distribution = family.build(self.structure, base_x, base_y, params)
        if strict:
            assert isinstance(params, _ReadRecorder)
            unread = sorted(set(self.params) - params.read)
            if unread:
                read = ", ".join(sorted(params.read)) or "no parameters"
                raise TaskParameterError(
                    f"{self.family}-{self.structure}: unknown parameter(s) {unread}; it reads: {read}"
                )
        check_saturation(transform, distribution.tail_probability, f"{self.entry} {self.dim_x}x{self.dim_y}")
        return Task(self, distribution, transform)

    def base_dims(self) -> tuple[int, int]:
        """Dimensions of the distribution before any dimension-changing transform."""
        return TransformSpec.parse(self.transform).base_dims(int(self.dim_x), int(self.dim_y))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TaskSpec:
        """Rebuild the spec from a meta/estimates row (``params`` as a JSON string)."""
        params = row["params"]
        return cls(
            family=row["family"],
            structure=row["structure"],
            dim_x=int(row["dim_x"]),
            dim_y=int(row["dim_y"]),
            params=json.loads(params) if isinstance(params, str) else dict(params),
            transform=row["transform"],
        )


@dataclass
class Task:
    spec: TaskSpec
    distribution: Distribution
    transform: TransformSpec

    @property
    def mi(self) -> float:
        """Exact MI in nats (transforms do not change it)."""
        return self.distribution.mi

    def sample(
        self, n: int, seed: int | np.random.Generator, max_bytes: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` pairs and apply the transforms; float64 arrays (n, dim_x), (n, dim_y).

        The memory a sample needs (n x (dim_x + dim_y) x 8 bytes) is checked against ``max_bytes``, when given,
        before anything is allocated. No cap by default: sizes from a config are checked against
        ``config.limits`` before any job samples (``resolve``), so a fixed cap here would refuse a limit the
        config raised; a caller sampling an arbitrary ``n`` passes one (e.g. ``DEFAULT_MAX_SAMPLE_BYTES``).
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
            raise TaskParameterError(f"{self.spec.entry}: sample size n must be an integer >= 2, got {n!r}")
        needed = int(n) * (self.spec.dim_x + self.spec.dim_y) * 8
        if max_bytes is not None and needed > max_bytes:
            raise TaskParameterError(
                f"{self.spec.entry}: n={int(n):,} x ({self.spec.dim_x} + {self.spec.dim_y}) dims needs "
                f"{needed / 2**30:.1f} GiB per sample, over the {max_bytes / 2**30:.1f} GiB limit "
                "(config.limits.max_sample_mib)"
            )
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        x, y = self.distribution.sample(int(n), rng)
        return self.transform.apply(x, y)
