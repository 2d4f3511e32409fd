"""MIST / MIST-QR training: data stream, training, resume, SIGTERM, MLflow, the Snakemake rules."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from mibench.config import ConfigError
from mibench.learned.checkpoint import load_model, sha256
from mibench.learned.data import GeneratedSource, ShardSource, batch_stream
from mibench.learned.trainer import train_from_config
from mibench.meta import generate_split, split_plans
from tests.support.commands import snakemake
from tests.support.configs import REPO, write_config
from tests.support.learned import (
    REQUIRED_TAUS,
    tiny_model_entry,
)

torch.set_num_threads(1)


# -- data ------------------------------------------------------------------------------------------------------------
def test_generated_samples_are_the_shard_samples(learn_config, tmp_path) -> None:
    generate_split(learn_config, "train", tmp_path / "meta", progress=False)
    shards = ShardSource(sorted((tmp_path / "meta" / "train").glob("shard-*.parquet")))
    gen = GeneratedSource(split_plans(learn_config)["train"])
    assert len(shards) == len(gen) == 12
    order = np.arange(12)
    for (xs, ys, mis), (xg, yg, mig) in zip(shards.fetch(order, order), gen.fetch(order, order), strict=True):
        assert np.array_equal(xs, xg) and np.array_equal(ys, yg) and mis == mig


def test_batch_stream_is_a_pure_function_of_the_batch_number(learn_config) -> None:
    source = GeneratedSource(split_plans(learn_config)["train"], count=64)
    kw = dict(batch_size=8, pool=3, seed=5, normalisation="copula")
    full = list(batch_stream(source, start=0, stop=20, **kw))
    tail = list(batch_stream(source, start=13, stop=20, workers=2, **kw))
    assert len(full) == 20 and len(tail) == 7
    for a, b in zip(full[13:], tail, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.target, b.target)
    epoch0 = torch.cat([b.target for b in full[:8]])  # 64 samples / 8 = 8 batches per epoch
    assert len(set(epoch0.tolist())) == 64  # every sample once per epoch


# -- training --------------------------------------------------------------------------------------------------------
def test_tiny_training_run_lowers_the_validation_loss(learn_config, tmp_path) -> None:
    learn_config["models"]["mist"] = tiny_model_entry(steps=60, lr=3e-3)
    learn_config["models"]["mist"]["data"]["validation_count"] = 64
    learn_config["meta"]["splits"]["validation"]["count"] = 64
    result = train_from_config(learn_config, "mist", tmp_path, tracking=False, progress=False)
    history = json.loads(result.config.read_text())["validation_history"]
    assert history[0]["step"] == 0 and history[-1]["step"] == 60
    assert min(h["val_loss"] for h in history[1:]) < 0.7 * history[0]["val_loss"]


def test_interrupted_run_resumes_bit_identically(learn_config, tmp_path) -> None:
    straight = train_from_config(learn_config, "mist", tmp_path / "a", tracking=False, progress=False)
    first = train_from_config(learn_config, "mist", tmp_path / "b", tracking=False, progress=False, max_steps=17)
    assert first.status == "paused" and first.weights is None
    assert not (tmp_path / "b" / "mist" / "model.safetensors").exists()
    assert json.loads((tmp_path / "b" / "mist" / "train-state" / "state.json").read_text())["step"] == 17
    resumed = train_from_config(learn_config, "mist", tmp_path / "b", tracking=False, progress=False)
    assert resumed.status == "complete" and resumed.step == 40
    a, b = load_file(str(straight.weights)), load_file(str(resumed.weights))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run is not resumed: the same call trains again from scratch, to the same weights
    again = train_from_config(learn_config, "mist", tmp_path / "b", tracking=False, progress=False)
    assert sha256(again.weights) == sha256(straight.weights)


def test_a_state_saved_under_another_checkpoint_format_is_not_resumed(learn_config, tmp_path, caplog) -> None:
    """Format 2 read the raw dependence statistics with the same tensor shapes: resuming such a state would
    silently train on inputs that mean something else."""
    from mibench.config import model_spec

    first = train_from_config(learn_config, "mist", tmp_path, tracking=False, progress=False, max_steps=7)
    assert first.status == "paused"
    state = tmp_path / "mist" / "train-state" / "state.json"
    saved = json.loads(state.read_text())
    saved["fingerprint"] = model_spec("mist", learn_config["models"]["mist"]).fingerprint()  # as format 2 wrote it
    state.write_text(json.dumps(saved))
    with caplog.at_level("WARNING"):
        paused = train_from_config(learn_config, "mist", tmp_path, tracking=False, progress=False, max_steps=3)
    assert "another model config" in caplog.text
    assert paused.step == 3 and json.loads(state.read_text())["step"] == 3  # started fresh, not at 7 + 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_saves_the_state_and_the_run_continues(learn_config, tmp_path, venv_env, sig) -> None:
    """SLURM's SIGTERM and a Ctrl-C (SIGINT) both finish the step, save the state and exit 75."""
    learn_config["models"]["mist"] = tiny_model_entry(steps=400, checkpoint_every_minutes=0.0)
    config = write_config(tmp_path / "config.yaml", learn_config)
    env = {**venv_env, "PYTHONPATH": str(REPO / "src")}
    cmd = [
        sys.executable,
        "-m",
        "mibench.cli",
        "train",
        "--model",
        "mist",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "models"),
        "--no-tracking",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = tmp_path / "models" / "mist" / "train-state" / "state.json"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out
    step = json.loads(state.read_text())["step"]
    assert 0 < step < 400 and "interrupted at step" in out
    learn_config["models"]["mist"]["training"]["steps"] = 400
    result = train_from_config(learn_config, "mist", tmp_path / "models", tracking=False, progress=False, max_steps=3)
    assert result.step == step + 3  # continued from the saved step, not from 0


