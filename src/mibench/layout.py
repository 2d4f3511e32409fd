"""The results layout: where every output lives (stated once: the rules, the library and the ``mibench``
commands build paths here), the check that a file found there is what its place says it is, and orphans.

::

    results/meta/{split}/shard-NNNN.parquet                  meta-dataset shards
    results/models/{model}/model.safetensors + model.json    trained learned estimators
    results/estimates/{benchmark}/{estimator}/part-NNNN.parquet   one row per cell
    results/metrics/{benchmark}.parquet                      metrics per estimator x grouping
    results/calibration/{benchmark}.parquet                  quantile calibration
    results/task_metrics/{benchmark}.parquet                 per task and n: mean over seeds, samples needed
    results/figures/{benchmark}/{figure}.png
    results/tracking/{benchmark}.json                        what was logged to MLflow
    results/report/index.html

**Contract.** The Arrow schemas of the files written there are stated here too (:data:`SCHEMAS`): the
shards' :data:`SHARD_SCHEMA`, the estimates' :data:`ESTIMATES_SCHEMA`, :data:`METRICS_SCHEMA` and
:data:`CALIBRATION_SCHEMA`.

**Integrity.** Every reader of ``results/`` (the SQL views, evaluation, the report) reads only files whose
*path* matches the layout and whose Parquet *schema* holds the columns of their kind. A Parquet file dropped
there from elsewhere is therefore either not read at all (its path is outside the layout: it is named as a
stray) or refused with a :class:`ResultsIntegrityError` naming it and the columns it lacks - never silently
unioned into the results. Only the footer of a file is read for the check. Columns beyond the required ones
are allowed, so a later version may add nullable columns without breaking readers.

**Orphans.** Files at valid places that the current config no longer plans (:func:`find_orphans`) are not
read by the evaluation or the report; ``mibench where`` lists them and ``mibench clean --orphans`` removes
them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# -- the results contract: the Arrow schemas of what is written under results/ ------------------------------
#: One row per sample of the meta-dataset; ``x``/``y`` are ``list<float32>`` row-major (reshaped with (n, dim)).
SHARD_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("family", pa.string()),
        ("structure", pa.string()),
        ("transform", pa.string()),
        ("params", pa.string()),
        ("dim_x", pa.int32()),
        ("dim_y", pa.int32()),
        ("n", pa.int64()),
        ("seed", pa.int64()),
        ("mi", pa.float64()),
        ("mi_std_error", pa.float64()),  # nullable: only Monte-Carlo labels have one
        ("x", pa.list_(pa.float32())),
        ("y", pa.list_(pa.float32())),
    ]
)

QUANTILE_TYPE = pa.list_(pa.struct([("tau", pa.float64()), ("value", pa.float64())]))
#: One row per cell of an estimates part (written by :mod:`mibench.runner`).
ESTIMATES_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("estimator", pa.string()),
        ("estimator_params", pa.string()),
        ("sample_id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("family", pa.string()),
        ("structure", pa.string()),
        ("transform", pa.string()),
        ("task_params", pa.string()),
        ("dim_x", pa.int32()),
        ("dim_y", pa.int32()),
        ("n", pa.int64()),
        ("seed", pa.int64()),
        ("mi_true", pa.float64()),
        ("mi_estimate", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("ci_level", pa.float64()),
        ("quantiles", QUANTILE_TYPE),
        ("seconds", pa.float64()),
        ("device", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("extras", pa.string()),
        ("mibench_version", pa.string()),
        ("git_sha", pa.string()),  # commit, with "-dirty" when tracked files had uncommitted changes
        ("job_fingerprint", pa.string()),  # identity of the job that computed the row (mibench.jobs)
        ("code_fingerprint", pa.string()),  # the runner's and the estimator's code (mibench.provenance)
        ("config_fingerprint", pa.string()),  # the whole config the run was started with
    ]
)
#: The core columns of a metrics file (one more ``coverage_<level>``/``width_<level>`` pair per nominal level).
METRICS_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("estimator", pa.string()),
        ("split", pa.string()),
        ("family", pa.string()),
        ("n_bin", pa.string()),
        ("dim_bin", pa.string()),
        ("count", pa.uint32()),
        ("errors", pa.uint32()),
        ("mse", pa.float64()),
        ("bias", pa.float64()),
        ("mae", pa.float64()),
    ]
)
#: A calibration file: fraction of cells with true MI <= q_tau, per estimator, group and tau.
CALIBRATION_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("estimator", pa.string()),
        ("group", pa.string()),
        ("tau", pa.float64()),
        ("fraction", pa.float64()),
        ("count", pa.uint32()),
    ]
)
SCHEMAS: dict[str, pa.Schema] = {
    "meta": SHARD_SCHEMA,
    "estimates": ESTIMATES_SCHEMA,
    "metrics": METRICS_SCHEMA,
    "calibration": CALIBRATION_SCHEMA,
}


RESULTS = "results"

# patterns with Snakemake wildcards (relative to the working directory)
SHARD = "results/meta/{split}/shard-{shard}.parquet"
WEIGHTS = "results/models/{model}/model.safetensors"
MODEL_JSON = "results/models/{model}/model.json"
PART = "results/estimates/{benchmark}/{estimator}/part-{part}.parquet"
METRICS = "results/metrics/{benchmark}.parquet"
CALIBRATION = "results/calibration/{benchmark}.parquet"
TASK_METRICS = "results/task_metrics/{benchmark}.parquet"  # BMI's per-task conventions (task grids)
FIGURE = "results/figures/{benchmark}/{name}.png"
TRACKING = "results/tracking/{benchmark}.json"
REPORT = "results/report/index.html"
#: File names of a shard and of an estimates part: the index has 4 digits or more (``part_path`` writes part
#: 10000 as ``part-10000.parquet``); the layout's checks and the orphan scan both use these.
SHARD_NAME = re.compile(r"shard-(\d{4,})\.parquet")
PART_NAME = re.compile(r"part-(\d{4,})\.parquet")


def shard_path(root: str | os.PathLike, split: str, shard: int) -> Path:
    """``root`` is the meta folder (``results/meta``)."""
    return Path(root) / split / f"shard-{shard:04d}.parquet"


def part_path(benchmark: str, estimator: str, part: int, results: str | os.PathLike = RESULTS) -> Path:
    return Path(results) / "estimates" / benchmark / estimator / f"part-{part:04d}.parquet"


def result_path(kind: str, benchmark: str, results: str | os.PathLike = RESULTS) -> Path:
    """A benchmark's evaluation file: ``kind`` is metrics, calibration or task_metrics (``{kind}/{benchmark}.parquet``)."""
    if kind not in ("metrics", "calibration", "task_metrics"):
        raise ValueError(f"no per-benchmark {kind!r} file in the results layout")
    return Path(results) / kind / f"{benchmark}.parquet"


