"""The learned-estimator benchmarks cannot rot: the CPU protocol is MIST's, and every script's smoke mode runs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from tests.support.configs import REPO

BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import _mist_protocol as mp  # noqa: E402
from _reference import ReferenceShape, matched_reference, reference_batch  # noqa: E402
from mibench.tasks import TaskSpec  # noqa: E402
from mibench.tasks.additive import additive_uniform_mi_1d  # noqa: E402
from mibench.tasks.gaussian import gaussian_mi  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the CPU protocol is MIST's -----------------------------------------------------------------------------------
def test_protocol_entries_are_the_papers_lists() -> None:
    assert len(mp.TRAIN_ENTRIES) == len(set(mp.TRAIN_ENTRIES)) == 16
    assert len(mp.IMD_ENTRIES) == 6 and set(mp.IMD_ENTRIES) <= set(mp.TRAIN_ENTRIES)
    assert len(mp.OOMD_ENTRIES) == 7 and not set(mp.OOMD_ENTRIES) & set(mp.TRAIN_ENTRIES)
    # OoMD is made of seen parts: every base-structure and every transform occurs in training
    seen = {e.rsplit("-", 1)[0] for e in mp.TRAIN_ENTRIES} | {"additive-noise"}
    assert all(e.rsplit("-", 1)[0] in seen for e in mp.OOMD_ENTRIES)
    assert mp.Protocol().n_grid == [10, 31, 52, 73, 94, 115, 136, 157, 178, 200]  # linspace, integer truncation


def test_protocol_structures_are_bmis_and_their_mi_is_exact() -> None:
    rng = np.random.default_rng(0)
    d, lam = 4, 2.0
    cov = mp.lvm_covariance(d, 2, 0.0, 0.0, lam, lam)  # sparse: alpha = beta = 0, eta = lambda
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    pair = lam**2 / (1 + lam**2)
    assert np.allclose(corr[0, d], pair) and np.allclose(corr[1, d + 1], pair) and np.allclose(corr[2, d + 2], 0)
    library = TaskSpec("multinormal", "sparse", d, d, {"k": 2, "strength": pair}).build().mi

    assert gaussian_mi(cov, d) == pytest.approx(library, rel=1e-12)
    dense = mp.draw_distribution("normal-dense-base", 3, rng)
    assert dense.mi == pytest.approx(TaskSpec("multinormal", "dense", 3, 3, {"rho": dense.params["c"]}).build().mi)
    additive = mp.draw_distribution("additive-noise-base", 3, rng)
    assert additive.mi == pytest.approx(sum(additive_uniform_mi_1d(e) for e in additive.epsilon))
    assert len(set(additive.epsilon)) == 3  # one epsilon per dimension
    student = mp.draw_distribution("student-sparse-base", 5, rng)
    assert 1 <= student.df <= 10 and student.mi > gaussian_mi(student.scale, 5) + 1e-3  # + the df term


def test_protocol_samples_follow_the_laws_and_the_grid_shares_dims() -> None:
    p = mp.Protocol(d_max=5, n_max=60, grid_points=3, replicates=2)
    train = [p.train_sample(0, i) for i in range(200)]
    assert {s.entry for s in train} <= set(mp.TRAIN_ENTRIES) and len({s.entry for s in train}) == 16
    assert all(2 <= s.d <= 5 and 10 <= s.n <= 60 and s.x.shape == (s.n, s.d) == s.y.shape for s in train)
    assert p.train_sample(0, 7).mi == train[7].mi and p.train_sample(1, 7).mi != train[7].mi
    cells = list(p.test_cells("oomd"))
    assert len(cells) == 3 * 7 * 2
    for a, b in zip(cells[::2], cells[1::2], strict=True):  # replicates: same (n, entry, d), own parameters
        assert (a.n, a.entry, a.d) == (b.n, b.entry, b.d) and a.mi != b.mi
    wiggly = mp.TRANSFORMS["wiggly"]
    v = np.linspace(-5, 5, 1001)
    assert np.all(np.diff(wiggly[0](v)) > 0) and np.all(np.diff(wiggly[1](v)) > 0)  # injective
    assert not np.allclose(wiggly[0](v), wiggly[1](v))  # BMI: different maps on X and Y


def test_reference_shape_matches_a_parameter_count_and_pads_rows() -> None:
    model = matched_reference(300_000, width=16, inducing=16, seeds=4)
    assert abs(model.parameter_count() - 300_000) < 0.1 * 300_000
    rows, pad, _ = reference_batch([(np.ones((3, 2)), np.ones((3, 1))), (np.ones((5, 9)), np.ones((5, 9)))], 16)
    assert rows.shape == (2, 5, 16) and pad[0].tolist() == [False] * 3 + [True] * 2
    assert rows[1, 0].sum() == 16  # 18 columns silently truncated to 16, as the reference does
    assert 4.5e6 < ReferenceShape().parameter_count() < 5.6e6  # the default: the reference's size class


def test_marginals_only_diagnostics_never_read_the_dependence() -> None:
    """The diagnostics' claim: their answers come from each column alone, never from how X and Y co-vary, and
    the shape-only control does not read the units either."""
    import mist_vs_reference as mvr

    settings = mvr.Settings(protocol=mvr.SMOKE, arch=mvr.SMOKE_ARCH, budget_s=1, seeds=(0,), ablation_seeds=(0,))
    settings.marginal_samples = 300
    cells = mvr.test_cells(settings)[:12]
    rng = np.random.default_rng(0)
    shuffled = [dataclasses.replace(c, y=c.y[rng.permutation(len(c.y))]) for c in cells]  # independent, same marginals
    rescaled = [dataclasses.replace(c, x=c.x * 8.0, y=c.y / 4.0) for c in cells]  # same MI, other units
    for units in (True, False):
        base, independent, other_units = (
            mvr.marginals_only(settings, group, units) for group in (cells, shuffled, rescaled)
        )
        np.testing.assert_array_equal(base, independent)
        if units:
            assert not np.allclose(base, other_units)
        else:
            np.testing.assert_allclose(other_units, base, rtol=1e-9)


# -- smoke runs ----------------------------------------------------------------------------------------------------
def test_mist_vs_reference_smoke(tmp_path) -> None:
    import mist_vs_reference

    assert mist_vs_reference.main(["--smoke", "--seeds", "2", "--ablation-seeds", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "mist_vs_reference.md").read_text()
    assert "SMOKE RUN" in text and "## Targets" in text and "MSE ratio ours ÷ reference at equal compute" in text
    table = pl.read_parquet(tmp_path / "mist_vs_reference.parquet")
    variants = set(table["variant"])
    baselines = {mist_vs_reference.KSG, mist_vs_reference.TRIVIAL, *mist_vs_reference.DIAGNOSTICS}
    assert {v.name for v in mist_vs_reference.VARIANTS} | baselines == variants
    assert "a predictor that reads each column on its own" in text
    ablation = table.filter(pl.col("variant") == "ours-copula-only")
    assert set(ablation["seed"]) == {0} and set(table.filter(pl.col("variant") == "ours")["seed"]) == {0, 1}
    ours = table.filter((pl.col("variant") == "ours") & (pl.col("n_bin") == "ALL"))
    assert ours["coverage_90"].is_between(0, 1).all() and (ours["mse"] > 0).all()
    assert ours["coverage_raw_90"].is_between(0, 1).all()  # the quantile head before its conformal calibration
    runs = pl.read_parquet(tmp_path / "mist_vs_reference_runs.parquet")
    same = runs.filter(pl.col("variant").is_in(["ours", "reference-same-steps"])).sort("seed", "variant")
    assert same.group_by("seed").agg(pl.col("steps").n_unique())["steps"].to_list() == [1, 1]  # (a): equal steps
    # the results file can be rewritten from the parquet files alone
    (tmp_path / "mist_vs_reference.md").write_text("")
    # a diagnostic missing from the run's cells (added after it) is computed on re-render, the same values
    cells_path = tmp_path / "mist_vs_reference_cells.parquet"
    cells = pl.read_parquet(cells_path)
    cells.filter(pl.col("variant") != mist_vs_reference.SHAPE_ONLY).write_parquet(cells_path)
    assert mist_vs_reference.main(["--smoke", "--rerender", "--out", str(tmp_path)]) == 0
    key = ["variant", "split", "entry", "n", "replicate"]
    refilled = pl.read_parquet(cells_path).filter(pl.col("variant") == mist_vs_reference.SHAPE_ONLY).sort(key)
    original = cells.filter(pl.col("variant") == mist_vs_reference.SHAPE_ONLY).sort(key)
    np.testing.assert_array_equal(refilled["estimate"], original["estimate"])
    assert mist_vs_reference.SHAPE_ONLY in set(pl.read_parquet(tmp_path / "mist_vs_reference.parquet")["variant"])
    # a re-render that dies while rewriting the cells keeps the run's only per-cell data readable and unchanged
    before = pl.read_parquet(cells_path)
    before.filter(pl.col("variant") != mist_vs_reference.SHAPE_ONLY).write_parquet(cells_path)
    before = pl.read_parquet(cells_path)

    def dies_mid_write(frame, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pl.DataFrame, "write_parquet", dies_mid_write)
        with pytest.raises(Exception, match="No space left"):
            mist_vs_reference.main(["--smoke", "--rerender", "--out", str(tmp_path)])
    assert pl.read_parquet(cells_path).equals(before)
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind
    assert mist_vs_reference.main(["--smoke", "--rerender", "--out", str(tmp_path)]) == 0
    again = (tmp_path / "mist_vs_reference.md").read_text()
    assert "## Targets" in again and "MSE per entry, oomd" in again and "additive-noise-base" in again
    assert "before calibration" in again


def test_mist_vs_reference_variants_subset_in_parallel_gives_the_serial_numbers(tmp_path) -> None:
    """--jobs trains seeds in processes: with a fixed number of steps the numbers must be the serial run's."""
    import mist_vs_reference

    with pytest.raises(SystemExit, match="unknown nope"):
        mist_vs_reference.pick_variants("ours,nope")
    with pytest.raises(SystemExit, match="needs 'ours'"):
        mist_vs_reference.pick_variants("reference-same-steps")
    chosen = mist_vs_reference.pick_variants("reference,ours")
    assert [v.name for v in chosen] == ["ours", "reference"]  # standard order, whatever was typed
    settings = mist_vs_reference.Settings(
        protocol=mist_vs_reference.SMOKE, arch=mist_vs_reference.SMOKE_ARCH, budget_s=1.0, seeds=(0, 1),
        ablation_seeds=(0,), batch_size=4, pool=2, trivial_samples=20, calibration_samples=30, fixed_steps=5,
    )  # fmt: skip
    frames = {jobs: mist_vs_reference.run(settings, chosen, log=lambda _: None, jobs=jobs)[0] for jobs in (1, 2)}
    serial, parallel = (f.sort("variant", "seed", "split", "entry", "n", "replicate") for f in (frames[1], frames[2]))
    assert serial.height == parallel.height > 0 and set(serial["seed"].drop_nulls()) == {0, 1}
    assert serial.equals(parallel)


