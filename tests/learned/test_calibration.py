"""Conformal calibration of the quantile head, and the two-channel ``copula+robust`` normalisation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from mibench.config.learned import PRESETS
from mibench.learned.batching import collate, prepare
from mibench.learned.calibration import MIN_DATASETS, QuantileCalibration, fit_calibration, n_bin_edges
from mibench.learned.checkpoint import CheckpointError, load_model, save_checkpoint
from mibench.learned.infer import predict
from mibench.learned.model import MISTModel
from mibench.learned.normalise import CHANNELS, channels
from tests.support.learned import dependent_sample, outputs

TAUS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)


def overconfident(m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantiles that claim N(μ, 0.3²) for targets that are N(μ + 0.2, σ(n)²), σ larger at small n."""
    rng = np.random.default_rng(seed)
    n = rng.integers(10, 500, m).astype(float)
    mu = rng.uniform(3.0, 5.0, m)  # far from 0, where calibrated quantiles are clipped
    sigma = np.where(n <= 100, 1.0, 0.4)
    targets = mu + 0.2 + sigma * rng.standard_normal(m)
    quantiles = mu[:, None] + 0.3 * norm.ppf(np.asarray(TAUS))[None, :]
    return quantiles, targets, n


def coverage(quantiles: np.ndarray, targets: np.ndarray, level: float) -> float:
    lo, hi = TAUS.index(round((1 - level) / 2, 10)), TAUS.index(round((1 + level) / 2, 10))
    return float(np.mean((quantiles[:, lo] <= targets) & (targets <= quantiles[:, hi])))


def test_calibration_restores_nominal_coverage_on_fresh_data_in_every_n_bin() -> None:
    q, y, n = overconfident(2000, seed=0)
    assert coverage(q, y, 0.9) < 0.7  # the head is badly over-confident: the test can fail
    calibration = fit_calibration(q, y, n, TAUS)
    assert calibration is not None and len(calibration.counts) >= 2 and sum(calibration.counts) == 2000
    fresh_q, fresh_y, fresh_n = overconfident(20000, seed=1)
    fixed = calibration.apply(fresh_q, fresh_n)
    for level in (0.5, 0.8, 0.9, 0.95):
        assert coverage(fixed, fresh_y, level) == pytest.approx(level, abs=0.025)
    small = fresh_n <= 100
    # per n-bin offsets: the noisy small-n datasets get wide intervals, the rest stay narrow
    for rows in (small, ~small):
        assert coverage(fixed[rows], fresh_y[rows], 0.9) == pytest.approx(0.9, abs=0.04)
    width = fixed[:, TAUS.index(0.95)] - fixed[:, TAUS.index(0.05)]
    assert width[small].mean() > 2 * width[~small].mean()


def test_calibrated_quantiles_stay_ordered_and_non_negative() -> None:
    calibration = QuantileCalibration(TAUS, (math.inf,), (tuple([-0.5] + [0.0] * 7 + [-3.0]),), (50,))
    raw = np.tile(np.linspace(0.1, 1.0, len(TAUS)), (3, 1))
    fixed = calibration.apply(raw, [10, 100, 1000])
    assert np.all(np.diff(fixed, axis=1) >= 0) and np.all(fixed >= 0)
    assert fixed[0, 0] == 0.0  # 0.1 − 0.5 is clipped at 0: MI is never negative


def test_ordering_never_raises_a_lower_quantile_nor_lowers_an_upper_one() -> None:
    """Crossings are mended towards the median: a lower quantile raised above its level would miss more
    often than τ; instead the one nearer the median comes down (and upper ones go up)."""
    taus = (0.05, 0.25, 0.5, 0.75, 0.95)
    calibration = QuantileCalibration(taus, (math.inf,), ((0.0, -2.0, 0.0, 2.0, 0.0),), (100,))
    raw = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])  # shifted: 1, 0, 3, 6, 5: both ends cross
    np.testing.assert_array_equal(calibration.apply(raw, [50]), [[0.0, 0.0, 3.0, 6.0, 6.0]])


def test_too_few_datasets_for_the_extreme_levels_are_named(caplog) -> None:
    q, y, n = overconfident(60, seed=5)
    with caplog.at_level("WARNING", logger="mibench.learned.calibration"):
        calibration = fit_calibration(q, y, n, TAUS)  # τ = 0.025/0.975 need 39 per bin, 0.05/0.95 need 19
    assert calibration is not None and calibration.counts == (60,)  # one bin: fewer than 100 per bin otherwise
    assert "τ = " not in caplog.text  # 60 datasets in one bin reach every level of this grid
    with caplog.at_level("WARNING", logger="mibench.learned.calibration"):
        fit_calibration(q[:30], y[:30], n[:30], TAUS)
    assert "τ = 0.025, 0.975 need more" in caplog.text


def test_too_few_held_out_datasets_give_no_calibration_and_nan_rows_are_ignored() -> None:
    q, y, n = overconfident(MIN_DATASETS + 5, seed=2)
    y[:6] = np.nan
    assert fit_calibration(q, y, n, TAUS) is None
    assert fit_calibration(*overconfident(MIN_DATASETS, seed=3), TAUS) is not None


