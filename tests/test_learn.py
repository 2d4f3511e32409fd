"""MIST / MIST-QR: symmetries, padding invariance, monotone quantiles, checkpoints, training, resume, rule."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file

from mibench.config import ConfigError, parse_config
from mibench.config.learned import PRESETS, Architecture, model_spec
from mibench.estimators import build_estimator
from mibench.learned.batching import Batch, buckets, collate, dependence_stats, token_buckets
from mibench.learned.checkpoint import CheckpointError, load_model, save_checkpoint, sha256
from mibench.learned.data import GeneratedSource, ShardSource, batch_stream
from mibench.learned.infer import predict
from mibench.learned.model import MISTModel
from mibench.learned.normalise import copula, normalise
from mibench.learned.trainer import train_from_config
from mibench.meta import generate_split, split_plans
from mibench.resolve import resolve_config

from .conftest import write_config
from .test_workflow_generate import snakemake

torch.set_num_threads(1)

REQUIRED_TAUS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)


def tiny_model_entry(steps: int = 40, **training) -> dict:
    return {
        "preset": "tiny",
        "device": "cpu",
        "threads": 1,
        "training": {
            "steps": steps,
            "batch_size": 16,
            "lr": 2e-3,
            "warmup_steps": 5,
            "validate_every": 10,
            "bucket_pool": 4,
            **training,
        },
        "data": {"train_count": 400, "validation_count": 48, "validation_split": "validation"},
    }


@pytest.fixture
def learn_config(tiny_config) -> dict:
    cfg = copy.deepcopy(tiny_config)
    cfg["meta"]["splits"]["validation"] = {**cfg["meta"]["splits"]["train"], "root_seed": 13, "count": 8}
    cfg["models"] = {"mist": tiny_model_entry()}
    parse_config(cfg)  # valid
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny model trained for a few dozen steps (weights that react to their input)."""
    from .conftest import TINY_META

    cfg = {"meta": copy.deepcopy(TINY_META)}
    cfg["meta"]["splits"]["validation"] = {**cfg["meta"]["splits"]["train"], "root_seed": 13, "count": 8}
    cfg["models"] = {"mist": tiny_model_entry(steps=30)}
    out = tmp_path_factory.mktemp("trained")
    result = train_from_config(parse_config(cfg), "mist", out, tracking=False, progress=False)
    assert result.status == "complete"
    return result.weights


def dependent_sample(n: int, dx: int, dy: int, seed: int, rho: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dx))
    y = rho * x[:, [i % dx for i in range(dy)]] + np.sqrt(1 - rho**2) * rng.normal(size=(n, dy))
    return x, y


def raw_batch(pairs, dtype=torch.float64) -> Batch:
    """Collate without the wide-side-first swap, so X really is X (for the X<->Y symmetry test)."""
    prepared = [(normalise(x, "copula"), normalise(y, "copula")) for x, y in pairs]
    batch = collate(prepared)
    batch.x, batch.y, batch.n = batch.x.to(dtype), batch.y.to(dtype), batch.n.to(dtype)
    batch.stats = torch.from_numpy(np.stack([dependence_stats(zx, zy) for zx, zy in prepared])).to(dtype)
    return batch


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


def outputs(model: MISTModel, pairs) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        point, q = model(raw_batch(pairs))
    return point.numpy(), q.numpy()


