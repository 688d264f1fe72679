"""`mfa-policy set-user-mfa-preference` and `get-user-mfa` against the Cognito stand-in.

The CLI runs in-process (`mfa_policy.cli.main`) on command lines written as a shell would see
them; the stand-in enforces the real service's rules (SMS needs a phone number, TOTP a verified
token, one preferred factor, token expiry, ...).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

import pytest
import yaml

from mfa_policy.cli.main import main

PHONE = "+15550100123"
MASKED_PHONE = "+1******0123"
EMAIL = "diego@example.com"
MASKED_EMAIL = "d***@example.com"
POLICY = "tests/fixtures/policy-example.yaml"
WRITES = ("AdminSetUserMFAPreference", "SetUserMFAPreference")

# The examples of the AWS CLI's pages, verbatim (the set-user-mfa-preference page has changed
# over the years; every version's example is here).
EXAMPLE_SET = (
    'aws cognito-idp set-user-mfa-preference --access-token "eyJra12345EXAMPLE" '
    "--software-token-mfa-settings Enabled=true,PreferredMfa=true "
    "--sms-mfa-settings Enabled=false,PreferredMfa=false"
)
EXAMPLE_SET_SMS = (
    "aws cognito-idp set-user-mfa-preference --access-token ACCESS_TOKEN "
    "--sms-mfa-settings Enabled=true,PreferredMfa=true"
)
EXAMPLE_SET_BOTH_PREFERRED = (
    "aws cognito-idp set-user-mfa-preference --access-token ACCESS_TOKEN "
    "--sms-mfa-settings Enabled=true,PreferredMfa=true "
    "--software-mfa-settings Enabled=true,PreferredMfa=true"
)
EXAMPLE_SET_LEGACY = (
    "aws cognito-idp set-user-mfa-preference --access-token ACCESS_TOKEN "
    '--mfa-options DeliveryMedium="SMS",AttributeName="phone_number"'
)
EXAMPLE_ADMIN = (
    "aws cognito-idp admin-set-user-mfa-preference --user-pool-id us-west-2_aaaaaaaaa "
    "--username diego@example.com --sms-mfa-settings Enabled=false,PreferredMfa=false"
)


def as_mfa_policy(example: str, **placeholders: str) -> str:
    """The AWS CLI command line with `mfa-policy` in place of `aws cognito-idp`."""
    command = example.replace("aws cognito-idp ", "", 1)
    for placeholder, value in placeholders.items():
        command = command.replace(placeholder, value)
    return command


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture(autouse=True)
def _dummy_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def run(standin, capsys):
    """`run("set-user-mfa-preference --access-token T ...")`: the CLI on a shell command line."""

    def run(command: str) -> Run:
        standin.reset_counters()  # standin.calls then counts this command's requests
        argv = [*shlex.split(command), "--region", "us-east-1"]
        code = main([*argv, "--endpoint-url", standin.endpoint_url])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


def mfa_of(cognito, pool_id, username):
    user = cognito.admin_get_user(UserPoolId=pool_id, Username=username)
    return set(user.get("UserMFASettingList", [])), user.get("PreferredMfaSetting")


def writes(standin) -> int:
    return sum(standin.calls.get(op, 0) for op in WRITES)


@pytest.fixture
def diego(pool_id, make_user):
    """TOTP and SMS enabled, SMS preferred, phone and email set."""
    return make_user(
        pool_id,
        EMAIL,
        phone=PHONE,
        email=EMAIL,
        sms_enabled=True,
        totp_enabled=True,
        preferred="sms",
    )


@pytest.fixture
def token_of(standin, pool_id):
    def token_of(username: str) -> str:
        return standin.issue_access_token(pool_id, username)

    return token_of


@pytest.fixture
def admin(pool_id):
    """The admin command's prefix for user `ana` of the default pool."""
    return f"admin-set-user-mfa-preference --user-pool-id {pool_id} --username ana"


# ---- every example of the AWS CLI's pages ------------------------------------------------


def test_example_set_user_mfa_preference_prefers_totp_and_turns_sms_off(
    run, cognito, pool_id, make_user, token_of
):
    make_user(pool_id, "ana", phone=PHONE, totp_verified=True, sms_enabled=True, preferred="sms")
    result = run(as_mfa_policy(EXAMPLE_SET, eyJra12345EXAMPLE=token_of("ana")))
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SOFTWARE_TOKEN_MFA"}, "SOFTWARE_TOKEN_MFA")
    assert "before:       enabled sms; preferred sms" in result.out
    assert "after:        enabled totp; preferred totp" in result.out


