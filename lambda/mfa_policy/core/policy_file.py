"""Read a policy file (YAML or JSON) and validate it, with line numbers for YAML.

Used by the CLI and by the construct at synth time; the Lambda never reads files.

A policy file is small, so anything that is not is refused before it costs time or memory: a
file that is not a regular file (a FIFO, a device such as /dev/zero) is never read, a file
over MAX_FILE_BYTES is never read past the limit, and YAML is read event by event (no
recursion), so nesting deeper than MAX_DEPTH or aliases expanding beyond MAX_VALUES (an
"alias bomb") stop the reader at once. YAML features that would silently change a value are
errors with their line: explicit tags (``!!python/...``, ``!!binary``, ``!!set``), dates
(``2024-01-01`` is a date to YAML, not a string), keys that are not strings, and aliases that
refer to the value they are inside.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mfa_policy.core.policy import Policy, parse_policy
from mfa_policy.core.schema import Issue, format_path
from mfa_policy.exceptions import PolicyError

#: A policy of 100,000 excluded usernames is about 4 MiB of YAML; twice that is plenty.
MAX_FILE_BYTES = 8 * 1024 * 1024
#: Values in the document, counting each alias as the values it stands for: room for 100,000
#: excluded usernames and more, while a file of flat values is refused in seconds.
MAX_VALUES = 250_000
#: Mappings and lists inside each other; the policy language itself needs 5.
MAX_DEPTH = 32

Lines = dict[tuple[str | int, ...], int]
DocPath = tuple[str | int, ...]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TYPES = frozenset(f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float"))


def load_policy_file(path: str | Path) -> Policy:
    """Parse and validate ``path``; raise PolicyError listing every problem."""
    path = Path(path)
    source = str(path)
    data = _read_bounded(path, source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError([Issue((), _not_utf8(data, exc))], source=source) from None
    lines: Lines = {}
    found: list[Issue] = []
    replaced: set[DocPath] = set()
    if path.suffix.lower() == ".json":
        document = _decode_json(text, source)
    else:
        document, lines, found, replaced = _decode_yaml(text, source)
    return parse_policy(document, source=source, lines=lines, found=found, replaced=replaced)


def _read_bounded(path: Path, source: str) -> bytes:
    """The file's bytes, if it is a regular file of at most MAX_FILE_BYTES."""

    def refuse(message: str) -> PolicyError:
        return PolicyError([Issue((), message)], source=source)

    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer that may never come.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise refuse(f"cannot read file: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise refuse("cannot read file: it is a directory")
        if not stat.S_ISREG(info.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device or socket"
            raise refuse(f"cannot read file: it is {kind}, not a regular file")
        too_big = refuse(f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        if info.st_size > MAX_FILE_BYTES:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:  # the size can change after fstat; read no further
            chunk = os.read(fd, min(1 << 20, MAX_FILE_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise too_big
        return b"".join(chunks)
    except OSError as exc:
        raise refuse(f"cannot read file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _not_utf8(data: bytes, exc: UnicodeDecodeError) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "the file is UTF-16, not UTF-8; save it as UTF-8"
    line = data[: exc.start].count(b"\n") + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return (
        f"the file is not UTF-8: byte 0x{data[exc.start]:02x} at line {line}, column {column}; "
        "save it as UTF-8"
    )


# ---- JSON ------------------------------------------------------------------------------------


class _DuplicateKeyError(ValueError):
    pass


def _reject_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _decode_json(text: str, source: str) -> Any:
    def refuse(message: str, line: int | None = None) -> PolicyError:
        return PolicyError([Issue((), message)], source=source, lines={(): line} if line else {})

    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicate_json_keys)
    except json.JSONDecodeError as exc:
        raise refuse(f"not valid JSON: {exc.msg}", exc.lineno) from None
    except _DuplicateKeyError as exc:
        raise refuse(str(exc)) from None
    except RecursionError:
        raise refuse(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # an integer of more digits than Python converts
        raise refuse("not valid JSON: a number has too many digits") from None
    # NaN and Infinity parse as floats; the schema check reports them with their path.
    _check_json_shape(document, refuse)
    return document


def _check_json_shape(document: Any, refuse: Any) -> None:
    """Depth and size, without recursion (the validator after this one recurses)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    values = 0
    while stack:
        value, depth = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise refuse(f"the document holds more than {MAX_VALUES:,} values")
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise refuse(f"nested deeper than {MAX_DEPTH} levels")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)


# ---- YAML ------------------------------------------------------------------------------------


@dataclass
class _Open:
    """A mapping or list being read."""

    value: dict[Any, Any] | list[Any]
    path: DocPath
    anchor: str | None
    line: int
    dropped: bool = False
    values: int = 1
    height: int = 1
    key: Any = None
    has_key: bool = False
    seen_keys: set[str] = field(default_factory=set)
    merges: list[tuple[dict[str, Any], int]] = field(default_factory=list)


@dataclass(frozen=True)
class _Anchored:
    value: Any
    values: int
    height: int


class _Fatal(Exception):
    def __init__(self, message: str, line: int) -> None:
        self.message = message
        self.line = line


def _decode_yaml(text: str, source: str) -> tuple[Any, Lines, list[Issue], set[DocPath]]:
    lines: Lines = {}
    found: list[Issue] = []
    reader = _YamlReader(lines, found)
    try:
        document = reader.read(yaml.parse(text, Loader=_Loader))
    except _Fatal as fatal:
        lines = {(): fatal.line}
        raise PolicyError([Issue((), fatal.message)], source=source, lines=lines) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        message = f"not valid YAML: {problem}"
        if problem == "exceeded maximum nesting depth":  # libyaml's own limit, deeper than ours
            message = f"nested deeper than {MAX_DEPTH} levels"
        raise PolicyError(
            [Issue((), message)],
            source=source,
            lines={(): mark.line + 1} if mark else {},
        ) from None
    return document, lines, found, reader.replaced


class _YamlReader:
    """Builds the document from parser events with an explicit stack, checking as it goes."""

    def __init__(self, lines: Lines, found: list[Issue]) -> None:
        self.lines = lines
        self.found = found
        self.replaced: set[DocPath] = set()
        self.anchors: dict[str, _Anchored] = {}
        self.open_anchors: set[str] = set()
        self.values = 0
        self.constructor = yaml.constructor.SafeConstructor()
        self.resolver = yaml.resolver.Resolver()
        self.implicit_first_chars = frozenset(self.resolver.yaml_implicit_resolvers) - {None}

    def read(self, events: Iterator[yaml.Event]) -> Any:
        stack: list[_Open] = []
        result: Any = None
        documents = 0
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _Fatal("the file holds more than one YAML document", _line(event))
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                done = stack.pop()
                self._merge(done)
                if done.anchor is not None:
                    self.open_anchors.discard(done.anchor)
                    self.anchors[done.anchor] = _Anchored(done.value, done.values, done.height)
                value, values, height = done.value, done.values, done.height
                line = done.line
                path, dropped = done.path, done.dropped
            elif isinstance(event, yaml.CollectionStartEvent):
                path, dropped, is_key = self._slot(stack)
                line = _line(event)
                if len(stack) + 1 > MAX_DEPTH:
                    raise _Fatal(f"nested deeper than {MAX_DEPTH} levels", line)
                self._count(1, line)
                self._check_tag(event, path, dropped, is_key)
                if event.anchor is not None:
                    self.open_anchors.add(event.anchor)
                container: dict[Any, Any] | list[Any] = (
                    {} if isinstance(event, yaml.MappingStartEvent) else []
                )
                stack.append(_Open(container, path, event.anchor, line, dropped=dropped))
                continue
            elif isinstance(event, yaml.AliasEvent):
                path, dropped, is_key = self._slot(stack)
                line = _line(event)
                value, values, height = self._alias(event, len(stack), line)
            elif isinstance(event, yaml.ScalarEvent):
                path, dropped, is_key = self._slot(stack)
                line = _line(event)
                if is_key:  # a problem with a key is told at the key
                    path = (*path, event.value)
                    self.lines.setdefault(path, line)
                self._count(1, line)
                value = self._scalar(event, path, dropped, is_key)
                values, height = 1, 0
                if event.anchor is not None:
                    self.anchors[event.anchor] = _Anchored(value, 1, 0)
            else:
                continue
            if not stack:
                result = value
                self.lines.setdefault((), line)
                continue
            top = stack[-1]
            top.values += values
            top.height = max(top.height, height + 1)
            self._place(top, value, line, dropped)
        if documents == 0:
            raise _Fatal("the file is empty", 1)
        return result

    # -- where the next value goes ---------------------------------------------------------

    def _slot(self, stack: list[_Open]) -> tuple[DocPath, bool, bool]:
        """The path of the value the next event starts, whether it is to be dropped, and
        whether it is a key (then the path is its mapping's)."""
        if not stack:
            return (), False, False
        top = stack[-1]
        if isinstance(top.value, list):
            return (*top.path, len(top.value)), top.dropped, False
        if not top.has_key:
            return top.path, top.dropped, True  # _place checks the key
        return (*top.path, top.key), top.dropped or top.key is _DROP, False

    def _place(self, top: _Open, value: Any, line: int, dropped: bool) -> None:
        if isinstance(top.value, list):
            top.value.append(value)
            if not dropped:
                self.lines.setdefault((*top.path, len(top.value) - 1), line)
            return
        if not top.has_key:
            top.has_key = True
            top.key = self._key(top, value, line)
            if top.key is not _DROP and top.key is not _MERGE:
                self.lines[(*top.path, top.key)] = line
            return
        if top.key is _MERGE:
            self._to_merge(top, value, line)
        elif top.key is not _DROP:
            top.value[top.key] = value
        top.has_key = False
        top.key = None

    def _to_merge(self, top: _Open, value: Any, line: int) -> None:
        """``<<: *defaults`` (or a list of them): keys the mapping does not set itself."""
        mappings = value if isinstance(value, list) else [value]
        if not all(isinstance(m, dict) for m in mappings):
            self.found.append(Issue(top.path, "<< must be followed by a mapping or a list of them"))
            return
        top.merges.extend((m, line) for m in mappings)

    def _merge(self, done: _Open) -> None:
        if not done.merges or not isinstance(done.value, dict):
            return
        for mapping, line in done.merges:  # the first mapping listed wins, as in YAML
            for key, item in mapping.items():
                if key not in done.value:
                    done.value[key] = item
                    self.lines[(*done.path, key)] = line

    def _key(self, top: _Open, key: Any, line: int) -> Any:
        if top.dropped or key is _MERGE:
            return key if not top.dropped else _DROP
        if isinstance(key, dict | list):
            shown = "a mapping" if isinstance(key, dict) else "a list"
            self.found.append(Issue(top.path, f"a key is {shown}; keys must be strings"))
            return _DROP
        if not isinstance(key, str):
            path = (*top.path, _plain(key))
            self.lines[path] = line
            self.found.append(Issue(path, "key is not a string (quote it)"))
            return _DROP
        if key in top.seen_keys:
            self.lines[(*top.path, key)] = line
            self.found.append(Issue((*top.path, key), "key appears twice"))
            return _DROP
        top.seen_keys.add(key)
        return key

    # -- values ----------------------------------------------------------------------------

    def _count(self, values: int, line: int) -> None:
        self.values += values
        if self.values > MAX_VALUES:
            raise _Fatal(
                f"the document holds more than {MAX_VALUES:,} values (aliases count as the "
                "values they repeat)",
                line,
            )

    def _alias(self, event: yaml.AliasEvent, depth: int, line: int) -> tuple[Any, int, int]:
        anchor = event.anchor
        if anchor in self.open_anchors:
            raise _Fatal(f"alias *{anchor} refers to a value that contains it", line)
        target = self.anchors.get(anchor or "")
        if target is None:
            raise _Fatal(f"alias *{anchor} has no anchor &{anchor} before it", line)
        if depth + target.height > MAX_DEPTH:
            raise _Fatal(f"nested deeper than {MAX_DEPTH} levels", line)
        self._count(target.values, line)
        return target.value, target.values, target.height

    def _replaced(self, issue: Issue, dropped: bool, is_key: bool) -> None:
        """Report a value the document holds in another form (the text of a date, say);
        the schema's complaints about it are left out."""
        if dropped:
            return
        self.found.append(issue)
        if not is_key:
            self.replaced.add(issue.path)

    def _check_tag(self, event: yaml.NodeEvent, path: DocPath, dropped: bool, is_key: bool) -> None:
        tag = getattr(event, "tag", None)
        if tag is not None:
            message = f"YAML tag {_short_tag(tag)} is not allowed; write a plain value"
            self._replaced(Issue(path, message), dropped, is_key)

    def _scalar(self, event: yaml.ScalarEvent, path: DocPath, dropped: bool, is_key: bool) -> Any:
        if event.tag is not None:
            self._check_tag(event, path, dropped, is_key)
            return event.value
        value = event.value
        if not event.implicit[0] or (value and value[0] not in self.implicit_first_chars):
            tag = _STR  # quoted, or no implicit type starts with this character: a string
        else:
            tag = self.resolver.resolve(yaml.ScalarNode, value, event.implicit)  # type: ignore[no-untyped-call]
        if tag == _STR:
            return event.value
        if tag == _TIMESTAMP:
            message = f"{value} is a YAML date; quote it if you mean the text"
            self._replaced(Issue(path, message), dropped, is_key)
            return value
        if tag == _MERGE_TAG and is_key:
            return _MERGE
        if tag not in _PLAIN_TYPES:  # a value key (=), a << that is not a key
            message = f"{value} is YAML syntax this tool does not read; quote it or write it out"
            self._replaced(Issue(path, message), dropped, is_key)
            return value
        node = yaml.ScalarNode(tag, value, None, None, event.style)
        try:
            return self.constructor.construct_object(node)
        except (ValueError, yaml.YAMLError):  # an integer of more digits than Python converts
            message = f"{value[:20]}... is too long a number"
            self._replaced(Issue(path, message), dropped, is_key)
            return value


class _Drop:
    def __repr__(self) -> str:
        return "<dropped key>"


_DROP: Any = _Drop()
_MERGE: Any = type("_Merge", (), {"__repr__": lambda self: "<<"})()


def _line(event: yaml.Event) -> int:
    return event.start_mark.line + 1 if event.start_mark else 0


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org") else tag


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_VALUES", "format_path", "load_policy_file"]
