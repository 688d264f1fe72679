"""The policy reader attacked: real policies mutated byte by byte and value by value, run through
`mfa-policy validate` in-process. Whatever the file holds, the answer is exit 0 with one
"valid" line or exit 1 with an "error:" report, never a traceback, never an internal error."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfa_policy.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SEEDS = {
    name: (ROOT / name).read_bytes()
    for name in ("mfa-policy.yaml", "tests/fixtures/policy-example.yaml")
}
SEED_DOCUMENTS = [yaml.safe_load(data) for data in SEEDS.values()]
SEEDS["policy-example.json"] = json.dumps(SEED_DOCUMENTS[1], indent=2).encode()

#: Fragments that mean something to YAML or JSON, or to a decoder, spliced in at random.
TOKENS = [
    b"&a ",
    b"*a",
    b"&b [*a, *a, *a]",
    b"!!python/object:os.system ",
    b"!!binary ",
    b"!tag ",
    b".nan",
    b".inf",
    b"-.inf",
    b"NaN",
    b"Infinity",
    b"1e999",
    b"9" * 5000,
    b"true",
    b"null",
    b"2024-01-01",
    b"12:30:00",
    b"0x1F",
    b"0o17",
    b"~",
    b"{",
    b"}",
    b"[",
    b"]",
    b"[" * 200,
    b"{a: " * 50,
    b": ",
    b"- ",
    b"? ",
    b"---\n",
    b"...\n",
    b"%YAML 1.1\n",
    b"\t",
    b"\n  ",
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"\xc3",
    b"\xed\xa0\x80",
    b'"\\ud800"',
    b'"\\U0010ffff"',
    b"'",
    b'"',
    b"#",
    b"|\n",
    b">-\n",
    b",",
    b"\\",
    b"<<: *a\n",
]

#: Values that have broken, or silently changed, a run: put anywhere in a real policy.
NASTY = st.one_of(
    st.sampled_from(
        [
            float("nan"),
            float("inf"),
            -float("inf"),
            1e308,
            -1,
            0,
            0.5,
            10**30,
            10**400,
            True,
            False,
            None,
            "",
            "\ud800",
            "a\x00b",
            "\u202e",
            "all",
            "preferred",
            "prefered",
            [],
            {},
            [[[[[[]]]]]],
            {"version": 1},
            {1: "x"},
            {None: 1},
        ]
    ),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.text(max_size=4), max_size=4),
)


def validate_exit(data: bytes, suffix: str) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"policy{suffix}"
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["validate", "-c", str(path)])
        return code, out.getvalue(), err.getvalue()


def assert_clean_answer(data: bytes, suffix: str) -> None:
    code, out, err = validate_exit(data, suffix)
    assert code in (0, 1), (code, out, err)
    assert "Traceback" not in out + err
    assert "internal error" not in err, err
    if code == 0:
        assert out.count("\n") == 1 and ": valid (policy " in out, out
    else:
        assert err.startswith("error: "), err
        assert out == ""
    (out + err).encode("utf-8")  # whatever it prints can be printed


# ---- byte-level mutations ---------------------------------------------------------------------


@st.composite
def mutated_bytes(draw: st.DrawFn) -> tuple[bytes, str]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "token", "delete", "repeat", "cut"]))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 40))] * draw(st.integers(2, 5))
        elif kind == "cut":
            del data[at:]
    return bytes(data), Path(name).suffix


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bytes())
def test_byte_mutations_of_real_policies_get_a_clean_answer(case):
    assert_clean_answer(*case)


# ---- structural mutations ---------------------------------------------------------------------


def paths_of(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_of(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths_of(item, (*path, index))


def replaced(document: Any, path: tuple[Any, ...], value: Any, how: str) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        out = dict(document)
        if not rest and how == "delete":
            out.pop(head, None)
        elif not rest and how == "add key":
            out[value if isinstance(value, str | int | float | bool) or value is None else "k"] = 1
        else:
            out[head] = replaced(document[head], rest, value, how)
        return out
    out_list = list(document)
    if not rest and how == "delete":
        del out_list[head]
    else:
        out_list[head] = replaced(document[head], rest, value, how)
    return out_list


@st.composite
def mutated_documents(draw: st.DrawFn) -> tuple[bytes, str]:
    document = draw(st.sampled_from(SEED_DOCUMENTS))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths_of(document))))
        how = draw(st.sampled_from(["replace", "delete", "add key"]))
        document = replaced(document, path, draw(NASTY), how)
    form = draw(st.sampled_from(["yaml", "json"]))
    if form == "json":
        return json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass"), ".json"
    text = yaml.safe_dump(document, allow_unicode=draw(st.booleans()), sort_keys=False)
    return text.encode("utf-8", "surrogatepass"), ".yaml"


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents())
def test_structural_mutations_of_real_policies_get_a_clean_answer(case):
    assert_clean_answer(*case)


def test_the_seeds_themselves_are_valid():
    for name, data in SEEDS.items():
        code, _, err = validate_exit(data, Path(name).suffix)
        assert code == 0, err
