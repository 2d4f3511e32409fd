"""The results layout: the orphan scan agrees with the file names the layout writes and accepts."""

from __future__ import annotations

from mibench.layout import KINDS, find_orphans, part_path, shard_path


def test_parts_and_shards_numbered_past_9999_are_orphans_too(tmp_path) -> None:
    """part_path/shard_path write index 10000 with five digits; the orphan scan reads the same names."""
    planned = [part_path("b", "e", i, tmp_path) for i in (0, 1)]
    extra = [part_path("b", "e", i, tmp_path) for i in (2, 10000)]
    shards = [shard_path(tmp_path / "meta", "s", i) for i in (0, 10000)]
    for path in [*planned, *extra, *shards, extra[1].with_name(extra[1].name + ".partial")]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    assert extra[1].name == "part-10000.parquet" and KINDS["estimates"].pattern.fullmatch("b/e/part-10000.parquet")
    orphans = find_orphans(tmp_path, {"b": (["e"], 2)}, {"s": 1}, [])
    assert orphans.parts == [*extra, extra[1].with_name("part-10000.parquet.partial")]
    assert orphans.shards == [shards[1]]