def test_mist_vs_reference_lr_reaches_both_designs(tmp_path) -> None:
    """--lr (the sensitivity check of docs/learned.md) sets the peak learning rate of ours and the reference."""
    import mist_vs_reference

    args = ["--smoke", "--variants", "ours,reference", "--seeds", "1", "--lr", "0.004", "--out", str(tmp_path)]
    assert mist_vs_reference.main(args) == 0
    runs = pl.read_parquet(tmp_path / "mist_vs_reference_runs.parquet")
    assert set(runs["variant"]) == {"ours", "reference"} and runs["lr"].to_list() == [0.004, 0.004]
    assert "AdamW (lr 0.004 ours, 0.004 reference" in (tmp_path / "mist_vs_reference.md").read_text()
    # a re-render reads the lr from the run's data, like its seeds and budget (it labelled the run 1e-3)
    (tmp_path / "mist_vs_reference.md").unlink()
    assert mist_vs_reference.main(["--smoke", "--rerender", "--out", str(tmp_path)]) == 0
    assert "AdamW (lr 0.004 ours, 0.004 reference" in (tmp_path / "mist_vs_reference.md").read_text()


def test_learned_vs_neural_smoke(tmp_path) -> None:
    import learned_vs_neural

    out = tmp_path / "out"
    assert learned_vs_neural.main(["--smoke", "--out", str(out), "--save", str(tmp_path / "m.safetensors")]) == 0
    frame = pl.read_parquet(out / "learned_vs_neural.parquet")
    expected = {"mist", "mist (forward only)", "mist (batched)", "mine", "infonce"}
    assert set(frame["estimator"]) == expected and (frame["cpu_s"] > 0).all()
    single = frame.filter(pl.col("estimator") == "mist").sort("entry", "n", "replicate")
    alone = frame.filter(pl.col("estimator") == "mist (forward only)").sort("entry", "n", "replicate")
    np.testing.assert_allclose(alone["estimate"], single["estimate"], rtol=1e-6)  # the same network, the same answer
    text = (out / "learned_vs_neural.md").read_text()
    assert "faster per dataset than mine" in text and "1000× the fastest neural estimator needs" in text
    assert (frame["first_cpu_s"] > 0).all()
    # every shape is timed on every dataset, each row by the model its label names
    sizes = pl.read_parquet(out / "learned_vs_neural_sizes.parquet")
    datasets = frame.filter(pl.col("estimator") == "mist").height
    assert sizes.height == (1 + len(learned_vs_neural.SMALLER)) * datasets and (sizes["forward_s"] > 0).all()
    from mibench.learned.checkpoint import load_model

    timed = learned_vs_neural.shapes(load_model(tmp_path / "m.safetensors")[0].arch)
    counts = {label: model.parameter_count() for label, model in timed.items()}
    assert dict(zip(sizes["shape"], sizes["parameters"], strict=False)) == counts
    # the full run's shapes really are smaller than its model, each smaller than the one before
    full = [m.parameter_count() for m in learned_vs_neural.shapes(learned_vs_neural.CPU_ARCH).values()]
    assert full == sorted(full, reverse=True) and len(set(full)) == len(full)
    assert "How small would the model have to be?" in text and "width 16, minimal" in text
    # the model it trained is a real mibench checkpoint, usable as --checkpoint
    again = tmp_path / "again"
    args = ["--smoke", "--out", str(again), "--checkpoint", str(tmp_path / "m.safetensors")]
    assert learned_vs_neural.main(args) == 0
    # a later run that dies while writing leaves the earlier results readable and unchanged, and no temp file
    before = pl.read_parquet(out / "learned_vs_neural.parquet")

    def dies_mid_write(frame, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pl.DataFrame, "write_parquet", dies_mid_write)
        with pytest.raises(Exception, match="No space left"):
            learned_vs_neural.main(["--smoke", "--out", str(out), "--checkpoint", str(tmp_path / "m.safetensors")])
    assert pl.read_parquet(out / "learned_vs_neural.parquet").equals(before)
    assert not list(out.glob(".*.tmp"))


