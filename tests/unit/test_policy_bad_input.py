"""Policy files built to break or silently change a run: each is refused with its path and line,
every problem at once, quickly and in bounded memory; none reaches a traceback."""

from __future__ import annotations

import json
import os
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from mfa_policy.core import policy_file
from mfa_policy.core.policy import parse_policy
from mfa_policy.core.policy_file import MAX_FILE_BYTES, load_policy_file
from mfa_policy.core.schema import policy_schema
from mfa_policy.exceptions import PolicyError

RULE = {"name": "everyone", "match": "all", "factors": {"totp": "preferred"}}
MINIMAL = {"version": 1, "rules": [RULE]}
YAML_HEAD = "version: 1\nrules:\n  - {name: everyone, match: all, factors: {totp: preferred}}\n"


def write(tmp_path: Path, text: str | bytes, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text), "utf-8")
    return path


def refusal(path: Path) -> str:
    with pytest.raises(PolicyError) as exc:
        load_policy_file(path)
    return str(exc.value)


def errors_of(document: object) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        parse_policy(document)
    return [str(issue) for issue in exc.value.issues]


def refused_quickly(path: Path, *, seconds: float = 1.0, megabytes: float = 64) -> str:
    """The refusal, which took under ``seconds`` of CPU (and under ten times that of wall time,
    so a blocking read fails too; CI machines are shared) and allocated under ``megabytes`` at
    its peak (measured in a second run: tracemalloc slows Python code down several times)."""
    cpu, wall = time.process_time(), time.perf_counter()
    message = refusal(path)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    tracemalloc.start()
    try:
        refusal(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cpu < seconds, f"took {cpu:.2f} s of CPU"
    assert wall < 10 * seconds, f"took {wall:.2f} s"
    assert peak < megabytes * 2**20, f"peak {peak / 2**20:.1f} MiB"
    return message


# ---- values that would silently change a run -------------------------------------------------


def test_nan_and_infinity_in_json_are_errors_with_their_paths(tmp_path):
    text = (
        '{"version": 1, "rules": [{"name": "a", "match": "all", "factors": {"totp": "enabled"},'
        ' "rollout": {"percent": NaN}}], "rate_limits": {"user_read": Infinity,'
        ' "user_list": -Infinity, "user_resource_update": 1e999}}'
    )
    message = refusal(write(tmp_path, text, "policy.json"))

    assert "4 errors" in message
    assert "rules[0].rollout.percent: NaN is not allowed; NaN and Infinity are not numbers" in (
        message
    )
    assert "rate_limits.user_read: Infinity is not allowed" in message
    assert "rate_limits.user_list: -Infinity is not allowed" in message
    assert "rate_limits.user_resource_update: Infinity is not allowed" in message


def test_nan_and_infinity_in_yaml_are_errors_with_their_lines(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        rules:
          - name: a
            match: all
            factors: {totp: enabled}
            rollout: {percent: .nan}
        rate_limits:
          user_read: .inf
          user_list: -.Inf
        """,
    )
    message = refusal(path)

    assert "line 6: rules[0].rollout.percent: NaN is not allowed" in message
    assert "line 8: rate_limits.user_read: Infinity is not allowed" in message
    assert "line 9: rate_limits.user_list: -Infinity is not allowed" in message


def test_the_policy_json_the_lambda_reads_refuses_nan_too():
    from mfa_policy.core.policy import policy_from_json

    with pytest.raises(PolicyError, match=r"rate_limits.user_read: NaN is not allowed"):
        policy_from_json(json.dumps({**MINIMAL, "rate_limits": {"user_read": float("nan")}}))


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("rate_limits", "user_read", 0.5, "0.5 is less than 1"),
        ("rate_limits", "user_read", 10_001, "10001 is greater than 10000"),
        ("rate_limits", "user_resource_update", 1e300, "1e+300 is greater than 10000"),
        ("rate_limits", "user_list", 0.000001, "1e-06 is less than 1"),
        ("enrollment", "reprobe_after_days", 366, "366 is greater than 365"),
        ("enrollment", "reprobe_after_days", 10**400, "is greater than 365"),
        ("enrollment", "reprobe_after_days", 0, "0 is less than 1"),
    ],
)
def test_numbers_beyond_the_schemas_bounds_are_errors(section, key, value, message):
    errors = errors_of({**MINIMAL, section: {key: value}})
    assert len(errors) == 1
    assert errors[0].startswith(f"{section}.{key}: ")
    assert message in errors[0]


def test_the_schema_file_states_the_bounds():
    """Editors read the bounds from the shipped schema: they are there, not only in the code."""
    properties = policy_schema()["properties"]
    for name in ("user_read", "user_resource_update", "user_list"):
        limit = properties["rate_limits"]["properties"][name]
        assert (limit["minimum"], limit["maximum"]) == (1, 10_000)
    reprobe = properties["enrollment"]["properties"]["reprobe_after_days"]
    assert (reprobe["minimum"], reprobe["maximum"]) == (1, 365)
    percent = policy_schema()["$defs"]["rule"]["properties"]["rollout"]["properties"]["percent"]
    assert (percent["minimum"], percent["maximum"]) == (0, 100)


def test_rollout_percent_beyond_100_is_an_error():
    doc = {**MINIMAL, "rules": [{**RULE, "rollout": {"percent": 100.5}}]}
    assert errors_of(doc) == ["rules[0].rollout.percent: 100.5 is greater than 100"]


def test_booleans_are_not_numbers_nor_the_version(tmp_path):
    path = write(
        tmp_path,
        """\
        version: true
        rules:
          - {name: a, match: all, factors: {totp: enabled}, rollout: {percent: yes}}
        enrollment: {reprobe_after_days: true}
        rate_limits: {user_list: false}
        """,
    )
    message = refusal(path)

    assert "4 errors" in message
    assert "line 1: version: true is not allowed; must be 1" in message
    assert "rules[0].rollout.percent: true is not a number" in message
    assert "enrollment.reprobe_after_days: true is not an integer" in message
    assert "rate_limits.user_list: false is not a number" in message


def test_keys_that_are_not_strings_are_errors_with_their_lines(tmp_path):
    path = write(
        tmp_path,
        YAML_HEAD + "1: one\nnull: nothing\n? [a, b]\n: list key\n",
    )
    message = refusal(path)

    assert "3 errors" in message
    assert "line 4: 1: key is not a string (quote it)" in message
    assert "line 5: null: key is not a string (quote it)" in message
    assert "(top level): a key is a list; keys must be strings" in message


def test_yaml_dates_are_errors_not_silently_strings_or_crashes(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        rules:
          - name: 2024-01-01
            match: {groups: [2001-12-14t21:59:43.10-05:00]}
            factors: {totp: enabled}
        """,
    )
    message = refusal(path)

    assert "line 3: rules[0].name: 2024-01-01 is a YAML date; quote it if you mean the text" in (
        message
    )
    assert "line 4: rules[0].match.groups[0]: 2001-12-14t21:59:43.10-05:00 is a YAML date" in (
        message
    )


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!python/object/apply:os.system [echo hi]", "!!python/object/apply:os.system"),
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!str admins", "!!str"),
        ("!custom admins", "!custom"),
        ("!!set {a, b}", "!!set"),
    ],
)
def test_yaml_tags_are_errors(tmp_path, value, tag):
    path = write(
        tmp_path,
        f"version: 1\nrules:\n  - name: {value}\n    match: all\n    factors: {{totp: enabled}}\n",
    )
    message = refusal(path)
    assert f"line 3: rules[0].name: YAML tag {tag} is not allowed; write a plain value" in message