def test_n_bins_hold_enough_datasets_each() -> None:
    n = np.repeat([10.0, 50.0, 200.0, 500.0], [30, 300, 300, 300])
    upper = n_bin_edges(n, min_per_bin=100, max_bins=4)
    counts = np.bincount(np.searchsorted(np.asarray(upper), n, side="left"))
    assert upper[-1] == math.inf and counts.min() >= 100 and counts.sum() == n.size
    assert n_bin_edges(np.full(500, 100.0), 100, 4) == (math.inf,)  # one size: one bin


def test_calibration_dict_round_trip_and_malformed_sections() -> None:
    calibration = fit_calibration(*overconfident(600, seed=4), TAUS, min_per_bin=150)
    assert calibration is not None
    text = json.dumps(calibration.to_dict())  # JSON-ready (inf is written as null)
    assert QuantileCalibration.from_dict(json.loads(text)) == calibration
    broken = {**calibration.to_dict(), "offsets": [[0.0]]}
    with pytest.raises(ValueError, match="do not agree"):
        QuantileCalibration.from_dict(broken)
    with pytest.raises(ValueError, match="malformed"):
        QuantileCalibration.from_dict({"taus": TAUS})


def test_checkpoint_carries_the_calibration_and_refuses_an_edited_one(tmp_path: Path, trained: Path) -> None:
    model, config = load_model(trained)
    # the trained fixture has 8 validation datasets: fewer than MIN_DATASETS, so it is not calibrated
    assert config["calibration"] is None and model.calibration is None
    samples = [dependent_sample(40 + 10 * i, 2, 3, seed=i) for i in range(4)]
    _, raw = predict(model, samples)
    model.calibration = QuantileCalibration(tuple(model.arch.taus), (45.0, math.inf),
                                            ((0.05,) * len(model.arch.taus), (0.5,) * len(model.arch.taus)), (30, 30))  # fmt: skip
    weights, json_path = save_checkpoint(model, tmp_path / "cal.safetensors")
    again, saved = load_model(weights)
    assert saved["calibration"]["counts"] == [30, 30]
    _, calibrated = predict(again, samples)
    np.testing.assert_allclose(calibrated[0], raw[0] + 0.05, rtol=1e-6)  # n = 40 ≤ 45: first bin
    np.testing.assert_allclose(calibrated[1:], raw[1:] + 0.5, rtol=1e-6)
    np.testing.assert_array_equal(predict(again, samples, calibrated=False)[1], raw)
    edited = json.loads(json_path.read_text())
    edited["calibration"]["offsets"][1][-1] = 5.0  # widen one interval by hand
    json_path.write_text(json.dumps(edited))
    with pytest.raises(CheckpointError, match="edited after training"):
        load_model(weights)


def test_training_with_enough_validation_datasets_calibrates(tmp_path: Path, learn_config: dict) -> None:
    from mibench.config import parse_config
    from mibench.learned.trainer import train_from_config

    learn_config["meta"]["splits"]["validation"]["count"] = 40
    learn_config["models"]["mist"]["data"]["validation_count"] = 40
    result = train_from_config(parse_config(learn_config), "mist", tmp_path, tracking=False, progress=False)
    model, config = load_model(result.weights)
    assert model.calibration is not None and sum(config["calibration"]["counts"]) == 40
    assert config["calibration"]["taus"] == pytest.approx(model.arch.taus)


# -- copula+robust -----------------------------------------------------------------------------------------------
def test_every_normalisation_of_the_config_has_its_channels() -> None:
    from typing import get_args

    from mibench.config.learned import Architecture

    assert set(get_args(Architecture.model_fields["normalisation"].annotation)) == set(CHANNELS)


def test_copula_robust_channels_keep_units_out_and_marginal_shape_in() -> None:
    x, _ = dependent_sample(200, 3, 2, seed=6)
    z = channels(x, "copula+robust")
    assert z.shape == (200, 3, 2)
    np.testing.assert_allclose(channels(x * 1000 - 4, "copula+robust"), z, atol=1e-5)  # units and offsets: invisible
    warped = channels(np.sinh(2 * x), "copula+robust")
    np.testing.assert_array_equal(warped[..., 0], z[..., 0])  # ranks do not see a monotone map
    assert np.abs(warped[..., 1]).max() > 2 * np.abs(z[..., 1]).max()  # the robust channel sees the heavy tails


def test_copula_robust_model_keeps_the_symmetries_and_sees_the_tails() -> None:
    torch.manual_seed(0)
    model = MISTModel(PRESETS["tiny"].replace(normalisation="copula+robust")).eval().double()
    x, y = dependent_sample(60, 3, 2, seed=7)
    base = outputs(model, [(x, y)])
    perm = np.random.default_rng(1).permutation(60)
    for variant in ((x[perm], y[perm]), (x[:, [2, 0, 1]], y[:, ::-1]), (y, x), (x * 50 + 3, y / 7)):
        np.testing.assert_allclose(outputs(model, [variant])[0], base[0], rtol=0, atol=1e-9)
    assert abs(outputs(model, [(np.sinh(2 * x), y)])[0][0] - base[0][0]) > 1e-6


def test_collate_refuses_mixed_channel_counts() -> None:
    x, y = dependent_sample(30, 2, 2, seed=8)
    with pytest.raises(ValueError, match="channel counts"):
        collate([prepare(x, y, "copula"), prepare(x, y, "copula+robust")])