def test_example_admin_set_user_mfa_preference_turns_sms_off_for_diego(
    run, cognito, pool_id, diego
):
    result = run(as_mfa_policy(EXAMPLE_ADMIN, **{"us-west-2_aaaaaaaaa": pool_id}))
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, EMAIL) == ({"SOFTWARE_TOKEN_MFA"}, None)


def test_example_older_page_prefers_sms(run, cognito, pool_id, make_user, token_of):
    make_user(pool_id, "ana", phone=PHONE)
    result = run(as_mfa_policy(EXAMPLE_SET_SMS, ACCESS_TOKEN=token_of("ana")))
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, "SMS_MFA")


def test_example_legacy_mfa_options_turns_sms_on(run, cognito, pool_id, make_user, token_of):
    make_user(pool_id, "ana", phone=PHONE)
    result = run(as_mfa_policy(EXAMPLE_SET_LEGACY, ACCESS_TOKEN=token_of("ana")))
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, None)


def test_example_legacy_mfa_options_explains_what_it_meant_in_one_line(
    run, pool_id, make_user, token_of
):
    make_user(pool_id, "ana", phone=PHONE)
    result = run(as_mfa_policy(EXAMPLE_SET_LEGACY, ACCESS_TOKEN=token_of("ana")))
    notes = [line for line in result.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert "legacy SetUserSettings switch for SMS MFA" in notes[0]
    assert "--sms-mfa-settings Enabled=true" in notes[0]


def test_example_legacy_mfa_options_with_the_quotes_kept_by_the_shell(
    run, cognito, pool_id, make_user, token_of
):
    make_user(pool_id, "ana", phone=PHONE)
    token = token_of("ana")
    result = run(
        f"set-user-mfa-preference --access-token {token} "
        """--mfa-options 'DeliveryMedium="SMS",AttributeName="phone_number"'"""
    )
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, None)


def test_example_legacy_mfa_options_keeps_sms_preferred(
    run, standin, cognito, pool_id, make_user, token_of
):
    make_user(pool_id, "ana", phone=PHONE, sms_enabled=True, preferred="sms")
    result = run(as_mfa_policy(EXAMPLE_SET_LEGACY, ACCESS_TOKEN=token_of("ana")))
    assert result.code == 0
    assert "no change" in result.out
    assert writes(standin) == 0
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, "SMS_MFA")


def test_example_with_two_preferred_factors_is_refused(run, standin, pool_id, make_user, token_of):
    make_user(pool_id, "ana", phone=PHONE, totp_verified=True)
    result = run(as_mfa_policy(EXAMPLE_SET_BOTH_PREFERRED, ACCESS_TOKEN=token_of("ana")))
    assert result.code == 1
    assert "error: only one factor can be preferred, and this request prefers totp and sms" in (
        result.err
    )
    assert standin.calls == {}


def test_example_placeholder_token_is_rejected_without_echoing_it(run):
    result = run(as_mfa_policy(EXAMPLE_SET))
    assert result.code == 1
    assert "error: the access token was not accepted" in result.err
    assert "eyJra12345EXAMPLE" not in result.text


# ---- input forms --------------------------------------------------------------------------


def test_settings_in_json_syntax(run, cognito, pool_id, make_user, admin):
    make_user(pool_id, "ana", phone=PHONE)
    result = run(f"""{admin} --sms-mfa-settings '{{"Enabled": true, "PreferredMfa": true}}'""")
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, "SMS_MFA")


def test_settings_from_a_file_url(run, cognito, pool_id, make_user, admin, tmp_path):
    make_user(pool_id, "ana", phone=PHONE)
    (tmp_path / "sms.json").write_text('{"Enabled": true, "PreferredMfa": true}')
    result = run(f"{admin} --sms-mfa-settings file://{tmp_path}/sms.json")
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, "SMS_MFA")


def test_access_token_from_a_file_url(run, cognito, pool_id, make_user, token_of, tmp_path):
    make_user(pool_id, "ana", phone=PHONE)
    (tmp_path / "token").write_text(token_of("ana") + "\n")
    result = run(
        f"set-user-mfa-preference --access-token file://{tmp_path}/token "
        "--sms-mfa-settings Enabled=true"
    )
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, None)


def test_cli_input_json_inline(run, cognito, pool_id, make_user, token_of):
    make_user(pool_id, "ana", phone=PHONE)
    document = {"AccessToken": token_of("ana"), "SMSMfaSettings": {"Enabled": True}}
    result = run(f"set-user-mfa-preference --cli-input-json '{json.dumps(document)}'")
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, None)


