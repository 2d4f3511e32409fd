"""The documentation's worked examples run exactly as written."""

from __future__ import annotations

import importlib
import re
import sys

import yaml

from mibench.config import parse_config
from tests.support.configs import REPO


def blocks(path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (REPO / path).read_text(), flags=re.S)


def test_adding_an_estimator_example_runs(tmp_path, monkeypatch) -> None:
    python = blocks("docs/adding-an-estimator.md", "python")
    assert len(python) == 3
    (tmp_path / "my_estimators.py").write_text(python[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("my_estimators", None)
    module = importlib.import_module("my_estimators")  # registers gaussian_copula, as `module:` would
    exec(python[1], dict(vars(module)))  # accuracy on a transformed sparse Gaussian
    exec(python[2], {})  # a benchmark part through the runner, with bootstrap intervals
    assert (tmp_path / "demo-part-0000.parquet").exists()

    # the YAML example is a valid config whose typo'd variant yields the documented message
    config = parse_config(yaml.safe_load(blocks("docs/adding-an-estimator.md", "yaml")[0]))
    from mibench.benchmark import BenchmarkPlan

    assert BenchmarkPlan.from_config("copula_demo", config).n_cells == 2 * 2 * 3
    from mibench.estimators import build_estimator

    try:
        build_estimator("copula", {"estimator": "gaussian_copula", "rige": 1})
    except ValueError as exc:
        assert "config.estimators.copula.rige: unknown key; did you mean 'ridge'?" in str(exc)
    else:
        raise AssertionError("typo not rejected")


def test_the_calibration_example_in_learned_md_runs() -> None:
    (example,) = blocks("docs/learned.md", "python")
    exec(example, {})  # asserts ≥ 90 % coverage after calibration of an over-confident head
