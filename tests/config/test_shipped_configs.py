"""The shipped configs: valid, every estimator label resolves, and the protocols are what they claim to be:
config/paper.yaml is MIST's protocol (split sizes, entries, tied dims, n grids, hyperparameter laws tested by
Kolmogorov-Smirnov on planned draws), config/bmi_v1.yaml is BMI v1's 40 tasks with their exact MI, and no
stored sample of any shipped entry holds ties created by saturation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mibench.benchmark import benchmark_plans
from mibench.config import load_config
from mibench.estimators import ESTIMATORS
from mibench.resolve import resolve_config
from tests.support.configs import REPO

SHIPPED = ["config.yaml", "bmi.yaml", "paper.yaml", "paper_extended.yaml", "bmi_v1.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_validates_and_its_estimators_resolve(name: str) -> None:
    resolved = resolve_config(REPO / "config" / name)
    assert resolved.benchmarks, f"{name} defines no benchmark"
    for label, est in resolved.estimators.items():
        assert est.name in ESTIMATORS, f"{name}: estimators.{label} names unknown estimator {est.name!r}"
        if "checkpoint" in est.params:
            # learned estimators take the train rule's output: it must be a model this config trains
            model = str(est.params["checkpoint"]).split("/")[-2]
            assert model in resolved.models, f"{name}: {label} reads a checkpoint no rule trains"
        else:
            est.build()  # hyperparameters accepted by the class, and it builds
    for plan in resolved.benchmarks.values():
        assert plan.n_cells > 0


def test_bmi_like_benchmark_covers_what_the_readme_says() -> None:
    plan = benchmark_plans(load_config(REPO / "config" / "bmi.yaml"))["bmi"]
    assert len(plan.tasks) >= 30
    dims = {(t.spec.dim_x, t.spec.dim_y) for t in plan.tasks}
    assert (1, 1) in dims and (25, 25) in dims
    families = {t.spec.family for t in plan.tasks}
    assert {"multinormal", "student", "additive_uniform", "mixture"} <= families
    dfs = {t.spec.params["df"] for t in plan.tasks if t.spec.family == "student"}
    assert len(dfs) >= 3, dfs
    transforms = {part for t in plan.tasks for part in t.spec.transform.replace(",", "+").split("+")}
    assert {"spiral", "wiggly", "halfcube"} <= {p.split(":")[-1] for p in transforms}
    for task in plan.tasks:
        assert math.isfinite(task.mi) and task.mi >= 0, task.name


def test_default_config_scores_learned_and_bootstrap_intervals_side_by_side() -> None:
    config = load_config(REPO / "config" / "config.yaml")
    meta = benchmark_plans(config)["meta"]
    assert set(meta.splits) == {"test_imd", "test_oomd", "test_heldout"}
    labels = set(meta.estimators)
    assert {"mist", "mist_qr", "ksg_bootstrap", "mist_bootstrap"} <= labels


# -- MIST's protocol (config/paper.yaml) ---------------------------------------------------------------
MIST_TRAIN = {
    "multinormal-dense-base", "multinormal-dense-halfcube", "multinormal-dense-asinh",
    "multinormal-bmi_sparse-bmi_wiggly", "multinormal-bmi_sparse-base", "multinormal-bmi_lvm-bmi_wiggly",
    "multinormal-bmi_lvm-base", "multinormal-bmi_2pair-base", "student-dense-base", "student-dense-bmi_wiggly",
    "student-bmi_sparse-halfcube", "student-bmi_sparse-base", "student-bmi_sparse-asinh",
    "student-bmi_2pair-asinh", "student-bmi_2pair-halfcube", "additive_uniform-perdim-bmi_wiggly",
}  # fmt: skip
MIST_VALIDATION = {
    "multinormal-dense-base", "multinormal-dense-bmi_wiggly", "multinormal-bmi_sparse-base",
    "multinormal-bmi_lvm-bmi_wiggly", "student-dense-base", "student-bmi_sparse-halfcube",
    "student-bmi_sparse-base", "student-bmi_2pair-halfcube", "additive_uniform-perdim-bmi_wiggly",
}  # fmt: skip
MIST_IMD = {
    "multinormal-dense-base", "multinormal-bmi_lvm-bmi_wiggly", "multinormal-dense-halfcube",
    "student-dense-base", "student-bmi_sparse-base", "student-bmi_sparse-asinh",
}  # fmt: skip
MIST_OOMD = {
    "multinormal-dense-bmi_wiggly", "multinormal-bmi_sparse-halfcube", "multinormal-bmi_sparse-asinh",
    "student-bmi_sparse-bmi_wiggly", "student-dense-halfcube", "additive_uniform-perdim-base",
    "additive_uniform-perdim-halfcube",
}  # fmt: skip


@pytest.fixture(scope="module")
def mist_plans():
    from mibench.meta import split_plans

    return split_plans(load_config(REPO / "config" / "paper.yaml"))


def test_mist_split_sizes_and_entry_sets(mist_plans) -> None:
    sizes = {name: plan.total for name, plan in mist_plans.items()}
    assert sizes == {"train": 625_000, "validation": 612, "test_imd": 1_080, "test_oomd": 1_260}
    entries = {name: {e.name for e in plan.entries} for name, plan in mist_plans.items()}
    assert entries == {"train": MIST_TRAIN, "validation": MIST_VALIDATION, "test_imd": MIST_IMD, "test_oomd": MIST_OOMD}
    assert all(len(plan.entries) == len(entries[name]) for name, plan in mist_plans.items())  # no duplicates
    assert MIST_IMD <= MIST_TRAIN and not MIST_OOMD & MIST_TRAIN
    assert len({plan.root_seed for plan in mist_plans.values()}) == 4  # disjoint seed streams
    assert {e.weight for e in mist_plans["train"].entries} == {1.0}  # entry chosen uniformly


def test_mist_n_grids_truncate_and_replicates_are_distinct_distributions(mist_plans) -> None:
    test_grid = tuple(np.linspace(10, 500, 20, dtype=int).tolist())
    assert mist_plans["test_imd"].n_grid == mist_plans["test_oomd"].n_grid == test_grid
    assert test_grid[:4] == (10, 35, 61, 87)
    assert mist_plans["validation"].n_grid == tuple(np.linspace(10, 300, 34, dtype=int).tolist())
    assert (mist_plans["validation"].replicates, mist_plans["test_imd"].replicates) == (2, 9)
    plan = mist_plans["test_oomd"]
    groups: dict[int, list] = {}
    for i in range(plan.total):
        groups.setdefault(i // 9, []).append(plan.sample(i))
    assert len(groups) == 7 * 20
    for group in groups.values():
        assert len({(s.spec.entry, s.n, s.spec.dim_x) for s in group}) == 1  # share (n, entry, d)
        assert len({s.spec.params_json for s in group}) == 9  # each its own distribution


def test_mist_dims_are_tied_and_uniform(mist_plans) -> None:
    for name, plan in mist_plans.items():
        samples = [plan.sample(i) for i in range(0, plan.total, max(1, plan.total // 3000))]
        assert all(s.spec.dim_x == s.spec.dim_y for s in samples), name
        assert {s.spec.dim_x for s in samples} <= set(range(2, 33)), name
    train = [mist_plans["train"].sample(i) for i in range(4000)]
    d = np.array([s.spec.dim_x for s in train])
    jitter = np.random.default_rng(0).uniform(size=d.size)
    assert stats.kstest((d - 2 + jitter) / 31, "uniform").pvalue > 1e-3  # U{2..32}, randomised PIT
    n = np.array([s.n for s in train])
    assert n.min() >= 10 and n.max() <= 500
    assert stats.kstest((n - 10 + jitter) / 491, "uniform").pvalue > 1e-3  # U{10..500}
    counts = np.bincount([sorted(MIST_TRAIN).index(s.spec.entry) for s in train], minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-3


def _pooled(samples, entries: set[str], key: str) -> np.ndarray:
    values = []
    for s in samples:
        if s.spec.entry in entries:
            v = s.spec.params[key]
            values.extend(v if isinstance(v, list) else [v])
    return np.asarray(values, dtype=float)


def test_mist_hyperparameters_follow_their_laws(mist_plans) -> None:
    """Kolmogorov-Smirnov of every hyperparameter against MIST's stated law, on 6,000 planned draws (no data)."""
    train = [mist_plans["train"].sample(i) for i in range(6000)]
    by = {e: {x for x in MIST_TRAIN if x.split("-")[1] == e} for e in ("dense", "bmi_sparse", "bmi_2pair", "bmi_lvm")}
    student = {x for x in MIST_TRAIN if x.startswith("student")}
    laws = [
        (_pooled(train, by["dense"], "rho"), 0.0, 0.5),
        (_pooled(train, student, "df"), 1.0, 10.0),
        (_pooled(train, by["bmi_sparse"] | by["bmi_2pair"], "strength"), 0.1, 5.0),
        (_pooled(train, by["bmi_lvm"], "alpha"), 0.0, 1.0),
        (_pooled(train, by["bmi_lvm"], "lambd"), 0.1, 3.0),
        (_pooled(train, by["bmi_lvm"], "beta"), 0.0, 1.5),
        (_pooled(train, by["bmi_lvm"], "eta"), 0.1, 5.0),
        (_pooled(train, {"additive_uniform-perdim-bmi_wiggly"}, "epsilons"), 0.1, 2.0),
    ]
    for values, lo, hi in laws:
        assert values.size > 300
        assert stats.kstest(values, "uniform", args=(lo, hi - lo)).pvalue > 1e-3, (lo, hi)
    # the test has power: mibench's former df law (log-uniform on [1, 20]) is rejected outright
    df = _pooled(train, student, "df")
    assert stats.kstest(df, "uniform", args=(1.0, 19.0)).pvalue < 1e-9
    # n_interacting ~ U{1..d} given d (randomised PIT), for bmi_sparse and bmi_lvm
    pit = []
    rng = np.random.default_rng(1)
    for s in train:
        if s.spec.structure in ("bmi_sparse", "bmi_lvm"):
            k, d = s.spec.params["n_interacting"], s.spec.dim_x
            assert 1 <= k <= d
            pit.append((k - 1 + rng.uniform()) / d)
    assert len(pit) > 1000 and stats.kstest(pit, "uniform").pvalue > 1e-3
    assert all(len(s.spec.params["epsilons"]) == s.spec.dim_x for s in train if s.spec.family == "additive_uniform")
    assert {s.spec.params["n_interacting"] if "n_interacting" in s.spec.params else 2 for s in train} >= {1, 2, 32}
    # every split draws with the same laws
    ranges = [plan.ranges for plan in mist_plans.values()]
    assert all(r == ranges[0] for r in ranges)


