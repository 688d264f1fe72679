"""Checks a document against policy.schema.json, collecting every error with its path.

The JSON Schema file is the single source of truth: editors use it as it is, and this module
interprets the subset of JSON Schema it is written in, so the two cannot disagree. A general
validator (jsonschema) would need compiled dependencies in the Lambda and reports errors in a
shape we would have to translate anyway.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

Path = tuple[str | int, ...]

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


@dataclass(frozen=True)
class Issue:
    """One problem in a policy document, at a path like ``rules[1].factors.totp``."""

    path: Path
    message: str

    @property
    def where(self) -> str:
        return format_path(self.path)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if part.isprintable() else repr(part)[1:-1]
            out += f".{name}" if out else name
    return out or "(top level)"


@cache
def policy_schema() -> Mapping[str, Any]:
    text = resources.files("mfa_policy.core").joinpath("policy.schema.json").read_text("utf-8")
    schema: Mapping[str, Any] = json.loads(text)
    return schema


def validate(document: object, schema: Mapping[str, Any] | None = None) -> list[Issue]:
    """Every way ``document`` breaks the schema, in document order."""
    root = schema if schema is not None else policy_schema()
    return list(_check(document, root, root, ()))


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _resolve(target, root)


def _is_type(value: object, type_name: str) -> bool:
    if type_name == "object":
        return isinstance(value, dict)
    if type_name == "array":
        return isinstance(value, list)
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return _is_number(value)
    raise ValueError(f"schema uses unsupported type {type_name!r}")


def _is_number(value: object) -> bool:
    """A JSON number: never a boolean, and never NaN or Infinity (JSON has neither, and a NaN
    compares false with every bound, so it would pass them all)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int)


def _json_key(value: object) -> object:
    """A hashable stand-in that is equal exactly when JSON Schema calls two values equal:
    ``1 == 1.0``, but ``true != 1`` (Python says otherwise)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_json_key(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((_json_key(k), _json_key(v)) for k, v in value.items()))
    return ("other", id(value))


def _json_equal(a: object, b: object) -> bool:
    return _json_key(a) == _json_key(b)


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value)  # escapes what cannot be printed (a lone surrogate, a NUL)
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return repr(value)


def _unencodable(text: str) -> str | None:
    """Why ``text`` cannot be written to a file or a report, if it cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains {text[exc.start]!r}, a lone surrogate that is not valid Unicode"
    return None


def _one_of_words(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _check(
    value: object, node: Mapping[str, Any], root: Mapping[str, Any], path: Path
) -> Iterator[Issue]:
    node = _resolve(node, root)

    if "anyOf" in node:
        yield from _check_any_of(value, node["anyOf"], root, path)
        return
    if isinstance(value, str) and (problem := _unencodable(value)):
        yield Issue(path, problem)
        return
    if isinstance(value, float) and not math.isfinite(value):
        yield Issue(path, f"{_show(value)} is not allowed; NaN and Infinity are not numbers")
        return
    if "const" in node and not _json_equal(value, node["const"]):
        yield Issue(path, f"{_show(value)} is not allowed; must be {_show(node['const'])}")
        return
    if "enum" in node and not any(_json_equal(value, v) for v in node["enum"]):
        yield Issue(path, f"{_show(value)} is not one of {_one_of_words(node['enum'])}")
        return
    type_name = node.get("type")
    if type_name is not None and not _is_type(value, type_name):
        yield Issue(path, f"{_show(value)} is not {_TYPE_NAMES[type_name]}")
        return

    if isinstance(value, dict):
        yield from _check_object(value, node, root, path)
    elif isinstance(value, list):
        yield from _check_array(value, node, root, path)
    elif isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            yield Issue(path, "must not be empty")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield from _check_number(value, node, path)


def _check_number(value: float, node: Mapping[str, Any], path: Path) -> Iterator[Issue]:
    if "minimum" in node and value < node["minimum"]:
        yield Issue(path, f"{_show(value)} is less than {node['minimum']}")
    if "exclusiveMinimum" in node and value <= node["exclusiveMinimum"]:
        yield Issue(path, f"{_show(value)} must be greater than {node['exclusiveMinimum']}")
    if "maximum" in node and value > node["maximum"]:
        yield Issue(path, f"{_show(value)} is greater than {node['maximum']}")


def _check_object(
    value: dict[Any, Any], node: Mapping[str, Any], root: Mapping[str, Any], path: Path
) -> Iterator[Issue]:
    properties: Mapping[str, Any] = node.get("properties", {})
    additional = node.get("additionalProperties", True)
    for name in node.get("required", []):
        if name not in value:
            yield Issue(path, f"missing required key {name!r}")
    if len(value) < node.get("minProperties", 0):
        allowed = f" (one of {_one_of_words(list(properties))})" if properties else ""
        yield Issue(path, f"must not be empty{allowed}")
    for key, item in value.items():
        if not isinstance(key, str):
            yield Issue(path, f"key {_show(key)} is not a string")
        elif problem := _unencodable(key):
            yield Issue((*path, key), f"key {problem}")
        elif key in properties:
            yield from _check(item, properties[key], root, (*path, key))
        elif additional is False:
            hint = difflib.get_close_matches(key, list(properties), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            yield Issue(
                (*path, key),
                f"unknown key; allowed: {_one_of_words(list(properties))}{suggestion}",
            )
        elif isinstance(additional, dict):
            yield from _check(item, additional, root, (*path, key))


def _check_array(
    value: list[Any], node: Mapping[str, Any], root: Mapping[str, Any], path: Path
) -> Iterator[Issue]:
    if len(value) < node.get("minItems", 0):
        yield Issue(path, "must not be empty")
    if node.get("uniqueItems"):
        seen: set[object] = set()  # a set, so 100,000 excluded usernames take linear time
        for index, item in enumerate(value):
            key = _json_key(item)
            if key in seen:
                yield Issue((*path, index), f"{_show(item)} is listed twice")
            seen.add(key)
    if "items" in node:
        for index, item in enumerate(value):
            yield from _check(item, node["items"], root, (*path, index))


def _check_any_of(
    value: object, branches: list[Mapping[str, Any]], root: Mapping[str, Any], path: Path
) -> Iterator[Issue]:
    results = [list(_check(value, branch, root, path)) for branch in branches]
    if any(not issues for issues in results):
        return
    # Report against the branch whose shape the value has (a mapping is checked as the
    # mapping branch), so the message names the real problem rather than every alternative.
    for branch, issues in zip(branches, results, strict=True):
        resolved = _resolve(branch, root)
        if resolved.get("type") and _is_type(value, resolved["type"]):
            yield from issues
            return
    alternatives = []
    for branch in branches:
        resolved = _resolve(branch, root)
        if "const" in resolved:
            alternatives.append(_show(resolved["const"]))
        else:
            alternatives.append(_TYPE_NAMES[resolved["type"]])
    yield Issue(path, f"{_show(value)} is not allowed; must be {' or '.join(alternatives)}")


def defaults(node_path: Path, schema: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """The schema's ``default`` for each property of the object at ``node_path``."""
    root = schema if schema is not None else policy_schema()
    node = _resolve(root, root)
    for part in node_path:
        node = _resolve(node["properties"][part], root)
    return {
        name: _resolve(prop, root)["default"]
        for name, prop in node.get("properties", {}).items()
        if "default" in _resolve(prop, root)
    }