def test_lone_surrogates_are_errors_wherever_they_are(tmp_path):
    text = (
        '{"version": 1, "rules": [{"name": "a\\ud800", "match": {"attributes": {"\\udfff": "x"}},'
        ' "factors": {"totp": "enabled"}}], "exclude": {"usernames": ["ok", "\\ud83d"]}}'
    )
    message = refusal(write(tmp_path, text, "policy.json"))

    assert "3 errors" in message
    assert "rules[0].name: contains '\\ud800', a lone surrogate that is not valid Unicode" in (
        message
    )
    assert "rules[0].match.attributes.\\udfff: key contains '\\udfff'" in message
    assert "exclude.usernames[1]: contains '\\ud83d'" in message
    message.encode("utf-8")  # the message itself can be printed


def test_lone_surrogates_from_the_pure_python_yaml_reader_are_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(policy_file, "_Loader", yaml.SafeLoader)
    path = write(tmp_path, YAML_HEAD + 'exclude: {groups: ["\\ud800"]}\n')
    assert "line 4: exclude.groups[0]: contains '\\ud800', a lone surrogate" in refusal(path)


def test_every_kind_of_problem_is_reported_at_once(tmp_path):
    path = write(
        tmp_path,
        """\
        version: true
        rules:
          - name: 2024-01-01
            match: all
            factors: {totp: !!str enabled}
            rollout: {percent: .nan}
        rate_limits: {user_read: 20000}
        7: seven
        """,
    )
    message = refusal(path)

    assert "6 errors" in message
    for expected in (
        "line 1: version: true is not allowed",
        "line 3: rules[0].name: 2024-01-01 is a YAML date",
        "line 5: rules[0].factors.totp: YAML tag !!str is not allowed",
        "line 6: rules[0].rollout.percent: NaN is not allowed",
        "line 7: rate_limits.user_read: 20000 is greater than 10000",
        "line 8: 7: key is not a string",
    ):
        assert expected in message


