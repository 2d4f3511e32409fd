"""The Snakemake skeleton: lint, dry-run of the shipped configs, and a real tiny run."""

from __future__ import annotations

import pytest

from mibench.meta import read_shard_meta
from tests.support.commands import snakemake
from tests.support.configs import write_config


def test_lint_is_clean(repo, venv_env) -> None:
    proc = snakemake(repo, repo, venv_env, "--lint")
    assert "Congratulations" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("config", "shards"),
    [
        # MIST: 625000/2000 train shards + one shard each for validation (612), IMD (1,080), OoMD (1,260)
        ("config/paper.yaml", 313 + 1 + 1 + 1),
        # mibench's extension: + 10000/2000 validation, 10,800 / 12,600 / 10,800 test samples
        ("config/paper_extended.yaml", 313 + 5 + 6 + 7 + 6),
    ],
)
def test_paper_configs_dry_run_plans_every_shard(repo, venv_env, config: str, shards: int) -> None:
    proc = snakemake(repo, repo, venv_env, "-n", "--quiet", "rules", "--configfile", config)
    out = proc.stdout + proc.stderr
    assert "generate_shard" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("generate_shard"))
    assert int(line.split()[-1]) == shards


def test_real_run_generates_shards_and_the_disjointness_report(repo, venv_env, tiny_config, tmp_path) -> None:
    write_config(tmp_path / "config" / "config.yaml", tiny_config)
    snakemake(repo, tmp_path, venv_env)
    train = sorted((tmp_path / "results" / "meta" / "train").glob("shard-*.parquet"))
    assert [p.name for p in train] == ["shard-0000.parquet", "shard-0001.parquet", "shard-0002.parquet"]
    assert read_shard_meta(train).num_rows == 12
    assert (tmp_path / "results" / "meta" / "splits-disjoint.json").exists()
    assert (tmp_path / "results" / "logs" / "generate" / "train" / "shard-0000.log").exists()
    again = snakemake(repo, tmp_path, venv_env)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"n": {"low": 1, "high": 5}}, "n.low"),
        ({"mixture": ["multinormal-dense-cube"]}, "unknown transform 'cube'"),
    ],
)
def test_bad_config_fails_before_any_job_with_a_clear_message(
    repo, venv_env, tiny_config, tmp_path, edit, message
) -> None:
    tiny_config["meta"]["splits"]["train"].update(edit)
    write_config(tmp_path / "config" / "config.yaml", tiny_config)
    proc = snakemake(repo, tmp_path, venv_env, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
