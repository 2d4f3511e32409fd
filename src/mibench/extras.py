"""Optional dependencies ("extras") and the one-line error a command gives when one is missing.

``pip install mibench`` is the library and the ``mibench`` command for tasks, classical estimators,
evaluation, SQL and reports. The heavy parts are extras, so a user of the estimators does not install a
workflow engine, a tracking server and a deep-learning framework:

* ``workflow``: Snakemake and its SLURM executor plugin (the workflow in ``workflow/``);
* ``tracking``: MLflow (``mibench log``, ``mibench ui``, the ``track_benchmark`` rule, training runs);
* ``learned``: torch and safetensors (the variational (neural) estimators, MIST/MIST-QR, ``mibench train``,
  KSG's torch backend);
* ``all``: the three.

This module imports none of them: it only looks them up, so checking costs nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: The top-level modules each extra provides (distribution names differ: snakemake-executor-plugin-slurm).
#: ``tests/packaging/test_extras.py`` keeps this in step with pyproject.toml's optional-dependencies.
EXTRAS: dict[str, tuple[str, ...]] = {
    "workflow": ("snakemake", "snakemake_executor_plugin_slurm"),
    "tracking": ("mlflow",),
    "learned": ("torch", "safetensors"),
}
#: module -> the extra that installs it
EXTRA_OF: dict[str, str] = {module: extra for extra, modules in EXTRAS.items() for module in modules}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""

    def __init__(self, module: str, what: str | None = None) -> None:
        extra = EXTRA_OF[module]
        subject = f"{what} needs {module}, which is not installed" if what else f"{module} is not installed"
        super().__init__(f"{subject}: pip install 'mibench[{extra}]'", name=module)
        self.module, self.extra = module, extra


def available(module: str) -> bool:
    """True if ``module`` (a top-level name) can be imported here; looks it up without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def need(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` if a module of ``extra`` is missing (before any work is done)."""
    for module in EXTRAS[extra]:
        if not available(module):
            raise MissingExtraError(module, what)


def require(module: str, what: str | None = None) -> ModuleType:
    """``import module``, or :class:`MissingExtraError` naming the extra if it is not installed.

    Only a missing ``module`` itself is translated: a broken installation (one of *its* dependencies missing)
    keeps its own ImportError, which says what is really wrong.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = explain(exc, what)
        if missing is exc:
            raise
        raise missing from None


def explain(exc: BaseException, what: str | None = None) -> BaseException:
    """A :class:`MissingExtraError` for a ``ModuleNotFoundError`` of an extra's module; anything else as is.

    Used where errors are reported (the CLI, an estimate row's message), so a lazy ``import torch`` deep in an
    estimator reaches the user as "... pip install 'mibench[learned]'", not as a bare "No module named".
    """
    if isinstance(exc, MissingExtraError) or not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return exc
    top = exc.name.split(".")[0]
    if top not in EXTRA_OF or available(top):  # installed but broken: its own message says what is wrong
        return exc
    return MissingExtraError(top, what)