def test_cli_input_json_from_a_file_url(run, cognito, pool_id, make_user, tmp_path):
    make_user(pool_id, "ana", phone=PHONE)
    document = {
        "UserPoolId": pool_id,
        "Username": "ana",
        "SMSMfaSettings": {"Enabled": True, "PreferredMfa": True},
    }
    (tmp_path / "in.json").write_text(json.dumps(document))
    result = run(f"admin-set-user-mfa-preference --cli-input-json file://{tmp_path}/in.json")
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, "SMS_MFA")


def test_cli_input_yaml_from_a_file_url(run, cognito, pool_id, make_user, tmp_path):
    make_user(pool_id, "ana", phone=PHONE, totp_verified=True)
    (tmp_path / "in.yaml").write_text(
        f"UserPoolId: {pool_id}\nUsername: ana\n"
        "SoftwareTokenMfaSettings:\n  Enabled: true\n  PreferredMfa: true\n"
    )
    result = run(f"admin-set-user-mfa-preference --cli-input-yaml file://{tmp_path}/in.yaml")
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SOFTWARE_TOKEN_MFA"}, "SOFTWARE_TOKEN_MFA")


def test_command_line_overrides_cli_input_json(run, cognito, pool_id, make_user, tmp_path):
    make_user(pool_id, "ana", phone=PHONE, totp_verified=True)
    document = {
        "UserPoolId": pool_id,
        "Username": "nobody",
        "SMSMfaSettings": {"Enabled": True, "PreferredMfa": True},
    }
    (tmp_path / "in.json").write_text(json.dumps(document))
    result = run(
        f"admin-set-user-mfa-preference --cli-input-json file://{tmp_path}/in.json "
        "--username ana --sms-mfa-settings Enabled=true,PreferredMfa=false "
        "--software-token-mfa-settings Enabled=true,PreferredMfa=true"
    )
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == (
        {"SMS_MFA", "SOFTWARE_TOKEN_MFA"},
        "SOFTWARE_TOKEN_MFA",
    )


def test_set_user_mfa_preference_takes_the_admin_form_too(
    run, standin, cognito, pool_id, make_user
):
    make_user(pool_id, "ana", phone=PHONE)
    result = run(
        f"set-user-mfa-preference --user-pool-id {pool_id} --username ana "
        "--sms-mfa-settings Enabled=true"
    )
    assert result.code == 0, result.err
    assert standin.calls.get("AdminSetUserMFAPreference") == 1
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, None)


def test_omitted_preferred_mfa_keeps_the_current_preference(
    run, standin, cognito, pool_id, make_user, admin
):
    make_user(pool_id, "ana", phone=PHONE, sms_enabled=True, preferred="sms")
    result = run(f"{admin} --sms-mfa-settings Enabled=true")
    assert result.code == 0, result.err
    assert writes(standin) == 0
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, "SMS_MFA")


# ---- skeletons ----------------------------------------------------------------------------


def test_skeleton_input_is_the_token_request_and_sends_nothing(run, standin):
    result = run("set-user-mfa-preference --generate-cli-skeleton")
    assert result.code == 0
    assert set(json.loads(result.out)) == {
        "SMSMfaSettings",
        "SoftwareTokenMfaSettings",
        "EmailMfaSettings",
        "AccessToken",
    }
    assert standin.calls == {}


def test_skeleton_input_of_the_admin_command_has_pool_and_username(run):
    skeleton = json.loads(run("admin-set-user-mfa-preference --generate-cli-skeleton input").out)
    assert skeleton["UserPoolId"] == "" and skeleton["Username"] == ""
    assert "AccessToken" not in skeleton


def test_skeleton_round_trips_through_cli_input_json(
    run, cognito, pool_id, make_user, token_of, tmp_path
):
    make_user(pool_id, "ana", phone=PHONE, totp_verified=True, sms_enabled=True, preferred="sms")
    skeleton = json.loads(run("set-user-mfa-preference --generate-cli-skeleton input").out)
    skeleton["AccessToken"] = token_of("ana")
    (tmp_path / "in.json").write_text(json.dumps(skeleton))
    result = run(f"set-user-mfa-preference --cli-input-json file://{tmp_path}/in.json")
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == (
        {"SMS_MFA", "SOFTWARE_TOKEN_MFA"},
        "SOFTWARE_TOKEN_MFA",
    )


def test_skeleton_round_trips_with_the_token_on_the_command_line(
    run, cognito, pool_id, make_user, token_of, tmp_path
):
    make_user(pool_id, "ana", phone=PHONE, totp_verified=True)
    (tmp_path / "in.json").write_text(run("set-user-mfa-preference --generate-cli-skeleton").out)
    result = run(
        f"set-user-mfa-preference --cli-input-json file://{tmp_path}/in.json "
        f"--access-token {token_of('ana')}"
    )
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == (
        {"SMS_MFA", "SOFTWARE_TOKEN_MFA"},
        "SOFTWARE_TOKEN_MFA",
    )