# -- symmetries ------------------------------------------------------------------------------------------------
def test_row_permutation_invariance_is_exact_and_the_test_can_fail(model64) -> None:
    x, y = dependent_sample(80, 3, 2, seed=1)
    perm = np.random.default_rng(2).permutation(80)
    base = outputs(model64, [(x, y)])
    permuted = outputs(model64, [(x[perm], y[perm])])
    np.testing.assert_allclose(permuted[0], base[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(permuted[1], base[1], rtol=0, atol=1e-10)
    # permuting X's rows alone destroys the pairing: a different dataset, a clearly different output
    broken = outputs(model64, [(x[perm], y)])
    assert abs(broken[0][0] - base[0][0]) > 1e-6


def test_column_permutations_within_x_and_within_y(model64) -> None:
    x, y = dependent_sample(60, 4, 3, seed=3)
    base = outputs(model64, [(x, y)])
    shuffled = outputs(model64, [(x[:, [2, 0, 3, 1]], y[:, [1, 2, 0]])])
    np.testing.assert_allclose(shuffled[0], base[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(shuffled[1], base[1], rtol=0, atol=1e-10)
    # moving a column from X to Y is not a symmetry of MI, and the model does see it
    moved = outputs(model64, [(x[:, :3], np.column_stack([y, x[:, 3]]))])
    assert abs(moved[0][0] - base[0][0]) > 1e-6


def test_swapping_x_and_y_is_a_symmetry(model64) -> None:
    x, y = dependent_sample(70, 2, 5, seed=4)  # X narrower than Y: no implicit swap happens in collate
    base = outputs(model64, [(x, y)])
    swapped = outputs(model64, [(y, x)])
    np.testing.assert_allclose(swapped[0], base[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(swapped[1], base[1], rtol=0, atol=1e-10)


def test_copula_normalisation_hides_monotone_transforms_and_scale(model64) -> None:
    x, y = dependent_sample(50, 2, 2, seed=5)
    base = outputs(model64, [(x, y)])
    warped = outputs(model64, [(np.arcsinh(x) * 100 + 7, np.sign(y) * np.abs(y) ** 1.5)])
    np.testing.assert_allclose(warped[0], base[0], rtol=0, atol=1e-10)
    z = copula(np.array([[3.0], [1.0], [1.0], [2.0]]))  # ties get the mid-rank
    assert z[1, 0] == z[2, 0] and z[0, 0] > z[3, 0] > z[1, 0]


# -- padding, bucketing, quantiles ---------------------------------------------------------------------------------
def test_padding_and_bucketing_give_the_single_dataset_outputs(trained) -> None:
    model, _ = load_model(trained)
    samples = [
        dependent_sample(n, dx, dy, seed=i)
        for i, (n, dx, dy) in enumerate(
            [(12, 1, 1), (150, 3, 2), (40, 2, 4), (99, 5, 1), (7, 1, 3), (150, 3, 2), (63, 2, 2)]
        )
    ]
    alone = [predict(model, [s]) for s in samples]
    together = predict(model, samples, max_cells=4000)  # several buckets, each padded
    assert len(token_buckets([(x.shape[0], x.shape[1], y.shape[1]) for x, y in samples], 4000)) > 1
    for i, (point, q) in enumerate(alone):
        np.testing.assert_allclose(together[0][i], point[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(together[1][i], q[0], rtol=1e-5, atol=1e-5)


def test_buckets_cover_every_sample_once_and_cut_padding() -> None:
    rng = np.random.default_rng(0)
    sizes = [
        (int(n), int(a), int(b))
        for n, a, b in zip(
            rng.integers(10, 501, 1024), rng.integers(2, 33, 1024), rng.integers(2, 33, 1024), strict=True
        )
    ]
    groups = buckets(sizes, 64)
    assert sorted(i for g in groups for i in g) == list(range(1024))
    assert all(len(g) == 64 for g in groups)

    def padded(gs):
        return sum(
            len(g)
            * max(sizes[i][0] for i in g)
            * (max(max(sizes[i][1:]) for i in g) + max(min(sizes[i][1:]) for i in g))
            for g in gs
        )

    naive = [list(range(s, s + 64)) for s in range(0, 1024, 64)]
    assert padded(groups) < 0.6 * padded(naive)


def test_quantiles_increase_with_tau_by_construction() -> None:
    torch.manual_seed(0)
    model = MISTModel(PRESETS["tiny"])
    with torch.no_grad():  # scramble the quantile head: monotonicity must not depend on training
        for p in model.quantile.parameters():
            p.mul_(50).add_(torch.randn_like(p))
    samples = [dependent_sample(30 + 10 * i, 1 + i % 3, 1 + i % 2, seed=i) for i in range(6)]
    _, q = predict(model, samples)
    assert np.all(np.diff(q, axis=1) > 0) and np.all(q >= 0)
    assert set(REQUIRED_TAUS) <= set(model.arch.taus)


# -- checkpoints --------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path, trained) -> None:
    model, config = load_model(trained)
    weights, json_path = save_checkpoint(model, tmp_path / "copy.safetensors", {"training": {"note": "copy"}})
    again, _ = load_model(weights)
    sample = [dependent_sample(40, 2, 3, seed=9)]
    assert np.array_equal(predict(model, sample)[1], predict(again, sample)[1])
    saved = json.loads(json_path.read_text())
    assert saved["format"] == "mibench-mist" and saved["architecture"] == model.arch.to_dict()
    assert saved["weights_sha256"] == sha256(weights) and saved["training"] == {"note": "copy"}
    assert saved["parameters"] == model.parameter_count() and "mibench_version" in saved
    # the trained checkpoint records its training config, data splits and validation history
    assert config["training"]["steps_done"] == 30 and config["data"]["train"]["source"] == "generate"
    assert config["data"]["splits"]["train"]["root_seed"] == 11 and config["validation_history"]


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "model.safetensors").write_bytes(src.read_bytes())
    (dst / "model.json").write_text(src.with_suffix(".json").read_text())
    return dst / "model.safetensors"


def test_strict_loading_errors_name_the_path_and_the_mismatch(tmp_path, trained) -> None:
    missing = tmp_path / "nothing" / "model.safetensors"
    with pytest.raises(CheckpointError, match=f"{missing}: checkpoint not found"):
        load_model(missing)

    no_json = _copy_checkpoint(trained, tmp_path / "nojson")
    no_json.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="model.json: checkpoint config not found"):
        load_model(no_json)

    tampered = _copy_checkpoint(trained, tmp_path / "tampered")
    tensors = load_file(str(tampered))
    tensors["point.bias"] = tensors["point.bias"] + 1
    save_file(tensors, str(tampered))
    with pytest.raises(CheckpointError, match="weights do not match .*model.json .*different runs"):
        load_model(tampered)

    shapes = _copy_checkpoint(trained, tmp_path / "shapes")
    tensors = load_file(str(shapes))
    tensors["point.weight"] = torch.zeros(1, 3)
    del tensors["point.bias"]
    tensors["extra"] = torch.zeros(2)
    save_file(tensors, str(shapes))
    cfg = json.loads(shapes.with_suffix(".json").read_text())
    cfg["weights_sha256"] = sha256(shapes)
    shapes.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        load_model(shapes)
    text = str(err.value)
    assert str(shapes) in text and "missing tensors ['point.bias']" in text and "unexpected tensors ['extra']" in text
    assert "point.weight: file (1, 3) vs model (1, 64)" in text

    wrong_config = _copy_checkpoint(trained, tmp_path / "config")
    cfg = json.loads(wrong_config.with_suffix(".json").read_text())
    cfg["architecture"]["dim"] = 48
    wrong_config.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_model(wrong_config)
    cfg["architecture"]["wings"] = 2
    wrong_config.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"invalid architecture .*architecture.wings: unknown key"):
        load_model(wrong_config)
    cfg["format"] = "something-else"
    wrong_config.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a MIST checkpoint config"):
        load_model(wrong_config)

    with pytest.raises(ValueError, match="checkpoint not found"):
        build_estimator("mist", {"checkpoint": str(missing)})


# -- estimators ---------------------------------------------------------------------------------------------------
def test_mist_and_mist_qr_estimators(trained) -> None:
    mist = build_estimator("mist", {"checkpoint": str(trained), "device": "cpu"})
    qr = build_estimator("mist_qr", {"checkpoint": str(trained), "device": "cpu"})
    assert mist.device == "cpu" and mist.params == {
        "checkpoint": str(trained),
        "device": "cpu",
        "max_cells": 1 << 21,
        "resamples": 0,
        "levels": [0.5, 0.8, 0.9, 0.95],
    }
    samples = [dependent_sample(n, 2, 3, seed=n) for n in (20, 90, 45)]
    bad = (np.ones((10, 2)) * np.nan, np.ones((10, 1)))
    many = qr.estimate_many([*samples, bad], seeds=[0, 1, 2, 3])
    assert isinstance(many[3], ValueError) and "non-finite" in str(many[3])
    for (x, y), est in zip(samples, many, strict=False):
        single = qr(x, y)
        assert est.value == pytest.approx(single.value, abs=1e-5)
        assert set(REQUIRED_TAUS) <= set(est.quantiles)
        assert est.value == est.quantiles[0.5] and est.level == 0.95
        assert est.interval == (est.quantiles[0.025], est.quantiles[0.975])
        for level in (0.5, 0.8, 0.9, 0.95):
            lo, hi = est.interval_at(level)
            assert lo < est.value < hi
        assert mist(x, y).value == pytest.approx(mist.estimate_many([(x, y)], [0])[0].value, abs=1e-6)
        assert mist(x, y).value >= 0 and mist(x, y).quantiles is None
    # constant columns are fine for a rank-based model (an uninformative column)
    x, y = samples[0]
    assert np.isfinite(mist(np.column_stack([x, np.ones(len(x))]), y).value)


def test_mist_batched_bootstrap(trained) -> None:
    boot = build_estimator("mist", {"checkpoint": str(trained), "device": "cpu", "resamples": 8})
    x, y = dependent_sample(60, 2, 2, seed=1)
    est = boot(x, y, seed=3)
    plain = build_estimator("mist", {"checkpoint": str(trained), "device": "cpu"})(x, y)
    assert est.value == pytest.approx(plain.value, abs=1e-6)
    assert est.level == 0.95 and est.interval[0] <= est.quantiles[0.5] <= est.interval[1]
    assert est.extras["bootstrap_resamples"] == 8
    assert boot(x, y, seed=3).quantiles == est.quantiles  # seeded


def test_mist_qr_refuses_levels_its_grid_cannot_give(tmp_path) -> None:
    arch = Architecture(taus=(0.1, 0.5, 0.9))
    weights, _ = save_checkpoint(MISTModel(arch), tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match=r"lacks \[0.025, 0.975\]"):
        build_estimator("mist_qr", {"checkpoint": str(weights), "levels": [0.8, 0.95]})
    assert build_estimator("mist_qr", {"checkpoint": str(weights), "levels": [0.8]}).levels == (0.8,)


# -- config --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"preset": "huge"}, "config.models.m.preset: input should be 'tiny', 'small' or 'paper' \\(got 'huge'\\)"),
        ({"architecture": {"dims": 3}}, "config.models.m.architecture.dims: unknown key; did you mean 'dim'"),
        ({"architecture": {"dim": 30, "heads": 4}}, "not divisible by its 4 heads"),
        ({"architecture": {"taus": [0.1, 0.9]}}, "must contain 0.5"),
        ({"architecture": {"dependence_stats": "yes"}}, "dependence_stats: must be true or false"),
        ({"architecture": {"cell_layers": -1}}, r"config.models.m.architecture.cell_layers: input should be greater than or equal to 0 \(got -1\)"),
        ({"training": {"log_every": 0}}, r"config.models.m.training.log_every: input should be greater than or equal to 1 \(got 0\)"),
        ({"architecture": {"taus": [0.5, 0.1]}}, "strictly increasing"),
        ({"training": {"steps": "auto"}}, "'auto' needs training.time_budget_minutes"),
        ({"training": {"loss_weights": {"l1": 1}}}, "config.models.m.training.loss_weights.l1: unknown key"),
        ({"data": {"source": "web"}}, "config.models.m.data.source"),
        ({"device": "tpu"}, "config.models.m.device"),
        ({"colour": "red"}, "config.models.m.colour: unknown key"),
        ({"training": {"lr": float("nan")}}, "config.models.m.training.lr: must be a finite number"),
    ],
)
def test_model_config_errors_name_the_key(entry, message) -> None:
    with pytest.raises(ConfigError, match=message):
        model_spec("m", entry)


def test_model_must_train_on_an_existing_split(tiny_config) -> None:
    tiny_config["models"] = {"m": {"data": {"train_split": "nope"}}}
    with pytest.raises(ConfigError, match="config.models.m.data.train_split: no split 'nope'"):
        resolve_config(tiny_config)


def test_shipped_configs(repo) -> None:
    tiny = resolve_config(repo / "config" / "config.yaml").models["mist"]
    assert tiny.device == "cpu" and not tiny.wants_gpu and tiny.architecture == PRESETS["tiny"]
    # `make run`: a fixed number of steps (the same model everywhere); the time budget is a generous guard
    assert tiny.training.steps == 600 and tiny.training.time_budget_minutes >= 10
    spec = resolve_config(repo / "config" / "paper.yaml").models["mist"]
    assert spec.wants_gpu and spec.training.steps == "auto" and spec.training.time_budget_minutes <= 30
    assert spec.data.source == "generate" and spec.data.train_count is None  # all 625k, never stored
    assert 5.3e6 < MISTModel(spec.architecture).parameter_count() < 5.6e6


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


def test_sigterm_saves_the_state_and_the_run_continues(learn_config, tmp_path, venv_env) -> None:
    learn_config["models"]["mist"] = tiny_model_entry(steps=400, checkpoint_every_minutes=0.0)
    config = write_config(tmp_path / "config.yaml", learn_config)
    env = {**venv_env, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
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
    proc.send_signal(signal.SIGTERM)
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
    env = {**venv_env, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
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


def test_chunked_attention_equals_one_call(monkeypatch) -> None:
    """The CUDA-only chunking of large attention batches (kernel grid limit) gives the unchunked result."""
    from mibench.learned import model as model_module

    q, k, v = (torch.randn(10, 2, 5, 4, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(10, 1, 1, 5) > 0.3
    mask[:, ..., 0] = True
    whole = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    monkeypatch.setattr(model_module, "MAX_ATTENTION_BATCH", 3)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    chunked = model_module.attend(q, k, v, mask)
    assert torch.allclose(chunked, whole, atol=1e-12)


def test_accuracy_table_per_n_bin_with_coverage(trained, learn_config, tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
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
    from .conftest import bench_config

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


def test_dependence_statistics_are_invariant_and_track_the_gaussian_mi() -> None:
    from mibench.tasks import TaskSpec

    task = TaskSpec("multinormal", "sparse", 3, 2, {"k": 2, "strength": 0.8}).build()
    x, y = task.sample(4000, seed=0)
    zx, zy = normalise(x, "copula"), normalise(y, "copula")
    stats = dependence_stats(zx, zy)
    assert stats.shape == (6,) and np.all(np.isfinite(stats))
    np.testing.assert_allclose(dependence_stats(zx[:, [2, 0, 1]], zy[:, [1, 0]]), stats, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dependence_stats(zy, zx), stats, rtol=0, atol=1e-12)
    assert abs(np.expm1(stats[0]) - task.mi) < 0.05  # Gaussian copula: the canonical-correlation MI
    independent = dependence_stats(zx, normalise(np.random.default_rng(1).normal(size=(4000, 2)), "copula"))
    assert np.expm1(independent[0]) < 0.01
    tiny = dependence_stats(zx[:5], zy[:5])
    assert np.all(np.isfinite(tiny)) and tiny[1] < 1  # n <= dx + dy: the shrinkage keeps them finite