# ---- files that would hang or exhaust memory -------------------------------------------------


def test_a_file_that_is_not_utf8_says_where(tmp_path):
    path = write(tmp_path, YAML_HEAD.encode() + b"exclude: {usernames: [caf\xe9]}\n")
    message = refused_quickly(path)
    assert "the file is not UTF-8: byte 0xe9 at line 4, column 26; save it as UTF-8" in message


def test_a_utf16_file_is_named_as_such(tmp_path):
    path = write(tmp_path, YAML_HEAD.encode("utf-16"))
    assert "the file is UTF-16, not UTF-8" in refusal(path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf" + json.dumps(MINIMAL).encode(), "policy.json")
    assert load_policy_file(path).rules[0].name == "everyone"


def test_an_alias_bomb_is_refused_quickly_in_bounded_memory(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level, previous in zip("bcdefghi", "abcdefgh", strict=True):
        lines.append(f"{level}: &{level} [{', '.join([f'*{previous}'] * 9)}]")
    path = write(tmp_path, YAML_HEAD + "\n".join(lines) + "\n")

    message = refused_quickly(path)
    assert "more than 250,000 values (aliases count as the values they repeat)" in message


def test_a_self_referencing_alias_is_refused(tmp_path):
    path = write(tmp_path, "version: 1\nrules: &rules\n  - name: a\n    match: *rules\n")
    message = refused_quickly(path)
    assert "line 4: (top level): alias *rules refers to a value that contains it" in message


def test_small_aliases_still_work(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        rules:
          - {name: admins, match: {groups: [admins]}, factors: &strict {totp: preferred}}
          - {name: ops, match: {groups: [ops]}, factors: *strict}
        """,
    )
    policy = load_policy_file(path)
    assert policy.rules[0].factors == policy.rules[1].factors


@pytest.mark.parametrize("name", ["policy.yaml", "policy.json"])
@pytest.mark.parametrize("depth", [40, 100_000])
def test_very_deep_nesting_is_refused(tmp_path, name, depth):
    path = write(tmp_path, '{"version": 1, "rules": ' + "[" * depth + "]" * depth + "}", name)
    message = refused_quickly(path)
    assert "line 1: (top level): nested deeper than 32 levels" in message or (
        name.endswith(".json") and "(top level): nested deeper than 32 levels" in message
    )


def test_very_deep_nesting_is_refused_by_the_pure_python_yaml_reader_too(tmp_path, monkeypatch):
    monkeypatch.setattr(policy_file, "_Loader", yaml.SafeLoader)  # no libyaml: our own limit
    path = write(tmp_path, "version: 1\nrules: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert "line 2: (top level): nested deeper than 32 levels" in refusal(path)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    message = refused_quickly(fifo)
    assert "cannot read file: it is a FIFO, not a regular file" in message


def test_dev_zero_is_refused_without_reading_it():
    message = refused_quickly(Path("/dev/zero"))
    assert "cannot read file: it is a device or socket, not a regular file" in message


def test_a_directory_is_refused(tmp_path):
    assert "cannot read file: it is a directory" in refusal(tmp_path)


def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "policy.yaml"
    with open(path, "wb") as f:
        f.write(YAML_HEAD.encode())
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: large to stat, no cost to make
    message = refused_quickly(path, megabytes=4)
    assert "the file is larger than 8 MiB" in message


def test_a_number_with_thousands_of_digits_is_an_error_not_a_crash(tmp_path):
    yaml_path = write(tmp_path, YAML_HEAD + f"enrollment: {{reprobe_after_days: {'9' * 5000}}}\n")
    expected = "line 4: enrollment.reprobe_after_days: 99999999999999999999... is too long a number"
    assert expected in refusal(yaml_path)
    json_path = write(tmp_path, '{"version": 1, "rules": [], "x": ' + "9" * 5000 + "}", "p.json")
    assert "not valid JSON: a number has too many digits" in refusal(json_path)


def test_two_yaml_documents_in_one_file_are_refused(tmp_path):
    path = write(tmp_path, YAML_HEAD + "---\n" + YAML_HEAD)
    assert "more than one YAML document" in refusal(path)


def test_100k_excluded_usernames_are_checked_in_linear_time(tmp_path):
    usernames = [f"user-{i:06d}@example.com" for i in range(100_000)]
    document = {**MINIMAL, "exclude": {"usernames": usernames}}

    start = time.process_time()
    assert len(parse_policy(document).exclude_usernames) == 100_000
    errors = errors_of({**MINIMAL, "exclude": {"usernames": [*usernames, usernames[7]]}})
    elapsed = time.process_time() - start

    assert errors == ["exclude.usernames[100000]: 'user-000007@example.com' is listed twice"]
    assert elapsed < 10, f"took {elapsed:.1f} s of CPU"  # quadratic: hours


def test_a_100k_username_yaml_file_loads(tmp_path):
    body = "".join(f"    - user-{i:06d}\n" for i in range(100_000))
    path = write(tmp_path, YAML_HEAD + "exclude:\n  usernames:\n" + body)
    start = time.process_time()
    assert len(load_policy_file(path).exclude_usernames) == 100_000
    assert time.process_time() - start < 20


def test_a_problem_with_a_key_does_not_hide_the_other_errors_of_its_mapping(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        !!str colour: blue
        rules:
          - {name: a, match: all, factors: {totp: prefered}}
          - {name: b, match: all, factors: {sms: enabled}, name: c}
        rate_limits: {user_read: 0}
        """,
    )
    message = refusal(path)

    assert "line 2: colour: YAML tag !!str is not allowed" in message
    assert "colour: unknown key" in message
    assert "rules[0].factors.totp: 'prefered' is not one of" in message
    assert "line 5: rules[1].name: key appears twice" in message
    assert "rate_limits.user_read: 0 is less than 1" in message


def test_yaml_merge_keys_work_and_the_mappings_own_keys_win(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        rules:
          - &base {name: a, match: all, factors: {sms: enabled}}
          - <<: *base
            name: b
            factors: {totp: enabled}
          - <<: [{name: c, rollout: {percent: 10}}, *base]
        """,
    )
    rules = load_policy_file(path).rules
    assert [r.name for r in rules] == ["a", "b", "c"]
    assert [r.rollout_percent for r in rules] == [None, None, 10]
    assert {f.value for f in rules[1].factors} == {"totp"}


def test_a_merge_of_something_that_is_not_a_mapping_is_an_error(tmp_path):
    path = write(tmp_path, "version: 1\nrules:\n  - <<: 5\n    name: a\n")
    assert "rules[0]: << must be followed by a mapping or a list of them" in refusal(path)


@pytest.mark.parametrize("name", ["policy.yaml", "policy.json"])
def test_a_file_of_too_many_values_is_refused(tmp_path, name):
    names = ",".join(['"u"'] * (policy_file.MAX_VALUES + 1))
    path = write(
        tmp_path, '{"version": 1, "rules": [], "exclude": {"usernames": [' + names + "]}}", name
    )
    start = time.process_time()
    message = refusal(path)
    assert time.process_time() - start < 20  # linear: a few seconds of CPU
    assert "the document holds more than 250,000 values" in message
