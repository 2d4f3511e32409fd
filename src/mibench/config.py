"""Loading and validating workflow configs (the same JSON schema Snakemake validates against).

The schema file ships inside the package (``mibench/config.schema.yaml``) and
``workflow/schemas/config.schema.yaml`` links to it, so the CLI and the Snakefile validate identically.
Semantic checks the schema cannot express (known family names, feasible dimensions, disjoint seed roots)
live next to the code that needs them and raise :class:`ConfigError` with the config key path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_RESOURCE = "config.schema.yaml"


class ConfigError(ValueError):
    """A config value that is missing, malformed or impossible; the message names the key path."""


def schema() -> dict[str, Any]:
    return yaml.safe_load(files("mibench").joinpath(SCHEMA_RESOURCE).read_text())


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path]
    return "config" + "".join(parts)


def validate(config: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """Validate against the schema (filling defaults) and return a plain dict copy."""
    data = json.loads(json.dumps(config))  # plain, mutable copy
    validator_cls = jsonschema.validators.validator_for(schema())
    extend = jsonschema.validators.extend

    def set_defaults(validator, properties, instance, sub_schema):
        if isinstance(instance, dict):
            for key, prop in properties.items():
                if isinstance(prop, dict) and "default" in prop:
                    instance.setdefault(key, json.loads(json.dumps(prop["default"])))
        yield from validator_cls.VALIDATORS["properties"](validator, properties, instance, sub_schema)

    validator = extend(validator_cls, {"properties": set_defaults})(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        prefix = f"{source}: " if source else ""
        raise ConfigError(f"{prefix}{_key_path(err)}: {err.message}")
    return data


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it; errors name the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return validate(raw, source=str(path))


def config_hash(config: Mapping[str, Any]) -> str:
    """Short stable hash of a config (tagged on MLflow runs, stored in Parquet metadata)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
