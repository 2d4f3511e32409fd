"""The JSON Schema of the workflow config, generated from the typed models (never written by hand).

``workflow/schemas/config.schema.json`` is this output, committed, and a test keeps it current
(``mibench config-schema -o workflow/schemas/config.schema.json`` regenerates it). Editors with a YAML
language server complete and check config files with it. Validation itself is done by the models (the
Snakefile calls :func:`mibench.workflow.load_workflow`), so the schema can never disagree with what runs.
"""

from __future__ import annotations

import json
from typing import Any

from mibench.config.schema import Config

SCHEMA_PATH = "workflow/schemas/config.schema.json"


def config_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`~mibench.config.schema.Config`, adjusted to the YAML form of the config."""
    schema = Config.model_json_schema()
    defs = schema.get("$defs", {})
    entry = defs.get("EstimatorEntry")
    if entry is not None:  # in YAML the hyperparameters sit next to the reserved keys
        entry["properties"].pop("hyperparameters", None)
        entry["additionalProperties"] = {
            "description": "A hyperparameter of the estimator, checked against its Params (mibench estimators NAME)."
        }
    estimators = schema["properties"]["estimators"]
    estimators["additionalProperties"] = {"anyOf": [{"$ref": "#/$defs/EstimatorEntry"}, {"type": "null"}]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mibench workflow configuration",
        "description": "Generated from mibench.config (mibench config-schema); the models are what validates.",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"
