"""Fixtures of this folder's tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import tests.support.estimators  # noqa: F401 - registers the test estimators
from tests.support.configs import GRID, bench_config
from tests.support.integrity import (
    build_results,
    validate,
)


@pytest.fixture(scope="package")
def base(tmp_path_factory) -> tuple[Path, dict]:
    config = validate(
        bench_config(
            grid={**GRID, "estimators": ["corr", "odd"]},
            mist={"splits": ["test_imd"], "estimators": ["corr"]},
        )
    )
    return build_results(tmp_path_factory.mktemp("base"), config), config


@pytest.fixture
def results(base, tmp_path) -> tuple[Path, dict]:
    """A private copy of the shared results folder (time stamps kept)."""
    src, config = base
    dst = tmp_path / "results"
    shutil.copytree(src, dst)
    return dst, config
