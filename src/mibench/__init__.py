"""mibench: benchmark mutual-information estimators on distributions whose MI is known exactly."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _source_version() -> str:
    """The version in pyproject.toml, for a source tree that runs without being installed (PYTHONPATH=src)."""
    import tomllib
    from pathlib import Path

    try:
        return tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, ValueError):
        return "0.0.0+unknown"


try:
    __version__ = version("mibench")
except PackageNotFoundError:  # a conda env of the workflow holds the dependencies only (docs/cluster.md)
    __version__ = _source_version()

__all__ = ["__version__"]
