"""Fail fast, name the key: every config mistake is refused before any job runs, with its key path, the value,
what is allowed and a did-you-mean (mibench.resolve.resolve_config, which the Snakefile calls at parse time)."""

from __future__ import annotations

import copy
import re

import pytest

from mibench.config import ConfigError, config_fingerprint, load_config, parse_config
from mibench.config.jsonschema import SCHEMA_PATH, schema_text
from mibench.estimators import ESTIMATORS, hyperparameters, load_builtin_estimators, make_estimator, resolve_entry
from mibench.resolve import resolve_config
from tests.support.commands import snakemake
from tests.support.configs import GRID, REPO, TEST_MODULE, bench_config, write_config
from tests.support.reliability import attempt


def base() -> dict:
    config = bench_config(
        grid={**copy.deepcopy(GRID), "estimators": ["corr", "slow"]},
        mist={"splits": ["test_imd"], "estimators": ["corr"]},
    )
    config["estimators"]["ksg"] = {"k": 3}
    config["estimators"]["kde"] = {}
    config["benchmarks"]["grid"]["estimators"] += ["ksg", "kde"]
    return config


def edit(path: str, value, *, append: bool = False):
    """A mutation setting (or appending to) the key at a dotted path (list indices as numbers)."""

    def apply(config: dict) -> None:
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = config
        for key in keys[:-1]:
            node = node[key]
        if append:
            node[keys[-1]].append(value)
        else:
            node[keys[-1]] = value

    return apply


