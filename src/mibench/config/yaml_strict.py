"""YAML reading that refuses what PyYAML silently accepts: duplicate keys.

PyYAML keeps the last of two equal keys, so an estimator defined twice under ``estimators:`` silently loses
its first definition. Every config file mibench reads (and every ``--configfile`` Snakemake reads) goes
through :func:`load_yaml`, which names the file, the key path and both lines.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml


class DuplicateKeyError(ValueError):
    """A mapping holds the same key twice; the message names the file, key path and both lines."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader whose mappings reject duplicate keys (recording where each key was first seen)."""

    source = "<string>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:  # before merging `<<:` keys in: a merged key may be overridden
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):  # e.g. `? [a, b]`: let PyYAML raise its own error
                break
            if key in seen:
                raise DuplicateKeyError(
                    f"{self.source}: line {line}: duplicate key {key!r} (first defined on line {seen[key]}); "
                    "YAML keeps only the last one, so remove or rename one of them"
                )
            seen[key] = line
        self.flatten_mapping(node)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text, refusing duplicate keys (``source`` names the file in errors)."""
    loader = _StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path) -> Any:
    path = Path(path)
    return load_yaml(path.read_text(), str(path))
