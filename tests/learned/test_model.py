"""MIST / MIST-QR model: symmetries, padding invariance, monotone quantiles, checkpoints, estimators, model config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mibench.config import ConfigError
from mibench.config.learned import PRESETS, Architecture, model_spec
from mibench.estimators import build_estimator
from mibench.learned.batching import buckets, dependence_stats, null_stats, raw_stats, token_buckets
from mibench.learned.checkpoint import CheckpointError, load_model, save_checkpoint, sha256
from mibench.learned.infer import predict
from mibench.learned.model import MISTModel
from mibench.learned.normalise import copula, normalise
from mibench.resolve import resolve_config
from tests.support.learned import (
    REQUIRED_TAUS,
    dependent_sample,
    outputs,
)

torch.set_num_threads(1)


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


def test_units_and_offsets_never_matter(model64) -> None:
    x, y = dependent_sample(50, 2, 2, seed=5)
    base = outputs(model64, [(x, y)])
    rescaled = outputs(model64, [(x * np.array([100.0, 0.01]) + 7, y * 3 - 2)])
    np.testing.assert_allclose(rescaled[0], base[0], rtol=0, atol=1e-8)


def test_copula_normalisation_hides_monotone_transforms() -> None:
    torch.manual_seed(0)
    model = MISTModel(PRESETS["tiny"].replace(normalisation="copula")).eval().double()
    x, y = dependent_sample(50, 2, 2, seed=5)
    base = outputs(model, [(x, y)])
    warped = outputs(model, [(np.arcsinh(x) * 100 + 7, np.sign(y) * np.abs(y) ** 1.5)])
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
        (
            {"architecture": {"cell_layers": -1}},
            r"config.models.m.architecture.cell_layers: input should be greater than or equal to 0 \(got -1\)",
        ),
        (
            {"training": {"log_every": 0}},
            r"config.models.m.training.log_every: input should be greater than or equal to 1 \(got 0\)",
        ),
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


def test_excess_statistics_are_zero_on_average_under_independence_at_any_size() -> None:
    """The statistics subtract the null of the same (n, widths): independent samples give ~0, however small
    n is next to dx + dy, while the raw statistics are far from 0 there; interpolated sizes (n > 32) too."""
    rng = np.random.default_rng(3)
    for n, dx, dy in ((10, 7, 7), (12, 3, 8), (60, 2, 2), (77, 5, 4)):
        pairs = [(copula(rng.standard_normal((n, dx))), copula(rng.exponential(size=(n, dy)))) for _ in range(200)]
        raw = np.mean([raw_stats(zx, zy) for zx, zy in pairs], axis=0)
        excess = np.mean([dependence_stats(zx, zy) for zx, zy in pairs], axis=0)
        assert np.all(np.abs(excess) < 0.25 * np.abs(raw) + 0.01), (n, dx, dy, raw, excess)
    x, y = dependent_sample(10, 7, 7, seed=4, rho=0.95)
    assert dependence_stats(copula(x), copula(y))[0] > 0.1  # strong dependence still shows as an excess
    # the null is a fixed function of the sizes, symmetric in the sides; grid points are hit exactly
    np.testing.assert_array_equal(null_stats(150, 4, 3), null_stats(150, 4, 3))
    assert not np.array_equal(null_stats(33, 4, 3), null_stats(34, 4, 3))
    # huge samples: the null is scaled from n = 2048 (drawing it at n = 100,000 × 25 + 25 took 48 s and 3 GB)
    np.testing.assert_allclose(null_stats(100_000, 25, 25), null_stats(2048, 25, 25) * 2048 / 100_000, rtol=1e-12)
    np.testing.assert_allclose(null_stats(2049, 3, 2), null_stats(2048, 3, 2), rtol=1e-3)  # continuous there
    with pytest.raises(ValueError, match="read-only"):
        null_stats(20, 2, 2)[0] = 1.0  # the cached array is shared


def test_fast_copula_equals_rankdata_mid_ranks_with_and_without_ties() -> None:
    """The argsort path (no ties) and the mid-rank path (ties, infinities, NaN) give rankdata's scores exactly."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    rng = np.random.default_rng(3)
    cases = [rng.standard_normal((n, d)) for n in (1, 2, 10, 257) for d in (1, 4)]
    cases += [
        np.round(rng.standard_normal((60, 3)), 1),  # many ties
        np.array([[1.0, np.inf], [2.0, 3.0], [np.inf, -np.inf], [0.0, 0.0]]),
        np.array([[np.nan, 1.0], [2.0, 3.0], [1.0, 2.0]]),
        np.ones((5, 2)),
    ]
    for values in cases:
        expected = ndtri((rankdata(values, method="average", axis=0) - 0.5) / len(values)).astype(np.float32)
        np.testing.assert_array_equal(copula(values), expected)


def test_batched_statistics_equal_one_sample_at_a_time() -> None:
    from mibench.learned.batching import batch_stats

    sizes = [(10, 3, 2)] * 3 + [(100, 8, 8)] * 4 + [(57, 4, 1), (31, 8, 7), (31, 8, 7)]
    pairs = [dependent_sample(n, dx, dy, seed) for seed, (n, dx, dy) in enumerate(sizes)]
    pairs = [(copula(x), copula(y)) for x, y in pairs]
    tied = dependent_sample(100, 8, 8, seed=99)
    tied[0][:, 0] = 1.0  # a constant column takes rankdata's path, whose output is Fortran-ordered
    pairs.append((copula(tied[0]), copula(tied[1])))
    together = batch_stats(pairs)
    np.testing.assert_array_equal(together, np.stack([dependence_stats(x, y) for x, y in pairs]))
    assert together.shape == (len(pairs), 6) and np.isfinite(together).all()


