"""The ``mibench`` command. Every subcommand is a thin wrapper over the library."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Benchmark mutual-information estimators.")
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error (no traceback) and exit: bad input is the user's to fix, not a crash."""
    from rich.markup import escape

    # escaped: key paths and file names hold brackets ("mixture[0]", "[/tmp/...]") that are not markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # paths stay whole
    raise typer.Exit(code)


def _law(name: str, spec) -> str:
    """A drawn parameter's default law, e.g. ``df ∈ [1, 20] log``."""
    return f"{name} ∈ [{spec.low:g}, {spec.high:g}]{' int' if spec.integer else ''}{' log' if spec.log else ''}"


def _check_result_file(path: Path, kind: str) -> None:
    """Exit with the reason if ``path`` is not a ``kind`` file of the results layout (a stray from elsewhere)."""
    from mibench.layout import ResultsIntegrityError, check_file

    try:
        check_file(path, kind)
    except ResultsIntegrityError as exc:
        fail(str(exc), code=1)


@app.command()
def tasks() -> None:
    """List every task family (structures, parameters with default ranges) and every transform."""
    from mibench.tasks import FAMILIES, TRANSFORMS

    table = Table(title="Task families", show_lines=True)
    for col in ("family", "structures", "parameters (default range)", "exact MI"):
        table.add_column(col)
    for name, family in FAMILIES.items():
        structures = "\n".join(f"[bold]{s}[/]: {doc}" for s, doc in family.structures.items())
        params = "\n".join(_law(p, spec) for p, spec in family.parameters.items())
        for structure, extra in family.structure_parameters.items():
            params += f"\n[bold]{structure}[/]: " + ", ".join(_law(p, spec) for p, spec in extra.items())
        dims = (
            " (dim_x = dim_y)"
            if family.same_dims
            else (f" (dim_x = {family.fixed_dim_x})" if family.fixed_dim_x else "")
        )
        table.add_row(name + dims, structures, params, family.summary)
    console.print(table)
    ttable = Table(title="MI-preserving transforms (chain with '+', per side with 'x:…,y:…')")
    ttable.add_column("transform")
    ttable.add_column("definition")
    for name, transform in TRANSFORMS.items():
        dims = f" [{transform.in_dim} → {transform.out_dim} dims]" if transform.out_dim else ""
        ttable.add_row(name, transform.doc + dims)
    console.print(ttable)


