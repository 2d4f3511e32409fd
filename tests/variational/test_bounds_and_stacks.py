"""Neural variational estimators: bounds on known scores, accuracy bands, stacked cells equal single cells, devices, docs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mibench.estimators import (
    ESTIMATORS,
    Estimate,
    EstimatorInputError,
    build_estimator,
    hyperparameters,
    load_builtin_estimators,
    make_estimator,
)
from mibench.tasks import TaskSpec
from mibench.variational import TrainingDiverged
from tests.support.configs import REPO
from tests.support.neural import (
    BOUND_NAMES,
    FAST,
    gaussian_task,
)

load_builtin_estimators()


# ---------------------------------------------------------------------------------------------------------
# bounds on hand-made score matrices


def test_bounds_on_known_score_matrices():
    from mibench.variational import Bound

    b = 8
    const = torch.zeros(1, b, b)
    for name in BOUND_NAMES:  # a constant critic carries no information: every bound reads 0
        assert Bound(name).value(const).item() == pytest.approx(0.0, abs=1e-6), name
    # a critic that is exactly the log ratio of a perfectly informative pairing: InfoNCE → log B
    sharp = torch.full((1, b, b), -50.0)
    sharp.diagonal(dim1=1, dim2=2).fill_(50.0)
    assert Bound("infonce").value(sharp).item() == pytest.approx(math.log(b), abs=1e-6)
    assert Bound("infonce").value(sharp).item() <= math.log(b) + 1e-6  # float32 rounding of log B
    # DV sees the full 100-nat gap; SMILE with τ = 5 clips the partition term at e^-5
    assert Bound("dv").value(sharp).item() == pytest.approx(100.0, abs=1e-4)
    assert Bound("smile", tau=5.0).value(sharp).item() == pytest.approx(50.0 + 5.0, abs=1e-4)
    # NWJ: 1 + E_P[T] − E_Q[e^T] with T = 1 on the diagonal, 0 off it: 1 + 1 − 1 = 1
    t = torch.zeros(1, b, b)
    t.diagonal(dim1=1, dim2=2).fill_(1.0)
    assert Bound("nwj").value(t).item() == pytest.approx(1.0, abs=1e-6)
    assert Bound("js", readout="dv").value(t).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown bound"):
        Bound("mutual")


def test_mine_gradient_uses_moving_average():
    """MINE's surrogate: value is DV, the gradient's denominator is the EMA, not the batch mean."""
    from mibench.variational import Bound

    g = torch.Generator().manual_seed(0)
    s = torch.randn(1, 16, 16, generator=g, requires_grad=True)
    bound = Bound("mine", ema_decay=0.9)
    _, value, state = bound.train(s, None)
    assert value.item() == pytest.approx(Bound("dv").value(s).item(), abs=1e-6)
    # a previous EMA chosen so the updated EMA is twice this batch's E_Q[e^T]: 0.9·prev + 0.1·b = 2b
    prev = state + math.log(1.9 / 0.9)
    objective, _, new_state = bound.train(s, prev)
    assert (new_state - state).item() == pytest.approx(math.log(2.0), abs=1e-5)
    (g_mine,) = torch.autograd.grad(objective.sum(), s)
    (g_dv,) = torch.autograd.grad(Bound("dv").value(s).sum(), s)
    off = ~torch.eye(16, dtype=torch.bool)
    # joint (diagonal) gradients agree; the partition-term gradient is divided by the EMA, hence halved
    assert torch.allclose(g_mine[0].diagonal(), g_dv[0].diagonal())
    assert torch.allclose(g_mine[0][off], 0.5 * g_dv[0][off], atol=1e-7)


# ---------------------------------------------------------------------------------------------------------
# accuracy on Gaussians with known MI

# (mi, dim, band): after at most 1200 steps the reported value must lie in [low, high]. InfoNCE at 4 nats
# sits just under its ceiling log 64 ≈ 4.16 and is known to be biased low there (Poole et al. 2019).
CASES = [(0.5, 1, (0.38, 0.6)), (2.0, 2, (1.75, 2.15)), (4.0, 4, (3.5, 4.3))]
INFONCE_AT_4 = (2.9, math.log(64))


@pytest.mark.parametrize("name", BOUND_NAMES)
def test_each_bound_lands_in_band(name):
    samples = [gaussian_task(mi, dim).sample(3000, seed=10 + i) for i, (mi, dim, _) in enumerate(CASES)]
    est = build_estimator(name, dict(FAST))
    results = est.estimate_many(samples, [0, 1, 2])
    for (mi, _, band), r in zip(CASES, results, strict=True):
        assert isinstance(r, Estimate), r
        low, high = INFONCE_AT_4 if (name == "infonce" and mi == 4.0) else band
        assert low <= r.value <= high, f"{name}: {r.value:.3f} not in [{low}, {high}] for MI {mi}"
        assert r.extras["bound"] == name and r.extras["device"] == "cpu"
        assert r.extras["best_step"] <= r.extras["steps_run"] <= 1200
        assert abs(r.extras["train_mi"] - r.value) < 0.5  # train and held-out values both reported


def test_separable_critic_lands_in_band():
    task = gaussian_task(1.0, 2)
    x, y = task.sample(2000, seed=3)
    est = build_estimator("smile", {**FAST, "critic": "separable", "hidden": [64], "embed_dim": 16})
    r = est(x, y, seed=0)
    assert 0.8 <= r.value <= 1.1
    assert r.extras["critic"] == "separable"


def test_infonce_never_exceeds_log_batch():
    """At 8 nats with batch 16, InfoNCE is pinned under log 16 ≈ 2.77 (and gets close to it)."""
    x, y = gaussian_task(8.0, 4).sample(2000, seed=5)
    est = build_estimator("infonce", {**FAST, "batch_size": 16, "steps": 600})
    r = est(x, y, seed=0)
    ceiling = math.log(16)
    assert r.extras["log_batch_ceiling"] == pytest.approx(ceiling)
    assert max(v for _, v in r.extras["test_curve"]) <= ceiling + 1e-6
    assert r.extras["train_mi"] <= ceiling + 1e-6
    assert ceiling - 0.5 <= r.value <= ceiling + 1e-6


def test_independence_gives_about_zero():
    rng = np.random.default_rng(0)
    samples = [(rng.standard_normal((2000, 2)), rng.standard_normal((2000, 2))) for _ in range(2)]
    for name in BOUND_NAMES:
        results = build_estimator(name, {**FAST, "steps": 300}).estimate_many(samples, [0, 1])
        for r in results:
            assert isinstance(r, Estimate)
            assert abs(r.value) <= 0.08, f"{name}: {r.value:.3f} on independent data"


def test_seeds_reproduce_on_cpu():
    x, y = gaussian_task(1.0, 2).sample(1500, seed=1)
    est = build_estimator("mine", {**FAST, "steps": 300})
    a, b, c = est(x, y, seed=7), est(x, y, seed=7), est(x, y, seed=8)
    assert a.value == b.value and a.extras["test_curve"] == b.extras["test_curve"]
    assert a.value != c.value


# ---------------------------------------------------------------------------------------------------------
# many cells at once


def _mixed_samples():
    samples = [gaussian_task(mi, 2).sample(600, seed=s) for mi, s in ((0.5, 0), (2.0, 1), (1.0, 2))]
    samples.append((np.full((600, 2), np.nan), samples[0][1]))  # invalid input
    samples.append(gaussian_task(1.0, 2).sample(5, seed=4))  # too small (min_n = 8)
    samples.append(gaussian_task(1.0, 3).sample(600, seed=5))  # other dims: its own stack
    return samples


@pytest.mark.parametrize("name", ["mine", "smile"])  # stateful EMA; JS training with a clipped read-out
def test_batched_path_equals_per_cell(name):
    """Stacked training gives each cell exactly the numbers it gets alone, in float64 and in float32."""
    samples = _mixed_samples()
    seeds = [10, 11, 12, 13, 14, 15]
    for dtype in ("float64", "float32"):
        chunking = {"cells_per_stack": 2} if name == "smile" else {}  # stacks of 2: chunked groups too
        est = build_estimator(name, {**FAST, "steps": 200, "eval_every": 50, "dtype": dtype, **chunking})
        reported = {}
        many = est.estimate_many(samples, seeds, on_result=lambda i, r, seen=reported: seen.setdefault(i, r))
        assert reported == dict(enumerate(many)), "every cell is reported once, with its result"
        assert isinstance(many[3], EstimatorInputError) and "non-finite" in str(many[3])
        assert isinstance(many[4], EstimatorInputError) and "at least 8" in str(many[4])
        for i in (0, 1, 2, 5):
            alone = est(*samples[i], seed=seeds[i])
            assert isinstance(many[i], Estimate)
            assert many[i].value == alone.value, (dtype, i, many[i].value - alone.value)
            assert many[i].extras["test_curve"] == alone.extras["test_curve"]


@pytest.mark.parametrize("name", ["mine", "infonce"])
def test_a_cells_value_does_not_depend_on_its_stack(name):
    """Issue 11: MINE differed by 1.95e-2 nats between cells_per_job 3 and 8. A cell's float32 result is now the
    same alone, in stacks of 3, in one stack of 40 (> 32: per-cell vectors take SIMD paths) and at any position;
    batch 20 (400 pairs, not a multiple of the SIMD width) exercises the kernels' scalar tails."""
    rng = np.random.default_rng(3)
    samples = [
        gaussian_task(float(rng.uniform(0.3, 2.0)), 1).sample(int(rng.choice([60, 80])), seed=s) for s in range(40)
    ]
    seeds = list(range(500, 540))
    params = {**FAST, "hidden": [8, 4], "batch_size": 20, "steps": 150, "eval_every": 25, "learning_rate": 0.05}
    results = {}
    for cps in (3, 40):
        est = build_estimator(name, {**params, "cells_per_stack": cps})
        results[cps] = [r.value for r in est.estimate_many(samples, seeds)]
    backwards = build_estimator(name, {**params, "cells_per_stack": 40}).estimate_many(samples[::-1], seeds[::-1])
    results["reversed"] = [r.value for r in backwards[::-1]]
    assert results[3] == results[40] == results["reversed"]
    est = build_estimator(name, params)
    for i in (0, 1, 31, 32, 39):
        assert est(*samples[i], seed=seeds[i]).value == results[40][i], i


