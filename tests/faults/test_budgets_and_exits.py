"""Per-cell budgets when batched, SIGTERM during a batch, honest exits and the run summary, fair ranking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.runner import run_part
from tests.support.commands import snakemake
from tests.support.configs import GRID, REPO, TEST_MODULE, bench_config, write_config
from tests.support.faults import (
    child,
    faulty_entry,
    grid_config,
    plan_of,
    reference,
    same_results,
)

# --------------------------------------------------------- issue 11: budgets per cell when batched, honest exits
#
# Batched estimators (neural stacks, MIST) take many cells per call. `batched_sleepy` models such a call: its
# cells run together and finish one by one; with slow_n=200 the six n=200 cells of the GRID part need 0.9 s
# each, the six n=50 cells 0.03 s, under timeout_s 0.3. `silent_batched_sleepy` cannot report cells early
# (like one forward pass). MIBENCH_TEST_FAULTS=off makes every cell fast: the fault-free reference.


def batched_entry(estimator: str = "batched_sleepy", slow_seconds: float = 0.9) -> dict:
    return {"estimator": estimator, "module": TEST_MODULE, "seconds": 0.03, "slow_seconds": slow_seconds, "slow_n": 200}


PER_CELL = "CellTimeout: exceeded the time budget of 0.3 s per cell (estimated alone, after its batch of 12 cells"


@pytest.mark.parametrize("estimator", ["batched_sleepy", "silent_batched_sleepy"])
def test_a_batch_that_runs_out_of_time_keeps_its_finished_cells(monkeypatch, tmp_path, ledger, estimator) -> None:
    """Before: one pooled budget of 3.6 s for the 12 cells; it ran out and all 12 became timeout rows saying
    'budget of 3.6 s'. Now the 6 fast cells are ok and only the 6 slow ones time out, each with the per-cell budget."""
    config = grid_config(cells_per_job=12, timeout_s=0.3)
    plan = plan_of(config)
    entry = batched_entry(estimator)
    table = run_part(plan, "b", entry, 0, tmp_path / "part-0000.parquet")
    rows = table.to_pylist()
    fast = [i for i, r in enumerate(rows) if r["n"] == 50]
    slow = [i for i, r in enumerate(rows) if r["n"] == 200]
    ref = reference(monkeypatch, plan, "b", entry, 0, tmp_path)
    identical = same_results(table.take(fast), ref.take(fast))
    kept = all(rows[i]["status"] == "ok" for i in fast)
    named = all(rows[i]["status"] == "timeout" and rows[i]["error"].startswith(PER_CELL) for i in slow)
    ledger(
        fault=f"slow cells in a batched call ({'no early reports' if 'silent' in estimator else 'cells reported as done'})",
        group="faults while running",
        injected="6 of 12 cells need 0.9 s under timeout_s 0.3, one estimate_many call",
        expected="fast cells ok, only the slow ones timeout rows naming the per-cell budget",
        observed=f"{len(fast)} ok, {len(slow)} timeout: " + (rows[slow[0]]["error"] or "")[:90] + "…",
        outcome="right answer" if kept and named and identical else "silently wrong",
        results_lost=sum(rows[i]["status"] != "ok" for i in fast),
        rerun_work="none (the rows are results)",
        identical=identical,
    )
    assert len(fast) == len(slow) == 6
    assert all(rows[i]["status"] == "ok" and rows[i]["mi_estimate"] == 0.05 for i in fast)
    assert all(rows[i]["seconds"] < 0.3 for i in fast), "a kept cell is charged its share, within its budget"
    for i in slow:
        assert rows[i]["status"] == "timeout" and rows[i]["error"].startswith(PER_CELL), rows[i]["error"]
        assert "3.6" not in rows[i]["error"]
    assert [r["sample_id"] for r in rows] == [c.sample_id for c, _, _ in plan.part_cells(0)], "rows in cell order"
    assert [r["status"] for r in ref.to_pylist()] == ["ok"] * 12
    assert identical


def test_sigterm_during_a_batched_call_keeps_the_cells_it_finished(monkeypatch, tmp_path, venv_env, ledger) -> None:
    """SIGTERM while a batched call still trains its slow cells: the cells it already reported are checkpointed."""
    config = grid_config(cells_per_job=12, timeout_s=30, checkpoint_s=0)
    config["estimators"]["b"] = entry = batched_entry(slow_seconds=120)
    plan = plan_of(config)
    out = tmp_path / "est" / "part-0000.parquet"
    partial = out.with_name(out.name + ".partial")
    proc = child(venv_env, config, "b", 0, out, wait=False)
    try:
        deadline = time.monotonic() + 90
        while not (partial.exists() and pq.read_metadata(partial).num_rows >= 6):
            assert time.monotonic() < deadline and proc.poll() is None, "the child never finished its fast cells"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    finally:
        proc.kill()
    kept = pq.read_table(partial).to_pylist() if partial.exists() else []
    with monkeypatch.context() as m:
        m.setenv("MIBENCH_TEST_FAULTS", "off")  # the slow cells are fast now: the re-run only adds them
        table = run_part(plan, "b", entry, 0, out)
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    ref = reference(monkeypatch, plan, "b", entry, 0, tmp_path)
    identical = same_results(table, ref)
    saved = sorted(r["n"] for r in kept) == [50] * 6 and all(rows[r["sample_id"]] == r for r in kept)
    ledger(
        fault="SIGTERM inside a batched estimate_many call",
        group="faults while running",
        injected="SIGTERM once 6 of 12 cells of the call were done, 6 still running",
        expected="the 6 finished cells saved to .partial; the re-run estimates only the other 6",
        observed=f"exit {proc.returncode} ({'Terminated' if 'Terminated: SIGTERM' in output else 'no Terminated'}); "
        f"{len(kept)} cells in .partial",
        outcome="right answer" if proc.returncode == 1 and saved and identical else "silently wrong",
        results_lost=6 - len(kept),
        rerun_work=f"{12 - len(kept)} of 12 cells",
        identical=identical,
    )
    assert proc.returncode == 1 and "Terminated: SIGTERM" in output, output[-2000:]
    assert sorted(r["n"] for r in kept) == [50] * 6 and all(r["status"] == "ok" for r in kept)
    assert all(rows[r["sample_id"]] == r for r in kept), "kept cells are not recomputed (seconds included)"
    assert [r["status"] for r in rows.values()] == ["ok"] * 12
    assert identical


def test_mibench_log_with_an_unknown_benchmark_is_a_clear_error(tmp_path, ledger) -> None:
    from typer.testing import CliRunner

    from mibench.cli import app

    config_path = write_config(tmp_path / "config.yaml", grid_config())
    result = CliRunner().invoke(
        app, ["log", "--config", str(config_path), "--benchmark", "gird", "--results", str(tmp_path / "results")]
    )
    message = "benchmark 'gird' is not defined under `benchmarks:` of the config (defined: grid)"
    clear = result.exit_code == 2 and message in " ".join(result.output.split())
    traceback = result.exception is not None and not isinstance(result.exception, SystemExit)
    ledger(
        fault="`mibench log --benchmark` with a name the config lacks",
        group="honest exits",
        injected="--benchmark gird (the config defines grid)",
        expected="exit 2 naming the benchmark and the defined ones",
        observed=" ".join(result.output.split())[:160],
        outcome="traceback" if traceback else ("clear error" if clear else "silently wrong"),
        results_lost=0,
        rerun_work="none",
        identical=True,
    )
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "results").exists(), "nothing is created for a typo"


def test_run_summary_names_failing_estimators_and_unreadable_parts(tmp_path, ledger) -> None:
    """The end-of-run summary: an estimator whose jobs succeeded but whose cells all errored is named, with a
    message; a damaged part is named, not a crash (the summary also runs after failures)."""
    import io

    from mibench.evaluate.failures import print_run_summary, summary_lines

    config = grid_config(estimators=["corr", "broken", "odd"], cells_per_job=12)
    plan = plan_of(config)
    results = tmp_path / "results"
    for label in plan.estimators:
        run_part(
            plan, label, config["estimators"][label], 0, results / "estimates" / "grid" / label / "part-0000.parquet"
        )
    odd_errors = sum(c.seed % 2 for c, _, _ in plan.part_cells(0))
    lines = summary_lines(results, ["grid"], {"grid": 4})
    text = "\n".join(lines)
    named = "grid/broken  12 error(s)" in text and f"grid/odd     {odd_errors} error(s)" in text
    ledger(
        fault="an estimator errors on every cell while every job succeeds",
        group="honest exits",
        outcome="clear error" if named else "silently wrong",
        injected="`always_fails` and `fails_on_odd_seeds` in a benchmark; then a truncated part",
        expected="the end-of-run summary names each with counts and a message; a damaged part is named",
        observed=lines[1].strip()[:100],
        results_lost=0,
        rerun_work="none",
        identical=True,
    )
    assert (
        lines[0]
        == f"mibench: {12 + odd_errors} of 36 estimate rows are errors or timeouts (per estimator, one example):"
    )
    assert "grid/broken  12 error(s), 0 timeout(s) of 12" in text and "RuntimeError: deliberate failure" in text
    assert f"grid/odd     {odd_errors} error(s), 0 timeout(s) of 12" in text and "ValueError: odd seed" in text
    assert "grid/corr" not in text and "grid: 3 of 4 estimates parts on disk" in text
    bad = results / "estimates" / "grid" / "corr" / "part-0000.parquet"
    bad.write_bytes(bad.read_bytes()[:100])
    text = "\n".join(summary_lines(results, ["grid"]))
    assert f"unreadable: {bad}: " in text
    buffer = io.StringIO()
    print_run_summary({"nowhere": object()}, tmp_path / "missing", stream=buffer)  # never raises
    assert buffer.getvalue().startswith("mibench: no estimates under")


@pytest.mark.slow
def test_pipeline_budgets_progress_and_run_summary(tmp_path, venv_env, ledger) -> None:
    """A real Snakemake run (as `make run` starts it): batched per-cell budgets, progress lines on the console while
    a job runs and in its log line by line, and the error/timeout summary at the end; after a failure too."""
    config = bench_config(
        grid={**GRID, "estimators": ["corr", "bslow", "broken"], "cells_per_job": 12, "timeout_s": 0.3}
    )
    config["estimators"]["bslow"] = batched_entry()
    config["tracking"] = {"enabled": False}
    del config["meta"]
    write_config(tmp_path / "config" / "config.yaml", config)
    env = {**venv_env, "MIBENCH_PROGRESS": "console", "MIBENCH_PROGRESS_EVERY_S": "0"}
    part = tmp_path / "results" / "estimates" / "grid" / "bslow" / "part-0000.parquet"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
    cmd += ["--directory", str(tmp_path), "--cores", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, live = [], []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "[estimate/grid/bslow/part-0000] grid/bslow part 0000: " in line:
                live.append((line.strip(), part.exists()))
        proc.wait(timeout=300)
    finally:
        proc.kill()
    out = "\n".join(lines)
    summarised = "mibench: 18 of 36 estimate rows are errors or timeouts" in out
    ledger(
        fault="a benchmark with errors and timeouts finishes 'successfully' (Snakemake run)",
        group="honest exits",
        outcome="clear error" if summarised else "silently wrong",
        injected="`always_fails` and a batched estimator with slow cells; then a damaged part and a failing re-run",
        expected="summary of error/timeout rows per estimator at the end of the run, also when the run fails",
        observed="onsuccess: 18 of 36 rows named per estimator; onerror: the damaged part named",
        results_lost=0,
        rerun_work="none",
        identical=True,
    )
    assert proc.returncode == 0, out[-3000:]
    assert any("6/12 cells done (6 ok)" in text and not written for text, written in live), live
    log = (tmp_path / "results" / "logs" / "estimate" / "grid" / "bslow" / "part-0000.log").read_text()
    assert [f"cell {k}/12 " in log for k in range(1, 13)] == [True] * 12
    rows = pq.read_table(part).to_pylist()
    assert sorted((r["n"], r["status"]) for r in rows) == [(50, "ok")] * 6 + [(200, "timeout")] * 6
    summary = out[out.index("mibench: 18 of 36 estimate rows are errors or timeouts") :]
    assert "grid/bslow   0 error(s), 6 timeout(s) of 12    e.g. " + PER_CELL[:60] in summary, summary
    assert "grid/broken  12 error(s), 0 timeout(s) of 12   e.g. RuntimeError: deliberate failure" in summary

    corr = tmp_path / "results" / "estimates" / "grid" / "corr" / "part-0000.parquet"
    stamp = corr.stat()
    corr.write_bytes(corr.read_bytes()[:200])  # a damaged part; evaluation fails on it
    os.utime(corr, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    failed = snakemake(REPO, tmp_path, venv_env, "--forcerun", "evaluate_benchmark", check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "mibench: 18 of 24 estimate rows are errors or timeouts" in failed.stdout, text[-3000:]
    assert "unreadable: results/estimates/grid/corr/part-0000.parquet" in failed.stdout


def test_an_estimator_failing_on_its_hardest_cells_does_not_rank_first(tmp_path, ledger) -> None:
    """Issue 11: histogram ranked first on bmi_small with 20 of 32 cells. Here `faulty` is the correlation
    estimator itself, except that it raises on the 4 cells where that estimator errs most: over its own cells
    its MSE looks best, yet on the cells both scored the two are equal."""
    import polars as pl

    from mibench.evaluate import compute_metrics, rank_estimators
    from mibench.evaluate.report import write_report

    config = grid_config(cells_per_job=12)
    plan = plan_of(config)
    corr = run_part(plan, "corr", config["estimators"]["corr"], 0, tmp_path / "corr" / "part-0000.parquet")
    errs = sorted(corr.to_pylist(), key=lambda r: -abs(r["mi_estimate"] - r["mi_true"]))
    hardest = [r["seed"] for r in errs[:4]]
    faulty = run_part(plan, "faulty", faulty_entry("raise", hardest), 0, tmp_path / "f" / "part-0000.parquet")
    estimates = pl.from_arrow(pa.concat_tables([corr, faulty]))
    own = compute_metrics(estimates, plan.levels).filter(
        (pl.col("split") == "ALL")
        & (pl.col("family") == "ALL")
        & (pl.col("n_bin") == "ALL")
        & (pl.col("dim_bin") == "ALL")
    )
    by_own = own.sort("mse")["estimator"].to_list()
    assert by_own == ["faulty", "corr"], "the trap: over its own cells the failing estimator looks best"
    ranked = rank_estimators(estimates, ["corr", "faulty"], plan.levels)
    rows = {r["estimator"]: r for r in ranked.iter_rows(named=True)}
    fair = ranked["estimator"].to_list() == ["corr", "faulty"] and rows["faulty"]["group"] == "with failures"
    ledger(
        fault="an estimator fails on its hardest cells (silently better MSE)",
        group="fair comparisons",
        outcome="right answer" if fair else "silently wrong",
        injected="`faulty` = the correlation estimator raising on its 4 worst of 12 cells",
        expected="ranked separately, compared on the 8 cells both scored ('scored 8 of 12')",
        observed="own-cell MSE would rank it first; rank_estimators puts it in 'with failures', equal MSE on common cells",
        results_lost=0,
        rerun_work="none",
        identical=True,
    )
    assert ranked["estimator"].to_list() == ["corr", "faulty"]
    assert rows["corr"]["group"] == "complete" and rows["faulty"]["group"] == "with failures"
    assert rows["faulty"]["scored"] == 8 and rows["corr"]["common_cells"] == 8
    assert rows["corr"]["mse"] == pytest.approx(rows["faulty"]["mse"]) and not rows["faulty"]["own_comparable"]
    page = write_report({"grid": (own, estimates, tmp_path, plan.levels)}, tmp_path / "index.html").read_text()
    assert page.index("<td>corr</td>") < page.index("<td>faulty</td>") and "8 of 12" in page