# -- BMI v1 (config/bmi_v1.yaml) ----------------------------------------------------------------------
BMI_V1_IDS = [
    "1v1-normal-0.75", "normal_cdf-1v1-normal-0.75", "1v1-additive-0.1", "1v1-additive-0.75", "1v1-bimodal-0.75",
    "wiggly-1v1-normal-0.75", "half_cube-1v1-normal-0.75", "student-identity-1-1-1", "asinh-student-identity-1-1-1",
    "swissroll_x-normal_cdf-1v1-normal-0.75",
    *[f"multinormal-dense-{d}-{d}-0.5" for d in (2, 3, 5, 25, 50)],
    *[f"multinormal-sparse-{d}-{d}-2-2.0" for d in (2, 3, 5, 25)],
    *[f"student-identity-{s}" for s in ("2-2-1", "2-2-2", "3-3-2", "3-3-3", "5-5-2", "5-5-3")],
    *[f"{t}-multinormal-sparse-{d}-{d}-2-2.0" for t in ("normal_cdf", "half_cube", "spiral", "spiral-normal_cdf")
      for d in (3, 5, 25)],
    *[f"asinh-student-identity-{s}" for s in ("2-2-1", "3-3-2", "5-5-2")],
]  # fmt: skip


def _bmi_v1_expected_mi(task_id: str) -> float:
    """Each task's MI from its id alone, by formulas written here (mpmath for the Student-t term)."""
    import mpmath

    parts = task_id.split("-")
    if "1v1" in parts:
        kind, value = parts[parts.index("1v1") + 1], float(parts[-1])
        if kind == "additive":
            return value - math.log(2 * value) if value <= 0.5 else 1 / (4 * value)
        return -0.5 * math.log(1 - value**2)  # normal and bimodal: a bivariate normal underneath
    if "dense" in parts:
        d, c = int(parts[-3]), float(parts[-1])

        def logdet(m: int) -> float:  # equicorrelation matrix of size m
            return (m - 1) * math.log(1 - c) + math.log(1 + (m - 1) * c)

        return 0.5 * (2 * logdet(d) - logdet(2 * d))
    if "sparse" in parts:
        k, lam = int(parts[-2]), float(parts[-1])
        rho = lam**2 / (1 + lam**2)
        return -0.5 * k * math.log(1 - rho**2)
    assert "identity" in parts, task_id
    dx, dy, nu = (mpmath.mpf(v) for v in parts[-3:])
    with mpmath.workdps(50):

        def g(a):
            return mpmath.loggamma(a) - a * mpmath.digamma(a)

        a, p, q = nu / 2, dx / 2, dy / 2
        return float(g(a) + g(a + p + q) - g(a + p) - g(a + q))