def test_yaml_skeleton_round_trips_through_cli_input_yaml(
    run, cognito, pool_id, make_user, tmp_path
):
    make_user(pool_id, "ana", phone=PHONE, totp_verified=True)
    text = run("admin-set-user-mfa-preference --generate-cli-skeleton yaml-input").out
    skeleton = yaml.safe_load(text)
    skeleton.update(UserPoolId=pool_id, Username="ana")
    (tmp_path / "in.yaml").write_text(yaml.safe_dump(skeleton))
    result = run(f"admin-set-user-mfa-preference --cli-input-yaml file://{tmp_path}/in.yaml")
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool_id, "ana") == (
        {"SMS_MFA", "SOFTWARE_TOKEN_MFA"},
        "SOFTWARE_TOKEN_MFA",
    )


def test_skeleton_output_validates_and_prints_a_sample_without_sending(run, standin):
    result = run(
        "set-user-mfa-preference --access-token anything "
        "--sms-mfa-settings Enabled=true,PreferredMfa=true --generate-cli-skeleton output"
    )
    assert result.code == 0, result.err
    sample = json.loads(result.out)
    assert set(sample) >= {"before", "after", "request"}
    assert sample["request"] == {"SMSMfaSettings": {"Enabled": True, "PreferredMfa": True}}
    assert standin.calls == {}


def test_skeleton_output_rejects_invalid_inputs(run, standin):
    result = run(
        "set-user-mfa-preference --access-token anything "
        "--sms-mfa-settings Enabled=false,PreferredMfa=true --generate-cli-skeleton output"
    )
    assert result.code == 1
    assert "PreferredMfa=true needs Enabled=true" in result.err
    assert standin.calls == {}


# ---- refusals -----------------------------------------------------------------------------


def test_refuses_two_preferred_factors_before_any_call(run, standin, pool_id, make_user, admin):
    make_user(pool_id, "ana", phone=PHONE, totp_verified=True)
    result = run(
        f"{admin} --sms-mfa-settings Enabled=true,PreferredMfa=true "
        "--software-token-mfa-settings Enabled=true,PreferredMfa=true"
    )
    assert result.code == 1
    assert "error: only one factor can be preferred" in result.err
    assert standin.calls == {}


def test_refuses_preferred_while_disabled(run, standin, pool_id, make_user, admin):
    make_user(pool_id, "ana", phone=PHONE)
    result = run(f"{admin} --sms-mfa-settings Enabled=false,PreferredMfa=true")
    assert result.code == 1
    assert "error: SMSMfaSettings: PreferredMfa=true needs Enabled=true" in result.err
    assert standin.calls == {}


def test_refuses_preferring_a_factor_that_is_off_and_left_off(
    run, standin, pool_id, make_user, admin
):
    make_user(pool_id, "ana", phone=PHONE)
    result = run(f"{admin} --sms-mfa-settings PreferredMfa=true")
    assert result.code == 1
    assert "PreferredMfa=true needs Enabled=true" in result.err
    assert writes(standin) == 0


def test_refuses_sms_for_a_user_without_a_phone_number(
    run, standin, cognito, pool_id, make_user, admin
):
    make_user(pool_id, "ana", email=EMAIL)
    result = run(f"{admin} --sms-mfa-settings Enabled=true,PreferredMfa=true")
    assert result.code == 1
    assert "error: SMSMfaSettings: the user has no phone_number attribute" in result.err
    assert writes(standin) == 0
    assert mfa_of(cognito, pool_id, "ana") == (set(), None)


def test_refuses_email_mfa_for_a_user_without_an_email(run, standin, make_pool, make_user):
    pool = make_pool(email=True)
    make_user(pool, "ana", phone=PHONE)
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool} --username ana "
        "--email-mfa-settings Enabled=true"
    )
    assert result.code == 1
    assert "error: EmailMfaSettings: the user has no email attribute" in result.err
    assert writes(standin) == 0


def test_refuses_email_mfa_on_a_pool_without_email_mfa(run, standin, pool_id, make_user, admin):
    make_user(pool_id, "ana", email=EMAIL)
    result = run(f"{admin} --email-mfa-settings Enabled=true")
    assert result.code == 1
    assert f"user pool {pool_id} has no email MFA configured" in result.err
    assert writes(standin) == 0


def test_lists_every_reason_cognito_would_reject(run, standin, pool_id, make_user, admin):
    make_user(pool_id, "ana")
    result = run(f"{admin} --sms-mfa-settings Enabled=true --email-mfa-settings Enabled=true")
    assert result.code == 1
    assert "error: Cognito would reject this request:" in result.err
    assert "no phone_number attribute" in result.err
    assert "no email attribute" in result.err
    assert "no email MFA configured" in result.err