CASES = [
    # unknown estimator class or module
    (
        edit("estimators.kde.estimator", "gausian"),
        "config.estimators.kde.estimator: unknown estimator 'gausian'. Did you mean 'gaussian'?",
    ),
    (
        edit("estimators.kde.module", "no_such_module"),
        "config.estimators.kde.module: cannot import 'no_such_module' (ModuleNotFoundError",
    ),
    (edit("estimators.typo_label", {}), "config.estimators.typo_label: unknown estimator 'typo_label'"),
    # hyperparameter name, type, range, non-finite
    (edit("estimators.ksg.k", -1), "config.estimators.ksg.k: input should be greater than or equal to 1 (got -1)"),
    (edit("estimators.ksg.kk", 3), "config.estimators.ksg.kk: unknown key; did you mean 'k'?"),
    (edit("estimators.ksg.k", "3"), "config.estimators.ksg.k: must be an integer (got '3')"),
    (edit("estimators.ksg.k", 2.5), "config.estimators.ksg.k: must be an integer (got 2.5)"),
    (edit("estimators.kde.bandwidth", float("nan")), "config.estimators.kde.bandwidth: must be a finite number"),
    (
        edit("estimators.kde.bandwidth", -1.0),
        "config.estimators.kde.bandwidth: input should be 'scott' or 'silverman', or input should be greater than 0 (got -1.0)",
    ),
    (edit("estimators.slow.seconds", float("inf")), "config.estimators.slow.seconds: must be a finite number"),
    (
        edit("estimators.ksg.bootstrap", {"resamples": 1}),
        "config.estimators.ksg.bootstrap.resamples: input should be greater than or equal to 2 (got 1)",
    ),
    # benchmark keys: non-finite, unknown keys, duplicates, references, sorting
    (edit("benchmarks.grid.timeout_s", float("inf")), "config.benchmarks.grid.timeout_s: must be a finite number"),
    (edit("benchmarks.grid.timout_s", 3), "config.benchmarks.grid.timout_s: unknown key; did you mean 'timeout_s'?"),
    (
        edit("benchmarks.grid.estimators", "corr", append=True),
        "config.benchmarks.grid: estimators listed more than once: ['corr']",
    ),
    (
        edit("benchmarks.grid.estimators", "kgs", append=True),
        "config.benchmarks.grid.estimators[4]: 'kgs' is not defined under config.estimators. Did you mean 'ksg'?",
    ),
    (
        edit("benchmarks.mist.splits", "test_imd", append=True),
        "config.benchmarks.mist: splits listed more than once: ['test_imd']",
    ),
    (
        edit("benchmarks.mist.splits", "test_imdd", append=True),
        "config.benchmarks.mist.splits[1]: no meta split 'test_imdd'",
    ),
    (edit("benchmarks.grid.n", [200, 50, 200]), "config.benchmarks.grid: n values listed more than once: [200]"),
    (
        edit("benchmarks.grid.n_bins", [10, 300, 100]),
        "config.benchmarks.grid: n_bins must be strictly increasing, got [10.0, 300.0, 100.0]",
    ),
    (edit("benchmarks.grid.dim_bins", [2, 2, 5]), "config.benchmarks.grid: dim_bins must be strictly increasing"),
    (edit("benchmarks.grid.levels", [0.9, 0.9]), "config.benchmarks.grid: levels listed more than once: [0.9]"),
    (edit("benchmarks.grid.hard_timeout_s", 0.1), "hard_timeout_s 0.1 must exceed timeout_s 300"),
    (edit("benchmarks.mist.seeds", 3), "config.benchmarks.mist: seeds only apply to task grids"),
    # task parameters and entries
    (
        edit("benchmarks.grid.tasks.0.params.df", 3),
        "config.benchmarks.grid.tasks[0]: multinormal-dense: unknown parameter(s) ['df']; it reads: rho",
    ),
    (
        edit("benchmarks.grid.tasks.0.family", "multinormall"),
        "config.benchmarks.grid.tasks[0]: unknown family 'multinormall'. Did you mean 'multinormal'?",
    ),
    (edit("benchmarks.grid.tasks.0.params.rho", 1.5), "config.benchmarks.grid.tasks[0]: multinormal"),
    # n below an estimator's declared minimum
    (
        edit("benchmarks.grid.n", [3, 50]),
        "config.benchmarks.grid.n: n = 3 is below the smallest sample of estimator(s) ksg (4)",
    ),
    # upper bounds, checked before anything is built
    (
        edit("benchmarks.grid.n", [50, 1_000_000_000]),
        "config.benchmarks.grid.n[1]: n 1,000,000,000 exceeds config.limits.max_n = 1,000,000",
    ),
    (
        edit("benchmarks.grid.tasks.0.dims", [100_000, 1]),
        "config.benchmarks.grid.tasks[0].dims: dim_x 100,000 exceeds config.limits.max_dim = 1,024",
    ),
    (
        edit("benchmarks.grid.seeds", 1_000_000_000),
        "config.benchmarks.grid.seeds: seeds 1,000,000,000 exceeds config.limits.max_seeds = 10,000",
    ),
    (
        edit("benchmarks.grid.seeds", "1e9"),
        "config.benchmarks.grid.seeds: must be an integer (got '1e9'); YAML reads 1e9 as text",
    ),
    (
        lambda c: (edit("benchmarks.grid.n", [50, 600_000])(c), edit("benchmarks.grid.tasks.0.dims", [600, 600])(c)),
        "config.benchmarks.grid.tasks[0] at n=600000: sample memory (MiB) 5,493 exceeds config.limits.max_sample_mib = 2,048",
    ),
    # meta splits
    (
        edit("meta.splits.train.mixture", ["multinormal-dense-base", "multinormal-dense-base"]),
        "config.meta.splits.train: mixture entries listed more than once",
    ),
    (
        edit("meta.splits.train.params", {"multinormal": {"rhoo": [0, 1]}}),
        "config.meta.splits.train.params.multinormal.rhoo: unknown parameter; did you mean 'rho'?",
    ),
    (
        edit("meta.splits.train.n", {"low": 10, "high": 10_000_000}),
        "config.meta.splits.train: largest n 10,000,000 exceeds config.limits.max_n",
    ),
    (
        edit("meta.splits.train.root_seed", 12),
        "config.meta.splits.test_imd.root_seed: 12 is also the root seed of split 'train'",
    ),
    # models and checkpoints
    (
        edit("estimators.learned", {"estimator": "mist", "checkpoint": "results/models/none/model.safetensors"}),
        "config.estimators.learned.checkpoint: 'results/models/none/model.safetensors' does not exist and no config.models entry trains it",
    ),
    (edit("models", {"m": {"training": {"lr": float("nan")}}}), "config.models.m.training.lr: must be a finite number"),
    (edit("models", {"m": {"data": {"train_split": "nope"}}}), "config.models.m.data.train_split: no split 'nope'"),
    (edit("limits", {"max_nn": 3}), "config.limits.max_nn: unknown key; did you mean 'max_n'?"),
]


