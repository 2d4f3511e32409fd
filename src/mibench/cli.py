"""The ``mibench`` command. Every subcommand is a thin wrapper over the library."""

from __future__ import annotations

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
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.command()
def tasks() -> None:
    """List every task family (structures, parameters with default ranges) and every transform."""
    from mibench.tasks import FAMILIES, TRANSFORMS

    table = Table(title="Task families", show_lines=True)
    for col in ("family", "structures", "parameters (default range)", "exact MI"):
        table.add_column(col)
    for name, family in FAMILIES.items():
        structures = "\n".join(f"[bold]{s}[/]: {doc}" for s, doc in family.structures.items())
        params = "\n".join(
            f"{p} ∈ [{spec.low:g}, {spec.high:g}]{' int' if spec.integer else ''}{' log' if spec.log else ''}"
            for p, spec in family.parameters.items()
        )
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
        ttable.add_row(name, transform.doc)
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

    try:
        cfg = load_config(config)
        names = split or list(split_plans(cfg))
        for name in names:
            paths = generate_split(cfg, name, out, jobs=jobs, progress=sys.stderr.isatty())
            console.print(f"{name}: {len(paths)} shard(s) under {out / name}")
    except (ConfigError, ValueError) as exc:
        fail(str(exc))


@app.command()
def where(
    results: Path = typer.Option(Path("results"), help="Results folder."),
    top: int = typer.Option(5, help="Estimators shown per benchmark (ranked by MSE over all cells)."),
) -> None:
    """Say where the results, the SQL entry point and the MLflow UI are, with each benchmark's leaders."""
    import polars as pl

    root = results.resolve()
    console.print(f"[bold]results[/]       {root}")
    meta = sorted((root / "meta").glob("*/shard-*.parquet"))
    if meta:
        console.print(f"[bold]meta-datasets[/] {len(meta)} shard(s) under {root / 'meta'}")
    for path in sorted((root / "metrics").glob("*.parquet")):
        overall = pl.read_parquet(path).filter(
            (pl.col("split") == "ALL")
            & (pl.col("family") == "ALL")
            & (pl.col("n_bin") == "ALL")
            & (pl.col("dim_bin") == "ALL")
        )
        coverage = "coverage_90" if "coverage_90" in overall.columns else None
        table = Table(title=f"benchmark {path.stem}: all cells, best MSE first", title_justify="left")
        for col in ("estimator", "scored", "errors", "MSE", "bias", "90% coverage"):
            table.add_column(col, justify="left" if col == "estimator" else "right")
        for row in overall.sort("mse", nulls_last=True).head(top).iter_rows(named=True):
            cover = row.get(coverage) if coverage else None
            table.add_row(
                row["estimator"],
                str(row["count"]),
                str(row["errors"] + row["timeouts"]),
                "-" if row["mse"] is None else f"{row['mse']:.3g}",
                "-" if row["bias"] is None else f"{row['bias']:+.3g}",
                "-" if cover is None else f"{cover:.2f}",
            )
        console.print(table)
    for line in model_lines(root / "models"):
        console.print(line, highlight=False)
    report = root / "report" / "index.html"
    if report.exists():
        console.print(f"[bold]report[/]        file://{report}")
    console.print("[bold]SQL[/]           mibench query \"SELECT * FROM metrics WHERE family = 'ALL' LIMIT 5\"")
    if (root / "mlflow.db").exists():
        console.print("[bold]MLflow UI[/]     mibench ui   (then open http://127.0.0.1:5000)")


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
def estimators() -> None:
    """List registered estimators with their hyperparameters and defaults."""
    import inspect

    from mibench.estimators import ESTIMATORS, hyperparameters, load_builtin_estimators

    load_builtin_estimators()
    table = Table(title="Estimators (hyperparameters go under config.yaml: estimators: {label: {...}})")
    table.add_column("estimator")
    table.add_column("hyperparameters (defaults)")
    table.add_column("summary")
    for name, cls in ESTIMATORS.items():
        params = ", ".join(
            f"{k}={'required' if v is inspect.Parameter.empty else repr(v)}" for k, v in hyperparameters(cls).items()
        )
        doc = (inspect.getdoc(cls) or "").split("\n")[0]
        table.add_row(name, params or "-", doc)
    console.print(table)