def test_sets_email_mfa_on_a_pool_with_email_mfa(run, cognito, make_pool, make_user):
    pool = make_pool(email=True)
    make_user(pool, "ana", email=EMAIL)
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool} --username ana "
        "--email-mfa-settings Enabled=true,PreferredMfa=true"
    )
    assert result.code == 0, result.err
    assert mfa_of(cognito, pool, "ana") == ({"EMAIL_OTP"}, "EMAIL_OTP")


def test_turns_passkey_mfa_on_like_the_aws_cli_beside_the_users_totp(
    run, cognito, standin, make_pool, make_user
):
    pool = make_pool(passkey=True)
    make_user(pool, "ana", totp_enabled=True, preferred="totp", passkey=True)
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool} --username ana "
        "--web-authn-mfa-settings Enabled=true --output json"
    )
    assert result.code == 0, result.err
    # Cognito refuses WebAuthnMfaSettings alone, so TOTP's setting goes in the same request.
    assert json.loads(result.out)["request"] == {
        "SoftwareTokenMfaSettings": {"Enabled": True, "PreferredMfa": True},
        "WebAuthnMfaSettings": {"Enabled": True},
    }
    assert mfa_of(cognito, pool, "ana") == (
        {"SOFTWARE_TOKEN_MFA", "WEB_AUTHN_MFA"},
        "SOFTWARE_TOKEN_MFA",
    )


@pytest.mark.parametrize(
    ("settings", "pool_kwargs", "message"),
    [
        ("Enabled=true,PreferredMfa=true", {"passkey": True}, 'unknown parameter "PreferredMfa"'),
        ("Enabled=true", {"passkey": True}, "passkey MFA needs another MFA factor"),
        ("Enabled=true", {}, "does not let passkeys count as MFA"),
    ],
    ids=["no-preference", "alone", "pool-without-passkey-mfa"],
)
def test_refuses_passkey_mfa_cognito_would_reject(
    settings, pool_kwargs, message, run, standin, make_pool, make_user
):
    pool = make_pool(**pool_kwargs)
    make_user(pool, "ana", passkey=True)
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool} --username ana "
        f"--web-authn-mfa-settings {settings}"
    )
    assert result.code == 1
    assert message in result.err
    assert writes(standin) == 0


def test_refuses_turning_a_factor_off_when_the_pool_requires_mfa(
    run, standin, make_pool, make_user
):
    pool = make_pool(mfa="ON")
    make_user(pool, "ana", phone=PHONE, sms_enabled=True, totp_enabled=True, preferred="totp")
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool} --username ana "
        "--sms-mfa-settings Enabled=false"
    )
    assert result.code == 1
    assert "requires MFA (ON), and Cognito refuses to turn sms off" in result.err
    assert writes(standin) == 0


def test_totp_for_a_user_without_a_verified_token_reports_cognitos_refusal(
    run, standin, cognito, pool_id, make_user, admin
):
    make_user(pool_id, "ana", phone=PHONE, sms_enabled=True, preferred="sms")
    result = run(f"{admin} --software-token-mfa-settings Enabled=true,PreferredMfa=true")
    assert result.code == 1
    assert "error: Cognito refused to enable totp: the user has not verified" in result.err
    assert "verify-software-token" in result.err
    assert writes(standin) == 1
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, "SMS_MFA")


def test_totp_for_a_user_who_verified_a_token_is_enabled(run, cognito, pool_id, make_user, admin):
    make_user(pool_id, "ana", phone=PHONE, totp_verified=True, sms_enabled=True, preferred="sms")
    result = run(f"{admin} --software-token-mfa-settings Enabled=true,PreferredMfa=true")
    assert result.code == 0, result.err
    assert "note: totp is not enabled for this user yet" in result.err
    assert mfa_of(cognito, pool_id, "ana") == (
        {"SMS_MFA", "SOFTWARE_TOKEN_MFA"},
        "SOFTWARE_TOKEN_MFA",
    )


def test_refuses_turning_off_the_last_factor_without_force(
    run, standin, cognito, pool_id, make_user, admin
):
    make_user(pool_id, "ana", phone=PHONE, sms_enabled=True, preferred="sms")
    result = run(f"{admin} --sms-mfa-settings Enabled=false,PreferredMfa=false")
    assert result.code == 1
    assert "error: refused: this turns off the user's last MFA factor (sms)" in result.err
    assert "Pass --force to do it anyway" in result.err
    assert writes(standin) == 0
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, "SMS_MFA")


