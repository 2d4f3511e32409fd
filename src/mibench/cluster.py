"""Cluster helpers: make the repository's Snakemake profiles resolvable by name (``--profile slurm``).

Snakemake resolves a bare profile name in the working directory, the user config dir
(``~/.config/snakemake`` on Linux) and the site config dir (``/etc/xdg/snakemake``), never in ``./profiles/``.
``install_profile`` links ``profiles/<name>`` into the user config dir so ``--profile <name>`` works from any
directory, while the profile itself stays versioned in the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILE_FILES = ("profile.yaml", "config.yaml")


class ProfileInstallError(ValueError):
    """The profile cannot be installed as asked (missing source, or the target holds something else)."""


def snakemake_user_profile_root() -> Path:
    """The user-level folder Snakemake searches for profile names (honours ``XDG_CONFIG_HOME``)."""
    from platformdirs import user_config_dir

    # Same AppDirs("snakemake", "snakemake") lookup as snakemake.common.get_appdirs, without its global cache.
    return Path(user_config_dir("snakemake", "snakemake"))


def repository_profile(name: str) -> Path:
    """``profiles/<name>`` of the working directory, else of the checkout this package is imported from."""
    candidates = [Path.cwd() / "profiles" / name, Path(__file__).resolve().parents[2] / "profiles" / name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise ProfileInstallError(
        f"profile folder 'profiles/{name}' not found (looked in {', '.join(str(c) for c in candidates)}); "
        "run from the repository root or pass --source"
    )


def install_profile(source: Path, name: str | None = None, root: Path | None = None, force: bool = False) -> Path:
    """Symlink the profile folder ``source`` to ``<root>/<name>`` and return the link.

    ``root`` defaults to Snakemake's user profile folder and ``name`` to the folder's name. Idempotent: an
    existing link to the same folder is kept. A link elsewhere is replaced only with ``force``; a real folder or
    file is never replaced (it may be the user's own profile).
    """
    source = Path(source).resolve()
    if not source.is_dir():
        raise ProfileInstallError(f"profile source {source} is not a folder")
    if not any((source / f).is_file() for f in PROFILE_FILES):
        raise ProfileInstallError(f"profile source {source} has no {' or '.join(PROFILE_FILES)}")
    root = Path(root) if root is not None else snakemake_user_profile_root()
    link = root / (name or source.name)
    if link.is_symlink():
        if link.resolve() == source:
            return link
        if not force:
            raise ProfileInstallError(
                f"{link} already links to {os.readlink(link)}; pass --force to point it at {source}"
            )
        link.unlink()
    elif link.exists():
        raise ProfileInstallError(f"{link} exists and is not a symlink (your own profile?); move it away first")
    root.mkdir(parents=True, exist_ok=True)
    link.symlink_to(source, target_is_directory=True)
    return link