def test_stack_isolates_a_diverging_cell():
    """One cell blows up (unstandardised inputs of size 1e6: NWJ's e^T overflows at once); its stack
    neighbours train normally and get exactly the numbers they get alone."""
    good = [gaussian_task(1.0, 2).sample(600, seed=s) for s in (0, 1)]
    x, y = gaussian_task(1.0, 2).sample(600, seed=2)
    params = {**FAST, "steps": 200, "eval_every": 50, "standardize": False, "dtype": "float64"}
    est = build_estimator("nwj", params)
    many = est.estimate_many([good[0], (x * 1e6, y * 1e6), good[1]], [0, 1, 2])
    assert isinstance(many[1], TrainingDiverged) and "diverged" in str(many[1])
    for i, sample in ((0, good[0]), (2, good[1])):
        alone = est(*sample, seed=i)
        assert isinstance(many[i], Estimate) and many[i].value == pytest.approx(alone.value, abs=1e-9)
        assert 0.6 < many[i].value < 1.2


def test_a_failed_stack_retries_only_the_cells_not_yet_reported(monkeypatch):
    """A stack that reports its first cell and then fails (out of memory, say): the one-by-one retry trains
    only the other cell, and every cell is reported once."""
    import mibench.variational as variational

    real = variational.fit_cells
    calls: list[int] = []

    def failing_stack(cells, spec, config, device=None, on_result=None):
        calls.append(len(cells))
        if len(cells) == 1:
            return real(cells, spec, config, device=device)
        on_result(0, real(cells[:1], spec, config, device=device)[0])
        raise RuntimeError("stack out of memory")

    monkeypatch.setattr(variational, "fit_cells", failing_stack)
    samples = [gaussian_task(1.0, 2).sample(200, seed=s) for s in (0, 1)]
    est = build_estimator("nwj", {**FAST, "steps": 20, "eval_every": 10})
    reported: list[int] = []
    many = est.estimate_many(samples, [0, 1], on_result=lambda i, _: reported.append(i))
    assert all(isinstance(r, Estimate) for r in many)
    assert calls == [2, 1] and sorted(reported) == [0, 1]