def test_force_turns_off_the_last_factor_with_a_warning(run, cognito, pool_id, make_user, admin):
    make_user(pool_id, "ana", phone=PHONE, sms_enabled=True, preferred="sms")
    result = run(f"{admin} --sms-mfa-settings Enabled=false,PreferredMfa=false --force")
    assert result.code == 0, result.err
    assert "warning: --force: this turns off the user's last MFA factor" in result.err
    assert mfa_of(cognito, pool_id, "ana") == (set(), None)


def test_a_request_that_changes_nothing_sends_nothing(run, standin, pool_id, diego):
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool_id} --username {EMAIL} "
        "--sms-mfa-settings Enabled=true,PreferredMfa=true"
    )
    assert result.code == 0
    assert "no change: the user already has this setting; nothing sent" in result.out
    assert writes(standin) == 0


def test_turning_sms_off_for_a_user_without_a_phone_is_a_no_op_not_an_error(
    run, standin, pool_id, make_user, admin
):
    # The AWS CLI would send it, and Cognito would reject it (no phone_number).
    make_user(pool_id, "ana")
    result = run(f"{admin} --sms-mfa-settings Enabled=false,PreferredMfa=false")
    assert result.code == 0, result.err
    assert "not sent:     SMSMfaSettings (changes nothing for this user)" in result.out
    assert writes(standin) == 0


def test_blocks_that_change_nothing_are_left_out_of_the_request(
    run, cognito, pool_id, make_user, admin
):
    make_user(pool_id, "ana", totp_verified=True)  # no phone: any SMS block is rejected
    result = run(
        f"{admin} --sms-mfa-settings Enabled=false,PreferredMfa=false "
        "--software-token-mfa-settings Enabled=true,PreferredMfa=true --output json"
    )
    assert result.code == 0, result.err
    assert json.loads(result.out)["request"] == {
        "SoftwareTokenMfaSettings": {"Enabled": True, "PreferredMfa": True}
    }
    assert mfa_of(cognito, pool_id, "ana") == ({"SOFTWARE_TOKEN_MFA"}, "SOFTWARE_TOKEN_MFA")


def test_without_permission_to_read_the_pool_it_warns_and_goes_on(
    run, standin, cognito, pool_id, make_user, admin
):
    make_user(pool_id, "ana", phone=PHONE)
    standin.inject("GetUserPoolMfaConfig", "AccessDeniedException", "not allowed")
    result = run(f"{admin} --sms-mfa-settings Enabled=true")
    assert result.code == 0, result.err
    assert "skipping the checks against the pool's MFA configuration" in result.err
    assert mfa_of(cognito, pool_id, "ana") == ({"SMS_MFA"}, None)


def test_a_failed_read_back_still_reports_the_write(run, standin, pool_id, make_user, admin):
    make_user(pool_id, "ana", phone=PHONE)
    standin.before_request(
        lambda op, body: (
            op == "AdminSetUserMFAPreference"
            and standin.inject("AdminGetUser", "NotAuthorizedException", "denied")
        )
    )
    result = run(f"{admin} --sms-mfa-settings Enabled=true")
    assert result.code == 0, result.err
    assert "warning: the change was sent, but reading the user back failed" in result.err
    assert "after:        enabled sms; preferred none" in result.out


def test_warns_when_the_preference_moves_from_totp_to_sms(run, pool_id, make_user, admin):
    make_user(pool_id, "ana", phone=PHONE, totp_enabled=True, preferred="totp")
    result = run(f"{admin} --sms-mfa-settings Enabled=true,PreferredMfa=true")
    assert result.code == 0, result.err
    assert "warning: the preferred factor moves from totp to sms" in result.err


# ---- dry run ------------------------------------------------------------------------------

DIEGO_TO_TOTP = (
    "--software-token-mfa-settings Enabled=true,PreferredMfa=true "
    "--sms-mfa-settings Enabled=false,PreferredMfa=false"
)


def test_dry_run_sends_no_write(run, standin, cognito, pool_id, diego):
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool_id} --username {EMAIL} "
        f"{DIEGO_TO_TOTP} --dry-run"
    )
    assert result.code == 0, result.err
    assert writes(standin) == 0
    assert mfa_of(cognito, pool_id, EMAIL) == ({"SMS_MFA", "SOFTWARE_TOKEN_MFA"}, "SMS_MFA")


def test_dry_run_shows_the_request_and_the_predicted_state(run, pool_id, diego):
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool_id} --username {EMAIL} "
        f"{DIEGO_TO_TOTP} --dry-run"
    )
    assert (
        "would send:   SoftwareTokenMfaSettings Enabled=true,PreferredMfa=true "
        "SMSMfaSettings Enabled=false,PreferredMfa=false"
    ) in result.out
    assert "after:        enabled totp; preferred totp (predicted)" in result.out
    assert "dry run: nothing sent" in result.out


