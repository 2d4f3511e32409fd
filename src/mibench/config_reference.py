"""The config reference in docs/configuration.md, generated from the models (so the docs cannot drift).

``mibench config-schema --reference`` prints it; ``tests/config/test_checks.py`` checks that the block between
the ``generated`` markers of docs/configuration.md is exactly this text.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from mibench.config.base import allowed_values, json_type
from mibench.config.learned import Architecture, Data, LossWeights, ModelEntry, ModelResources, Training
from mibench.config.schema import (
    BenchmarkConfig,
    Bootstrap,
    Config,
    Dims,
    EstimatorEntry,
    EstimatorResources,
    Limits,
    Linspace,
    MetaConfig,
    MixtureEntry,
    NRange,
    ParamLaw,
    SplitConfig,
    TaskConfig,
    TrackingConfig,
)

BEGIN = "<!-- generated: mibench config-schema --reference -->"
END = "<!-- end of generated reference -->"

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("config (top level)", Config),
    ("limits", Limits),
    ("meta", MetaConfig),
    ("meta.splits.NAME", SplitConfig),
    ("meta.splits.NAME.dims", Dims),
    ("meta.splits.NAME.n (random mode)", NRange),
    ("meta.splits.NAME.n_grid (linspace form)", Linspace),
    ("meta.splits.NAME.mixture[i] (mapping form)", MixtureEntry),
    ("meta.splits.NAME.params.FAMILY.PARAM (law form)", ParamLaw),
    ("estimators.LABEL", EstimatorEntry),
    ("estimators.LABEL.bootstrap", Bootstrap),
    ("estimators.LABEL.resources", EstimatorResources),
    ("benchmarks.NAME", BenchmarkConfig),
    ("benchmarks.NAME.tasks[i]", TaskConfig),
    ("models.NAME", ModelEntry),
    ("models.NAME.architecture (overrides of the preset)", Architecture),
    ("models.NAME.training", Training),
    ("models.NAME.training.loss_weights", LossWeights),
    ("models.NAME.data", Data),
    ("models.NAME.resources", ModelResources),
    ("tracking", TrackingConfig),
]


def _default(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    if info.is_required():
        return "required"
    value: Any = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its defaults"
    return "`" + json.dumps(value) + "`"


def section_table(title: str, model: type[BaseModel]) -> str:
    doc = " ".join(line.strip() for line in (model.__doc__ or "").strip().split("\n\n")[0].splitlines())
    rows = [f"### `{title}`", ""] + ([doc.replace("``", "`"), ""] if doc else [])
    rows += ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    props = model.model_json_schema().get("properties", {})
    for name, info in model.model_fields.items():
        if model is EstimatorEntry and name == "hyperparameters":
            continue
        prop = props.get(name, {})
        cells = [f"`{name}`", json_type(prop), _default(model, name), allowed_values(prop), info.description or ""]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if model is EstimatorEntry:
        rows.append("| *any other key* | | | | a hyperparameter of the estimator (see its table below) |")
    return "\n".join(rows)


def estimator_tables() -> str:
    from mibench.estimators import ESTIMATORS, load_builtin_estimators
    from mibench.estimators.base import describe_params

    load_builtin_estimators()
    out = []
    for name, cls in ESTIMATORS.items():
        if not cls.__module__.startswith("mibench."):
            continue  # the built-in estimators only (tests and docs register their own)
        doc = (cls.__doc__ or "").strip().splitlines()
        out += [
            f"### `{name}`",
            "",
            doc[0] if doc else "",
            "",
            "| hyperparameter | type | default | allowed | meaning |",
        ]
        out.append("|---|---|---|---|---|")
        for row in describe_params(cls):
            cells = [f"`{row['name']}`", row["type"], f"`{row['default']}`", row["allowed"], row["description"]]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out).rstrip()


def reference_markdown() -> str:
    """The whole generated block: every config section's keys, then every estimator's hyperparameters."""
    parts = [BEGIN, "", "## Config keys", ""]
    parts += [section_table(title, model) + "\n" for title, model in SECTIONS]
    parts += ["## Estimator hyperparameters", "", estimator_tables(), "", END]
    return "\n".join(parts) + "\n"


def current_block(text: str) -> str | None:
    """The generated block of a document (markers included), or None."""
    if BEGIN not in text or END not in text:
        return None
    start = text.index(BEGIN)
    return text[start : text.index(END) + len(END)] + "\n"
