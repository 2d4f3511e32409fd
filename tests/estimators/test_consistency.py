"""The consistency wrapper and self-consistency checks (the protocol around any registered estimator)."""

from __future__ import annotations

import math

import pytest

from mibench.estimators import (
    build_estimator,
    load_builtin_estimators,
    make_estimator,
)
from mibench.estimators.consistency import fit_extrapolation, self_consistency_checks
from tests.support.neural import (
    FAST,
    gaussian_task,
)

load_builtin_estimators()


# ---------------------------------------------------------------------------------------------------------
# the consistency protocol (arXiv 2506.00330)


def test_consistency_protocol_on_a_consistent_estimator():
    task = gaussian_task(1.0, 2)
    est = build_estimator("consistent", {"inner": {"estimator": "_test_gauss"}})
    covered, flags = 0, []
    for seed in range(20):
        x, y = task.sample(2000, seed=seed)
        r = est(x, y, seed=seed)
        assert r.level == 0.68 and r.interval[0] < r.value < r.interval[1]
        assert r.extras["extrapolated_mi"] == r.value and len(r.extras["points"]) == 10
        assert r.interval_at(0.9)[0] < r.interval[0]  # wider levels come from the same error model
        flags.append(r.extras["consistent"])
        covered += r.interval[0] <= task.mi <= r.interval[1]
    assert sum(flags) >= 17  # an O(1/N)-biased estimator is (almost always) consistent
    assert 9 <= covered <= 19  # nominal 68% of 20 (binomial 95% range is about 9..18)


def test_consistency_protocol_flags_a_non_linear_bias():
    task = gaussian_task(1.0, 2)
    est = build_estimator("consistent", {"inner": {"estimator": "_test_slow_bias", "amplitude": 40.0}})
    flags = [est(*task.sample(2000, seed=s), seed=s).extras["consistent"] for s in range(5)]
    assert not any(flags)


def test_consistency_protocol_config_errors():
    with pytest.raises(ValueError, match="config.estimators.consistent.inner: needs a mapping with an `estimator` key"):
        build_estimator("consistent", {"inner": {"k": 3}})
    with pytest.raises(ValueError, match="unknown estimator"):
        build_estimator("consistent", {"inner": {"estimator": "no_such_estimator"}})
    est = build_estimator("consistent", {"inner": {"estimator": "_test_gauss"}, "min_subset_n": 50})
    x, y = gaussian_task(1.0, 1).sample(120, seed=0)
    with pytest.raises(ValueError, match="at least 3 subset sizes"):
        est(x, y, seed=0)


def test_fit_extrapolation_recovers_a_line():
    n = 1000
    pts = [{"gamma": g, "n_subset": n // g, "count": g, "mean": 2.0 - 50.0 / (n // g), "sd": 0.05} for g in range(1, 9)]
    fit = fit_extrapolation(pts, n)
    assert fit["intercept"] == pytest.approx(2.0, abs=1e-9) and fit["slope"] == pytest.approx(-50.0, abs=1e-6)
    assert all(p["on_line"] for p in fit["points"])


def test_consistency_wrapper_around_a_neural_estimator_batches_subsets():
    x, y = gaussian_task(1.0, 2).sample(1600, seed=0)
    inner = {"estimator": "smile", **FAST, "batch_size": 64, "steps": 200, "eval_every": 50}
    r = build_estimator("consistent", {"inner": inner, "max_gamma": 4, "min_subset_n": 100})(x, y, seed=0)
    assert [p["gamma"] for p in r.extras["points"]] == [1, 2, 3, 4]
    assert r.extras["inner"] == "smile" and 0.5 < r.value < 1.5


# ---------------------------------------------------------------------------------------------------------
# Song & Ermon (2020) self-consistency checks


def _checks(name):
    x, y = gaussian_task(1.0, 2).sample(3000, seed=0)
    return {r["check"]: r for r in self_consistency_checks(make_estimator(name), x, y, seed=0)}


def test_self_consistency_passes_a_correct_estimator():
    rows = _checks("_test_gauss")
    assert all(r["passed"] for r in rows.values()), rows
    assert rows["additivity"]["statistic"] == pytest.approx(2.0, abs=0.2)


def test_self_consistency_detects_broken_estimators():
    offset = _checks("_test_offset")
    assert not offset["independence"]["passed"] and not offset["additivity"]["passed"]
    first = _checks("_test_first_column")
    assert first["data_processing"]["passed"]  # a copy of X adds nothing, so this one cannot tell
    assert not first["additivity"]["passed"] and first["additivity"]["statistic"] == pytest.approx(1.0, abs=0.2)


def test_consistency_check_cli(tmp_path):
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from mibench.cli import app

    out = tmp_path / "checks.parquet"
    runner = CliRunner()
    res = runner.invoke(app, ["consistency-check", "--estimator", "_test_offset", "--n", "1000", "--out", str(out)])
    assert res.exit_code == 1, res.output  # a failed check is a non-zero exit, after the table is written
    assert "independence" in res.output and "additivity" in res.output
    assert "failed: independence" in res.output
    good = runner.invoke(app, ["consistency-check", "--estimator", "_test_gauss", "--n", "3000"])
    assert good.exit_code == 0, good.output
    table = pq.read_table(out).to_pylist()
    assert [r["check"] for r in table] == ["independence", "data_processing", "additivity"]
    assert table[0]["passed"] is False and table[0]["mi_true"] == pytest.approx(2 * -0.5 * math.log(1 - 0.64))
    bad = runner.invoke(app, ["consistency-check", "--estimator", "_test_gauss", "--set", "k=3"])
    assert bad.exit_code == 2 and "unknown key" in bad.output


def test_consistent_over_tree_ksg_does_not_import_torch() -> None:
    """Building the wrapper reads nothing of its inner estimator's device (the runner asks ``.inner``):
    KSG's lazy ``device`` would import torch on the tree backend."""
    import os
    import subprocess
    import sys

    from tests.support.configs import REPO

    code = (
        "import sys\n"
        "from mibench.estimators import build_estimator, load_builtin_estimators\n"
        "load_builtin_estimators()\n"
        "build_estimator('ksg', {})\n"
        "assert 'torch' not in sys.modules, 'plain ksg'\n"
        "build_estimator('c', {'estimator': 'consistent', 'inner': {'estimator': 'ksg'}})\n"
        "assert 'torch' not in sys.modules, 'consistent'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
