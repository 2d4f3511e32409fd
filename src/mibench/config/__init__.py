"""The workflow config: typed models (:mod:`.schema`, :mod:`.learned`), strict YAML, key-path errors.

>>> from mibench.config import parse_config
>>> cfg = parse_config({"estimators": {"ksg": {"k": 5}}})
>>> cfg.estimators["ksg"].hyperparameters
{'k': 5}

``load_config(path)`` reads a YAML file (duplicate keys refused) and returns a :class:`Config`; checks that
need the task and estimator registries or the split plans are done by :func:`mibench.resolve.resolve_config`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mibench.config.base import ConfigError, StrictModel, config_error, non_finite_paths, parse_model
from mibench.config.learned import DEFAULT_TAUS, PRESETS, Architecture, ModelEntry, ModelSpec, model_spec
from mibench.config.schema import (
    DEFAULT_DIM_BINS,
    DEFAULT_LEVELS,
    RESERVED_ESTIMATOR_KEYS,
    BenchmarkConfig,
    Config,
    EstimatorEntry,
    Limits,
    SplitConfig,
    TaskConfig,
)
from mibench.config.yaml_strict import DuplicateKeyError, load_yaml, load_yaml_file

__all__ = [
    "DEFAULT_DIM_BINS",
    "DEFAULT_LEVELS",
    "DEFAULT_TAUS",
    "PRESETS",
    "RESERVED_ESTIMATOR_KEYS",
    "Architecture",
    "BenchmarkConfig",
    "Config",
    "ConfigError",
    "EstimatorEntry",
    "Limits",
    "ModelEntry",
    "ModelSpec",
    "SplitConfig",
    "StrictModel",
    "TaskConfig",
    "as_config",
    "config_error",
    "config_fingerprint",
    "load_config",
    "load_yaml",
    "missing_model_splits",
    "model_spec",
    "parse_config",
    "read_config_files",
]


def parse_config(data: Mapping[str, Any] | Config, source: str | None = None) -> Config:
    """Validate plain config data (what YAML gives) into a :class:`Config`; errors name every bad key."""
    if isinstance(data, Config):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source or 'config'}: expected a mapping at the top level, got {type(data).__name__}")
    bad = non_finite_paths(dict(data), "config")
    if bad:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}{', '.join(bad[:5])}: must be a finite number (NaN and infinity are not allowed)")
    return parse_model(Config, dict(data), "config", source)


def as_config(config: Mapping[str, Any] | Config | str | os.PathLike | Sequence[str | os.PathLike]) -> Config:
    """Accept a :class:`Config`, plain data, a YAML path or several (merged like ``snakemake --configfile a b``)."""
    if isinstance(config, Config):
        return config
    if isinstance(config, str | os.PathLike) or (isinstance(config, Sequence) and not isinstance(config, Mapping)):
        return load_config(config)
    return parse_config(config)


def read_config_files(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Read and merge YAML files the way ``snakemake --configfile a b`` does (later keys win, recursively),
    refusing duplicate keys within a file."""
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        try:
            raw = load_yaml_file(path)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except DuplicateKeyError as exc:
            raise ConfigError(str(exc)) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
        _merge(merged, raw)
    return merged


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def load_config(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Config:
    """Read one YAML file (or several, merged like Snakemake) and validate it; errors name the file and key."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    return parse_config(read_config_files(paths), source=", ".join(map(str, paths)))


def missing_model_splits(config: Config, name: str, spec: ModelSpec) -> list[str]:
    """A message per data split of ``config.models.<name>`` that ``config.meta.splits`` does not define
    (what the config check lists and what training refuses to start without)."""
    known = config.meta.splits if config.meta is not None else {}
    return [
        f"config.models.{name}.data.{key}: no split {split!r} in config.meta.splits "
        f"(splits: {', '.join(known) or 'none'})"
        for key in ("train_split", "validation_split")
        if (split := getattr(spec.data, key)) is not None and split not in known
    ]


def config_fingerprint(config: Config | Mapping[str, Any]) -> str:
    """Short stable hash of a whole config with its defaults filled in (provenance of rows, runs, reports)."""
    data = as_config(config).as_written()
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
