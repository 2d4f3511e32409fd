"""Pipeline-level faults (``slow``): the real Snakemake workflow killed, its inputs corrupted, its MLflow server
stopped; re-runs are compared with a fault-free run (estimates equal except ``seconds``, shards byte for byte).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.config import parse_config
from mibench.meta import generate_split
from tests.support.commands import snakemake
from tests.support.configs import GRID, REPO, TINY_META, bench_config, write_config
from tests.support.faults import (
    same_results,
)
from tests.support.integrity import sha

# ------------------------------------------------------------------------------- pipeline level (Snakemake)
#
# One configuration for all pipeline faults: the GRID benchmark (corr + a 0.5 s/cell estimator, one part each) and a
# benchmark over the test_imd meta split (2 shards, generated once in-process and copied in, so no run regenerates
# them unless a fault removes one). Runs stop at the estimates (``--until estimate_part``): evaluation, report and
# MLflow are covered by the MLflow case below. A fault-free run of the same configuration is the reference.

PIPELINE_META = {"shard_size": 8, "splits": {"test_imd": copy.deepcopy(TINY_META["splits"]["test_imd"])}}


def pipeline_config(*, tracking: bool = False, mist: bool = True) -> dict:
    benches = {"grid": {**GRID, "estimators": ["corr", "slow"], "cells_per_job": 12, "timeout_s": 5, "checkpoint_s": 0}}
    if mist:
        benches["mist"] = {"splits": ["test_imd"], "estimators": ["corr"]}
    config = bench_config(PIPELINE_META, **benches)
    config["estimators"]["slow"]["seconds"] = 0.5
    config["tracking"] = {"enabled": tracking}
    return config


@pytest.fixture(scope="module")
def pipeline_shards(tmp_path_factory) -> Path:
    """The test_imd shards of the pipeline configuration, generated once."""
    root = tmp_path_factory.mktemp("shards")
    generate_split(parse_config(pipeline_config()), "test_imd", root / "meta", progress=False)
    return root / "meta"


def pipeline_workdir(path: Path, shards: Path, **kw) -> Path:
    write_config(path / "config" / "config.yaml", pipeline_config(**kw))
    shutil.copytree(shards, path / "results" / "meta")  # time stamps kept: newer than the workflow's scripts
    return path


UNTIL = ("--until", "estimate_part")


@pytest.fixture(scope="module")
def fault_free(tmp_path_factory, pipeline_shards) -> Path:
    """The reference: the same configuration run without faults."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    env["OMP_NUM_THREADS"] = "1"
    work = pipeline_workdir(tmp_path_factory.mktemp("fault-free"), pipeline_shards)
    snakemake(REPO, work, env, *UNTIL)
    return work


def estimate_files(work: Path) -> dict[str, Path]:
    root = work / "results" / "estimates"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("part-*.parquet"))}


def compare_with(work: Path, reference: Path) -> tuple[bool, int]:
    """(every estimates part equal to the reference's except `seconds`, and meta shards byte-identical; #files)."""
    mine, theirs = estimate_files(work), estimate_files(reference)
    assert set(mine) == set(theirs), f"parts differ: {sorted(set(mine) ^ set(theirs))}"
    same = all(same_results(pq.read_table(mine[k]), pq.read_table(theirs[k])) for k in mine)
    shards = sorted((reference / "results" / "meta").rglob("shard-*.parquet"))
    same = same and all(sha(s) == sha(work / s.relative_to(reference)) for s in shards)
    return same, len(mine) + len(shards)


def snapshot(work: Path) -> dict[str, str]:
    """sha256 of every complete result file (estimates parts and meta shards)."""
    files = [*estimate_files(work).values(), *(work / "results" / "meta").rglob("shard-*.parquet")]
    return {str(p.relative_to(work)): sha(p) for p in files}


def recorded(work: Path) -> set[str]:
    """Estimates parts whose job Snakemake recorded as finished (its metadata record exists)."""
    meta = work / ".snakemake" / "metadata"
    names = {base64.urlsafe_b64decode(p.name + "==").decode(errors="replace") for p in meta.glob("*")}
    return {str(Path(n)) for n in names if n.startswith("results/estimates/")}


