"""Helpers for the few-line scripts under workflow/scripts: logging to the rule's log, thread limits."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

from mibench.devices import DEVICE_ENV
from mibench.extras import explain
from mibench.progress import console_handler


@contextlib.contextmanager
def rule_context(
    log_path: str | os.PathLike | None, threads: int = 1, gpus: int | None = None
) -> Iterator[logging.Logger]:
    """Send stdout/stderr and logging to the rule's log file, cap BLAS/torch threads at ``threads``.

    ``gpus`` is the rule's ``gpu`` resource: a job that asked for none runs ``device: auto`` estimators on
    the CPU (``$MIBENCH_DEVICE=cpu``), so it never takes a GPU it was not given; a job that asked for one
    lets ``auto`` pick CUDA when it is there. A ``MIBENCH_DEVICE`` set by the user wins.

    An exception is written to the log with its traceback and re-raised, so Snakemake marks the job failed
    and the log says why. The log is line-buffered (a long job's lines appear as they happen); with
    ``MIBENCH_PROGRESS=console`` progress lines (:mod:`mibench.progress`) also go to the terminal.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if gpus is not None and int(gpus) == 0:
        os.environ.setdefault(DEVICE_ENV, "cpu")
    if "torch" in sys.modules:  # imported before us: OMP_NUM_THREADS no longer reaches its thread pool
        sys.modules["torch"].set_num_threads(max(1, int(threads)))
    handle = None
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_path, "w", buffering=1)
        sys.stdout = sys.stderr = handle
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    console = console_handler(log_path)  # MIBENCH_PROGRESS=console: progress lines on the terminal too
    if console is not None:
        logging.getLogger().addHandler(console)
    logger = logging.getLogger("mibench")
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            yield logger
    except BaseException as exc:
        traceback.print_exc()
        missing = explain(exc)
        if missing is not exc:  # the last line Snakemake shows names the extra to install
            raise missing from exc
        raise
    finally:
        if console is not None:
            logging.getLogger().removeHandler(console)
        if handle is not None:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            handle.close()


def put_first_on_pythonpath(src: str | os.PathLike) -> None:
    """Put ``src`` first on ``$PYTHONPATH``, which every job inherits (local jobs as child processes, SLURM jobs
    through ``sbatch --export=ALL``): a job in a conda env that holds only the dependencies then imports this
    checkout's library, and so does one in a venv with another ``mibench`` installed (docs/cluster.md)."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if paths[:1] != [str(src)]:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(src), *paths])


def load_workflow(config: dict, config_files: list[str] | tuple[str, ...]):
    """What the Snakefile calls at parse time: check the config (files for duplicate keys, the merged config
    Snakemake built, ``--config`` overrides included) and return the :class:`~mibench.jobs.Jobs` of every rule.

    A bad config raises :class:`~mibench.config.ConfigError`, before any job runs (``-n`` too).
    """
    from mibench.config import parse_config, read_config_files
    from mibench.jobs import Jobs
    from mibench.resolve import resolve_config

    files = tuple(str(f) for f in config_files)
    source = ", ".join(files) or None
    read_config_files(files)  # duplicate keys, which Snakemake's YAML loader silently drops
    resolved = resolve_config(parse_config(config, source=source), source=source)
    return Jobs(resolved, files)