def figures_dir(benchmark: str, results: str | os.PathLike = RESULTS) -> Path:
    return Path(results) / "figures" / benchmark


def report_path(results: str | os.PathLike = RESULTS) -> Path:
    return Path(results) / "report" / "index.html"


def model_files(model: str, results: str | os.PathLike = RESULTS) -> tuple[Path, Path]:
    base = Path(results) / "models" / model
    return base / "model.safetensors", base / "model.json"


def weights_model(path: str | os.PathLike) -> str | None:
    """The model name if ``path`` is ``results/models/<model>/model.safetensors`` (a train job's output)."""
    match = re.fullmatch(r"results/models/([A-Za-z][A-Za-z0-9_]*)/model\.safetensors", os.path.normpath(path))
    return match.group(1) if match else None


@dataclass
class Orphans:
    """Outputs on disk that the current config no longer plans (not read by anything that runs now)."""

    benchmarks: list[str] = field(default_factory=list)  # results of a benchmark the config does not name
    estimators: list[tuple[str, str]] = field(default_factory=list)  # (benchmark, estimator) no longer listed
    parts: list[Path] = field(default_factory=list)  # parts beyond the planned ones (after re-partitioning)
    splits: list[str] = field(default_factory=list)
    shards: list[Path] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # every file or folder to remove, deepest first

    def __bool__(self) -> bool:
        return bool(self.paths)