def test_bmi_v1_is_bmis_40_tasks_with_their_exact_mi() -> None:
    plan = benchmark_plans(load_config(REPO / "config" / "bmi_v1.yaml"))["bmi_v1"]
    assert [t.name for t in plan.tasks] == BMI_V1_IDS and len(BMI_V1_IDS) == 40
    for task in plan.tasks:
        assert task.mi == pytest.approx(_bmi_v1_expected_mi(task.name), rel=1e-9, abs=1e-12), task.name
        x, y = task.task.sample(64, seed=0)
        assert x.shape[1] == task.spec.dim_x and y.shape[1] == task.spec.dim_y
    by_name = {t.name: t for t in plan.tasks}
    assert (
        by_name["swissroll_x-normal_cdf-1v1-normal-0.75"].spec.dim_x,
        by_name["multinormal-dense-50-50-0.5"].spec.dim_y,
    ) == (2, 50)
    assert by_name["student-identity-1-1-1"].mi == pytest.approx(0.2242, abs=1e-4)  # BMI's published value
    assert plan.seeds == 10 and 5000 in plan.ns
    config = load_config(REPO / "config" / "bmi_v1.yaml")
    assert {config.estimators[e].hyperparameters.get("metric") for e in ("ksg_bmi_5", "ksg_bmi_10")} == {"euclidean"}


