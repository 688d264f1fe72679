"""Parsing and validating policy files: every error at once, each with its path and line."""

import json
import textwrap

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mfa_policy.core.model import Factor, FactorSetting
from mfa_policy.core.policy import parse_policy, policy_from_json
from mfa_policy.core.policy_file import load_policy_file
from mfa_policy.core.schema import policy_schema
from mfa_policy.exceptions import PolicyError

MINIMAL = {
    "version": 1,
    "rules": [{"name": "all", "match": "all", "factors": {"totp": "preferred"}}],
}


def write(tmp_path, text, name="policy.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(document):
    with pytest.raises(PolicyError) as exc:
        parse_policy(document)
    return [str(issue) for issue in exc.value.issues]


def test_example_policy_parses_with_every_field(tmp_path):
    policy = load_policy_file("tests/fixtures/policy-example.yaml")

    assert [r.name for r in policy.rules] == ["admins", "everyone"]
    assert policy.rules[0].factors == {
        Factor.TOTP: FactorSetting.PREFERRED,
        Factor.SMS: FactorSetting.DISABLED,
    }
    assert policy.exclude_usernames == {"breakglass-1"}
    assert policy.exclude_groups == {"service-accounts"}
    assert policy.groups_referenced == {"admins", "service-accounts"}
    assert policy.enrollment.reprobe_after_days == 7
    assert policy.rate_limits.user_resource_update == 15


def test_defaults_fill_in_what_the_file_leaves_out():
    policy = parse_policy(MINIMAL)

    assert policy.include_disabled is False
    assert policy.enrollment.probe is True
    assert policy.enrollment.reprobe_after_days == 7
    assert (
        policy.rate_limits.user_read,
        policy.rate_limits.user_resource_update,
        policy.rate_limits.user_list,
    ) == (60, 15, 15)


def test_misspelled_factor_state_names_path_and_allowed_values():
    doc = {
        **MINIMAL,
        "rules": [
            MINIMAL["rules"][0],
            {"name": "b", "match": "all", "factors": {"totp": "prefered"}},
        ],
    }

    assert errors_of(doc) == [
        "rules[1].factors.totp: 'prefered' is not one of preferred, enabled, disabled"
    ]


def test_every_error_is_reported_at_once():
    doc = {
        "version": 2,
        "rules": [
            {"name": "a", "match": "all", "factors": {"totp": "preferred", "sms": "preferred"}},
            {
                "name": "a",
                "match": "all",
                "factors": {"webauthn": "enabled"},
                "rollout": {"percent": 101},
            },
        ],
        "rate_limits": {"user_read": 0, "user_list": -1},
        "colour": "blue",
    }

    assert errors_of(doc) == [
        "version: 2 is not allowed; must be 1",
        "rules[1].factors.webauthn: unknown key; allowed: totp, sms, email, passkey",
        "rules[1].rollout.percent: 101 is greater than 100",
        "rate_limits.user_read: 0 is less than 1",
        "rate_limits.user_list: -1 is less than 1",
        "colour: unknown key; allowed: version, exclude, include_disabled, rules, enrollment, "
        "rate_limits",
        "rules[0].factors: at most one factor may be preferred; totp and sms both are",
        "rules[1].name: duplicate rule name 'a' (also rules[0])",
    ]


def test_empty_rule_list_is_an_error():
    assert errors_of({"version": 1, "rules": []}) == ["rules: must not be empty"]


def test_missing_rules_and_version_are_errors():
    assert errors_of({}) == [
        "(top level): missing required key 'version'",
        "(top level): missing required key 'rules'",
    ]


def test_negative_rollout_percent_is_an_error():
    doc = {**MINIMAL, "rules": [{**MINIMAL["rules"][0], "rollout": {"percent": -1}}]}
    assert errors_of(doc) == ["rules[0].rollout.percent: -1 is less than 0"]


def test_unknown_key_suggests_the_closest_allowed_one():
    doc = {**MINIMAL, "rules": [{"name": "a", "match": "all", "factor": {"totp": "enabled"}}]}

    assert errors_of(doc) == [
        "rules[0]: missing required key 'factors'",
        "rules[0].factor: unknown key; allowed: name, match, factors, rollout; "
        "did you mean 'factors'?",
    ]


def test_match_must_be_all_or_a_mapping():
    doc = {**MINIMAL, "rules": [{**MINIMAL["rules"][0], "match": "everyone"}]}
    assert errors_of(doc) == [
        "rules[0].match: 'everyone' is not allowed; must be 'all' or a mapping"
    ]


def test_match_mapping_is_checked_field_by_field():
    doc = {
        **MINIMAL,
        "rules": [{**MINIMAL["rules"][0], "match": {"status": ["CONFIRMD"], "groups": []}}],
    }
    assert errors_of(doc) == [
        "rules[0].match.status[0]: 'CONFIRMD' is not one of UNCONFIRMED, CONFIRMED, ARCHIVED, "
        "COMPROMISED, UNKNOWN, RESET_REQUIRED, FORCE_CHANGE_PASSWORD, EXTERNAL_PROVIDER",
        "rules[0].match.groups: must not be empty",
    ]


def test_rule_with_no_factors_is_an_error():
    doc = {**MINIMAL, "rules": [{**MINIMAL["rules"][0], "factors": {}}]}
    assert errors_of(doc) == [
        "rules[0].factors: must not be empty (one of totp, sms, email, passkey)"
    ]


def test_booleans_are_not_numbers():
    doc = {**MINIMAL, "rate_limits": {"user_read": True}}
    assert errors_of(doc) == ["rate_limits.user_read: true is not a number"]


def test_document_that_is_not_a_mapping_is_an_error():
    assert errors_of(["version", 1]) == ['(top level): ["version", 1] is not a mapping']


def test_yaml_errors_carry_line_numbers(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        rules:
          - name: admins
            match: {groups: [admins]}
            factors:
              totp: prefered
        """,
    )

    with pytest.raises(PolicyError) as exc:
        load_policy_file(path)

    assert f"{path}: 1 error" in str(exc.value)
    assert "line 6: rules[0].factors.totp: 'prefered' is not one of" in str(exc.value)


def test_yaml_duplicate_key_is_an_error(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        rules: []
        rules:
          - {name: a, match: all, factors: {totp: enabled}}
        """,
    )

    with pytest.raises(PolicyError) as exc:
        load_policy_file(path)

    assert "line 3: rules: key appears twice" in str(exc.value)


def test_malformed_yaml_is_an_error_with_a_line(tmp_path):
    path = write(tmp_path, "version: 1\nrules: [\n  - oops\n")

    with pytest.raises(PolicyError) as exc:
        load_policy_file(path)

    assert "not valid YAML" in str(exc.value)
    assert "line " in str(exc.value)


def test_json_policy_file_is_accepted(tmp_path):
    path = write(tmp_path, json.dumps(MINIMAL), name="policy.json")
    assert load_policy_file(path).rules[0].name == "all"


def test_json_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, '{"version": 1, "version": 1, "rules": []}', name="p.json")
    with pytest.raises(PolicyError, match="key 'version' appears twice"):
        load_policy_file(path)


