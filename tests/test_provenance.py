"""Provenance: the git commit with a dirty flag, and code fingerprints that follow imports, not formatting."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from mibench import provenance
from mibench.provenance import GitState, code_fingerprint, git_state_at, module_closure


def git(where: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=where, check=True, capture_output=True)


def test_dirty_flag_follows_tracked_files_only(tmp_path) -> None:
    assert git_state_at(tmp_path) is None  # not a checkout
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.org")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-qm", "one")
    clean = git_state_at(tmp_path)
    assert clean is not None and len(clean.sha) == 40 and not clean.dirty and clean.label == clean.sha
    (tmp_path / "results.parquet").write_text("untracked output")
    assert not git_state_at(tmp_path).dirty  # untracked files are not uncommitted code
    (tmp_path / "code.py").write_text("x = 2\n")
    dirty = git_state_at(tmp_path)
    assert dirty.dirty and dirty.label == f"{clean.sha}-dirty"


def test_git_sha_env_override(monkeypatch) -> None:
    provenance.git_state.cache_clear()
    monkeypatch.setenv(provenance.GIT_ENV, "abc123-dirty")
    try:
        assert provenance.git_state() == GitState("abc123", True) and provenance.git_sha() == "abc123-dirty"
    finally:
        provenance.git_state.cache_clear()


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A tiny importable package: app.a imports app.b inside a function; app.c is unrelated."""
    root = tmp_path / "app"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text(
        '"""Module a."""\n\ndef f():\n    from app import b  # a function-level import\n    return b.g()\n'
    )
    (root / "b.py").write_text("def g():\n    return 1\n")
    (root / "c.py").write_text("def h():\n    return 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(provenance, "PACKAGE", "app")
    monkeypatch.setattr(provenance, "_ROOT", root)
    for fn in (provenance._module_file, provenance._parsed, provenance._fingerprint):
        fn.cache_clear()
    yield root
    for fn in (provenance._module_file, provenance._parsed, provenance._fingerprint):
        fn.cache_clear()


def fingerprint_after(root: Path, name: str, text: str) -> str:
    (root / name).write_text(text)
    for fn in (provenance._module_file, provenance._parsed, provenance._fingerprint):
        fn.cache_clear()
    return code_fingerprint("app.a")


def test_code_fingerprint_follows_imports_not_formatting(package) -> None:
    assert module_closure(["app.a"]) == ["app", "app.a", "app.b"]
    before = code_fingerprint("app.a")
    # a comment, a docstring, blank lines: the same code
    same = textwrap.dedent('''\
        """Module a, documented at length."""


        def f():
            """Now with a docstring."""
            from app import b  # the same import

            return b.g()
        ''')
    assert fingerprint_after(package, "a.py", same) == before
    assert fingerprint_after(package, "c.py", "def h():\n    return 3\n") == before  # not imported by a
    assert fingerprint_after(package, "b.py", "def g():\n    return 2\n") != before  # reached through a's import


def test_the_estimators_fingerprints_differ_and_share_the_runner() -> None:
    ksg = module_closure(["mibench.runner", "mibench.estimators.ksg"])
    hist = module_closure(["mibench.runner", "mibench.estimators.histogram"])
    assert "mibench.estimators.ksg" in ksg and "mibench.estimators.ksg" not in hist
    assert {"mibench.runner", "mibench.tasks.gaussian", "mibench.config.schema"} <= set(ksg) & set(hist)
    assert code_fingerprint("mibench.runner", "mibench.estimators.ksg") != code_fingerprint(
        "mibench.runner", "mibench.estimators.histogram"
    )
