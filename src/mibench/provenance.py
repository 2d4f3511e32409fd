"""Where a result came from: package version, git commit (with a dirty flag), and code fingerprints.

Every estimates row, metrics file, MLflow run and report carries these, so a stale or hand-edited result can
be spotted, and the workflow puts code fingerprints into job params, so editing an estimator re-runs exactly
the jobs that use it.

**Code fingerprint.** The fingerprint of a module is a hash over the module and every ``mibench`` module it
imports, transitively (imports inside functions count; ``importlib`` imports by name do not), each as its
syntax tree with docstrings removed: editing a comment, a docstring or the formatting changes nothing,
editing code changes the fingerprint of every module that reaches it. ``estimators/ksg.py`` reaches the
runner's modules plus its own helpers, so a new binning rule in ``histogram.py`` re-runs only histogram
jobs, while a change to the task families (which every job samples from) re-runs them all.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mibench import __version__

PACKAGE = "mibench"
#: Set to "<sha>" or "<sha>-dirty" to state the commit where git is not available (e.g. an installed copy).
GIT_ENV = "MIBENCH_GIT_SHA"


@dataclass(frozen=True)
class GitState:
    sha: str  # 40 hex characters, or "unknown"
    dirty: bool  # uncommitted changes to tracked files

    @property
    def label(self) -> str:
        """``<sha>`` or ``<sha>-dirty``: what rows and runs record."""
        return f"{self.sha}-dirty" if self.dirty else self.sha


def _git(args: list[str], where: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state_at(where: Path) -> GitState | None:
    """The commit checked out at ``where`` and whether tracked files differ from it (None outside git).

    Untracked files (results/, a scratch notebook) do not make a checkout dirty; edits to tracked files do.
    """
    sha = _git(["rev-parse", "HEAD"], where)
    if not sha:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return GitState(sha.strip(), bool(status and status.strip()))


@functools.cache
def git_state() -> GitState:
    """Commit of the code that runs (``$MIBENCH_GIT_SHA`` wins; ``unknown`` outside a git checkout)."""
    env = os.environ.get(GIT_ENV, "").strip()
    if env:
        return GitState(env.removesuffix("-dirty"), env.endswith("-dirty"))
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        state = git_state_at(where)
        if state is not None:
            return state
    return GitState("unknown", False)


def git_sha() -> str:
    """The commit label rows record: ``<sha>`` or ``<sha>-dirty``."""
    return git_state().label


def package_version() -> str:
    return __version__


# -- code fingerprints ------------------------------------------------------------------------------------
_ROOT = Path(__file__).resolve().parent


@functools.cache
def _module_file(name: str) -> Path | None:
    """The source file of a module, found without importing it (mibench's own by path)."""
    parts = name.split(".")
    if parts[0] == PACKAGE:
        base = _ROOT.joinpath(*parts[1:])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return tree


@functools.cache
def _parsed(name: str) -> tuple[str, tuple[str, ...]]:
    """(hash of the docstring-free syntax tree, mibench modules it imports) of module ``name``."""
    path = _module_file(name)
    if path is None:
        return "missing", ()
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            imported.add(base)
            imported.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    ours = tuple(sorted(m for m in imported if m == PACKAGE or m.startswith(PACKAGE + ".")))
    digest = hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).hexdigest()
    return digest, ours


def module_closure(names: Iterable[str]) -> list[str]:
    """``names`` plus every mibench module they import, transitively (with parent packages), sorted."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen or _module_file(name) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a.b runs a/__init__
        todo.extend(_parsed(name)[1])
    return sorted(seen)


@functools.cache
def _fingerprint(names: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in module_closure(names):
        digest.update(f"{name}:{_parsed(name)[0]}\n".encode())
    return digest.hexdigest()[:16]


def code_fingerprint(*modules: str) -> str:
    """Fingerprint of the code that ``modules`` run (see the module docstring); 16 hex characters."""
    return _fingerprint(tuple(sorted(set(modules))))