def test_raw_statistics_are_the_columns_and_their_squares_canonical_correlations() -> None:
    """raw_stats stacks both transforms into one pass; each half must be the plain per-transform formula."""
    from mibench.learned.batching import _canonical, _standardise

    for n, dx, dy, seed in [(10, 3, 2, 0), (100, 8, 8, 1), (57, 4, 1, 2), (31, 1, 7, 3)]:
        x, y = dependent_sample(n, dx, dy, seed)
        zx, zy = copula(x).astype(np.float64), copula(y).astype(np.float64)
        expected = []
        for transform in (lambda v: v, np.square):
            rho2 = _canonical(_standardise(transform(zx)[None]), _standardise(transform(zy)[None]))[0]
            expected += [np.log1p(-0.5 * np.log1p(-rho2).sum()), rho2.max(), rho2.mean()]
        np.testing.assert_array_equal(raw_stats(zx, zy), expected)  # the same operations: bit-identical


def test_robust_median_is_the_median_with_infinities_and_far_apart_middle_values() -> None:
    """np.percentile(50) interpolates: inf·0 made whole columns NaN, and far-apart middles moved by an ulp."""
    from mibench.learned.normalise import robust

    np.testing.assert_array_equal(robust(np.array([[1.0], [2.0], [3.0], [np.inf], [np.inf]]))[:, 0], [-2, -1, 0, 8, 8])
    column = np.array([[-50.0], [-25.629788919347774], [-7.178745835402909], [-8.262684334271785e-10], [10.0], [30.0]])
    q75, q25 = np.percentile(column, [75, 25], axis=0)
    expected = ((column - np.median(column, axis=0)) / ((q75 - q25) / 1.349)).astype(np.float32)
    np.testing.assert_array_equal(robust(column), expected)  # percentile 50 gave -0.16979554 for -0.16979553
    assert np.isfinite(robust(np.array([[-np.inf], [1.0], [np.inf]]))).all()


def test_predict_checks_every_sample_by_the_estimators_rules(ledger) -> None:
    """predict is public: a mostly-infinite column gave NaN, strings were ranked alphabetically by one channel."""
    from mibench.inputs import EstimatorInputError
    from tests.support.reliability import attempt

    torch.manual_seed(0)
    model = MISTModel(Architecture(dependence_stats=True)).eval()
    rng = np.random.default_rng(0)
    good = (rng.normal(size=(50, 2)), rng.normal(size=(50, 1)))
    y_nan = np.where(np.arange(50)[:, None] == 7, np.nan, good[1])
    cases = {
        "a column mostly of +inf": (
            (np.r_[np.full((30, 1), np.inf), np.ones((20, 1))], good[1]),
            "X has 30 non-finite",
        ),
        "one NaN in Y": ((good[0], y_nan), "Y has 1 non-finite value(s), first at row 7"),
        "strings": ((np.array([["-1"], ["-2"], ["-10"]]), good[1][:3]), "X must be numeric"),
        "n = 0": ((good[0][:0], good[1][:0]), "needs at least 2 samples, got n=0"),
        "n = 1": ((good[0][:1], good[1][:1]), "needs at least 2 samples, got n=1"),
        "no columns": ((good[0][:, :0], good[1]), "X has no columns"),
        "50 rows of X, 40 of Y": ((good[0], good[1][:40]), "X has 50 rows but Y has 40"),
    }
    for case, (bad, says) in cases.items():
        # the bad sample is second: the message must name it by its place in the list
        outcome, message = attempt(lambda b=bad: predict(model, [good, b]), (EstimatorInputError,), "sample 1", says)
        ledger(group="learned inference (predict called directly)", fault=f"predict: {case}",
               injected="one bad sample among good ones in mibench.learned.infer.predict",
               expected="EstimatorInputError naming the sample and the problem", observed=message[:200],
               outcome=outcome, results_lost=0)  # fmt: skip
        assert outcome == "clear error", (case, message)
    # usable input keeps its values: float32 and integers give what the same values in float64 give
    x32, y32 = (v.astype(np.float32) for v in good)
    ints = (np.round(good[0] * 10).astype(np.int64), np.round(good[1] * 10).astype(np.int64))
    for case, (sample, as64) in {
        "float32 input": ((x32, y32), (x32.astype(np.float64), y32.astype(np.float64))),
        "integer input": (ints, tuple(v.astype(np.float64) for v in ints)),
    }.items():
        same = all(np.array_equal(a, b) for a, b in zip(predict(model, [sample]), predict(model, [as64]), strict=True))
        ledger(group="learned inference (predict called directly)", fault=f"predict: {case}",
               injected="a usable sample in another dtype", expected="the float64 answer, bit for bit",
               observed="equal" if same else "differs", outcome="right answer" if same else "silently wrong",
               results_lost=0)  # fmt: skip
        assert same, case
