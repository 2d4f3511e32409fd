"""Checkpoints: weights as safetensors, everything else as JSON. Loading is strict and never unpickles.

``model.safetensors`` holds the weights (and nothing executable); ``model.json`` next to it holds the format
tag, the architecture (so the model is rebuilt exactly), the normalisation, the τ grid, the training config
and outcome, the data splits, the mibench version, the tensor names/shapes and the SHA-256 of the weights
file. :func:`load_model` refuses - with a :class:`CheckpointError` naming the path and the mismatch - a
missing file, a JSON for another format, a weights file whose hash, names or shapes do not match the JSON.
A silently random model is impossible: weights are loaded with ``strict=True`` after our own checks.

The JSON is covered too, twice. The weights file's safetensors metadata (key ``mibench``) carries ``model_sha256``, the
SHA-256 of the JSON fields that define the model's outputs (:data:`MODEL_KEYS`: architecture with its heads,
normalisation, τ grid, tensors, quantile calibration): editing any of them after training - even where tensor shapes do not change
- is refused. And the JSON carries ``config_sha256`` over all of itself, so an edited training or data
section is refused too. Its ``tensors``, ``parameters``, ``taus`` and ``normalisation`` must also agree with
the weights and the architecture. Identical training still gives byte-identical weights (nothing
run-dependent, such as elapsed time, is hashed into them). Format version 1 had no such hashes; version 2
models read the raw dependence statistics, version 3 their excess over independence (same tensor shapes,
different meaning): older checkpoints are refused; retrain them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mibench import __version__
from mibench.config import ConfigError
from mibench.config.learned import Architecture
from mibench.io import atomic_write_file, atomic_write_text
from mibench.learned.calibration import QuantileCalibration
from mibench.learned.model import MISTModel

FORMAT = "mibench-mist"
FORMAT_VERSION = 3
#: JSON fields that decide what the model computes; their hash is stored inside the weights file
MODEL_KEYS = (
    "format",
    "format_version",
    "architecture",
    "normalisation",
    "taus",
    "parameters",
    "tensors",
    "calibration",
)


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed or does not match its config (message names the path)."""


def config_path(weights: str | os.PathLike) -> Path:
    """The JSON config that belongs to a ``.safetensors`` weights file (same stem, ``.json``)."""
    return Path(weights).with_suffix(".json")


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Atomically (:mod:`mibench.io`) write contiguous CPU copies of ``tensors`` to a safetensors file."""
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return atomic_write_file(path, lambda tmp: save_file(plain, tmp, metadata=metadata))


def write_json(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Atomically (:mod:`mibench.io`) write ``data`` as indented, key-sorted JSON."""
    return atomic_write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", path)


def save_checkpoint(
    model: MISTModel, path: str | os.PathLike, info: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``path`` (.safetensors) and its ``.json`` config; ``info`` adds training/data sections."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: checkpoint weights must be a .safetensors file")
    state = model.state_dict()
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mibench_version": __version__,
        "architecture": model.arch.to_dict(),
        "normalisation": model.arch.normalisation,
        "taus": list(model.arch.taus),
        "parameters": model.parameter_count(),
        "tensors": {k: list(v.shape) for k, v in state.items()},
        "calibration": model.calibration.to_dict() if model.calibration is not None else None,
        **dict(info or {}),
    }
    config = json.loads(json.dumps(config))  # exactly what reading the JSON back gives
    # one metadata key: safetensors writes a multi-key metadata map in varying order (weights must be reproducible)
    stamp = json.dumps({"format": FORMAT, "model_sha256": digest(config, MODEL_KEYS)}, sort_keys=True)
    save_tensors(state, path, metadata={"mibench": stamp})
    config["weights_sha256"] = sha256(path)
    config["config_sha256"] = digest(config)
    return path, write_json(config, config_path(path))


