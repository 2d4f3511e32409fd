"""Fixtures of this folder's tests."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mibench.config import parse_config
from mibench.config.learned import PRESETS
from mibench.learned.checkpoint import load_model
from mibench.learned.model import MISTModel
from mibench.learned.trainer import train_from_config
from tests.support.learned import (
    tiny_model_entry,
)


@pytest.fixture
def learn_config(tiny_config) -> dict:
    cfg = copy.deepcopy(tiny_config)
    cfg["meta"]["splits"]["validation"] = {**cfg["meta"]["splits"]["train"], "root_seed": 13, "count": 8}
    cfg["models"] = {"mist": tiny_model_entry()}
    parse_config(cfg)  # valid
    return cfg


@pytest.fixture(scope="package")
def trained(tmp_path_factory) -> Path:
    """A tiny model trained for a few dozen steps (weights that react to their input)."""
    from tests.support.configs import TINY_META

    cfg = {"meta": copy.deepcopy(TINY_META)}
    cfg["meta"]["splits"]["validation"] = {**cfg["meta"]["splits"]["train"], "root_seed": 13, "count": 8}
    cfg["models"] = {"mist": tiny_model_entry(steps=30)}
    out = tmp_path_factory.mktemp("trained")
    result = train_from_config(parse_config(cfg), "mist", out, tracking=False, progress=False)
    assert result.status == "complete"
    return result.weights


@pytest.fixture(scope="module", params=["trained", "no_dependence_stats", "no_cell_stage"])
def model64(request, trained) -> MISTModel:
    """The trained tiny model (it reads the dependence statistics), and untrained ones without the statistics
    and without the 2-D cell stage (``cell_layers: 0``)."""
    if request.param == "trained":
        model, _ = load_model(trained)
    else:
        torch.manual_seed(0)
        change = {"dependence_stats": False} if request.param == "no_dependence_stats" else {"cell_layers": 0}
        model = MISTModel(PRESETS["tiny"].replace(**change)).eval()
    return model.double()