def test_learned_vs_neural_budget_marks_count_the_preparation() -> None:
    """✓ only where forward + preparation (call − forward medians) fits 1/1000 of the fastest neural median."""
    import learned_vs_neural

    table = pl.DataFrame({
        "estimator": ["mist", "mist (forward only)", "mine", "infonce"] * 2,
        "n": [100] * 4 + [500] * 4,
        "cpu_s_median": [1.8e-3, 1.0e-3, 1.2, 1.5, 4e-3, 3e-3, 14.0, 13.0],
    })  # fmt: skip
    limits = learned_vs_neural.budgets(table)
    assert limits[100] == pytest.approx((1.2e-3, 0.8e-3)) and limits[500] == pytest.approx((13e-3, 1e-3))
    sizes = pl.DataFrame({"shape": ["big", "big", "small", "small"], "parameters": [10, 10, 5, 5],
                          "n": [100, 500, 100, 500], "forward_s": [1.0e-3, 3e-3, 0.3e-3, 2e-3]})  # fmt: skip
    rows = {line.split(" | ")[0]: line for line in learned_vs_neural.size_lines(sizes, limits) if line.startswith("| ")}
    # big at n = 100: 1.0 + 0.8 > 1.2 ms, although its forward alone fits; small: 0.3 + 0.8 ≤ 1.2
    assert "1.00 ✗" in rows["| big"] and "3.00 ✓" in rows["| big"]
    assert "0.30 ✓" in rows["| small"] and "2.00 ✓" in rows["| small"]
    with pytest.raises(KeyError, match="forward only"):
        learned_vs_neural.budgets(table.filter(pl.col("estimator") != "mist (forward only)"))


@pytest.mark.slow  # four processes (torch start-up each), about 40 CPU-seconds
def test_gpu_suite_smoke_runs_every_step_on_the_cpu(tmp_path, venv_env) -> None:
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_suite.sh"), "--smoke", "--out", str(tmp_path)],
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (tmp_path / "gpu_suite.log").read_text()
    assert proc.returncode == 0, log[-4000:]
    assert "all steps passed" in log and "machine: GPU none" in log
    throughput = (tmp_path / "train_throughput-smoke.md").read_text()
    assert "fp32 (TF32 off)" in throughput and "bf16 autocast" in throughput
    assert "|Δ MI| vs the CPU tree" in (tmp_path / "ksg_gpu-smoke.md").read_text()
    assert "Many cells at once" in (tmp_path / "neural_speed.md").read_text()
    accuracy = pl.read_parquet(tmp_path / "mist_accuracy-smoke.parquet")
    assert {"test_imd", "test_oomd"} <= set(accuracy["split"])
    bad = subprocess.run(["bash", str(BENCH / "gpu_suite.sh"), "--nope"], env=venv_env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument '--nope'" in bad.stderr