def test_missing_file_is_a_policy_error(tmp_path):
    with pytest.raises(PolicyError, match="cannot read file"):
        load_policy_file(tmp_path / "nope.yaml")


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(PolicyError, match="the file is empty"):
        load_policy_file(write(tmp_path, ""))


def test_rule_after_match_all_is_a_warning_not_an_error():
    doc = {
        **MINIMAL,
        "rules": [
            MINIMAL["rules"][0],
            {"name": "never", "match": "all", "factors": {"sms": "enabled"}},
        ],
    }
    policy = parse_policy(doc)
    assert policy.warnings == ("rule 'all' matches all users; later rules never match: never",)


def test_rate_limit_above_cognito_quota_is_a_warning():
    policy = parse_policy({**MINIMAL, "rate_limits": {"user_resource_update": 40}})
    assert any("exceeds Cognito's default quota of 25/s" in w for w in policy.warnings)


def test_normalized_json_round_trips_to_an_equal_policy():
    policy = load_policy_file("tests/fixtures/policy-example.yaml")
    assert policy_from_json(policy.to_json()) == policy


def test_hash_ignores_formatting_but_not_meaning(tmp_path):
    a = load_policy_file("tests/fixtures/policy-example.yaml")
    b = load_policy_file(write(tmp_path, json.dumps(a.to_dict(), indent=4), name="p.json"))
    c = parse_policy({**a.to_dict(), "include_disabled": True})
    assert a.hash == b.hash
    assert a.hash != c.hash


# The schema file editors use and our validator agree: anything jsonschema accepts, we accept.
documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 150)
    | st.sampled_from(
        ["all", "preferred", "enabled", "disabled", "prefered", "", "admins", "CONFIRMED"]
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "version",
                    "rules",
                    "name",
                    "match",
                    "factors",
                    "totp",
                    "sms",
                    "groups",
                    "rollout",
                    "percent",
                    "exclude",
                    "usernames",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@given(documents)
def test_our_validator_agrees_with_jsonschema_on_the_shipped_schema(document):
    theirs = jsonschema.Draft202012Validator(policy_schema()).is_valid(document)
    ours = not __import__("mfa_policy.core.schema", fromlist=["validate"]).validate(document)
    assert ours == theirs
