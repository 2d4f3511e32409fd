"""The base of every typed config model, and errors that name the key path, the value and what is allowed.

Every section of the workflow config (and every estimator's hyperparameters) is a :class:`StrictModel`:

* unknown keys are errors (with a did-you-mean), never silently ignored;
* no coercion: ``k: "3"``, ``k: 2.5`` or ``k: true`` are not integers, ``seeds: 1e9`` (a YAML string) is not
  a number;
* no NaN or infinity anywhere (``timeout_s: .inf`` is refused with its key);
* tuples and numpy scalars given from Python are accepted as the lists and numbers YAML would give.

A pydantic ``ValidationError`` becomes a :class:`ConfigError` whose lines read
``config.benchmarks.meta.timeout_s: must be a finite number (got inf)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from difflib import get_close_matches
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class ConfigError(ValueError):
    """A config value that is missing, malformed or impossible; the message names the key path."""


def _plain(value: Any) -> Any:
    """Tuples -> lists and numpy scalars -> Python numbers, recursively (what YAML would have produced)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "dtype") and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        return _plain(value.tolist())
    return value


class StrictModel(BaseModel):
    """Forbid unknown keys, coercion and non-finite floats; accept Python tuples as YAML lists."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _plain_input(cls, data: Any) -> Any:
        return _plain(data) if isinstance(data, Mapping) else data


def non_finite_paths(value: Any, path: str) -> list[str]:
    """Key paths of every NaN/inf inside free-form data (task params, architecture overrides...)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [path]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in non_finite_paths(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in non_finite_paths(v, f"{path}[{i}]")]
    return []


def key_path(prefix: str, loc: Sequence[Any]) -> str:
    """``('benchmarks', 'meta', 'n', 2)`` -> ``config.benchmarks.meta.n[2]``."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _known_keys(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[str]:
    """Field names of the model that holds the key at ``loc`` (best effort, for did-you-mean)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            # a dict of models (``estimators: {label: ...}``): the part is a user key, stay on the value type
            current = _value_model(current)
            continue
        current = _value_model(fields[part].annotation)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _value_model(annotation: Any) -> Any:
    """The model class inside ``Model | None``, ``dict[str, Model]``, ``list[Model]`` (else None)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _value_model(arg)
        if found is not None:
            return found
    return None


_MESSAGES = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "finite_number": "must be a finite number (NaN and infinity are not allowed)",
    "missing": "is required",
}


def describe(error: Mapping[str, Any], model: type[BaseModel] | None, prefix: str) -> str:
    """One line for one pydantic error: key path, what is wrong, the value given, did-you-mean."""
    parts = error["loc"]
    last = error["type"] != "extra_forbidden"  # an unknown key's own name is never a tag
    loc = [p for i, p in enumerate(parts) if not _is_tag(p, last=last and i == len(parts) - 1)]
    path = key_path(prefix, loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, loc)
        close = get_close_matches(str(loc[-1]), known, n=1) if loc else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        allowed = (
            f". Allowed keys: {', '.join(known)}."
            if known and not close
            else (f" Allowed keys: {', '.join(known)}." if known else "")
        )
        return f"{path}: unknown key{hint}{allowed}"
    message = _MESSAGES.get(kind) or error["msg"].removeprefix("Value error, ")
    message = message[0].lower() + message[1:] if message else message
    if kind == "string_pattern_mismatch" and "[key]" in map(str, error["loc"]):
        message = "names must be lowercase letters, digits and '_', starting with a letter"
    if kind == "missing" or isinstance(error.get("input"), Mapping):
        return f"{path}: {message}"
    hint = ""
    if kind in ("int_type", "float_type") and _numeric_text(error.get("input")):
        hint = "; YAML reads 1e9 as text: write 1000000000 (or 1.0e+9 for a float)"
    return f"{path}: {message} (got {_short(error.get('input'))}){hint}"


#: pydantic's own tags of a plain union (``int | float``): they end a location, so only a last part is one
_TYPE_TAGS = {"int", "float", "str", "bool", "list", "dict"}


def _is_tag(part: Any, last: bool = False) -> bool:
    """Parts of a pydantic location that name a union branch or validator, not a config key.

    mibench's discriminated unions tag their branches ``<text>``, ``<list>``, ``<mapping>``, which no config
    name can be, so a benchmark or estimator named ``text`` or ``list`` keeps its place in the key path.
    """
    if not isinstance(part, str):
        return False
    if part.startswith("<") or "[" in part or part.startswith(("constrained-", "function-", "literal")):
        return True
    return last and part in _TYPE_TAGS


def _numeric_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _join(messages: list[str]) -> str:
    """'a (got x)' + 'b (got x)' -> 'a, or b (got x)'."""
    if len(messages) == 1:
        return messages[0]
    suffix = messages[0][messages[0].rfind(" (got ") :] if " (got " in messages[0] else ""
    if suffix and all(m.endswith(suffix) for m in messages):
        return ", or ".join(m[: -len(suffix)] for m in messages) + suffix
    return ", or ".join(messages)


def config_error(
    exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "config", source: str | None = None
) -> ConfigError:
    """A :class:`ConfigError` listing every problem of a pydantic ``ValidationError`` (one per line)."""
    by_path: dict[str, list[str]] = {}
    for error in exc.errors():  # the branches of a union fail at one path: one line, alternatives joined
        path, _, message = describe(error, model, prefix).partition(": ")
        if message not in by_path.setdefault(path, []):
            by_path[path].append(message)
    lines = [f"{path}: {_join(messages)}" for path, messages in by_path.items()]
    head = f"{source}: " if source else ""
    if len(lines) == 1:
        return ConfigError(head + lines[0])
    shown = lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else [])
    return ConfigError(f"{head}{len(lines)} problems:\n  " + "\n  ".join(shown))


def parse_model(model: type[StrictModel], data: Any, prefix: str, source: str | None = None) -> Any:
    """Validate ``data`` as ``model``; errors become a :class:`ConfigError` with key paths under ``prefix``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, model, prefix, source) from None