# ---------------------------------------------------------------------------------------------------------
# configuration and devices


def test_hyperparameters_are_listed_validated_and_recorded():
    hp = hyperparameters(ESTIMATORS.get("smile"))
    assert hp["tau"] == 5.0 and hp["batch_size"] == 256 and hp["steps"] == 10_000 and hp["device"] == "auto"
    assert "ema_decay" in hyperparameters(ESTIMATORS.get("mine")) and "tau" not in hyperparameters(ESTIMATORS.get("dv"))
    est = make_estimator("js", {"batch_size": 32})
    assert est.params["batch_size"] == 32 and est.params["readout_bound"] == "nwj" and est.params["hidden"] == [16, 8]
    with pytest.raises(ValueError, match="nwj.tau: unknown key"):
        make_estimator("nwj", {"tau": 1.0})
    with pytest.raises(ValueError, match=r"dv.batch_size: input should be greater than or equal to 2 \(got 1\)"):
        make_estimator("dv", {"batch_size": 1})
    with pytest.raises(ValueError, match=r"dv.critic: input should be 'concat' or 'separable' \(got 'bilinear'\)"):
        make_estimator("dv", {"critic": "bilinear"})
    with pytest.raises(ValueError, match="dv.readout: input should be 'max_smoothed_test', 'max_test' or 'final_test'"):
        make_estimator("dv", {"readout": "best"})
    with pytest.raises(ValueError, match="smile.tau: input should be greater than 0"):
        make_estimator("smile", {"tau": -1})
    with pytest.raises(ValueError, match="mine.learning_rate: must be a finite number"):
        make_estimator("mine", {"learning_rate": float("inf")})