@pytest.mark.parametrize(("mutate", "message"), CASES, ids=[c[1][:60] for c in CASES])
def test_config_mistakes_fail_with_the_key_the_value_and_what_is_allowed(mutate, message, ledger) -> None:
    config = base()
    resolve_config(copy.deepcopy(config))  # the base is valid
    mutate(config)
    outcome, observed = attempt(lambda: resolve_config(config), (ConfigError,), message)
    ledger(
        group="config mistakes (before any job)",
        fault=message[:100],
        injected="one edit of a valid config",
        expected="refused before any job, naming the key, the value and what is allowed",
        observed=observed.splitlines()[0][:160],
        outcome=outcome,
        results_lost=0,
    )
    with pytest.raises(ConfigError) as info:
        resolve_config(config)
    assert message in str(info.value), str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    config = base()
    config["estimators"]["ksg"]["k"] = 0
    config["estimators"]["kde"]["bw"] = 1
    config["benchmarks"]["grid"]["tasks"][0]["params"]["df"] = 3
    with pytest.raises(ConfigError) as info:
        resolve_config(config)
    text = str(info.value)
    assert text.startswith("3 problems:")
    for key in ("config.estimators.ksg.k", "config.estimators.kde.bw", "config.benchmarks.grid.tasks[0]"):
        assert key in text


def test_limits_can_be_raised_with_the_documented_key() -> None:
    config = base()
    config["benchmarks"]["grid"]["seeds"] = 20_000
    with pytest.raises(ConfigError, match="config.limits.max_seeds"):
        resolve_config(config)
    config["limits"] = {"max_seeds": 20_000, "max_cells": 10**7}
    assert resolve_config(config).benchmarks["grid"].seeds == 20_000


def test_a_sample_too_large_for_memory_is_refused_before_allocating() -> None:
    from mibench.tasks import DEFAULT_MAX_SAMPLE_BYTES, TaskParameterError, TaskSpec

    task = TaskSpec("multinormal", "dense", 1, 1, {"rho": 0.5}).build()
    with pytest.raises(TaskParameterError, match=r"n=1,000,000,000 x \(1 \+ 1\) dims needs 14.9 GiB"):
        task.sample(1_000_000_000, seed=0, max_bytes=DEFAULT_MAX_SAMPLE_BYTES)
    x, _ = task.sample(1000, seed=0, max_bytes=10**6)
    assert x.shape == (1000, 1)


def test_a_raised_max_sample_mib_is_the_only_sample_cap() -> None:
    """A config that raises limits.max_sample_mib passes resolve, and its jobs sample (Task.sample's default has
    no fixed cap of its own); the sample is stubbed, nothing near 2 GiB is allocated."""
    import dataclasses

    import numpy as np

    from mibench.tasks import DEFAULT_MAX_SAMPLE_BYTES, TaskSpec

    n = DEFAULT_MAX_SAMPLE_BYTES // 16 + 1  # 1 + 1 dims: just over 2 GiB
    config = base()
    config["benchmarks"]["grid"]["tasks"] = config["benchmarks"]["grid"]["tasks"][:1]  # multinormal, dims 1 x 1
    config["benchmarks"]["grid"]["n"] = [n]
    config["limits"] = {"max_n": 10**9}
    with pytest.raises(ConfigError, match="exceeds config.limits.max_sample_mib = 2,048"):
        resolve_config(config)
    config["limits"]["max_sample_mib"] = 4096
    resolve_config(config)

    class Stub:
        mi = 0.0

        def sample(self, m, rng):
            assert m == n
            return np.zeros((3, 1)), np.ones((3, 1))

    task = dataclasses.replace(TaskSpec("multinormal", "dense", 1, 1, {"rho": 0.5}).build(), distribution=Stub())
    x, y = task.sample(n, seed=0)
    assert x.shape == y.shape == (3, 1)