def test_mlflow_run_has_params_losses_validation_and_artifacts(learn_config, tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    learn_config["models"]["mist"] = tiny_model_entry(steps=12)
    result = train_from_config(learn_config, "mist", tmp_path / "models", progress=False)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mibench/train").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model.training.steps"] == "12"
    assert run.data.params["model.architecture.cell_dim"] == "16"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 12
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 10, 12]
    assert "datasets_per_second" in run.data.metrics
    names = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert names == {"model/model.safetensors", "model/model.json"}
    assert result.weights.exists()


def test_a_tracking_failure_never_loses_the_checkpoint(learn_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    learn_config["models"]["mist"] = tiny_model_entry(steps=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_from_config(learn_config, "mist", tmp_path, progress=False)
    assert result.status == "complete" and result.weights.exists()
    assert any("MLflow tracking disabled" in str(w.message) for w in caught)


def test_training_from_shards_streams_them(learn_config, tmp_path) -> None:
    for split in ("train", "validation"):
        generate_split(learn_config, split, tmp_path / "meta", progress=False)
    learn_config["models"]["mist"] = tiny_model_entry(steps=4)
    learn_config["models"]["mist"]["data"] = {"source": "shards", "validation_count": 8}
    with pytest.raises(ConfigError, match="training.batch_size: 16 is more than the 12 training samples"):
        train_from_config(learn_config, "mist", tmp_path / "m", shard_root=tmp_path / "meta", tracking=False)
    learn_config["models"]["mist"]["training"]["batch_size"] = 4
    result = train_from_config(
        learn_config, "mist", tmp_path / "m", shard_root=tmp_path / "meta", tracking=False, progress=False
    )
    data = json.loads(result.config.read_text())["data"]
    assert data["train"]["source"] == "shards" and len(data["train"]["shards"]) == 3
    with pytest.raises(ValueError, match="no shards for split 'train'"):
        train_from_config(learn_config, "mist", tmp_path / "m2", shard_root=tmp_path / "none", tracking=False)


def test_cli_train_reports_an_unknown_model(learn_config, tmp_path, venv_env) -> None:
    config = write_config(tmp_path / "config.yaml", learn_config)
    env = {**venv_env, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "mibench.cli", "train", "--model", "nope", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "config.models has no model 'nope'" in proc.stderr


# -- the Snakemake rule ---------------------------------------------------------------------------------------------
def test_train_rule_dry_run_and_real_tiny_run(repo, venv_env, learn_config, tmp_path) -> None:
    env = {**venv_env, "PYTHONPATH": str(repo / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/ml.db"}
    shards_cfg = copy.deepcopy(learn_config)
    shards_cfg["models"]["mist"]["data"] = {"source": "shards", "validation_count": 8}
    write_config(tmp_path / "dry" / "config" / "config.yaml", shards_cfg)
    dry = snakemake(repo, tmp_path / "dry", env, "-n", "results/models/mist/model.safetensors")
    out = dry.stdout + dry.stderr
    assert "rule train_model" in out and "gpu=0" in out
    assert "results/meta/train/shard-0000.parquet" in out  # data.source: shards -> generate -> train edge

    learn_config["models"]["mist"] = tiny_model_entry(steps=5)
    learn_config["models"]["mist"]["device"] = "auto"  # gpu=1 resource, CPU fallback here
    write_config(tmp_path / "run" / "config" / "config.yaml", learn_config)
    snakemake(repo, tmp_path / "run", env, "results/models/mist/model.safetensors")
    model_dir = tmp_path / "run" / "results" / "models" / "mist"
    config = json.loads((model_dir / "model.json").read_text())
    assert config["training"]["steps_done"] == 5 and config["training"]["device"] == "cpu"
    assert load_model(model_dir / "model.safetensors")[0].parameter_count() == config["parameters"]
    assert "trained mist" in (tmp_path / "run" / "results" / "logs" / "train" / "mist.log").read_text()
    dry_gpu = snakemake(repo, tmp_path / "run", env, "-n", "-F", "results/models/mist/model.safetensors")
    assert "gpu=1" in dry_gpu.stdout + dry_gpu.stderr


def test_accuracy_table_per_n_bin_with_coverage(trained, learn_config, tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from mist_accuracy import n_bin, nbin_table, predict_shards  # through mibench.evaluate.metrics

    assert [n_bin(n) for n in (10, 100, 101, 300, 301, 500, 501)] == [
        "[10,100]",
        "[10,100]",
        "(100,300]",
        "(100,300]",
        "(300,500]",
        "(300,500]",
        "other",
    ]
    learn_config["meta"]["splits"]["test_imd"]["n_grid"] = [20, 150]
    generate_split(learn_config, "test_imd", tmp_path, progress=False)
    model, _ = load_model(trained)
    predictions = predict_shards(model, tmp_path / "test_imd", chunk=5)
    assert predictions.height == 16 and predictions["sample_id"].n_unique() == 16
    table = nbin_table(predictions)
    assert table.select("estimator", "n_bin").rows() == [
        ("mist", "[10,100]"),
        ("mist", "(100,300]"),
        ("mist_qr", "[10,100]"),
        ("mist_qr", "(100,300]"),
    ]
    assert table["count"].to_list() == [8, 8, 8, 8]
    expected = (
        (predictions.filter(pl.col("n") == 20)["mist"] - predictions.filter(pl.col("n") == 20)["mi_true"]) ** 2
    ).mean()
    assert table["mse"][0] == pytest.approx(expected)
    assert table["paper_mse"].to_list() == [3.1, 0.34, 3.1, 0.31]
    qr = table.filter(pl.col("estimator") == "mist_qr")
    assert all(0 <= c <= 1 for c in qr["coverage_95"]) and all(w > 0 for w in qr["width_50"])
    assert all(a <= b for a, b in zip(qr["width_50"], qr["width_95"], strict=True))


def test_train_then_estimate_through_the_benchmark_rules(repo, venv_env, tmp_path) -> None:
    """The checkpoint hyperparameter is a DAG edge train -> estimate; MIST-QR rows carry quantiles."""
    from tests.support.configs import bench_config

    config = bench_config(mist={"splits": ["test_imd"], "estimators": ["mist", "mist_qr"]})
    checkpoint = "results/models/mist/model.safetensors"
    config["estimators"] = {"mist": {"checkpoint": checkpoint}, "mist_qr": {"checkpoint": checkpoint}}
    config["meta"]["splits"]["validation"] = {**config["meta"]["splits"]["train"], "root_seed": 13, "count": 8}
    config["models"] = {"mist": tiny_model_entry(steps=4)}
    write_config(tmp_path / "config" / "config.yaml", config)
    env = {**venv_env, "PYTHONPATH": str(repo / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/ml.db"}
    snakemake(repo, tmp_path, env, "results/metrics/mist.parquet")
    assert (tmp_path / checkpoint).exists()
    qr = pl.read_parquet(tmp_path / "results" / "estimates" / "mist" / "mist_qr")
    point = pl.read_parquet(tmp_path / "results" / "estimates" / "mist" / "mist")
    assert qr.height == point.height == 16
    assert (qr["status"] == "ok").all() and (point["status"] == "ok").all()
    assert qr["ci_level"].unique().to_list() == [0.95] and point["quantiles"].is_null().all()
    assert qr["quantiles"].null_count() == 0
    for quantiles in qr["quantiles"].to_list():
        assert set(REQUIRED_TAUS) <= {q["tau"] for q in quantiles}
        values = [q["value"] for q in quantiles]
        assert values == sorted(values)
    assert (qr["ci_low"] <= qr["mi_estimate"]).all() and (qr["mi_estimate"] <= qr["ci_high"]).all()
    metrics = pl.read_parquet(tmp_path / "results" / "metrics" / "mist.parquet")
    assert "coverage_90" in metrics.columns