def digest(config: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """SHA-256 of the canonical JSON of ``config``'s ``keys`` (default: every key but ``config_sha256``)."""
    body = {k: v for k, v in config.items() if (k in keys if keys is not None else k != "config_sha256")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the JSON config of a checkpoint (``path`` may be the weights or the JSON)."""
    path = Path(path)
    json_path = config_path(path) if path.suffix != ".json" else path
    if not json_path.exists():
        raise CheckpointError(f"{json_path}: checkpoint config not found (expected next to the weights {path})")
    try:
        config = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{json_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{json_path}: not a MIST checkpoint config (format {found!r}, expected {FORMAT!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path}: checkpoint format version {config.get('format_version')!r}, this mibench reads "
            f"{FORMAT_VERSION} (the model's inputs changed between versions); retrain the model"
        )
    for key in ("architecture", "tensors", "weights_sha256"):
        if key not in config:
            raise CheckpointError(f"{json_path}: missing key {key!r}")
    return config


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[MISTModel, dict[str, Any]]:
    """Rebuild the model from ``path``'s JSON and load its weights strictly; returns (model in eval mode, config)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: expected the .safetensors weights of a MIST checkpoint")
    if not path.exists():
        raise CheckpointError(
            f"{path}: checkpoint not found; train it first (`mibench train --model NAME` or `snakemake {path}`)"
        )
    config = read_config(path)
    json_path = config_path(path)
    try:
        arch = Architecture.from_dict(config["architecture"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{json_path}: invalid architecture ({exc})") from None
    actual = sha256(path)
    if actual != config["weights_sha256"]:
        raise CheckpointError(
            f"{path}: weights do not match {json_path} (sha256 {actual[:12]}…, config says "
            f"{str(config['weights_sha256'])[:12]}…); the two files come from different runs"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    model = MISTModel(arch)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{k}: file {found[k]} vs model {expected[k]}"
        for k in expected.keys() & found.keys()
        if expected[k] != found[k]
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatches {shapes[:5]}{' …' if len(shapes) > 5 else ''}")
        raise CheckpointError(f"{path}: weights do not fit the architecture in {json_path}: {'; '.join(parts)}")
    _check_config_fields(config, arch, found, json_path, path, metadata)
    model.load_state_dict(tensors, strict=True)
    if config.get("calibration") is not None:
        try:
            model.calibration = QuantileCalibration.from_dict(config["calibration"])
        except ValueError as exc:
            raise CheckpointError(f"{json_path}: calibration: {exc}") from None
        if [round(t, 10) for t in model.calibration.taus] != [round(t, 10) for t in arch.taus]:
            raise CheckpointError(f"{json_path}: calibration's τ grid differs from the architecture's")
    return model.to(device).eval(), config


def _check_config_fields(
    config: Mapping[str, Any],
    arch: Architecture,
    shapes: Mapping[str, tuple[int, ...]],
    json_path: Path,
    path: Path,
    metadata: Mapping[str, str],
) -> None:
    """The JSON is the one written with these weights, and its fields agree with them (see the module docstring)."""
    try:
        recorded = json.loads(metadata.get("mibench", "{}")).get("model_sha256")
    except (json.JSONDecodeError, AttributeError):
        recorded = None
    if recorded is None:
        raise CheckpointError(
            f"{path}: the weights carry no hash of {json_path.name} (written by an older mibench or another tool); "
            "retrain the model (delete it and re-run) so its config is covered by the integrity check"
        )
    if recorded != digest(config, MODEL_KEYS):
        changed = "architecture (heads, widths), normalisation, τ grid, tensor list or quantile calibration"
        raise CheckpointError(
            f"{json_path}: edited after training: its {changed} no longer match what the weights {path.name} were "
            "saved with. Restore the file or retrain; loading it would silently change every output"
        )
    if config.get("config_sha256") != digest(config):
        raise CheckpointError(
            f"{json_path}: edited after it was written (its config_sha256 no longer matches its content: a "
            "training or data section was changed). Restore the file or retrain"
        )
    listed = {k: tuple(v) for k, v in (config.get("tensors") or {}).items()}
    if listed != dict(shapes):
        raise CheckpointError(f"{json_path}: 'tensors' does not list the tensors of {path.name}")
    count = sum(math.prod(s) for s in shapes.values())
    checks = (
        ("parameters", config.get("parameters"), count),
        ("taus", config.get("taus"), list(arch.taus)),
        ("normalisation", config.get("normalisation"), arch.normalisation),
    )
    for key, value, expected in checks:
        if value != expected:
            raise CheckpointError(f"{json_path}: {key} is {value!r} but the weights/architecture give {expected!r}")
