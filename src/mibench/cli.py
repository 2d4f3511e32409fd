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
def where() -> None:
    """Say where the results, the SQL entry point and the MLflow UI are."""
    root = Path("results").resolve()
    console.print(f"[bold]results[/]      {root}")
    meta = sorted((root / "meta").glob("*/shard-*.parquet"))
    if meta:
        console.print(f"[bold]meta-datasets[/] {len(meta)} shard(s) under {root / 'meta'}")
    report = root / "report" / "index.html"
    if report.exists():
        console.print(f"[bold]report[/]       file://{report}")
    console.print('[bold]SQL[/]          mibench query "SELECT family, count(*) FROM meta GROUP BY family"')
    if (root / "mlflow.db").exists():
        console.print("[bold]MLflow UI[/]    mibench ui   (then open http://127.0.0.1:5000)")


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