def test_device_resolution(monkeypatch):
    from mibench.devices import DEVICE_ENV, resolve_device

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert make_estimator("dv", {"device": "cpu"}).device == "cpu"
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert make_estimator("dv", {}).device == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv(DEVICE_ENV, "cuda")
        with pytest.raises(ValueError, match=r"\$MIBENCH_DEVICE asks for 'cuda' but CUDA is not available"):
            make_estimator("dv", {})
        with pytest.raises(ValueError, match="CUDA is not available"):
            make_estimator("dv", {"device": "cuda"})


def test_docs_neural_examples_are_valid():
    """docs/neural.md: every YAML config entry builds with the hyperparameters it names, and the Python quick
    start compiles and uses only registered estimators (running it takes ~2 CPU minutes; its output is in the
    doc, recorded from a run on 2026-11-23)."""
    import re

    import yaml

    text = (REPO / "docs" / "neural.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        for label, entry in yaml.safe_load(block)["estimators"].items():
            est = build_estimator(label, entry)
            named = {k: v for k, v in entry.items() if k != "estimator"}
            # every hyperparameter the doc names is what runs (nested entries, like `inner`, gain defaults)
            for key, value in named.items():
                got = est.params[key]
                if isinstance(value, dict):
                    assert value.items() <= got.items(), (label, key, value, got)
                else:
                    assert got == value, (label, key, value, got)
    (python,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    compile(python, "docs/neural.md", "exec")
    for name in re.findall(r'build_estimator\("(\w+)"', python):
        build_estimator(name, {"device": "cpu"} if name != "consistent" else {"inner": {"estimator": "ksg"}})


def test_rank_scores_are_monotone_bounded_and_fitted_on_the_training_rows() -> None:
    from mibench.estimators.neural import rank_scores

    rng = np.random.default_rng(0)
    train, test = rng.standard_cauchy((500, 2)), rng.standard_cauchy((200, 2))
    tr, te = rank_scores(train, test)
    for c in range(2):
        order = np.argsort(train[:, c])
        assert np.all(np.diff(tr[order, c]) > 0)  # strictly monotone on distinct values
        both = np.concatenate([train[:, c], test[:, c]])
        scores = np.concatenate([tr[:, c], te[:, c]])
        assert np.all(np.diff(scores[np.argsort(both)]) >= 0)  # held-out rows through the same CDF
    assert np.abs(tr).max() < 3.5 and np.abs(te).max() < 3.5  # Cauchy tails, bounded scores
    assert abs(tr.mean()) < 1e-9 and tr.std() == pytest.approx(1.0, abs=0.05)
    # held-out values never move the training scores: the transform is fitted on training rows only
    tr2, _ = rank_scores(train, test * 1e6)
    np.testing.assert_array_equal(tr, tr2)


def test_rank_standardisation_rescues_an_unbounded_bound_on_heavy_tails() -> None:
    """Student-t with ν = 1: under std scaling MINE collapses (≈ 0, seen in benchmarks/neural_bmi.py);
    with ``standardize: rank`` it lands near the true MI."""
    task = TaskSpec("student", "dense", 1, 1, {"rho": 0.0, "df": 1}).build()
    x, y = task.sample(2000, 1)
    est = build_estimator("mine", {"standardize": "rank", "steps": 600, "device": "cpu"})(x, y, seed=0)
    assert abs(est.value - task.mi) < 0.08, (est.value, task.mi)
    with pytest.raises(
        ValueError,
        match=r"config.estimators.mine.standardize: must be true or false, or input should be 'rank' \(got 'ranks'\)",
    ):
        build_estimator("mine", {"standardize": "ranks"})
