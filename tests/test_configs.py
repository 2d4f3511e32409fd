"""The shipped configs: valid, every estimator label resolves, the BMI-like benchmark is what the docs claim."""

from __future__ import annotations

import math

import pytest

from mibench.benchmark import benchmark_plans
from mibench.config import load_config
from mibench.estimators import ESTIMATORS
from mibench.resolve import resolve_config

from .conftest import REPO

SHIPPED = ["config.yaml", "bmi.yaml", "paper.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_validates_and_its_estimators_resolve(name: str) -> None:
    resolved = resolve_config(REPO / "config" / name)
    assert resolved.benchmarks, f"{name} defines no benchmark"
    for label, est in resolved.estimators.items():
        assert est.name in ESTIMATORS, f"{name}: estimators.{label} names unknown estimator {est.name!r}"
        if "checkpoint" in est.params:
            # learned estimators take the train rule's output: it must be a model this config trains
            model = str(est.params["checkpoint"]).split("/")[-2]
            assert model in resolved.models, f"{name}: {label} reads a checkpoint no rule trains"
        else:
            est.build()  # hyperparameters accepted by the class, and it builds
    for plan in resolved.benchmarks.values():
        assert plan.n_cells > 0


def test_bmi_like_benchmark_covers_what_the_readme_says() -> None:
    plan = benchmark_plans(load_config(REPO / "config" / "bmi.yaml"))["bmi"]
    assert len(plan.tasks) >= 30
    dims = {(t.spec.dim_x, t.spec.dim_y) for t in plan.tasks}
    assert (1, 1) in dims and (25, 25) in dims
    families = {t.spec.family for t in plan.tasks}
    assert {"multinormal", "student", "additive_uniform", "mixture"} <= families
    dfs = {t.spec.params["df"] for t in plan.tasks if t.spec.family == "student"}
    assert len(dfs) >= 3, dfs
    transforms = {part for t in plan.tasks for part in t.spec.transform.replace(",", "+").split("+")}
    assert {"spiral", "wiggly", "halfcube"} <= {p.split(":")[-1] for p in transforms}
    for task in plan.tasks:
        assert math.isfinite(task.mi) and task.mi >= 0, task.name


def test_default_config_scores_learned_and_bootstrap_intervals_side_by_side() -> None:
    config = load_config(REPO / "config" / "config.yaml")
    meta = benchmark_plans(config)["meta"]
    assert set(meta.splits) == {"test_imd", "test_oomd", "test_heldout"}
    labels = set(meta.estimators)
    assert {"mist", "mist_qr", "ksg_bootstrap", "mist_bootstrap"} <= labels