def find_orphans(
    results: str | os.PathLike,
    benchmarks: dict[str, tuple[Iterable[str], int]],
    splits: dict[str, int],
    models: Iterable[str],
) -> Orphans:
    """Compare ``results/`` with what a config plans.

    ``benchmarks`` maps each planned benchmark to (its estimators, its number of parts); ``splits`` each
    planned split to its number of shards; ``models`` the trained models.
    """
    root = Path(results)
    out = Orphans()
    planned_models = set(models)
    _orphan_estimates(root / "estimates", benchmarks, out)
    _orphan_evaluations(root, benchmarks, out)
    _orphan_meta(root / "meta", splits, out)
    for model_dir in sorted(p for p in (root / "models").glob("*") if p.is_dir()):
        if model_dir.name not in planned_models:
            out.models.append(model_dir.name)
            out.paths.append(model_dir)
    out.benchmarks = sorted(set(out.benchmarks))
    return out


def _orphan_estimates(estimates: Path, benchmarks: dict[str, tuple[Iterable[str], int]], out: Orphans) -> None:
    """Estimates of unplanned benchmarks or estimators, and parts numbered past a benchmark's parts (it was
    re-partitioned): a whole folder goes when nothing in it is planned, else only the extra parts."""
    for bench_dir in sorted(p for p in estimates.glob("*") if p.is_dir()):
        name = bench_dir.name
        if name not in benchmarks:
            out.benchmarks.append(name)
            out.paths.append(bench_dir)
            continue
        labels, n_parts = benchmarks[name]
        labels = set(labels)
        for est_dir in sorted(p for p in bench_dir.glob("*") if p.is_dir()):
            if est_dir.name not in labels:
                out.estimators.append((name, est_dir.name))
                out.paths.append(est_dir)
                continue
            for part in sorted(est_dir.glob("part-*.parquet*")):
                match = re.fullmatch(rf"{PART_NAME.pattern}(\..*)?", part.name)  # with its .partial, .crash ...
                if match and int(match.group(1)) >= n_parts:
                    out.parts.append(part)
                    out.paths.append(part)


def _orphan_evaluations(root: Path, benchmarks: dict[str, tuple[Iterable[str], int]], out: Orphans) -> None:
    """Per-benchmark evaluation files, figures and tracking records of benchmarks the config no longer names
    (a benchmark with only these left still counts as an orphaned benchmark)."""
    for kind in ("metrics", "calibration", "task_metrics"):
        for path in sorted((root / kind).glob("*.parquet")):
            if path.stem not in benchmarks:
                if path.stem not in out.benchmarks:
                    out.benchmarks.append(path.stem)
                out.paths.append(path)
    for folder in ("figures",):
        for path in sorted(p for p in (root / folder).glob("*") if p.is_dir()):
            if path.name not in benchmarks:
                out.paths.append(path)
    for path in sorted((root / "tracking").glob("*.json")):
        if path.stem not in benchmarks:
            out.paths.append(path)


def _orphan_meta(meta: Path, splits: dict[str, int], out: Orphans) -> None:
    """Meta-dataset splits the config does not name, and shards numbered past a split's shard count."""
    for split_dir in sorted(p for p in meta.glob("*") if p.is_dir()):
        if split_dir.name not in splits:
            out.splits.append(split_dir.name)
            out.paths.append(split_dir)
            continue
        for shard in sorted(split_dir.glob("shard-*.parquet")):
            match = SHARD_NAME.fullmatch(shard.name)
            if match and int(match.group(1)) >= splits[split_dir.name]:
                out.shards.append(shard)
                out.paths.append(shard)


class ResultsIntegrityError(ValueError):
    """A file under results/ that is not what its place says: wrong schema, foreign or duplicated rows, a stray.

    The message names the file and what is wrong with it."""


@dataclass(frozen=True)
class Kind:
    """One kind of result file: where it lives, how its path looks, which columns it must hold."""

    name: str
    folder: str
    pattern: re.Pattern[str]  # matched against the path relative to ``folder``
    describe: str
    required: tuple[str, ...]
    #: columns whose Arrow type is checked too (the rest: presence only)
    typed: tuple[str, ...] = ()

    def schema(self) -> pa.Schema:
        """The expected types of the :attr:`typed` columns (the writers' own schemas, :data:`SCHEMAS`)."""
        return SCHEMAS.get(self.name, pa.schema([]))


