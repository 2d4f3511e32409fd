"""Progress lines of long jobs: in the job's log line by line, and (opt-in) on the terminal while jobs run.

Snakemake prints a job's output only when the job ends, and a job's log is a file nobody watches. A log
record is a *progress line* when it comes from a logger under ``mibench.progress`` (see
:func:`progress_logger`) or carries ``extra={"progress": True}``; any code can emit one::

    progress_logger("train").info("step %d/%d loss %.4f", step, total, loss)
    logging.getLogger(__name__).info("cell %d done", i, extra={"progress": True})

Every line goes to the job's log (flushed per line by :func:`mibench.workflow.rule_context`). When
``MIBENCH_PROGRESS=console`` is set (``make run`` sets it), ``rule_context`` also tees progress lines to the
job's original stderr, which a local Snakemake run shares with the terminal, prefixed with the job's log
name (``[estimate/grid/mine/part-0000] ...``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

PROGRESS_LOGGER = "mibench.progress"
CONSOLE_ENV = "MIBENCH_PROGRESS"


def progress_logger(name: str | None = None) -> logging.Logger:
    """The logger whose records are progress lines (``mibench.progress.<name>``)."""
    return logging.getLogger(f"{PROGRESS_LOGGER}.{name}" if name else PROGRESS_LOGGER)


def is_progress(record: logging.LogRecord) -> bool:
    """True for records tagged as progress (logger name or ``extra={"progress": True}``)."""
    return (
        record.name == PROGRESS_LOGGER
        or record.name.startswith(PROGRESS_LOGGER + ".")
        or bool(getattr(record, "progress", False))
    )


class ProgressFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return is_progress(record)


def job_label(log_path: str | os.PathLike) -> str:
    """'results/logs/estimate/grid/mine/part-0000.log' -> 'estimate/grid/mine/part-0000'."""
    parts = Path(log_path).with_suffix("").parts
    if "logs" in parts:
        parts = parts[len(parts) - parts[::-1].index("logs") :]
    return "/".join(parts)


def console_handler(log_path: str | os.PathLike | None, stream: TextIO | None = None) -> logging.Handler | None:
    """A handler teeing progress lines to the terminal, if ``MIBENCH_PROGRESS=console``; else None."""
    if os.environ.get(CONSOLE_ENV, "").strip().lower() != "console":
        return None
    target = stream or sys.__stderr__
    if target is None:
        return None
    handler = logging.StreamHandler(target)  # flushes after every record
    label = job_label(log_path) if log_path else "mibench"
    handler.setFormatter(logging.Formatter(f"%(asctime)s [{label}] %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(ProgressFilter())
    return handler
