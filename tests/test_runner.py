"""The benchmark runner: estimates schema round-trip, error/timeout rows, resume, split cells."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.benchmark import BenchmarkPlan
from mibench.config import ConfigError, parse_config
from mibench.layout import ESTIMATES_SCHEMA
from mibench.meta import generate_split
from mibench.meta.shards import write_shard
from mibench.runner import run_part
from tests.support.configs import GRID, TEST_MODULE, bench_config


def plan_for(config: dict, name: str = "grid") -> BenchmarkPlan:
    return BenchmarkPlan.from_config(name, parse_config(config))


@pytest.fixture
def grid_config() -> dict:
    config = bench_config(
        grid={**GRID, "estimators": ["corr", "broken", "odd", "slow", "nan", "typo"], "timeout_s": 0.3}
    )
    # a bad entry, given straight to the runner (config validation refuses it before any job: test_config_checks)
    config["estimators"]["typo"] = {"estimator": "first_column_corr", "module": TEST_MODULE, "clipp": 0.5}
    return config


def test_grid_plan_parts_and_cells(grid_config) -> None:
    plan = plan_for(grid_config)
    assert plan.n_cells == 3 * 2 * 2 and plan.n_parts == 3
    cells = [c for part in range(plan.n_parts) for c, _, _ in plan.part_cells(part)]
    assert len(cells) == 12 and len({c.sample_id for c in cells}) == 12
    assert {c.task for c in cells} == {"multinormal-dense-base-1x1", "t-asinh", "additive_uniform-diag-base-1x1"}
    # the same cell is the same data every time (seeded), and its MI is the task's exact MI
    c0, x0, y0 = next(plan.part_cells(0))
    c1, x1, y1 = next(plan_for(grid_config).part_cells(0))
    assert c0 == c1 and np.array_equal(x0, x1) and np.array_equal(y0, y1)
    assert c0.mi == pytest.approx(-0.5 * np.log(1 - 0.36))


def test_estimates_schema_round_trip(grid_config, tmp_path) -> None:
    plan = plan_for(grid_config)
    out = tmp_path / "part-0000.parquet"
    table = run_part(plan, "corr", grid_config["estimators"]["corr"], 0, out)
    back = pq.read_table(out)
    assert back.schema.equals(ESTIMATES_SCHEMA) and back.equals(table)
    rows = back.to_pylist()
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["benchmark"] == "grid" and r["estimator"] == "corr"
        assert json.loads(r["estimator_params"]) == grid_config["estimators"]["corr"]
        assert r["ci_level"] == 0.95 and r["ci_low"] <= r["mi_estimate"] <= r["ci_high"]
        assert [q["tau"] for q in r["quantiles"]] == sorted(q["tau"] for q in r["quantiles"])
        assert "r" in json.loads(r["extras"]) and r["device"] == "cpu" and r["seconds"] >= 0
        assert len(r["git_sha"]) >= 7 and r["mibench_version"]
    assert not (tmp_path / "part-0000.parquet.partial").exists()


@pytest.mark.parametrize(
    ("label", "status", "message"),
    [
        ("broken", "error", "RuntimeError: deliberate failure"),
        ("slow", "timeout", "CellTimeout: exceeded the time budget of 0.3 s"),
        ("nan", "error", "non-finite value"),
        ("typo", "error", "config.estimators.typo.clipp: unknown key; did you mean 'clip'?"),
    ],
)
def test_failing_estimators_write_error_rows_for_every_cell(grid_config, tmp_path, label, status, message) -> None:
    plan = plan_for(grid_config)
    rows = run_part(plan, label, grid_config["estimators"][label], 1, tmp_path / "p.parquet").to_pylist()
    assert len(rows) == 5
    assert {r["status"] for r in rows} == {status}
    assert all(message in r["error"] for r in rows)
    assert all(r["mi_estimate"] is None and r["mi_true"] > 0 for r in rows)


def test_one_failing_cell_does_not_stop_the_part(grid_config, tmp_path) -> None:
    plan = plan_for(grid_config)
    rows = run_part(plan, "odd", grid_config["estimators"]["odd"], 0, tmp_path / "p.parquet").to_pylist()
    odd = [r for r in rows if r["seed"] % 2]
    even = [r for r in rows if not r["seed"] % 2]
    assert odd and even
    assert all(r["status"] == "error" and "odd seed" in r["error"] for r in odd)
    assert all(r["status"] == "ok" for r in even)


def test_killed_part_resumes_from_its_checkpoint(grid_config, tmp_path, monkeypatch) -> None:
    """A job killed mid-part keeps its finished cells; the re-run computes only the missing ones."""
    from tests.support.estimators import FirstColumnCorrelation

    plan = plan_for(grid_config)
    entry = grid_config["estimators"]["corr"]
    out = tmp_path / "part-0000.parquet"
    calls = {"n": 0}
    original = FirstColumnCorrelation.estimate

    def dies_on_third(self, x, y, *, seed):
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("killed")  # not an Exception: the runner does not catch it, like a kill
        return original(self, x, y, seed=seed)

    monkeypatch.setattr(FirstColumnCorrelation, "estimate", dies_on_third)
    with pytest.raises(SystemExit):
        run_part(plan, "corr", entry, 0, out, checkpoint_s=0)
    partial = pq.read_table(tmp_path / "part-0000.parquet.partial").to_pylist()
    assert not out.exists() and len(partial) == 2

    calls["n"] = -100  # no more deaths
    rows = run_part(plan, "corr", entry, 0, out).to_pylist()
    assert calls["n"] == -100 + 3  # only the 3 missing cells were estimated
    assert rows[:2] == partial  # finished rows kept byte for byte (timings included)
    assert len(rows) == 5 and not (tmp_path / "part-0000.parquet.partial").exists()


def test_split_benchmark_reads_shards_and_bad_data_becomes_error_rows(tmp_path) -> None:
    config = parse_config(bench_config(mist=({"splits": ["test_imd"], "estimators": ["corr"], "n_bins": [10, 15, 20]})))
    generate_split(config, "test_imd", tmp_path / "meta", progress=False)
    plan = BenchmarkPlan.from_config("mist", config)
    assert plan.n_parts == 4 and plan.part_inputs(1, str(tmp_path / "meta"))[0].endswith("test_imd/shard-0001.parquet")
    rows = run_part(
        plan, "corr", config.estimators["corr"], 0, tmp_path / "p.parquet", meta_root=tmp_path / "meta"
    ).to_pylist()
    assert len(rows) == 5 and all(r["split"] == "test_imd" and r["status"] == "ok" for r in rows)

    # a shard whose data hold NaN / a constant column: clear error rows, the other cells complete
    shard = tmp_path / "meta" / "test_imd" / "shard-0000.parquet"
    table = pq.read_table(shard)
    meta_rows = table.drop_columns(["x", "y"]).to_pylist()
    xs = [
        np.array(v, np.float32).reshape(r["n"], r["dim_x"])
        for v, r in zip(table["x"].to_pylist(), meta_rows, strict=True)
    ]
    ys = [
        np.array(v, np.float32).reshape(r["n"], r["dim_y"])
        for v, r in zip(table["y"].to_pylist(), meta_rows, strict=True)
    ]
    xs[0][3, 0] = np.nan
    ys[1][:, 0] = 1.0
    write_shard(shard, meta_rows, xs, ys)
    rows = run_part(
        plan, "corr", config.estimators["corr"], 0, tmp_path / "p.parquet", meta_root=tmp_path / "meta"
    ).to_pylist()
    assert rows[0]["status"] == "error" and "X has 1 non-finite value(s), first at row 3, column 0" in rows[0]["error"]
    assert rows[1]["status"] == "error" and "column(s) [0] of Y are constant" in rows[1]["error"]
    assert all(r["status"] == "ok" for r in rows[2:])


@pytest.mark.parametrize(
    ("bench", "message"),
    [
        ({"estimators": ["nope"], "tasks": GRID["tasks"], "n": [10]}, "'nope' is not defined under config.estimators"),
        ({"estimators": ["corr"], "splits": ["test_x"]}, "no meta split 'test_x'"),
        ({"estimators": ["corr"], "tasks": GRID["tasks"]}, "a task grid needs 'n'"),
        ({"estimators": ["corr"], "tasks": GRID["tasks"], "n": [10], "splits": ["test_imd"]}, "either 'tasks'"),
        (
            {"estimators": ["corr"], "n": [10], "tasks": [{"family": "multinormal", "dims": [1, 1]}]},
            "tasks[0]: give 'entry'",
        ),
        (
            {
                "estimators": ["corr"],
                "n": [10],
                "tasks": [{"entry": "multinormal-dense", "dims": [1, 1], "params": {"rho": 2}}],
            },
            "config.benchmarks.b.tasks[0]: multinormal-dense: parameter 'rho'=2 is outside",
        ),
        (
            {"estimators": ["corr"], "n": [10], "tasks": [GRID["tasks"][0], GRID["tasks"][0]]},
            "duplicate task names ['multinormal-dense-base-1x1']",
        ),
    ],
)
def test_benchmark_config_errors_name_the_key(bench, message) -> None:
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        BenchmarkPlan.from_config("b", parse_config(bench_config(b=bench)))


def test_rule_context_keeps_jobs_without_a_gpu_resource_off_the_gpu(tmp_path, monkeypatch) -> None:
    from mibench.devices import DEVICE_ENV, resolve_device
    from mibench.workflow import rule_context

    for var in (DEVICE_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    with rule_context(tmp_path / "cpu.log", 1, gpus=0):
        assert os.environ[DEVICE_ENV] == "cpu"
        assert resolve_device("auto") == "cpu"
    monkeypatch.delenv(DEVICE_ENV)
    with rule_context(tmp_path / "gpu.log", 1, gpus=1):
        assert DEVICE_ENV not in os.environ  # `auto` may take the GPU the job was given
    monkeypatch.setenv(DEVICE_ENV, "cuda:1")
    with rule_context(tmp_path / "user.log", 1, gpus=0):
        assert os.environ[DEVICE_ENV] == "cuda:1"  # the user's choice wins


@pytest.mark.parametrize("setting", ["console", None])
def test_rule_context_tees_progress_lines_to_the_terminal_when_asked(tmp_path, monkeypatch, setting) -> None:
    """Progress lines (logger mibench.progress.* or extra={'progress': True}) reach the job's log line by line,
    and the terminal only with MIBENCH_PROGRESS=console; other lines stay in the log."""
    import io
    import logging
    import sys

    from mibench.progress import CONSOLE_ENV, progress_logger
    from mibench.workflow import rule_context

    terminal = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", terminal)
    if setting:
        monkeypatch.setenv(CONSOLE_ENV, setting)
    else:
        monkeypatch.delenv(CONSOLE_ENV, raising=False)
    log_path = tmp_path / "results" / "logs" / "train" / "m.log"
    with rule_context(log_path, 1) as log:
        progress_logger("train").info("step 10/100 loss 0.5")
        assert "step 10/100" in log_path.read_text(), "written at once, not when the job ends"
        logging.getLogger("mibench.learned.trainer").info("step 20/100 loss 0.4", extra={"progress": True})
        log.info("not a progress line")
    text = log_path.read_text()
    assert "step 20/100 loss 0.4" in text and "not a progress line" in text
    shown = terminal.getvalue()
    if setting:
        assert "[train/m] step 10/100 loss 0.5" in shown and "[train/m] step 20/100 loss 0.4" in shown
        assert "not a progress line" not in shown
    else:
        assert shown == ""
    assert not any(type(h).__name__ == "StreamHandler" and h.stream is terminal for h in logging.getLogger().handlers)


def test_a_workflow_shard_job_knows_its_samples_and_refuses_a_foreign_shard(tmp_path) -> None:
    """The estimate job reads only its params (as the workflow's script does): its part size is the plan's, and a
    valid shard of another configuration put in place of its own is refused by name, as on the plan's path."""
    from mibench.jobs import EstimateJob, Jobs
    from mibench.meta.shards import ShardError
    from mibench.resolve import resolve_config

    config = bench_config(mist={"splits": ["test_imd"], "estimators": ["corr"], "n_bins": [10, 15, 20]})
    resolved = resolve_config(config)
    plan = resolved.benchmarks["mist"]
    job = EstimateJob.from_params(Jobs(resolved).estimate("mist", "corr", 1))
    assert job.part_size(1) == plan.part_size(1) == len(plan.part_sample_ids(1)) > 0
    other = copy.deepcopy(config)
    other["meta"]["splits"]["test_imd"]["root_seed"] = 99
    generate_split(parse_config(other), "test_imd", tmp_path / "meta", progress=False)
    with pytest.raises(ShardError, match=r"shard-0001\.parquet: not shard 1 of split 'test_imd' as configured"):
        list(job.part_cells(1, tmp_path / "meta"))


def test_limits_and_checkpoint_pacing_change_no_job(tmp_path) -> None:
    """Limits only gate the DAG and checkpoint_s only paces checkpoints: raising them re-runs nothing."""
    from mibench.jobs import Jobs
    from mibench.resolve import resolve_config

    def fingerprints(config: dict) -> list[str]:
        jobs = Jobs(resolve_config(config))
        return [jobs.estimate("grid", "corr", p)["fingerprint"] for p in range(2)] + [
            jobs.evaluate("grid")["fingerprint"]
        ]

    config = bench_config(grid={**GRID, "estimators": ["corr"]})
    raised = copy.deepcopy(config)
    raised["limits"] = {"max_seeds": 20_000, "max_sample_mib": 4096}
    raised["benchmarks"]["grid"]["checkpoint_s"] = 5
    assert fingerprints(raised) == fingerprints(config)
    config["benchmarks"]["grid"]["n"] = [50, 300]  # and a change of what is computed does change them
    assert fingerprints(config) != fingerprints(raised)


def test_an_empty_shard_is_not_the_planned_one(tmp_path) -> None:
    """A well-formed shard without rows holds none of its planned samples: refused, not an empty part."""
    from mibench.benchmark import shard_cells
    from mibench.meta.shards import ShardError

    path = write_shard(tmp_path / "shard-0000.parquet", [], [], [])
    with pytest.raises(ShardError, match=r"not shard 0 of split 'test' as configured: it holds 0 samples"):
        list(shard_cells(path, "test", ["a1b2c3d4e5f60718"], 0))
    assert list(shard_cells(path, "test")) == []  # nothing planned to compare with: no check
