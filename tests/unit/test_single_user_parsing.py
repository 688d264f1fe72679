"""set-user-mfa-preference's input parsing, request resolution and safety checks (pure)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mfa_policy.cli.aws_cli_input import (
    LEGACY_OFF_NOTE,
    LEGACY_SMS_NOTE,
    build_input,
    input_skeleton,
    load_cli_input,
    output_skeleton,
    parse_settings,
    parse_shorthand,
    render_skeleton,
    translate_mfa_options,
)
from mfa_policy.core.engine import apply_request
from mfa_policy.core.model import (
    Factor,
    FactorWrite,
    MfaRead,
    MfaRequest,
    MfaState,
    PoolMfaConfig,
    User,
)
from mfa_policy.core.policy import Match
from mfa_policy.core.preference_change import (
    FactorInput,
    effective_request,
    last_factor_removed,
    missing_attributes,
    more_than_one_preferred,
    plan_change,
    pool_problems,
    preferred_but_disabled,
    resolve_request,
    static_problems,
)
from mfa_policy.core.report import mask_email, mask_identifier, mask_phone
from mfa_policy.exceptions import InputError
from mfa_policy.run.single_user import Target, region_hint

TOTP, SMS, EMAIL = Factor.TOTP, Factor.SMS, Factor.EMAIL
PHONE = {"phone_number": "+15550100123"}
BOTH = {"phone_number": "+15550100123", "email": "ana@example.com"}


def state(*enabled, preferred=None):
    return MfaState(frozenset(enabled), preferred)


def request(**blocks):
    return MfaRequest({Factor(k): FactorWrite(*v) for k, v in blocks.items()})


def read(mfa, attributes=PHONE, **kw):
    return MfaRead(mfa, attributes, **kw)


def token(claims):
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{payload}.sig"


def admin_input(**command_line):
    return build_input(
        command_line={"UserPoolId": "us-east-1_abc", "Username": "ana", **command_line}
    )


# ---- shorthand ----------------------------------------------------------------------------


def test_shorthand_pairs():
    assert parse_shorthand("Enabled=true,PreferredMfa=false", what="x") == {
        "Enabled": "true",
        "PreferredMfa": "false",
    }


def test_shorthand_double_quoted_values():
    assert parse_shorthand('DeliveryMedium="SMS",AttributeName="phone_number"', what="x") == {
        "DeliveryMedium": "SMS",
        "AttributeName": "phone_number",
    }


def test_shorthand_single_quoted_value_may_hold_a_comma():
    assert parse_shorthand("A='x,y',B=z", what="x") == {"A": "x,y", "B": "z"}


def test_shorthand_tolerates_spaces():
    assert parse_shorthand(" Enabled = true , PreferredMfa=false ", what="x") == {
        "Enabled": "true",
        "PreferredMfa": "false",
    }


def test_shorthand_without_equals_is_an_error():
    with pytest.raises(InputError, match="expected Key=value"):
        parse_shorthand("Enabled", what="--sms-mfa-settings")


def test_shorthand_with_a_key_twice_is_an_error():
    with pytest.raises(InputError, match="Enabled is given twice"):
        parse_shorthand("Enabled=true,Enabled=false", what="x")


def test_shorthand_unterminated_quote_is_an_error():
    with pytest.raises(InputError, match="unterminated"):
        parse_shorthand('A="x', what="x")


# ---- settings values ----------------------------------------------------------------------


def test_settings_shorthand():
    assert parse_settings("Enabled=true,PreferredMfa=false", what="x") == FactorInput(True, False)


def test_settings_shorthand_booleans_ignore_case():
    assert parse_settings("Enabled=True,PreferredMfa=FALSE", what="x") == FactorInput(True, False)


def test_settings_json():
    assert parse_settings('{"Enabled": true, "PreferredMfa": true}', what="x") == FactorInput(
        True, True
    )


def test_settings_member_left_out_is_none():
    assert parse_settings("Enabled=true", what="x") == FactorInput(True, None)


def test_settings_json_string_boolean_is_an_error():
    with pytest.raises(InputError, match="expected true or false"):
        parse_settings('{"Enabled": "true"}', what="x")


def test_settings_shorthand_non_boolean_is_an_error():
    with pytest.raises(InputError, match="expected true or false, got 'yes'"):
        parse_settings("Enabled=yes", what="x")


def test_settings_unknown_member_is_an_error():
    with pytest.raises(InputError, match='unknown parameter "Preferred"'):
        parse_settings("Enabled=true,Preferred=true", what="x")


def test_settings_bad_json_is_an_error():
    with pytest.raises(InputError, match="not valid JSON"):
        parse_settings('{"Enabled": tru}', what="x")


def test_settings_json_that_is_not_an_object_is_an_error():
    with pytest.raises(InputError, match="expected a structure"):
        parse_settings("[true]", what="x")


def test_settings_from_a_file_url(tmp_path):
    (tmp_path / "s.json").write_text('{"Enabled": false}')
    assert parse_settings(f"file://{tmp_path}/s.json", what="x") == FactorInput(False, None)


def test_settings_from_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        parse_settings(f"file://{tmp_path}/missing.json", what="x")


# ---- the legacy --mfa-options -------------------------------------------------------------


def test_legacy_sms_option_is_sms_enabled():
    assert translate_mfa_options(['DeliveryMedium="SMS",AttributeName="phone_number"']) == (
        FactorInput(True, None),
        LEGACY_SMS_NOTE,
    )


def test_legacy_note_is_one_line_saying_what_it_meant():
    assert "\n" not in LEGACY_SMS_NOTE
    assert "legacy SetUserSettings switch for SMS MFA" in LEGACY_SMS_NOTE
    assert "--sms-mfa-settings Enabled=true" in LEGACY_SMS_NOTE


def test_legacy_sms_option_in_json():
    block, _ = translate_mfa_options(
        ['[{"DeliveryMedium": "SMS", "AttributeName": "phone_number"}]']
    )
    assert block == FactorInput(True, None)


def test_legacy_empty_list_is_sms_off():
    assert translate_mfa_options(["[]"]) == (FactorInput(False, None), LEGACY_OFF_NOTE)


def test_legacy_email_medium_is_an_error():
    with pytest.raises(InputError, match="only ever switched SMS MFA on"):
        translate_mfa_options(["DeliveryMedium=EMAIL"])


def test_legacy_other_attribute_is_an_error():
    with pytest.raises(InputError, match="only valid value is phone_number"):
        translate_mfa_options(["DeliveryMedium=SMS,AttributeName=email"])


# ---- merging the command line and --cli-input-json ----------------------------------------


def test_cli_input_json_inline():
    assert load_cli_input('{"AccessToken": "t"}', yaml_format=False) == {"AccessToken": "t"}


def test_cli_input_yaml_inline():
    assert load_cli_input("Username: ana\n", yaml_format=True) == {"Username": "ana"}


@pytest.mark.parametrize(
    "document",
    [
        "AccessToken: eyJraWQiOiJzZWNyZXQ.eyJzdWIiOiJzZWNyZXQ.c2lnbmF0dXJl\n  Username: [ana\n",
        "AccessToken: eyJraWQiOiJzZWNyZXQ.eyJzdWIiOiJzZWNyZXQ.c2lnbmF0dXJl: x: y\n",
        "{AccessToken: eyJraWQiOiJzZWNyZXQ.eyJzdWIiOiJzZWNyZXQ.c2lnbmF0dXJl\n",
    ],
)
def test_malformed_cli_input_yaml_never_echoes_the_token(document):
    with pytest.raises(InputError, match=r"--cli-input-yaml: not valid YAML: .*line \d") as caught:
        load_cli_input(document, yaml_format=True)
    message = str(caught.value)
    for fragment in ("eyJ", "c2lnbmF0dXJl", "ZWNyZXQ"):
        assert fragment not in message


def test_cli_input_that_is_not_an_object_is_an_error():
    with pytest.raises(InputError, match="expected an object"):
        load_cli_input("[1]", yaml_format=False)


def test_command_line_overrides_the_file_parameter_by_parameter():
    inp = build_input(
        command_line={"SMSMfaSettings": "Enabled=false", "Username": "bob"},
        cli_input={
            "UserPoolId": "us-east-1_abc",
            "Username": "ana",
            "SMSMfaSettings": {"Enabled": True, "PreferredMfa": True},
            "SoftwareTokenMfaSettings": {"Enabled": True},
        },
    )
    assert inp.username == "bob"
    assert inp.user_pool_id == "us-east-1_abc"
    assert inp.settings == {SMS: FactorInput(False, None), TOTP: FactorInput(True, None)}


def test_legacy_option_on_the_command_line_overrides_sms_settings_in_the_file():
    inp = build_input(
        command_line={"MFAOptions": ["DeliveryMedium=SMS"], "AccessToken": "t"},
        cli_input={"SMSMfaSettings": {"Enabled": False}},
    )
    assert inp.settings == {SMS: FactorInput(True, None)}
    assert inp.notes == (LEGACY_SMS_NOTE,)


def test_empty_strings_in_the_file_count_as_absent():
    inp = build_input(command_line={"AccessToken": "t"}, cli_input=input_skeleton(admin=False))
    assert inp.access_token == "t"


def test_unknown_key_in_the_file_is_an_error():
    with pytest.raises(InputError, match='unknown parameter "SmsMfaSettings"'):
        build_input(command_line={"AccessToken": "t"}, cli_input={"SmsMfaSettings": {}})


def test_access_token_in_the_admin_commands_file_is_an_error():
    with pytest.raises(InputError, match='unknown parameter "AccessToken"'):
        build_input(command_line={}, cli_input={"AccessToken": "t"}, admin_command=True)


def test_webauthn_settings_take_enabled_only():
    parsed = build_input(
        command_line={"AccessToken": "t"}, cli_input={"WebAuthnMfaSettings": {"Enabled": True}}
    )
    assert parsed.settings_to_cognito() == {"WebAuthnMfaSettings": {"Enabled": True}}
    with pytest.raises(InputError, match='unknown parameter "PreferredMfa"'):
        build_input(
            command_line={
                "AccessToken": "t",
                "WebAuthnMfaSettings": "Enabled=true,PreferredMfa=true",
            }
        )


def test_token_and_admin_identity_together_is_an_error():
    with pytest.raises(InputError, match="not both"):
        build_input(command_line={"AccessToken": "t", "Username": "ana"})


def test_no_identity_is_an_error():
    with pytest.raises(InputError, match="--access-token with the user's own access token"):
        build_input(command_line={"SMSMfaSettings": "Enabled=true"})


def test_token_file_contents_are_stripped(tmp_path):
    (tmp_path / "token").write_text("abc.def.ghi\n")
    inp = build_input(command_line={"AccessToken": f"file://{tmp_path}/token"})
    assert inp.access_token == "abc.def.ghi"


# ---- skeletons ----------------------------------------------------------------------------


def test_input_skeleton_parses_back_to_a_valid_request():
    inp = build_input(command_line={"AccessToken": "t"}, cli_input=input_skeleton(admin=False))
    assert static_problems(inp.settings) == []
    assert inp.settings == {
        SMS: FactorInput(True, False),
        TOTP: FactorInput(True, True),
        EMAIL: FactorInput(False, False),
    }


def test_yaml_skeleton_is_the_same_document():
    skeleton = input_skeleton(admin=True)
    text = render_skeleton(skeleton, yaml_format=True)
    assert load_cli_input(text, yaml_format=True) == skeleton


def test_output_skeleton_predicts_from_no_mfa():
    inp = admin_input(SoftwareTokenMfaSettings="Enabled=true,PreferredMfa=true")
    assert output_skeleton(inp) == {
        "before": {"enabled": [], "preferred": None},
        "after": {"enabled": ["totp"], "preferred": "totp"},
        "request": {"SoftwareTokenMfaSettings": {"Enabled": True, "PreferredMfa": True}},
        "dry_run": False,
    }


# ---- resolving members left out -----------------------------------------------------------


def test_enabled_left_out_keeps_the_factor_as_it_is():
    resolved = resolve_request({SMS: FactorInput(None, True)}, state(SMS))
    assert resolved.blocks == {SMS: FactorWrite(True, True)}


def test_preferred_left_out_keeps_the_current_preference():
    resolved = resolve_request({SMS: FactorInput(True, None)}, state(SMS, preferred=SMS))
    assert resolved.blocks == {SMS: FactorWrite(True, True)}


def test_preferred_left_out_yields_to_another_blocks_preference():
    resolved = resolve_request(
        {SMS: FactorInput(True, None), TOTP: FactorInput(True, True)}, state(SMS, preferred=SMS)
    )
    assert resolved.blocks == {SMS: FactorWrite(True, False), TOTP: FactorWrite(True, True)}


def test_preferred_left_out_on_a_factor_turned_off_is_not_preferred():
    resolved = resolve_request({SMS: FactorInput(False, None)}, state(SMS, preferred=SMS))
    assert resolved.blocks == {SMS: FactorWrite(False, False)}


def test_effective_request_drops_blocks_that_change_nothing():
    before = state(SMS, preferred=SMS)
    full = request(sms=(True, True), totp=(True, False))
    assert effective_request(full, before).blocks == {TOTP: FactorWrite(True, False)}


_writes = st.builds(FactorWrite, st.booleans(), st.booleans())
_states = st.builds(
    lambda enabled, pick: MfaState(
        frozenset(enabled), sorted(enabled)[pick % len(enabled)] if enabled and pick >= 0 else None
    ),
    st.sets(st.sampled_from(list(Factor))),
    st.integers(-1, 2),
)


@given(
    before=_states,
    blocks=st.dictionaries(st.sampled_from(list(Factor)), _writes).filter(
        lambda b: sum(w.preferred for w in b.values()) <= 1
    ),
)
def test_effective_request_has_the_same_effect(before, blocks):
    full = MfaRequest(blocks)
    assert apply_request(before, effective_request(full, before)) == apply_request(before, full)


# ---- safety checks ------------------------------------------------------------------------


def test_two_preferred_factors():
    message = more_than_one_preferred(request(totp=(True, True), sms=(True, True)))
    assert message is not None and "totp and sms" in message


def test_one_preferred_factor_is_fine():
    assert more_than_one_preferred(request(totp=(True, True), sms=(True, False))) is None


def test_preferred_while_disabled():
    assert preferred_but_disabled(request(sms=(False, True))) == [
        "SMSMfaSettings: PreferredMfa=true needs Enabled=true (Cognito rejects a preferred "
        "factor that is off)"
    ]


def test_static_problems_ignore_members_left_out():
    assert static_problems({SMS: FactorInput(None, True)}) == []


def test_static_problems_catch_explicit_preferred_while_disabled():
    assert len(static_problems({SMS: FactorInput(False, True)})) == 1


def test_sms_without_a_phone_number():
    (problem,) = missing_attributes(request(sms=(True, False)), {"email": "a@example.com"})
    assert "no phone_number attribute" in problem


def test_email_without_an_email():
    (problem,) = missing_attributes(request(email=(True, True)), PHONE)
    assert "no email attribute" in problem


def test_totp_needs_no_attribute():
    assert missing_attributes(request(totp=(True, True)), {}) == []


def test_email_block_on_a_pool_without_email_mfa():
    (problem,) = pool_problems(
        request(email=(True, False)), PoolMfaConfig("OPTIONAL", frozenset({SMS, TOTP})), "p"
    )
    assert "no email MFA configured" in problem


def test_turning_a_factor_off_on_a_pool_that_requires_mfa():
    (problem,) = pool_problems(
        request(sms=(False, False)), PoolMfaConfig("ON", frozenset({SMS, TOTP})), "p"
    )
    assert "requires MFA (ON)" in problem


def test_changing_the_preference_on_a_pool_that_requires_mfa_is_fine():
    config = PoolMfaConfig("ON", frozenset({SMS, TOTP}))
    assert pool_problems(request(totp=(True, True)), config, "p") == []


def test_last_factor_removed():
    message = last_factor_removed(state(SMS, preferred=SMS), state())
    assert message is not None and "--force" in message


def test_removing_one_of_two_factors_is_fine():
    assert last_factor_removed(state(SMS, TOTP), state(TOTP)) is None


def test_no_factor_before_is_not_a_last_factor_removal():
    assert last_factor_removed(state(), state()) is None


# ---- the plan -----------------------------------------------------------------------------


def test_plan_prefer_totp_and_turn_sms_off():
    plan = plan_change(
        {TOTP: FactorInput(True, True), SMS: FactorInput(False, False)},
        read(state(SMS, TOTP, preferred=SMS)),
    )
    assert plan.after == state(TOTP, preferred=TOTP)
    assert plan.problems == () and plan.refusal is None


def test_plan_refuses_the_last_factor():
    plan = plan_change({SMS: FactorInput(False, False)}, read(state(SMS, preferred=SMS)))
    assert plan.refusal is not None


def test_plan_lists_every_problem():
    plan = plan_change(
        {SMS: FactorInput(True, False), EMAIL: FactorInput(True, True)},
        read(state(), attributes={}),
        PoolMfaConfig("OPTIONAL", frozenset({SMS, TOTP})),
        "p",
    )
    assert len(plan.problems) == 3


def test_plan_notes_a_totp_probe():
    plan = plan_change({TOTP: FactorInput(True, True)}, read(state()))
    assert plan.notes and "verified an authenticator app" in plan.notes[0]


def test_plan_does_not_check_attributes_of_blocks_it_drops():
    plan = plan_change({SMS: FactorInput(False, False)}, read(state(), attributes={}))
    assert plan.problems == () and not plan.changes and plan.dropped == (SMS,)


def test_plan_warns_about_a_federated_user():
    plan = plan_change({SMS: FactorInput(True, None)}, read(state(), status="EXTERNAL_PROVIDER"))
    assert any("federated" in w for w in plan.warnings)


# ---- masking, tokens, regions -------------------------------------------------------------


def test_mask_phone():
    assert mask_phone("+15550100123") == "+1******0123"


def test_mask_short_phone_entirely():
    assert mask_phone("12345") == "*****"


def test_mask_email():
    assert mask_email("alice@example.com") == "a***@example.com"


def test_mask_identifier_leaves_plain_usernames():
    assert mask_identifier("ana") == "ana"
    assert mask_identifier("diego@example.com") == "d***@example.com"


def test_region_from_a_pool_id():
    assert region_hint("us-west-2_aaaaaaaaa", None) == "us-west-2"


def test_region_from_an_access_tokens_issuer():
    tok = token({"iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc"})
    assert region_hint(None, tok) == "eu-west-1"


def test_target_scrubs_the_token_from_messages():
    target = Target(access_token="abc.def.ghi")
    assert target.scrub("bad token abc.def.ghi") == "bad token <access token>"


# ---- why a rule matches -------------------------------------------------------------------


def user(**kw):
    return User(username="ana", sub="s", attributes=BOTH, **kw)


def match_reasons(match, user):
    why: list[str] = []
    return match.matches(user, why), why


@given(
    groups=st.frozensets(st.sampled_from(["admins", "ops", "staff"]), max_size=2),
    usernames=st.frozensets(st.sampled_from(["ana", "bob"]), max_size=2),
    attributes=st.dictionaries(
        st.sampled_from(["email", "custom:team"]), st.sampled_from(["x@example.com", "red"])
    ),
    statuses=st.frozensets(st.sampled_from(["CONFIRMED", "UNCONFIRMED"]), max_size=2),
    everyone=st.booleans(),
    user_groups=st.frozensets(st.sampled_from(["admins", "ops", "staff"])),
    username=st.sampled_from(["ana", "bob", "eve"]),
    user_attributes=st.dictionaries(
        st.sampled_from(["email", "custom:team"]), st.sampled_from(["x@example.com", "red"])
    ),
    status=st.sampled_from(["CONFIRMED", "UNCONFIRMED"]),
)
def test_the_explanation_and_the_engine_never_disagree(
    groups,
    usernames,
    attributes,
    statuses,
    everyone,
    user_groups,
    username,
    user_attributes,
    status,
):
    match = Match(everyone, groups, usernames, attributes, statuses)
    someone = User(
        username=username, sub="s", status=status, attributes=user_attributes, groups=user_groups
    )
    matched, why = match_reasons(match, someone)
    assert matched == match.matches(someone)
    conditions = everyone or groups or usernames or attributes or statuses
    assert bool(why) == bool(conditions)  # every condition's verdict is explained


def test_match_all():
    assert match_reasons(Match(everyone=True), user()) == (True, ["match: all"])


def test_match_by_group():
    admin = user(groups=frozenset({"admins"}))
    assert match_reasons(Match(groups=frozenset({"admins"})), admin) == (
        True,
        ["member of group admins"],
    )


def test_no_match_by_group():
    assert match_reasons(Match(groups=frozenset({"admins", "ops"})), user()) == (
        False,
        ["not a member of any of groups admins, ops"],
    )


def test_attribute_values_are_masked_in_reasons():
    ok, reasons = match_reasons(Match(attributes={"email": "bob@example.com"}), user())
    assert not ok
    assert reasons == ["email is a***@example.com, not b***@example.com"]
