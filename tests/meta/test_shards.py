"""Meta-dataset shards: seeds from SeedSequence, the schema, byte-identical regeneration, failure paths by path."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mibench.config import parse_config
from mibench.meta import (
    SHARD_SCHEMA,
    ShardError,
    SplitOverlapError,
    check_disjoint,
    generate_split,
    read_shard_meta,
    read_shards,
    sample_seed,
    split_plans,
)
from mibench.meta.plan import spawned
from mibench.meta.shards import sample_id
from mibench.tasks import TaskSpec


def test_seeds_come_from_seedsequence_spawn() -> None:
    root = np.random.SeedSequence(42)
    params_root, data_root = root.spawn(2)
    data_children = data_root.spawn(6)
    params_children = params_root.spawn(6)
    for i in range(6):
        assert np.array_equal(spawned(42, 1, i).generate_state(4), data_children[i].generate_state(4))
        assert np.array_equal(spawned(42, 0, i).generate_state(4), params_children[i].generate_state(4))
    assert sample_seed(42, 3) == int(data_children[3].generate_state(1, np.uint64)[0] >> np.uint64(1))
    assert len({sample_seed(42, i) for i in range(1000)}) == 1000


def test_contract_schema_matches_design() -> None:
    expected = {
        "sample_id": pa.string(),
        "split": pa.string(),
        "family": pa.string(),
        "structure": pa.string(),
        "transform": pa.string(),
        "params": pa.string(),
        "dim_x": pa.int32(),
        "dim_y": pa.int32(),
        "n": pa.int64(),  # int64 everywhere: n > 2^31 must not overflow
        "seed": pa.int64(),
        "mi": pa.float64(),
        "mi_std_error": pa.float64(),
        "x": pa.list_(pa.float32()),
        "y": pa.list_(pa.float32()),
    }
    assert {f.name: f.type for f in SHARD_SCHEMA} == expected


def test_round_trip_regenerates_every_sample_from_its_row(tiny_config, tmp_path) -> None:
    cfg = parse_config(tiny_config)
    for split in ("train", "test_imd"):
        generate_split(cfg, split, tmp_path, progress=False)
    rows = 0
    for x, y, meta in read_shards(tmp_path):
        rows += 1
        task = TaskSpec.from_row(meta).build()
        x2, y2 = task.sample(meta["n"], meta["seed"])
        assert x.dtype == np.float32 and x.shape == (meta["n"], meta["dim_x"]) and y.shape == (meta["n"], meta["dim_y"])
        assert np.array_equal(x, x2.astype(np.float32)) and np.array_equal(y, y2.astype(np.float32))
        assert meta["mi"] == task.mi
    assert rows == 12 + 2 * 2 * 2 * 2


def test_same_config_gives_byte_identical_shards(tiny_config, tmp_path) -> None:
    cfg = parse_config(tiny_config)
    a = generate_split(cfg, "train", tmp_path / "a", progress=False)
    b = generate_split(cfg, "train", tmp_path / "b", jobs=2, progress=False)
    assert (
        [p.name for p in a] == [p.name for p in b] == ["shard-0000.parquet", "shard-0001.parquet", "shard-0002.parquet"]
    )
    for pa_, pb in zip(a, b, strict=True):
        assert pa_.read_bytes() == pb.read_bytes()


def test_global_rng_is_never_touched(tiny_config, tmp_path) -> None:
    np.random.seed(123)  # noqa: NPY002 - the point is to watch the legacy global RNG
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    generate_split(parse_config(tiny_config), "train", tmp_path, progress=False)
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_grid_mode_shares_parameters_across_n_and_replicates(tiny_config) -> None:
    plan = split_plans(parse_config(tiny_config))["test_imd"]
    samples = [plan.sample(i) for i in range(plan.total)]
    assert plan.total == 2 * 2 * 2 * 2 and plan.n_distributions == 4
    by_dist: dict[int, list] = {}
    for s in samples:
        by_dist.setdefault(s.distribution, []).append(s)
    for group in by_dist.values():
        assert len({s.spec.params_json for s in group}) == 1
        assert sorted(s.n for s in group) == [10, 10, 20, 20]
    assert len({s.seed for s in samples}) == len(samples)
    assert [s.spec.family for s in samples[:8]] == ["multinormal"] * 8  # entries in order
    assert all(s.spec.dim_x == 1 for s in samples[8:])  # categorical has dim_x fixed to 1


def test_linspace_grid_and_dimension_constraints() -> None:
    cfg = parse_config(
        {
            "meta": {
                "splits": {
                    "t": {
                        "root_seed": 1,
                        "mixture": ["multinormal-2pair-spiral", "additive_uniform-diag"],
                        "n_grid": {"linspace": [10, 500, 20]},
                        "replicates": 9,
                        "dims": {"x": [1, 5], "y": [1, 5]},
                    }
                }
            }
        }
    )
    plan = split_plans(cfg)["t"]
    assert plan.n_grid[0] == 10 and plan.n_grid[-1] == 500 and len(plan.n_grid) == 20
    assert plan.total == 2 * 20 * 9
    for i in range(0, plan.total, 7):
        s = plan.sample(i)
        if s.spec.family == "additive_uniform":
            assert s.spec.dim_x == s.spec.dim_y
        else:
            assert s.spec.dim_x >= 2 and s.spec.dim_y >= 2


def test_disjointness_check(tiny_config, tmp_path) -> None:
    cfg = parse_config(tiny_config)
    train = generate_split(cfg, "train", tmp_path, progress=False)
    test = generate_split(cfg, "test_imd", tmp_path, progress=False)
    report = check_disjoint(train, {"test_imd": test}, tmp_path / "report.json")
    assert report["splits"]["test_imd"]["shared_with_train"] == 0
    assert json.loads((tmp_path / "report.json").read_text()) == report
    with pytest.raises(SplitOverlapError, match="share distributions"):
        check_disjoint(train, {"leaky": train[:1]})


# -- failure paths ---------------------------------------------------------------------------------
def test_corrupt_truncated_and_missing_shards_are_reported_by_path(tiny_config, tmp_path) -> None:
    paths = generate_split(parse_config(tiny_config), "train", tmp_path, progress=False)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match="shard-0001.parquet: corrupt or truncated"):
        list(read_shards(tmp_path / "train"))
    with pytest.raises(ShardError, match="does not exist"):
        list(read_shards(tmp_path / "train" / "shard-0042.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardError, match="no shards found"):
        list(read_shards(tmp_path / "empty"))
    with pytest.raises(ShardError, match="shard-0001.parquet"):
        read_shard_meta(tmp_path / "train")


ID_COLUMNS = ("family", "structure", "transform", "params", "dim_x", "dim_y", "n", "seed")


def test_rows_with_wrong_lengths_and_foreign_files_are_rejected(tiny_config, tmp_path) -> None:
    path = generate_split(parse_config(tiny_config), "train", tmp_path, progress=False)[0]
    table = pq.read_table(path)
    bad = table.set_column(table.schema.get_field_index("n"), "n", pa.array([999] * table.num_rows, pa.int32()))
    pq.write_table(bad, path)
    with pytest.raises(ShardError, match="the id is not the hash of the row's family/params/dims/n/seed"):
        list(read_shards(path))  # an edited n changes what the sample id hashes
    ids = [sample_id(*(r[c] for c in ID_COLUMNS)) for r in bad.drop_columns(["x", "y"]).to_pylist()]
    pq.write_table(bad.set_column(0, "sample_id", pa.array(ids)), path)
    with pytest.raises(ShardError, match="sample .* has .* x values, but n\\*dim_x = 999\\*"):
        list(read_shards(path))  # ... and an id recomputed to match still disagrees with the data
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(ShardError, match="missing columns"):
        list(read_shards(path))