_SEG = r"[^/]+"
#: A shard's columns but ``mi_std_error`` (absent in shards written before it existed).
_SHARD_COLUMNS = tuple(f.name for f in SHARD_SCHEMA if f.name != "mi_std_error")
KINDS: dict[str, Kind] = {
    "meta": Kind(
        "meta",
        "meta",
        re.compile(rf"{_SEG}/{SHARD_NAME.pattern}"),
        "meta/{split}/shard-NNNN.parquet (a meta-dataset shard)",
        _SHARD_COLUMNS,
        _SHARD_COLUMNS,
    ),
    "estimates": Kind(
        "estimates",
        "estimates",
        re.compile(rf"{_SEG}/{_SEG}/{PART_NAME.pattern}"),
        "estimates/{benchmark}/{estimator}/part-NNNN.parquet (one row per cell)",
        tuple(
            "benchmark estimator estimator_params sample_id task split family structure transform task_params "
            "dim_x dim_y n seed mi_true mi_estimate ci_low ci_high ci_level quantiles seconds status error".split()
        ),
        tuple(
            "benchmark estimator sample_id family structure transform task_params dim_x dim_y n seed mi_true "
            "mi_estimate quantiles status".split()
        ),
    ),
    "metrics": Kind(
        "metrics",
        "metrics",
        re.compile(rf"{_SEG}\.parquet"),
        "metrics/{benchmark}.parquet",
        ("benchmark", "estimator", "split", "family", "n_bin", "dim_bin", "count", "errors", "mse", "bias"),
    ),
    "calibration": Kind(
        "calibration",
        "calibration",
        re.compile(rf"{_SEG}\.parquet"),
        "calibration/{benchmark}.parquet",
        ("benchmark", "estimator", "group", "tau", "fraction", "count"),
    ),
}


def type_class(t: pa.DataType) -> str:
    """A coarse name of an Arrow type: string/large_string/string_view are one class, as are all integers,
    all floats, list/large_list (by element class). Writers differ in such details (polars writes large
    strings), files of another kind differ in class."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return f"list<{type_class(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{f.name}: {type_class(f.type)}" for f in t) + ">"
    return str(t)


def check_file(path: str | os.PathLike, kind: str) -> pa.Schema:
    """The Arrow schema of ``path`` if it is a readable Parquet file with the columns of ``kind``.

    Raises :class:`ResultsIntegrityError` naming the file, what belongs at its place and what is wrong.
    """
    spec = KINDS[kind]
    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise ResultsIntegrityError(f"{path}: missing ({spec.describe})") from None
    except (pa.ArrowException, OSError) as exc:
        raise ResultsIntegrityError(f"{path}: not a readable Parquet file ({exc}); expected {spec.describe}") from None
    names = set(schema.names)
    missing = [c for c in spec.required if c not in names]
    expected = spec.schema()
    wrong = [
        f"{c} is {type_class(schema.field(c).type)}, expected {type_class(expected.field(c).type)}"
        for c in spec.typed
        if c in names and c in expected.names and type_class(schema.field(c).type) != type_class(expected.field(c).type)
    ]
    if missing or wrong:
        problems = ([f"missing columns {missing}"] if missing else []) + wrong
        raise ResultsIntegrityError(
            f"{path}: not a file of this results folder ({'; '.join(problems)}); expected {spec.describe}. "
            "Was it copied here from elsewhere? Move it out of the results folder"
        )
    return schema


def scan(root: str | os.PathLike, kind: str) -> tuple[list[Path], list[Path]]:
    """(files of ``kind`` under ``root`` whose path matches the layout, other ``*.parquet`` files in its folder).

    Both sorted. The second list - strays - is never read; callers name them so the user can move them away.
    Hidden files (atomic-write temps, ``.partial`` checkpoints) are neither.
    """
    spec = KINDS[kind]
    base = Path(root) / spec.folder
    if not base.is_dir():
        return [], []
    files, strays = [], []
    for path in sorted(base.rglob("*.parquet")):
        rel = path.relative_to(base).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        (files if spec.pattern.fullmatch(rel) else strays).append(path)
    return files, strays


def part_of(path: str | os.PathLike) -> tuple[str, str, int]:
    """(benchmark, estimator, part) from ``.../{benchmark}/{estimator}/part-NNNN.parquet``."""
    path = Path(path)
    match = PART_NAME.fullmatch(path.name)
    if match is None or len(path.parts) < 3:
        raise ResultsIntegrityError(
            f"{path}: not an estimates part ({KINDS['estimates'].describe}); evaluation reads only planned parts"
        )
    return path.parent.parent.name, path.parent.name, int(match.group(1))