@app.command()
def generate(
    config: Path = typer.Option(Path("config/config.yaml"), help="Workflow config (YAML)."),
    split: list[str] = typer.Option(None, help="Split(s) to generate; default: all."),
    out: Path = typer.Option(Path("results/meta"), help="Root folder of the shards."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Worker processes."),
) -> None:
    """Generate meta-dataset shards without Snakemake (same code, same bytes)."""
    from mibench.config import ConfigError, load_config
    from mibench.meta import generate_split, split_plans
    from mibench.resolve import check_limits

    try:
        cfg = load_config(config)
        check_limits(cfg, source=str(config))  # samples are drawn with no cap of their own
        names = split or list(split_plans(cfg))
        for name in names:
            paths = generate_split(cfg, name, out, jobs=jobs, progress=sys.stderr.isatty())
            console.print(f"{name}: {len(paths)} shard(s) under {out / name}")
    except (ConfigError, ValueError) as exc:
        fail(str(exc))


@app.command()
def where(
    results: Path = typer.Option(Path("results"), help="Results folder."),
    top: int = typer.Option(5, help="Estimators shown per group and benchmark."),
    config: list[Path] = typer.Option(
        None, help="Config the results should reflect (repeatable); default config/config.yaml if present."
    ),
) -> None:
    """Say where the results, the SQL entry point and the MLflow UI are, with each benchmark's fair ranking,
    which config and commit the numbers reflect, and what on disk the config no longer names (orphans).

    Estimators are ranked on the cells every listed estimator scored; those with error or timeout cells are
    ranked separately. The error and timeout rows per estimator follow.
    """
    root = results.resolve()
    console.print(f"[bold]results[/]       {root}")
    meta = sorted((root / "meta").glob("*/shard-*.parquet"))
    if meta:
        console.print(f"[bold]meta-datasets[/] {len(meta)} shard(s) under {root / 'meta'}")
    configs = _default_configs(config)
    resolved = _resolved(configs) if configs else None
    planned = _planned_parts(root, resolved)
    for path in sorted((root / "metrics").glob("*.parquet")):
        _check_result_file(path, "metrics")
        _print_ranking(root, path.stem, top, planned.get(path.stem))
    for line in model_lines(root / "models"):
        console.print(line, highlight=False)
    _print_provenance(root)
    _print_orphans(root, configs, resolved)
    for line in _failure_lines(root, planned or None):
        console.print(line, highlight=False, markup=False)
    from mibench.layout import report_path

    report = report_path(root)
    if report.exists():
        console.print(f"[bold]report[/]        file://{report}")
    console.print("[bold]SQL[/]           mibench query \"SELECT * FROM metrics WHERE family = 'ALL' LIMIT 5\"")
    if (root / "mlflow.db").exists():
        console.print("[bold]MLflow UI[/]     mibench ui   (then open http://127.0.0.1:5000)")


def _print_provenance(root: Path) -> None:
    """Which config and commit each benchmark's metrics reflect (stored by the evaluate job)."""
    from mibench.evaluate import read_provenance

    for path in sorted((root / "metrics").glob("*.parquet")):
        try:
            prov = read_provenance(path)
        except Exception:  # unreadable file: `mibench report`/`query` name it; here, say nothing more
            continue
        if not prov:
            console.print(f"[bold]{path.stem}[/]: no provenance recorded (metrics from before mibench 0.2)")
            continue
        sha = prov.get("git_sha", "unknown")
        dirty = " [red](uncommitted changes)[/]" if sha.endswith("-dirty") else ""
        console.print(
            f"[bold]{path.stem}[/] reflects {prov.get('config_files') or 'a config'} "
            f"(fingerprint {prov.get('config_fingerprint', '?')}) at commit {sha.removesuffix('-dirty')[:12]}{dirty}",
            highlight=False,
        )


def _default_configs(config: list[Path] | None) -> list[Path]:
    if config:
        return list(config)
    default = Path("config/config.yaml")
    return [default] if default.exists() else []


def _resolved(configs: list[Path]):
    """The resolved config (once per command), or the :class:`ConfigError` that says why there is none."""
    from mibench.config import ConfigError
    from mibench.resolve import resolve_config

    try:
        return resolve_config(configs)
    except ConfigError as exc:
        return exc


def _orphans(root: Path, resolved):
    from mibench.layout import find_orphans

    benchmarks = {name: (plan.estimators, plan.n_parts) for name, plan in resolved.benchmarks.items()}
    splits = {name: plan.n_shards for name, plan in resolved.splits.items()}
    return find_orphans(root, benchmarks, splits, resolved.models)


def _print_orphans(root: Path, configs: list[Path], resolved) -> None:
    from mibench.config import ConfigError

    if resolved is None:
        return
    if isinstance(resolved, ConfigError):
        err_console.print(f"[yellow]cannot check for orphans:[/] {resolved}", highlight=False)
        return
    orphans = _orphans(root, resolved)
    if not orphans:
        return
    named = ", ".join(map(str, configs))
    console.print(f"[bold yellow]orphans[/]       on disk but not named by {named} (not in its report or metrics):")
    for name in orphans.benchmarks:
        console.print(f"  benchmark {name}")
    for bench, label in orphans.estimators:
        console.print(f"  estimator {label} of benchmark {bench}")
    for part in orphans.parts:
        console.print(f"  part beyond the planned ones: {part}")
    for split in orphans.splits:
        console.print(f"  meta split {split}")
    for shard in orphans.shards:
        console.print(f"  shard beyond the planned ones: {shard}")
    for model in orphans.models:
        console.print(f"  model {model}")
    console.print(f"  remove them with: mibench clean --orphans {' '.join(f'--config {c}' for c in configs)} --yes")


@app.command()
def clean(
    orphans: bool = typer.Option(False, "--orphans", help="Remove results the config no longer names."),
    config: list[Path] = typer.Option(None, help="Config the results should reflect (repeatable)."),
    results: Path = typer.Option(Path("results"), help="Results folder."),
    yes: bool = typer.Option(False, "--yes", help="Really delete (default: only list what would go)."),
) -> None:
    """Remove orphans: benchmarks, estimators, parts, splits and models on disk that the config does not plan.

    Dry-run unless --yes: it lists what would be removed.
    """
    import shutil

    from mibench.config import ConfigError

    if not orphans:
        fail("say what to clean: --orphans (results the config no longer names)")
    configs = _default_configs(config)
    if not configs:
        fail("no config given and config/config.yaml does not exist: pass --config FILE")
    resolved = _resolved(configs)
    if isinstance(resolved, ConfigError):
        fail(str(resolved))
    found = _orphans(results, resolved)
    if not found:
        console.print(f"no orphans under {results}: everything there is planned by {', '.join(map(str, configs))}")
        return
    for path in found.paths:
        console.print(f"{'removing' if yes else 'would remove'} {path}")
    if not yes:
        console.print(f"{len(found.paths)} path(s); nothing removed (dry run). Add --yes to remove them.")
        return
    for path in found.paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    console.print(f"removed {len(found.paths)} path(s)")


@app.command()
def check(
    config: list[Path] = typer.Option(
        [Path("config/config.yaml")], help="Config file(s), merged like snakemake --configfile a b."
    ),
) -> None:
    """Check a config the way the workflow does before any job runs; print what it plans."""
    from mibench.config import ConfigError, load_config
    from mibench.resolve import resolve_config

    source = ", ".join(map(str, config))
    try:
        resolved = resolve_config(load_config(config), source=source)
    except ConfigError as exc:
        fail(str(exc))
    table = Table(title=f"{source}: valid", title_justify="left")
    for col in ("benchmark", "cells", "parts", "estimators", "estimate jobs"):
        table.add_column(col, justify="left" if col in ("benchmark", "estimators") else "right")
    for name, plan in resolved.benchmarks.items():
        table.add_row(
            name,
            f"{plan.n_cells:,}",
            str(plan.n_parts),
            ", ".join(plan.estimators),
            f"{plan.n_parts * len(plan.estimators):,}",
        )
    console.print(table)
    for name, plan in resolved.splits.items():
        console.print(f"split {name}: {plan.total:,} samples in {plan.n_shards} shard(s)")
    for name, spec in resolved.models.items():
        console.print(f"model {name}: preset {spec.preset}, {spec.training.steps} steps on {spec.device}")


@app.command("config-schema")
def config_schema(
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    reference: bool = typer.Option(False, "--reference", help="The Markdown reference of every key instead."),
    update: Path = typer.Option(None, help="With --reference: replace the generated block of this Markdown file."),
) -> None:
    """The JSON Schema of the workflow config, or its Markdown reference, generated from the typed models."""
    from mibench.config.jsonschema import schema_text
    from mibench.config_reference import current_block, reference_markdown

    text = reference_markdown() if reference else schema_text()
    if update is not None:
        if not reference:
            fail("--update goes with --reference")
        doc = update.read_text()
        block = current_block(doc)
        if block is None:
            fail(f"{update} has no generated block (markers '<!-- generated: ...' and '<!-- end of generated ...')")
        update.write_text(doc.replace(block, text))
        console.print(f"updated the reference in {update}")
    elif output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


def _planned_parts(root: Path, resolved) -> dict[str, list[Path]]:
    """Benchmark -> its planned parts on disk, for the config ``where`` reflects ({} without a usable config)."""
    from mibench.config import ConfigError
    from mibench.evaluate.parts import planned_parts

    if resolved is None or isinstance(resolved, ConfigError):
        return {}  # a config problem is reported by the orphan check
    return {name: [p for p in planned_parts(plan, root) if p.exists()] for name, plan in resolved.benchmarks.items()}


def _print_ranking(root: Path, benchmark: str, top: int, parts: list[Path] | None = None) -> None:
    """One benchmark's fair ranking (:func:`mibench.evaluate.rank_estimators`), ``top`` rows per group.

    ``parts``: the planned parts of the config (orphans never enter the ranking); None for a benchmark the
    config does not name (then every part on disk is ranked, and the title says so).
    """
    import polars as pl

    from mibench.evaluate.metrics import GROUPS, rank_estimators, ranking_caption, read_ranking_columns

    unplanned = parts is None
    if parts is None:
        parts = sorted((root / "estimates" / benchmark).glob("*/part-*.parquet"))
    try:
        ranked = rank_estimators(read_ranking_columns(parts), levels=(0.9,))
    except Exception as exc:
        console.print(f"benchmark {benchmark}: no ranking ({type(exc).__name__}: {exc})", highlight=False)
        return
    shown = ranked.group_by("group", maintain_order=True).head(top)
    title = (
        f"benchmark {benchmark}: top {shown.height} of {ranked.height} estimators, {ranking_caption(ranked)}"
        if shown.height < ranked.height
        else f"benchmark {benchmark}: {ranked.height} estimators, {ranking_caption(ranked)}"
    )
    if unplanned:
        title += " (not a benchmark of the config: every part on disk)"
    table = Table(title=title, title_justify="left")
    for col in ("rank", "estimator", "scored", "errors", "MSE", "bias", "90% coverage", "MSE own cells"):
        table.add_column(col, justify="left" if col == "estimator" else "right")

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for group in GROUPS:
        rows = shown.filter(pl.col("group") == group)
        if rows.is_empty():
            continue
        if group != GROUPS[0]:
            table.add_section()
        for r in rows.iter_rows(named=True):
            own = num(r["mse_own"], ".3g") + (
                "" if r["own_comparable"] or r["mse_own"] is None else " (not comparable)"
            )
            table.add_row(
                "-" if r["rank"] is None else ("" if group == GROUPS[0] else "f") + str(r["rank"]),
                r["estimator"],
                f"{r['scored']} of {r['cells']}",
                str(r["errors"] + r["timeouts"]),
                num(r["mse"], ".3g"),
                num(r["bias"], "+.3g"),
                num(r.get("coverage_90"), ".2f"),
                own,
            )
    console.print(table)
    if ranked["group"].to_list().count(GROUPS[0]) < ranked.height:
        console.print("  (rank f1, f2...: estimators with error or timeout cells, ranked separately)", highlight=False)


def _failure_lines(root: Path, parts: dict[str, list[Path]] | None = None) -> list[str]:
    from mibench.evaluate.failures import summary_lines

    try:
        names = list(parts) if parts else None
        return summary_lines(root, names, width=max(80, console.width), parts=parts)
    except Exception as exc:
        return [f"mibench: could not summarise the estimates ({type(exc).__name__}: {exc})"]


def model_lines(models: Path) -> list[str]:
    """One line per trained model (``models/*/model.json``): steps done, time, and whether the time guard fired.

    A model cut short by ``training.time_budget_minutes`` is not the fixed-step model its config describes
    (how far it got depends on the machine's speed and load), so the end-of-run summary says so in one line.
    """
    import json

    lines = []
    for path in sorted(models.glob("*/model.json")):
        try:
            training = json.loads(path.read_text()).get("training") or {}
        except (OSError, ValueError) as exc:
            lines.append(f"[bold]model[/] {path.parent.name}: unreadable {path} ({exc})")
            continue
        done, total = training.get("steps_done"), training.get("total_steps")
        minutes = float(training.get("elapsed_seconds") or 0.0) / 60
        if training.get("stopped") == "time_budget":
            lines.append(
                f"[bold]model[/] {path.parent.name}: [bold red]stopped by the time guard[/] at step {done} of {total} "
                f"({training.get('time_budget_minutes')} min on {training.get('device')}): not the fixed-step model, "
                "its numbers depend on this machine's load; raise training.time_budget_minutes or lower steps"
            )
        else:
            best = training.get("best_val_loss")
            shown = "" if best is None else f", best validation loss {best:.4g} at step {training.get('best_step')}"
            lines.append(
                f"[bold]model[/] {path.parent.name}: {done} of {total} steps in {minutes:.1f} min on "
                f"{training.get('device')}{shown}"
            )
    return lines


@app.command("install-profile")
def install_profile(
    name: str = typer.Option("slurm", help="Profile to install: the folder profiles/NAME of this repository."),
    source: Path = typer.Option(None, help="Profile folder to link instead of profiles/NAME."),
    force: bool = typer.Option(False, "--force", help="Replace an existing link that points elsewhere."),
) -> None:
    """Link profiles/NAME into Snakemake's user profile folder, so `snakemake --profile NAME` works anywhere."""
    from mibench.cluster import ProfileInstallError, repository_profile
    from mibench.cluster import install_profile as install

    try:
        link = install(source if source is not None else repository_profile(name), name=name, force=force)
    except ProfileInstallError as exc:
        fail(str(exc))
    console.print(f"{link} -> {link.resolve()}   (use: snakemake --profile {name})", soft_wrap=True)


@app.command()
def estimators(
    name: str = typer.Argument(None, help="One estimator: show every hyperparameter with its type and meaning."),
) -> None:
    """List registered estimators with their hyperparameters (read from each estimator's ``Params``)."""
    import inspect

    from mibench.estimators import ESTIMATORS, load_builtin_estimators
    from mibench.estimators.base import describe_params

    load_builtin_estimators()
    if name is not None:
        try:
            cls = ESTIMATORS.get(name)
        except ValueError as exc:
            fail(str(exc))
        table = Table(title=f"{name}: {(inspect.getdoc(cls) or '').splitlines()[0] if inspect.getdoc(cls) else ''}")
        for col in ("hyperparameter", "type", "default", "allowed", "meaning"):
            table.add_column(col, overflow="fold")
        for row in describe_params(cls):
            table.add_row(row["name"], row["type"], row["default"], row["allowed"], row["description"])
        console.print(table)
        console.print(f"smallest n with the defaults: {cls.min_n}")
        return
    table = Table(title="Estimators (hyperparameters go under config.yaml: estimators: {label: {...}})")
    table.add_column("estimator")
    table.add_column("hyperparameters (defaults)")
    table.add_column("summary")
    for est_name, cls in ESTIMATORS.items():
        params = ", ".join(f"{row['name']}={row['default']}" for row in describe_params(cls))
        doc = (inspect.getdoc(cls) or "").split("\n")[0]
        table.add_row(est_name, params or "-", doc)
    console.print(table)
    console.print("details of one: mibench estimators NAME")


@app.command()
def query(
    sql: str = typer.Argument(..., help="SQL over the views meta, estimates, metrics, calibration."),
    results: Path = typer.Option(Path("results"), help="Results folder the views read."),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json | parquet"),
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of stdout (required for parquet)."),
    limit: int = typer.Option(100, help="Rows shown in table format (0 = all)."),
) -> None:
    """Run read-only SQL (DuckDB, sandboxed) over every result; never writes into results/."""
    from mibench.io import ResultsWriteError, atomic_write_table, atomic_write_text
    from mibench.query import QueryError, run_query, strays

    if format not in ("table", "csv", "json", "parquet"):
        fail(f"--format must be table, csv, json or parquet, got {format!r}")
    if output is not None:
        if output.is_dir():
            fail(f"--output {output} is a folder; give a file name, e.g. --output {output / ('result.' + format)}")
        if results.resolve() == output.resolve() or results.resolve() in output.resolve().parents:
            fail(f"--output {output} is inside {results}/: mibench query never writes into the results folder")
    if format == "parquet" and output is None:
        fail("--format parquet needs --output FILE")
    try:
        table = run_query(sql, results)
    except QueryError as exc:
        fail(str(exc))
    for stray in strays(results):
        err_console.print(f"note: not read, outside the results layout: {stray}", highlight=False, soft_wrap=True)
    try:
        if format == "parquet":
            atomic_write_table(table, output)
            console.print(f"wrote {table.num_rows} row(s) to {output}")
            return
        text = _query_text(table, format, limit, to_terminal=output is None)
        if text is None:
            return
        if output is None:
            sys.stdout.write(text)
        else:
            atomic_write_text(text, output)
            console.print(f"wrote {table.num_rows} row(s) to {output}")
    except ResultsWriteError as exc:
        fail(str(exc), code=1)


def _query_text(table, format: str, limit: int, to_terminal: bool) -> str | None:
    """A query result as csv/json/table text; None once a table was printed straight to the terminal."""
    import io

    import pyarrow.csv as pacsv

    if format == "csv":
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        return buffer.getvalue().decode()
    if format == "json":
        import json

        return json.dumps(table.to_pylist(), default=str, indent=1) + "\n"
    shown = table if limit == 0 else table.slice(0, limit)
    rich_table = Table(
        caption=f"{table.num_rows} row(s)" + (f", first {limit} shown" if shown.num_rows < table.num_rows else "")
    )
    for name in table.column_names:
        rich_table.add_column(name, overflow="fold")
    for row in shown.to_pylist():
        rich_table.add_row(*[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()])
    if to_terminal:
        console.print(rich_table)
        return None
    buf = Console(file=io.StringIO(), width=200)
    buf.print(rich_table)
    return buf.file.getvalue()


def _load(config: Path):
    from mibench.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable


@app.command()
def log(
    config: Path = typer.Option(Path("config/config.yaml"), help="Workflow config of the results."),
    benchmark: list[str] = typer.Option(None, help="Benchmark(s) to log; default: all with metrics on disk."),
    results: Path = typer.Option(Path("results"), help="Results folder."),
) -> None:
    """Log evaluated benchmarks to MLflow (e.g. after MLflow was unreachable during the run)."""
    from mibench.evaluate.mlflow_runs import log_from_disk
    from mibench.extras import need
    from mibench.tracking import TrackingError, tracking_uri

    need("tracking", "mibench log")

    cfg = _load(config)
    for name in benchmark or []:
        if name not in cfg.benchmarks:
            close = difflib.get_close_matches(name, list(cfg.benchmarks), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            fail(
                f"benchmark {name!r} is not defined under `benchmarks:` of the config "
                f"(defined: {', '.join(sorted(cfg.benchmarks)) or 'none'}){hint} in {config}"
            )
    from mibench.layout import result_path

    names = benchmark or [b for b in cfg.benchmarks if result_path("metrics", b, results).exists()]
    if not names:
        fail(f"no evaluated benchmarks under {results}/metrics; run the workflow first")
    for name in names:
        try:
            runs = log_from_disk(cfg, name, results)
        except ValueError as exc:  # bad input (a benchmark the config does not define): usage error
            fail(str(exc))
        except (TrackingError, FileNotFoundError) as exc:
            fail(str(exc), code=1)
        console.print(f"{name}: {len(runs)} run(s) in {tracking_uri(results)}")


@app.command()
def report(
    config: Path = typer.Option(Path("config/config.yaml"), help="Workflow config of the results."),
    results: Path = typer.Option(Path("results"), help="Results folder."),
    output: Path = typer.Option(None, help="HTML file (default results/report/index.html)."),
) -> None:
    """Rebuild the HTML report from the metrics and figures on disk."""
    from mibench.evaluate.report import report_from_disk

    try:
        path = report_from_disk(_load(config), results, output)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    console.print(f"file://{Path(path).resolve()}")


@app.command()
def ui(
    results: Path = typer.Option(Path("results"), help="Results folder holding mlflow.db."),
    port: int = typer.Option(5000, help="Port on 127.0.0.1."),
) -> None:
    """Start the MLflow UI on 127.0.0.1 over this project's tracking store (exits non-zero if it cannot serve)."""
    from mibench.extras import need
    from mibench.tracking import tracking_uri
    from mibench.ui import UIError, serve

    need("tracking", "mibench ui")

    uri = tracking_uri(results)

    def ready(url: str) -> None:
        console.print(f"MLflow UI on {url}  (store {uri}); Ctrl-C stops it", soft_wrap=True)

    try:
        code = serve(uri, "127.0.0.1", port, on_ready=ready)
    except UIError as exc:
        fail(str(exc), code=1)
    if code:
        fail(f"the MLflow UI stopped with exit code {code}", code=1)


@app.command()
def train(
    model: str = typer.Option(..., "--model", "-m", help="Model name under config.models."),
    config: Path = typer.Option(Path("config/config.yaml"), help="Workflow config (YAML)."),
    out: Path = typer.Option(Path("results/models"), help="Root folder; the model goes to OUT/MODEL/."),
    shards: Path = typer.Option(Path("results/meta"), help="Root of the meta-dataset shards (data.source: shards)."),
    max_minutes: float = typer.Option(None, help="Stop this run after so many minutes (state saved; run again)."),
    device: str = typer.Option(None, help="Override the model's device (auto, cpu, cuda, cuda:N)."),
    fresh: bool = typer.Option(False, help="Ignore a saved training state and start over."),
    no_tracking: bool = typer.Option(False, help="Do not log to MLflow."),
) -> None:
    """Train a MIST / MIST-QR model (resumes an interrupted run; exit code 75 = paused, run again)."""
    import logging

    from mibench.config import ConfigError, load_config
    from mibench.extras import need
    from mibench.resolve import check_limits

    need("learned", "mibench train")  # before the imports below load torch
    from mibench.learned.checkpoint import CheckpointError
    from mibench.learned.trainer import PAUSED_EXIT_CODE, train_from_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = load_config(config)
        check_limits(cfg, source=str(config))  # generated training samples are drawn with no cap of their own
        result = train_from_config(
            cfg,
            model,
            out,
            shard_root=shards,
            max_minutes=max_minutes,
            device=device,
            fresh=fresh,
            tracking=not no_tracking,
        )
    except (ConfigError, CheckpointError, ValueError) as exc:
        fail(str(exc))
    if result.status != "complete":
        console.print(f"{model}: {result.status} at step {result.step}/{result.total_steps}; run again to continue")
        raise typer.Exit(PAUSED_EXIT_CODE)
    console.print(f"{model}: trained {result.step} steps -> {result.weights}")


def _parse_sets(set_: list[str] | None) -> dict:
    """``--set KEY=VALUE`` items as an estimator entry (YAML values), so a typo fails before anything runs."""
    import yaml

    entry: dict = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set expects KEY=VALUE, got {item!r}")
        entry[key.strip()] = yaml.safe_load(value)
    return entry


def _consistency_task(task: str, dim_x: int, dim_y: int, params: str):
    """The task spec, its built task and its parameters: a bad ``--params`` is bad input (exit 2), not a crash."""
    import json

    from mibench.tasks import TaskSpec, parse_entry

    family, structure, transform = parse_entry(task)
    try:
        task_params = json.loads(params)
    except json.JSONDecodeError as exc:
        fail(f"--params is not valid JSON ({exc}): {params!r}")
    spec = TaskSpec(family, structure, dim_x, dim_y, task_params, transform)
    return spec, spec.build(), task_params


def _consistency_table(est, spec, built, dim_x: int, dim_y: int, n: int, rows: list[dict]) -> Table:
    """The checks as a table, one row each; a check that raised shows its error instead of a bare "no"."""
    table = Table(
        title=f"Self-consistency of {est.name} on {spec.entry} {dim_x}x{dim_y}, n={n} (true MI {built.mi:.3f})",
        caption="criteria: " + "; ".join(r["criterion"] for r in rows),
    )
    table.add_column("check", no_wrap=True)
    for col in ("estimate", "reference", "expected", "statistic", "pass"):
        table.add_column(col, overflow="fold")

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for r in rows:
        verdict = (
            "[green]yes[/]" if r["passed"] else ("[red]no[/]" if r["error"] is None else f"[red]error[/] {r['error']}")
        )
        table.add_row(
            r["check"], fmt(r["value"]), fmt(r["reference"]), fmt(r["expected"]), fmt(r["statistic"]), verdict
        )
    return table


def _write_consistency(out: Path, rows: list[dict], meta: dict) -> None:
    """The rows as Parquet, each with the run's settings (``meta``), so a table file stands on its own."""
    import pyarrow as pa

    from mibench.io import atomic_write_table

    atomic_write_table(pa.Table.from_pylist([{**meta, **r} for r in rows]), out)
    console.print(f"wrote {out}")


@app.command("consistency-check")
def consistency_check(
    estimator: str = typer.Option(
        ..., "--estimator", "-e", help="Registered estimator (or a label with --set estimator=...)."
    ),
    set_: list[str] = typer.Option(None, "--set", help="Hyperparameter KEY=VALUE (YAML value), repeatable."),
    task: str = typer.Option("multinormal-sparse-base", help="Task entry family-structure[-transform]."),
    dim_x: int = typer.Option(2, help="Dimension of X."),
    dim_y: int = typer.Option(2, help="Dimension of Y."),
    params: str = typer.Option('{"k": 2, "strength": 0.8}', help="Task parameters (JSON)."),
    n: int = typer.Option(2000, help="Sample size."),
    seed: int = typer.Option(0, help="Seed of the sample and the checks."),
    abs_tol: float = typer.Option(0.1, help="Tolerance (nats) of the independence check."),
    rel_tol: float = typer.Option(0.1, help="Relative tolerance of the ratio checks."),
    out: Path = typer.Option(None, help="Also write the table as Parquet here."),
) -> None:
    """Song & Ermon (2020) self-consistency checks (independence, data processing, additivity) for any estimator.

    Exit code 0 when every check passes, 1 when one fails (the table and --out are written either way),
    2 on bad input.
    """
    import json

    from mibench.estimators import build_estimator
    from mibench.estimators.consistency import self_consistency_checks
    from mibench.tasks import DEFAULT_MAX_SAMPLE_BYTES

    try:
        est = build_estimator(estimator, _parse_sets(set_))
        spec, built, task_params = _consistency_task(task, dim_x, dim_y, params)
        x, y = built.sample(n, seed, max_bytes=DEFAULT_MAX_SAMPLE_BYTES)  # an arbitrary --n: no config checked it
        rows = self_consistency_checks(est, x, y, seed=seed, abs_tol=abs_tol, rel_tol=rel_tol)
    except ValueError as exc:
        fail(str(exc))
    console.print(_consistency_table(est, spec, built, dim_x, dim_y, n, rows))
    if out is not None:
        meta = {
            "task": spec.entry,
            "dim_x": dim_x,
            "dim_y": dim_y,
            "params": json.dumps(task_params),
            "n": n,
            "seed": seed,
            "mi_true": built.mi,
            "estimator_params": json.dumps(est.params, default=str),
        }
        _write_consistency(out, rows, meta)
    failed = [r["check"] for r in rows if not r["passed"]]
    if failed:  # scripts and CI can act on the verdict; 2 stays "bad input"
        err_console.print(f"[bold red]failed:[/] {', '.join(failed)}", highlight=False)
        raise typer.Exit(1)


#: Exit code of a command that needs an extra which is not installed (``pip install 'mibench[EXTRA]'``).
MISSING_EXTRA_EXIT_CODE = 3


def main() -> None:
    """Console entry point: a missing optional dependency is one line naming the extra, never a traceback."""
    from rich.markup import escape

    from mibench.extras import MissingExtraError, explain

    try:
        app()
    except ImportError as exc:
        missing = explain(exc)
        if not isinstance(missing, MissingExtraError):
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(missing))}", highlight=False, soft_wrap=True)
        sys.exit(MISSING_EXTRA_EXIT_CODE)


if __name__ == "__main__":  # pragma: no cover
    main()