@pytest.mark.parametrize(
    ("family", "structure", "params"),
    [
        ("mixture", "bimodal", {"weight": 0.5, "separation": 2.0, "rho": 0.1}),
        ("multinormal", "dense", {"rho": 0.5}),
    ],
)
def test_strict_build_refuses_an_unknown_parameter_of_every_family(family, structure, params) -> None:
    """A family that serialises its whole parameter mapping (mixture's distribution key) still has a typo
    refused: iterating the mapping is not reading a parameter."""
    from mibench.tasks import TaskParameterError, TaskSpec

    TaskSpec(family, structure, 2, 2, params).build(strict=True)
    with pytest.raises(TaskParameterError, match=r"unknown parameter\(s\) \['typo_df'\]"):
        TaskSpec(family, structure, 2, 2, {**params, "typo_df": 3}).build(strict=True)


def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("estimators:\n  ksg: {k: 3}\n  kde: {}\n  ksg: {k: 10}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: line 4: duplicate key 'ksg' \(first defined on line 2\)"):
        load_config(path)
    merged = tmp_path / "merge.yaml"
    merged.write_text("base: &b {k: 3}\nestimators:\n  ksg:\n    <<: *b\n    k: 5\n")  # an override is no duplicate
    assert parse_config({"estimators": load_config.__globals__["load_yaml_file"](merged)["estimators"]})


def test_every_estimator_declares_its_hyperparameters_once() -> None:
    """Params is the one declaration: defaults, types and ranges come from it (no forged signatures)."""
    load_builtin_estimators()
    for name, cls in ESTIMATORS.items():
        defaults = hyperparameters(cls)
        assert set(defaults) == set(cls.Params.model_fields), name
        if not cls.__module__.startswith("mibench."):
            continue  # test estimators registered by other test modules
        for key, info in cls.Params.model_fields.items():
            assert info.description, f"{name}.{key} has no description"
    est = make_estimator("ksg")
    assert est.params == {**hyperparameters(ESTIMATORS.get("ksg"))}  # defaults recorded, not only given keys
    resolved = resolve_entry("ksg_boot", {"estimator": "ksg", "k": 5, "bootstrap": True})
    assert resolved.entry_dict()["k"] == 5 and resolved.entry_dict()["algorithm"] == 1
    assert resolved.entry_dict()["bootstrap"] == {"resamples": 100, "levels": [0.5, 0.8, 0.9, 0.95]}


def test_generated_json_schema_is_committed_and_current() -> None:
    committed = (REPO / SCHEMA_PATH).read_text()
    assert committed == schema_text(), "run: mibench config-schema -o workflow/schemas/config.schema.json"


def test_the_config_reference_in_the_docs_is_generated_and_current() -> None:
    from mibench.config_reference import current_block, reference_markdown

    block = current_block((REPO / "docs" / "configuration.md").read_text())
    assert block == reference_markdown(), "run: mibench config-schema --reference --update docs/configuration.md"


def test_shipped_configs_validate_against_the_generated_schema() -> None:
    import json

    import jsonschema
    import yaml

    schema = json.loads(schema_text())
    for name in ("config.yaml", "bmi.yaml", "paper.yaml"):
        jsonschema.validate(yaml.safe_load((REPO / "config" / name).read_text()), schema)