# -- rendering a field's JSON schema for people (mibench estimators, docs/configuration.md) ---------------------
def json_type(prop: Mapping[str, Any]) -> str:
    """'integer', 'list of number', 'integer | null', 'choice', 'Dims' (a section), 'mapping of ...'."""
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in prop or "oneOf" in prop:
        return " | ".join(dict.fromkeys(json_type(p) for p in prop.get("anyOf") or prop["oneOf"]))
    if "enum" in prop or "const" in prop:
        return "choice"
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {json_type(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), Mapping):
        return f"mapping of {json_type(prop['additionalProperties'])}"
    if kind == "object" and isinstance(prop.get("patternProperties"), Mapping) and prop["patternProperties"]:
        return f"mapping of {json_type(next(iter(prop['patternProperties'].values())))}"
    return "mapping" if kind == "object" else str(kind)


def allowed_values(prop: Mapping[str, Any]) -> str:
    """'>= 1', "'auto', 'tree'", 'each > 0 and < 1', '2 items': the constraints of a field, in words."""
    if "anyOf" in prop or "oneOf" in prop:
        return ", or ".join(filter(None, (allowed_values(p) for p in prop.get("anyOf") or prop["oneOf"])))
    if "enum" in prop:
        return ", ".join(repr(v) for v in prop["enum"])
    if "const" in prop:
        return repr(prop["const"])
    bounds = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in prop:
            bounds.append(f"{sign} {prop[key]:g}")
    if "pattern" in prop:
        bounds.append(f"matches {prop['pattern']}")
    if prop.get("type") == "array":
        lo, hi = prop.get("minItems"), prop.get("maxItems")
        size = f"{lo} items" if lo is not None and lo == hi else (f"at least {lo} items" if lo else "")
        inner = allowed_values(prop.get("items", {}))
        return ", ".join(filter(None, (size, f"each {inner}" if inner else "")))
    return " and ".join(bounds)
