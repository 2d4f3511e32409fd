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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
