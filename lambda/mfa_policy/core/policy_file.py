"""Read a policy file (YAML or JSON) and validate it, with line numbers for YAML.

Used by the CLI and by the construct at synth time; the Lambda never reads files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mfa_policy.core.policy import Policy, parse_policy
from mfa_policy.core.schema import Issue
from mfa_policy.exceptions import PolicyError

Lines = dict[tuple[str | int, ...], int]


def load_policy_file(path: str | Path) -> Policy:
    """Parse and validate ``path``; raise PolicyError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise PolicyError(
            [Issue((), f"cannot read file: {exc.strerror or exc}")], source=str(path)
        ) from None
    document, lines = _decode(text, path)
    return parse_policy(document, source=str(path), lines=lines)


def _decode(text: str, path: Path) -> tuple[Any, Lines]:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text, object_pairs_hook=_reject_duplicate_json_keys), {}
        except json.JSONDecodeError as exc:
            raise PolicyError(
                [Issue((), f"not valid JSON: {exc.msg}")], source=str(path), lines={(): exc.lineno}
            ) from None
        except _DuplicateKeyError as exc:
            raise PolicyError([Issue((), str(exc))], source=str(path)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(
            [Issue((), f"not valid YAML: {problem}")],
            source=str(path),
            lines={(): mark.line + 1} if mark else {},
        ) from None
    if node is None:
        raise PolicyError([Issue((), "the file is empty")], source=str(path))
    lines: Lines = {}
    duplicates: list[Issue] = []
    _index_lines(node, (), lines, duplicates)
    if duplicates:
        raise PolicyError(duplicates, source=str(path), lines=lines)
    return yaml.safe_load(text), lines


def _index_lines(
    node: yaml.Node, path: tuple[str | int, ...], lines: Lines, duplicates: list[Issue]
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                duplicates.append(Issue((*path, key), "key appears twice"))
                lines[(*path, key)] = key_node.start_mark.line + 1
                continue
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*path, index), lines, duplicates)


class _DuplicateKeyError(ValueError):
    pass


def _reject_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out