def jobs_run(proc: subprocess.CompletedProcess) -> list[str]:
    """'rule wildcards' of every job Snakemake started (from its log)."""
    out, jobs, rule = proc.stdout + proc.stderr, [], None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("wildcards:") and rule:
            jobs.append(f"{rule} {line.removeprefix('wildcards:').strip()}")
            rule = None
    return jobs


@pytest.mark.slow
def test_kill_9_of_the_snakemake_run_then_resume(tmp_path, venv_env, pipeline_shards, fault_free, ledger) -> None:
    work = pipeline_workdir(tmp_path, pipeline_shards)
    slow_parts = work / "results" / "estimates" / "grid" / "slow"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
    cmd += ["--directory", str(work), "--cores", "2", *UNTIL]
    proc = subprocess.Popen(cmd, env=venv_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:  # kill once Snakemake has recorded a finished part and a slow part has checkpointed some cells
        deadline = time.monotonic() + 180
        while not (recorded(work) and any(p.stat().st_size for p in slow_parts.glob("*.partial"))):
            assert proc.poll() is None, "the run ended before it could be killed: " + proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and every job it started, no chance to clean up
        proc.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
    time.sleep(0.5)  # the killed jobs' last writes (atomic renames) have landed
    finished = recorded(work)  # parts Snakemake saw finish; a part written after it stopped listening is redone
    done = {rel: digest for rel, digest in snapshot(work).items() if rel in finished or "/meta/" in rel}
    partials = {p: pq.read_table(p).to_pylist() for p in slow_parts.glob("*.partial")}
    assert partials and any(partials.values())
    checkpointed = sum(len(rows) for rows in partials.values())
    n_parts = len(estimate_files(fault_free))
    assert len(finished) < n_parts, "the kill came too late to test anything"

    assert "LockException" in snakemake(REPO, work, venv_env, *UNTIL, check=False).stderr  # the killed run's lock
    snakemake(REPO, work, venv_env, "--unlock")
    again = snakemake(REPO, work, venv_env, *UNTIL)
    rerun = jobs_run(again)
    assert all(j.startswith("estimate_part") for j in rerun), rerun
    assert len(rerun) == n_parts - len(finished), (rerun, again.stdout[-3000:], again.stderr[-3000:])
    for rel, digest in done.items():
        assert sha(work / rel) == digest, f"{rel} was complete before the kill and must not be recomputed"
    for path, rows in partials.items():
        final = pq.read_table(path.with_name(path.name.removesuffix(".partial"))).to_pylist()
        assert final[: len(rows)] == rows, "checkpointed cells are kept as they were (seconds included)"
    assert not list((work / "results").rglob("*.partial")) and not list((work / "results").rglob("*.inflight"))
    identical, _ = compare_with(work, fault_free)
    assert identical
    ledger(
        fault="kill -9 of the Snakemake run",
        outcome="right answer",
        group="faults while running",
        injected="SIGKILL to Snakemake's process group once a part was complete and another had checkpointed",
        expected="complete parts untouched; re-run resumes checkpointed parts and runs only missing jobs",
        observed=f"{len(finished)}/{n_parts} parts complete, {checkpointed} cell(s) checkpointed at the kill",
        results_lost=0,
        rerun_work=f"{len(rerun)} of {n_parts} estimate jobs; {checkpointed} checkpointed cell(s) not recomputed",
        identical=identical,
    )


@pytest.mark.slow
def test_corrupt_shard_in_the_pipeline(tmp_path, venv_env, pipeline_shards, fault_free, ledger) -> None:
    work = pipeline_workdir(tmp_path, pipeline_shards)
    shard = work / "results" / "meta" / "test_imd" / "shard-0001.parquet"
    good, stamp = shard.read_bytes(), shard.stat()
    shard.write_bytes(good[: len(good) // 2])
    os.utime(shard, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # time stamp unchanged: only reading it can tell
    first = snakemake(REPO, work, venv_env, *UNTIL, "--keep-going", check=False)
    out = first.stdout + first.stderr
    assert first.returncode != 0
    log = work / "results" / "logs" / "estimate" / "mist" / "corr" / "part-0001.log"
    assert "Error in rule estimate_part" in out and str(log.relative_to(work)) in out, out[-3000:]
    message = f"ShardError: {shard.relative_to(work)}: corrupt or truncated Parquet file"
    assert message in log.read_text()
    bad_part = work / "results" / "estimates" / "mist" / "corr" / "part-0001.parquet"
    n_parts = len(estimate_files(fault_free))
    assert not bad_part.exists() and len(estimate_files(work)) == n_parts - 1, "every other part completes"
    done = snapshot(work)

    shard.unlink()  # what the error tells the user to do; Snakemake regenerates it
    again = snakemake(REPO, work, venv_env, *UNTIL)
    jobs = jobs_run(again)
    assert sorted(j.split()[0] for j in jobs) == ["estimate_part", "generate_shard"], jobs
    assert shard.read_bytes() == good, "the regenerated shard is byte-identical"
    for rel, digest in done.items():
        if not rel.endswith("shard-0001.parquet"):
            assert sha(work / rel) == digest, f"{rel} must not be recomputed"
    identical, _ = compare_with(work, fault_free)
    assert identical
    ledger(
        fault="corrupt Parquet shard (Snakemake run)",
        outcome="clear error",
        group="faults while running",
        injected="a meta shard truncated to half, time stamp unchanged",
        expected="the job reading it fails naming the shard; all other parts complete (--keep-going)",
        observed=f"{message} (in the job's log, named by Snakemake)",
        results_lost=0,
        rerun_work="after deleting the shard: 1 generate_shard + 1 estimate_part job",
        identical=identical,
    )


@pytest.mark.slow
def test_mlflow_server_down_during_the_run(tmp_path, venv_env, pipeline_shards, fault_free, ledger) -> None:
    from tests.support.mlflow_server import mlflow_server

    work = pipeline_workdir(tmp_path / "work", pipeline_shards, tracking=True, mist=False)
    store = tmp_path / "mlflow"
    store.mkdir()
    db = store / "mlflow.db"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
    cmd += ["--directory", str(work), "--cores", "2"]
    with mlflow_server(db) as (url, server):
        env = {**venv_env, "MLFLOW_TRACKING_URI": url}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 180
            while not estimate_files(work):  # the run is under way: take the server down (a crash, no goodbye)
                assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the fault"
                time.sleep(0.05)
            os.killpg(server.pid, signal.SIGKILL)
            out = proc.communicate(timeout=400)[0]
        finally:
            proc.kill()
    assert proc.returncode != 0, "tracking must fail loudly"
    track_log = (work / "results" / "logs" / "tracking" / "grid.log").read_text()
    assert f"MLflow at {url} is unreachable" in track_log, track_log[-2000:]
    results = work / "results"
    assert (results / "report" / "index.html").exists() and (results / "metrics" / "grid.parquet").exists()
    assert not (results / "tracking" / "grid.json").exists()
    done = snapshot(work)

    # the store is reachable again: a re-run only logs. (Straight to the server's sqlite store: a second server
    # start costs ~40 s on 2 busy cores; tests/evaluate/test_mlflow_ui.py reads such a store through a real server.)
    again = snakemake(REPO, work, {**venv_env, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
    assert [j.split()[0] for j in jobs_run(again)] == ["track_benchmark"], jobs_run(again)
    import mlflow

    runs = mlflow.MlflowClient(f"sqlite:///{db}").search_runs(
        [mlflow.MlflowClient(f"sqlite:///{db}").get_experiment_by_name("mibench/grid").experiment_id]
    )
    assert sorted(r.info.run_name for r in runs) == ["corr", "slow"]
    assert all(sha(work / rel) == digest for rel, digest in done.items()), "nothing is recomputed"
    ours = {k: v for k, v in estimate_files(work).items() if k.startswith("grid/")}
    identical = all(
        same_results(pq.read_table(p), pq.read_table(estimate_files(fault_free)[k])) for k, p in ours.items()
    )
    assert identical
    ledger(
        fault="MLflow server down during the run",
        outcome="clear error",
        group="faults while running",
        injected="SIGKILL to a real `mlflow server` while estimates run",
        expected="track job fails fast naming the server; every other output complete; re-run only logs",
        observed=f"rc {proc.returncode}; 'MLflow at http://127.0.0.1:<port> is unreachable' in the track job's log",
        results_lost=0,
        rerun_work="1 track_benchmark job (store reachable again); 2 runs logged",
        identical=identical,
    )
    assert out is not None