def test_dry_run_still_refuses_what_cognito_would_reject(run, pool_id, make_user, admin):
    make_user(pool_id, "ana")
    result = run(f"{admin} --sms-mfa-settings Enabled=true --dry-run")
    assert result.code == 1
    assert "no phone_number attribute" in result.err


def test_dry_run_json_says_it_is_a_dry_run(run, pool_id, diego):
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool_id} --username {EMAIL} "
        "--software-token-mfa-settings Enabled=true,PreferredMfa=true --dry-run --output json"
    )
    output = json.loads(result.out)
    assert output["dry_run"] is True
    assert output["after"] == {"enabled": ["totp", "sms"], "preferred": "totp"}


# ---- output -------------------------------------------------------------------------------


def test_json_output_has_before_after_and_request(run, pool_id, diego):
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool_id} --username {EMAIL} "
        f"{DIEGO_TO_TOTP} --output json"
    )
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "before": {"enabled": ["totp", "sms"], "preferred": "sms"},
        "after": {"enabled": ["totp"], "preferred": "totp"},
        "request": {
            "SoftwareTokenMfaSettings": {"Enabled": True, "PreferredMfa": True},
            "SMSMfaSettings": {"Enabled": False, "PreferredMfa": False},
        },
        "dry_run": False,
    }


def test_after_is_read_back_from_cognito(run, standin, pool_id, diego):
    run(
        f"admin-set-user-mfa-preference --user-pool-id {pool_id} --username {EMAIL} "
        "--software-token-mfa-settings Enabled=true,PreferredMfa=true"
    )
    assert standin.calls["AdminGetUser"] == 2


def test_an_email_username_is_masked(run, pool_id, diego):
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool_id} --username {EMAIL} "
        "--software-token-mfa-settings Enabled=true,PreferredMfa=true"
    )
    assert f"user {MASKED_EMAIL} in user pool {pool_id}" in result.out
    assert EMAIL not in result.text


@pytest.mark.parametrize("output", ["text", "json"])
def test_the_access_token_is_never_printed(run, pool_id, make_user, token_of, output):
    make_user(pool_id, "ana", phone=PHONE)
    token = token_of("ana")
    result = run(
        f"set-user-mfa-preference --access-token {token} --sms-mfa-settings Enabled=true "
        f"--output {output}"
    )
    assert result.code == 0, result.err
    assert token not in result.text


# ---- errors -------------------------------------------------------------------------------


def test_an_expired_token_is_a_clear_error(run, standin, pool_id, make_user, token_of):
    make_user(pool_id, "ana", phone=PHONE)
    token = token_of("ana")
    standin.expire_token(token)
    result = run(f"set-user-mfa-preference --access-token {token} --sms-mfa-settings Enabled=true")
    assert result.code == 1
    assert result.err == (
        "error: the access token was not accepted (Access Token has expired); "
        "sign in again for a fresh one\n"
    )


def test_an_unknown_user_is_a_clear_error(run, pool_id):
    result = run(
        f"admin-set-user-mfa-preference --user-pool-id {pool_id} --username ghost "
        "--sms-mfa-settings Enabled=true"
    )
    assert result.code == 1
    assert f"error: no user ghost in user pool {pool_id}" in result.err


def test_an_unknown_pool_is_a_clear_error(run):
    result = run(
        "admin-set-user-mfa-preference --user-pool-id us-east-1_nosuchpool --username ghost "
        "--sms-mfa-settings Enabled=true"
    )
    assert result.code == 1
    assert "error: user pool us-east-1_nosuchpool not found" in result.err


def test_missing_user_is_an_error(run, standin):
    result = run("set-user-mfa-preference --sms-mfa-settings Enabled=true")
    assert result.code == 1
    assert "--access-token" in result.err and "--user-pool-id with --username" in result.err
    assert standin.calls == {}


def test_token_and_username_together_is_an_error(run, pool_id):
    result = run(
        f"set-user-mfa-preference --access-token t --user-pool-id {pool_id} --username ana "
        "--sms-mfa-settings Enabled=true"
    )
    assert result.code == 1
    assert "not both" in result.err


def test_admin_command_needs_pool_and_username(run):
    result = run("admin-set-user-mfa-preference --user-pool-id p --sms-mfa-settings Enabled=true")
    assert result.code == 1
    assert "error: missing --username" in result.err


def test_no_settings_is_an_error(run, standin, pool_id):
    result = run(f"admin-set-user-mfa-preference --user-pool-id {pool_id} --username ana")
    assert result.code == 1
    assert "error: nothing to set" in result.err
    assert standin.calls == {}