@app.command()
def query(
    sql: str = typer.Argument(..., help="SQL over the views meta, estimates, metrics, calibration."),
    results: Path = typer.Option(Path("results"), help="Results folder the views read."),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json | parquet"),
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of stdout (required for parquet)."),
    limit: int = typer.Option(100, help="Rows shown in table format (0 = all)."),
) -> None:
    """Run read-only SQL (DuckDB) over every result; never writes into results/."""
    import io

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from mibench.query import QueryError, run_query

    if format not in ("table", "csv", "json", "parquet"):
        fail(f"--format must be table, csv, json or parquet, got {format!r}")
    if output is not None and results.resolve() in output.resolve().parents:
        fail(f"--output {output} is inside {results}/: mibench query never writes into the results folder")
    if format == "parquet" and output is None:
        fail("--format parquet needs --output FILE")
    try:
        table = run_query(sql, results)
    except QueryError as exc:
        fail(str(exc))
    if format == "parquet":
        pq.write_table(table, output)
        console.print(f"wrote {table.num_rows} row(s) to {output}")
        return
    if format == "csv":
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        text = buffer.getvalue().decode()
    elif format == "json":
        import json

        text = json.dumps(table.to_pylist(), default=str, indent=1) + "\n"
    else:
        shown = table if limit == 0 else table.slice(0, limit)
        rich_table = Table(
            caption=f"{table.num_rows} row(s)" + (f", first {limit} shown" if shown.num_rows < table.num_rows else "")
        )
        for name in table.column_names:
            rich_table.add_column(name, overflow="fold")
        for row in shown.to_pylist():
            rich_table.add_row(*[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()])
        if output is None:
            console.print(rich_table)
            return
        buf = Console(file=io.StringIO(), width=200)
        buf.print(rich_table)
        text = buf.file.getvalue()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote {table.num_rows} row(s) to {output}")


def _load(config: Path) -> dict:
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
    from mibench.tracking import TrackingError, log_from_disk, tracking_uri

    cfg = _load(config)
    names = benchmark or [b for b in (cfg.get("benchmarks") or {}) if (results / "metrics" / f"{b}.parquet").exists()]
    if not names:
        fail(f"no evaluated benchmarks under {results}/metrics; run the workflow first")
    for name in names:
        try:
            runs = log_from_disk(cfg, name, results)
        except (TrackingError, FileNotFoundError, ValueError) as exc:
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
    """Start the MLflow UI on 127.0.0.1 over this project's tracking store."""
    import os
    import shutil

    from mibench.tracking import tracking_uri

    uri = tracking_uri(results)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        fail(f"no tracking store at {uri}; run the workflow first (make run)")
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    console.print(f"MLflow UI on http://127.0.0.1:{port}  (store {uri}); Ctrl-C stops it")
    os.execv(
        mlflow, [mlflow, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    )


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

    from mibench.config import ConfigError
    from mibench.learn.checkpoint import CheckpointError
    from mibench.learn.train import PAUSED_EXIT_CODE, train_from_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        result = train_from_config(
            config,
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
    """Song & Ermon (2020) self-consistency checks (independence, data processing, additivity) for any estimator."""
    import json

    import yaml

    from mibench.estimators import build_estimator
    from mibench.estimators.consistency import self_consistency_checks
    from mibench.tasks import TaskSpec, parse_entry

    try:
        entry: dict = {}
        for item in set_ or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                fail(f"--set expects KEY=VALUE, got {item!r}")
            entry[key.strip()] = yaml.safe_load(value)
        est = build_estimator(estimator, entry)
        family, structure, transform = parse_entry(task)
        try:
            task_params = json.loads(params)
        except json.JSONDecodeError as exc:
            fail(f"--params is not valid JSON ({exc}): {params!r}")
        spec = TaskSpec(family, structure, dim_x, dim_y, task_params, transform)
        built = spec.build()
        x, y = built.sample(n, seed)
        rows = self_consistency_checks(est, x, y, seed=seed, abs_tol=abs_tol, rel_tol=rel_tol)
    except ValueError as exc:
        fail(str(exc))
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
    console.print(table)
    if out is not None:
        import pyarrow as pa

        from mibench.io import atomic_write_table

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
        atomic_write_table(pa.Table.from_pylist([{**meta, **r} for r in rows]), out)
        console.print(f"wrote {out}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
