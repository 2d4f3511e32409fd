"""Meta-dataset plans: config errors by key, parameter laws, n grids and replicate semantics, MC labels."""

from __future__ import annotations

import copy

import numpy as np
import pyarrow.parquet as pq
import pytest

from mibench.config import ConfigError, load_config, parse_config
from mibench.meta import (
    generate_shard,
    read_shard_meta,
    read_shards,
    split_plans,
)
from mibench.tasks import TaskSpec
from tests.support.configs import write_config


def _split(**overrides) -> dict:
    base = {
        "root_seed": 1,
        "count": 5,
        "n": {"low": 10, "high": 20},
        "mixture": ["multinormal-dense"],
        "dims": {"x": [1, 3], "y": [1, 3]},
    }
    base.update(overrides)
    return {"meta": {"splits": {"train": base}}}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (_split(mixture=["gauss-dense"]), "config.meta.splits.train.mixture[0]: unknown family 'gauss'"),
        (_split(mixture=["multinormal-diag"]), "unknown structure 'diag'"),
        (_split(mixture=["multinormal-dense-cube"]), "unknown transform 'cube'"),
        (_split(mixture=["multinormal-2pair"], dims={"x": [1, 1], "y": [1, 3]}), "no feasible dimensions"),
        (_split(mixture=["multinormal-dense-spiral"], dims={"x": [1, 1], "y": [1, 3]}), "no feasible dimensions"),
        (
            _split(params={"multinormal": {"rhoo": [0, 1]}}),
            "config.meta.splits.train.params.multinormal.rhoo: unknown parameter; did you mean 'rho'?",
        ),
        (_split(params={"multinormal": {"rho": [0.5, 0.1]}}), "low 0.5 > high 0.1"),
        (_split(params={"gaussian": {"rho": [0.1, 0.5]}}), "unknown family 'gaussian'"),
        (_split(n={"low": 30, "high": 20}), "config.meta.splits.train.n: low 30 > high 20"),
        (_split(n_grid=[10, 20]), "either 'count' and 'n'"),
        (_split(dims={"x": [3, 2], "y": [1, 3]}), "config.meta.splits.train.dims: x: low 3 > high 2"),
    ],
)
def test_semantic_config_errors_name_the_key(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        split_plans(parse_config(config))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            _split(n={"low": 1, "high": 20}),
            "config.meta.splits.train.n.low: input should be greater than or equal to 2 (got 1)",
        ),
        (_split(count=0), "config.meta.splits.train.count: input should be greater than or equal to 1 (got 0)"),
        (_split(colour="red"), "config.meta.splits.train.colour: unknown key. Allowed keys: count, dims,"),
        (
            {"meta": {"splits": {"Train!": _split()["meta"]["splits"]["train"]}}},
            "config.meta.splits.Train!: names must be lowercase",
        ),
        ({"metta": {}}, "config.metta: unknown key; did you mean 'meta'?"),
    ],
)
def test_schema_errors_name_the_key(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        parse_config(config)


def test_root_seeds_must_differ_between_splits() -> None:
    cfg = _split()
    cfg["meta"]["splits"]["test"] = copy.deepcopy(cfg["meta"]["splits"]["train"])
    with pytest.raises(ConfigError, match="root seed of split 'train'"):
        split_plans(parse_config(cfg))


def test_impossible_drawn_parameters_fail_before_sampling(tmp_path) -> None:
    cfg = parse_config(_split(params={"multinormal": {"rho": [-0.99, -0.9]}}))
    plan = split_plans(cfg)["train"]
    with pytest.raises(ConfigError, match="sample 0 .*not positive definite.*meta.splits.train.params"):
        generate_shard(plan, 0, tmp_path / "shard-0000.parquet")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_load_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("meta: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    path = write_config(tmp_path / "ok.yaml", _split())
    assert load_config(path).meta.shard_size == 500  # default filled in


def test_shipped_configs_are_valid(repo) -> None:
    for name in ("config.yaml", "paper.yaml", "paper_extended.yaml"):
        plans = split_plans(load_config(repo / "config" / name))
        assert "train" in plans and any(s.startswith("test") for s in plans)


# -- parameter laws, n grids and replicate semantics (MIST's protocol needs all three) ---------------
def _grid(**overrides) -> dict:
    base = {
        "root_seed": 5,
        "mixture": ["multinormal-dense", "student-bmi_sparse-asinh"],
        "n_grid": {"linspace": [10, 500, 20], "rounding": "truncate"},
        "replicates": 3,
        "replicates_share": "dims",
        "dims": {"x": [2, 32], "y": [2, 32], "tied": True},
    }
    base.update(overrides)
    return {"meta": {"splits": {"t": base}}}


def test_truncating_linspace_is_numpys_integer_linspace() -> None:
    plan = split_plans(parse_config(_grid()))["t"]
    assert plan.n_grid == tuple(np.linspace(10, 500, 20, dtype=int).tolist())
    assert plan.n_grid[:4] == (10, 35, 61, 87)
    rounded = split_plans(parse_config(_grid(n_grid={"linspace": [10, 500, 20]})))["t"].n_grid
    assert rounded[:4] == (10, 36, 62, 87)  # the default keeps rounding to the nearest integer
    assert sum(a != b for a, b in zip(plan.n_grid, rounded, strict=True)) == 9


def test_replicates_sharing_dims_are_different_distributions_of_one_n_entry_and_d() -> None:
    plan = split_plans(parse_config(_grid()))["t"]
    assert plan.total == 2 * 20 * 3 and plan.n_distributions == plan.total
    samples = [plan.sample(i) for i in range(plan.total)]
    groups: dict[tuple, list] = {}
    for s in samples:
        groups.setdefault((s.spec.entry, s.n, s.index // 3), []).append(s)
    assert len(groups) == 2 * 20
    for group in groups.values():
        assert len(group) == 3
        assert len({(s.spec.dim_x, s.spec.dim_y) for s in group}) == 1  # shared d
        assert len({s.spec.params_json for s in group}) == 3  # own parameters per replicate
    dims_per_entry = {e: {g[0].spec.dim_x for k, g in groups.items() if k[0] == e} for e, _, _ in groups}
    assert all(len(d) > 5 for d in dims_per_entry.values())  # d is redrawn for every (entry, n)
    assert all(s.spec.dim_x == s.spec.dim_y for s in samples)
    assert len({s.seed for s in samples}) == len(samples)


def test_parameter_laws_override_per_family_and_per_structure() -> None:
    cfg = _grid(
        mixture=["student-dense", "student-bmi_sparse"],
        params={
            "student": {"df": {"uniform": [1, 10]}, "rho": [0.0, 0.5]},
            "student-bmi_sparse": {"strength": {"log_uniform": [0.5, 2.0]}, "df": [3, 4]},
        },
    )
    plan = split_plans(parse_config(cfg))["t"]
    dense = [plan.sample(i).spec.params for i in range(60)]
    sparse = [plan.sample(i).spec.params for i in range(60, 120)]
    assert all(1 <= p["df"] <= 10 and 0 <= p["rho"] <= 0.5 for p in dense)
    assert all(3 <= p["df"] <= 4 and 0.5 <= p["strength"] <= 2.0 for p in sparse)  # structure key wins
    assert plan.entry_ranges(plan.entries[1])["df"] == (3, 4)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"student": {"df": {"gamma": [1, 2]}}},
            "config.meta.splits.t.params.student.df.gamma: unknown key. Allowed keys: integer, log_uniform, uniform.",
        ),
        (
            {"student": {"dof": [1, 2]}},
            "config.meta.splits.t.params.student.dof: unknown parameter; did you mean 'df'?",
        ),
        (
            {"student-bmi_sparse": {"lambda": [1, 2]}},
            "config.meta.splits.t.params.student-bmi_sparse.lambda: unknown parameter",
        ),
        ({"student-cubic": {"df": [1, 2]}}, "unknown structure 'cubic'"),
        ({"student": {"df": {"log_uniform": [0, 2]}}}, "a log_uniform law needs low > 0"),
        ({"student": {"df": {"uniform": [3, 2]}}}, "config.meta.splits.t: params.student.df: low 3.0 > high 2.0"),
    ],
)
def test_parameter_law_errors_name_the_key(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        split_plans(parse_config(_grid(params=params)))


def test_unknown_replicate_mode_and_rounding_are_schema_errors() -> None:
    with pytest.raises(ConfigError, match="replicates_share"):
        parse_config(_grid(replicates_share="samples"))
    with pytest.raises(ConfigError, match="rounding"):
        parse_config(_grid(n_grid={"linspace": [10, 20, 3], "rounding": "floor"}))


def test_saturating_entry_is_refused_when_the_config_is_read() -> None:
    cfg = _grid(mixture=["student-dense-normal_cdf"])
    with pytest.raises(ConfigError, match=r"mixture\[0\] 'student-dense-normal_cdf'.*saturates"):
        split_plans(parse_config(cfg))


def test_generation_refuses_ties_created_by_saturation(tmp_path, monkeypatch) -> None:
    """The last line of defence: should a saturating combination get past the build check, no shard is written."""
    import mibench.tasks.transforms as transforms

    monkeypatch.setattr(transforms, "SATURATION_MAX_PROBABILITY", 1.0)  # let the heavy tail through
    cfg = _grid(mixture=["student-dense-normal_cdf"], params={"student": {"df": [1, 1.5]}}, n_grid=[500])
    plan = split_plans(parse_config(cfg))["t"]
    with pytest.raises(ConfigError, match="saturate at a bound of normal_cdf in float32 and tie"):
        generate_shard(plan, 0, tmp_path / "shard-0000.parquet")
    assert not list(tmp_path.iterdir())


def test_dimension_changing_transform_in_a_split(tmp_path) -> None:
    cfg = _grid(mixture=["multinormal-dense-x:normal_cdf+swissroll,y:normal_cdf"], dims={"x": [1, 1], "y": [1, 3]})
    plan = split_plans(parse_config(cfg))["t"]
    generate_shard(plan, 0, tmp_path / "t" / "shard-0000.parquet")
    rows = 0
    for x, y, meta in read_shards(tmp_path / "t"):
        rows += 1
        assert meta["dim_x"] == 2 and x.shape == (meta["n"], 2)
        x2, y2 = TaskSpec.from_row(meta).build().sample(meta["n"], meta["seed"])
        assert np.array_equal(x, x2.astype(np.float32)) and np.array_equal(y, y2.astype(np.float32))
    assert rows == plan.shard_range(0).stop


def test_monte_carlo_labels_store_their_standard_error(tmp_path) -> None:
    cfg = parse_config(
        {
            "meta": {
                "splits": {
                    "t": {
                        "root_seed": 3,
                        "mixture": ["mixture-bimodal", "multinormal-dense"],
                        "n_grid": [20],
                        "dims": {"x": [1, 2], "y": [1, 2]},
                    }
                }
            }
        }
    )
    path = generate_shard(split_plans(cfg)["t"], 0, tmp_path / "t" / "shard-0000.parquet")
    meta = read_shard_meta(path).to_pylist()
    mixture, normal = meta
    assert mixture["family"] == "mixture" and 0 < mixture["mi_std_error"] < 0.01
    assert normal["family"] == "multinormal" and normal["mi_std_error"] is None
    # a shard written before the column existed still reads, with nulls
    old = pq.read_table(path).drop_columns(["mi_std_error"])
    pq.write_table(old, path)
    assert read_shard_meta(path).column("mi_std_error").to_pylist() == [None, None]
    assert [m["mi_std_error"] for _, _, m in read_shards(path)] == [None, None]


def test_a_grid_split_is_a_validation_source(tmp_path) -> None:
    """MIST validates on a grid split: on-the-fly sources serve exactly its planned samples, as stored."""
    from mibench.learned.data import GeneratedSource

    cfg = parse_config(_grid(n_grid=[12, 40]))
    plan = split_plans(cfg)["t"]
    source = GeneratedSource(plan)
    assert len(source) == plan.total == 2 * 2 * 3
    generate_shard(plan, 0, tmp_path / "t" / "shard-0000.parquet")
    stored = list(read_shards(tmp_path / "t"))
    for i, (x, y, mi) in enumerate(source.fetch(np.arange(len(source)), np.arange(len(source)))):
        assert np.array_equal(x, stored[i][0]) and np.array_equal(y, stored[i][1]) and mi == stored[i][2]["mi"]
    with pytest.raises(ValueError, match="grid split of 12 samples; asked for 13"):
        GeneratedSource(plan, 13)