# -- no stored sample of any shipped entry holds ties created by saturation -----------------------------
def _entry_indices(plan, per_entry: int = 2) -> list[int]:
    """A few sample indices of every entry of a split, at its largest n for grids."""
    if plan.is_grid:
        per_draw = len(plan.n_grid) * plan.replicates
        out = []
        for e in range(len(plan.entries)):
            last_n = (e * plan.distributions_per_entry) * per_draw + (len(plan.n_grid) - 1) * plan.replicates
            out += [last_n + r for r in range(min(per_entry, plan.replicates))]
        return out
    seen: dict[str, list[int]] = {}
    for i in range(min(plan.total, 4000)):
        seen.setdefault(plan.sample(i).spec.entry, [])
        if len(seen[plan.sample(i).spec.entry]) < per_entry:
            seen[plan.sample(i).spec.entry].append(i)
    return [i for idx in seen.values() for i in idx]


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "paper_extended.yaml"])
def test_no_stored_sample_holds_saturation_ties(name: str) -> None:
    from mibench.meta import split_plans
    from mibench.meta.generate import stored_sample
    from mibench.meta.plan import build_checked
    from mibench.tasks.transforms import saturation_ties

    plans = split_plans(load_config(REPO / "config" / name))
    checked = set()
    for plan in plans.values():
        for index in _entry_indices(plan):
            planned = plan.sample(index)
            task = build_checked(plan, planned)
            x, y = stored_sample(plan, planned, task)  # raises on a tie
            assert saturation_ties(x, task.transform, "x") == saturation_ties(y, task.transform, "y") == 0
            checked.add(planned.spec.entry)
    assert checked == {e.name for plan in plans.values() for e in plan.entries}


def test_bmi_v1_normal_cdf_tasks_hold_no_saturation_ties_even_in_float32() -> None:
    from mibench.tasks.transforms import saturation_ties

    plan = benchmark_plans(load_config(REPO / "config" / "bmi_v1.yaml"))["bmi_v1"]
    for task in plan.tasks:
        if "normal_cdf" not in task.spec.transform:
            continue
        x, y = task.task.sample(10_000, seed=1)
        for side, values in (("x", x), ("y", y)):
            assert saturation_ties(values.astype(np.float32), task.task.transform, side) == 0, task.name


def test_default_config_keeps_its_meaning() -> None:
    """config/config.yaml uses neither new key: its grid replicates are samples of one distribution, its n grid
    rounds, as before."""
    from mibench.meta import split_plans

    plans = split_plans(load_config(REPO / "config" / "config.yaml"))
    for name in ("test_imd", "test_oomd", "test_heldout"):
        assert plans[name].replicates_share == "distribution"
        assert plans[name].n_grid == (10, 73, 137, 200)