def test_config_fingerprint_ignores_formatting_but_not_values() -> None:
    config = base()
    same = copy.deepcopy(config)
    same["benchmarks"]["grid"]["timeout_s"] = 300  # the default, written out
    assert config_fingerprint(config) == config_fingerprint(same)
    same["benchmarks"]["grid"]["timeout_s"] = 301
    assert config_fingerprint(config) != config_fingerprint(same)


# -- through Snakemake: before any job, dry-run included ---------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  ksg: {k: 10}\n", "config/config.yaml: line 4: duplicate key 'ksg' (first defined on line 2)"),
        (
            "  bad: {estimator: gausian}\n",
            "config.estimators.bad.estimator: unknown estimator 'gausian'. Did you mean 'gaussian'?",
        ),
        ("  nan: {estimator: kde, bandwidth: .nan}\n", "config.estimators.nan.bandwidth: must be a finite number"),
    ],
)
def test_snakemake_dry_run_refuses_a_bad_config_before_any_job(repo, venv_env, tmp_path, text, message) -> None:
    lines = (
        "estimators:\n"
        "  ksg: {k: 3}\n"
        f"  corr: {{estimator: first_column_corr, module: {TEST_MODULE}}}\n"
        "benchmarks:\n"
        "  b: {tasks: [{entry: multinormal-dense, dims: [1, 1], params: {rho: 0.5}}], n: [50], estimators: [ksg]}\n"
    )
    head, tail = lines.split("benchmarks:\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(head + text + "benchmarks:\n" + tail)
    for args in (("-n",), ()):
        proc = snakemake(repo, tmp_path, venv_env, *args, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "invalid config, nothing was run" in out, out
        assert message in out, out
        assert "Traceback" not in out
    assert not (tmp_path / "results").exists()


def test_config_override_on_the_command_line_is_checked_too(repo, venv_env, tmp_path) -> None:
    write_config(tmp_path / "config" / "config.yaml", base())
    proc = snakemake(repo, tmp_path, venv_env, "-n", "--config", "tracking={'enabled': 'yes'}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and re.search(r"config.tracking.enabled: must be true or false", out), out


def test_several_config_files_merge_in_the_library_and_the_commands(tmp_path) -> None:
    """`--config a --config b` merges like `snakemake --configfile a b` in `where` and `clean --orphans` too."""
    from typer.testing import CliRunner

    from mibench.cli import app

    base = bench_config(grid={**GRID, "estimators": ["corr"]})
    first = write_config(tmp_path / "a.yaml", base)
    second = write_config(tmp_path / "b.yaml", {"benchmarks": {"grid": {"seeds": 3}}})
    resolved = resolve_config([first, second])
    assert resolved.benchmarks["grid"].seeds == 3 and resolved.config.benchmarks["grid"].estimators == ["corr"]
    args = ["--config", str(first), "--config", str(second), "--results", str(tmp_path / "results")]
    cleaned = CliRunner().invoke(app, ["clean", "--orphans", *args])
    assert cleaned.exit_code == 0 and "no orphans" in cleaned.output, cleaned.output
    where = CliRunner().invoke(app, ["where", *args])
    assert where.exit_code == 0 and "cannot check for orphans" not in where.output, where.output


def test_an_unhashable_yaml_key_is_a_clear_error_naming_the_file(tmp_path) -> None:
    """`? [a, b]` (a list as a key) is PyYAML's own error, named with the file, not a TypeError traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text("estimators:\n  ? [a, b]\n  : 1\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml: not valid YAML .*unhashable key"):
        load_config(path)


@pytest.mark.parametrize("name", ["text", "list", "mapping", "int"])
def test_a_key_named_like_a_type_keeps_its_place_in_the_message(name) -> None:
    """Union branches are tagged with names no config key can have, so `benchmarks.text` is not cut out."""
    config = bench_config(**{name: {**GRID, "estimators": ["corr"], "timeout_s": "x"}})
    with pytest.raises(ConfigError, match=rf"config\.benchmarks\.{name}\.timeout_s: must be a number \(got 'x'\)"):
        parse_config(config)