def test_a_misspelt_member_is_an_error(run, standin, admin):
    result = run(f"{admin} --sms-mfa-settings Enable=true")
    assert result.code == 1
    assert 'unknown parameter "Enable", must be one of: Enabled, PreferredMfa' in result.err
    assert standin.calls == {}


def test_legacy_email_delivery_is_an_error(run, token_of, pool_id, make_user):
    make_user(pool_id, "ana", email=EMAIL)
    result = run(
        f"set-user-mfa-preference --access-token {token_of('ana')} "
        "--mfa-options DeliveryMedium=EMAIL"
    )
    assert result.code == 1
    assert "for email MFA use --email-mfa-settings Enabled=true" in result.err


def test_legacy_and_new_sms_settings_together_is_an_error(run, admin):
    result = run(f"{admin} --mfa-options DeliveryMedium=SMS --sms-mfa-settings Enabled=true")
    assert result.code == 1
    assert "--mfa-options is the legacy form of --sms-mfa-settings; pass one of them" in (
        result.err
    )


# ---- get-user-mfa -------------------------------------------------------------------------


def test_get_user_mfa_prints_enabled_and_preferred(run, pool_id, diego):
    result = run(f"get-user-mfa --user-pool-id {pool_id} --username {EMAIL}")
    assert result.code == 0, result.err
    assert "enabled:      totp, sms" in result.out
    assert "preferred:    sms" in result.out


def test_get_user_mfa_masks_phone_and_email(run, pool_id, diego):
    result = run(f"get-user-mfa --user-pool-id {pool_id} --username {EMAIL}")
    assert f"phone_number: {MASKED_PHONE}" in result.out
    assert f"email:        {MASKED_EMAIL}" in result.out
    assert PHONE not in result.text and EMAIL not in result.text


def test_get_user_mfa_with_a_policy_prints_the_matching_rule_and_why(run, pool_id, make_user):
    make_user(
        pool_id,
        "ana",
        phone=PHONE,
        groups=["admins"],
        sms_enabled=True,
        totp_enabled=True,
        preferred="sms",
    )
    result = run(f"get-user-mfa --user-pool-id {pool_id} --username ana -c {POLICY}")
    assert result.code == 0, result.err
    assert "rule admins (rules[0]) matches: member of group admins" in result.out
    assert "outcome:      would_change: prefer totp (was sms); disable sms" in result.out
    assert "desired:      enabled totp; preferred totp" in result.out


def test_get_user_mfa_says_why_earlier_rules_do_not_match(run, pool_id, make_user):
    make_user(pool_id, "ana", phone=PHONE, sms_enabled=True, preferred="sms")
    result = run(f"get-user-mfa --user-pool-id {pool_id} --username ana -c {POLICY}")
    assert "rule admins: does not match (not a member of group admins)" in result.out
    assert "rule everyone (rules[1]) matches: match: all" in result.out


def test_get_user_mfa_by_token_uses_the_tokens_groups(run, pool_id, make_user, token_of):
    make_user(pool_id, "ana", phone=PHONE, groups=["admins"])
    result = run(f"get-user-mfa --access-token {token_of('ana')} -c {POLICY}")
    assert result.code == 0, result.err
    assert "rule admins (rules[0]) matches: member of group admins" in result.out


def test_get_user_mfa_shows_an_excluded_user(run, pool_id, make_user):
    make_user(pool_id, "svc", groups=["service-accounts"])
    result = run(f"get-user-mfa --user-pool-id {pool_id} --username svc -c {POLICY}")
    assert "outcome:      excluded: excluded by group service-accounts" in result.out
    assert "(not applied: the user is excluded or skipped)" in result.out


def test_get_user_mfa_json(run, pool_id, diego):
    result = run(
        f"get-user-mfa --user-pool-id {pool_id} --username {EMAIL} -c {POLICY} --output json"
    )
    output = json.loads(result.out)
    assert output["enabled"] == ["totp", "sms"]
    assert output["preferred"] == "sms"
    assert output["username"] == MASKED_EMAIL
    assert output["policy"]["rule"] == "everyone"
    assert output["policy"]["outcome"] == "would_change"


def test_get_user_mfa_with_an_expired_token_is_a_clear_error(
    run, standin, pool_id, make_user, token_of
):
    make_user(pool_id, "ana")
    token = token_of("ana")
    standin.expire_token(token)
    result = run(f"get-user-mfa --access-token {token}")
    assert result.code == 1
    assert "error: the access token was not accepted (Access Token has expired)" in result.err


def test_get_user_mfa_of_an_unknown_user_is_a_clear_error(run, pool_id):
    result = run(f"get-user-mfa --user-pool-id {pool_id} --username ghost")
    assert result.code == 1
    assert f"error: no user ghost in user pool {pool_id}" in result.err
