"""The Cognito stand-in: each real-Cognito behaviour the fidelity layer adds to moto."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from mfa_policy.standin import (
    BREAK_GLASS_USERS,
    DEMO_MIX,
    CognitoStandIn,
    Quotas,
    demo_counts,
    seed_demo_pool,
)

LAMBDA_ROOT = Path(__file__).resolve().parents[2] / "lambda"
PHONE = "+15550000001"
EMAIL = "alice@example.com"
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})
SMS_ON = {"Enabled": True, "PreferredMfa": False}
SMS_PREFERRED = {"Enabled": True, "PreferredMfa": True}
TOTP_PREFERRED = {"Enabled": True, "PreferredMfa": True}
EMAIL_PREFERRED = {"Enabled": True, "PreferredMfa": True}


def error_of(exc_info):
    return exc_info.value.response["Error"]["Code"], exc_info.value.response["Error"]["Message"]


def mfa_of(cognito, pool_id, username):
    user = cognito.admin_get_user(UserPoolId=pool_id, Username=username)
    return set(user.get("UserMFASettingList", [])), user.get("PreferredMfaSetting")


# ---- SMS needs a phone number ----------------------------------------------------------------


def test_admin_set_sms_without_phone_number_is_rejected(cognito, pool_id, make_user):
    make_user(pool_id, "alice", email=EMAIL)
    with pytest.raises(ClientError) as exc:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username="alice", SMSMfaSettings=SMS_PREFERRED
        )
    assert error_of(exc) == (
        "InvalidParameterException",
        "User does not have a phone_number set to turn on SMS MFA",
    )
    assert mfa_of(cognito, pool_id, "alice") == (set(), None)


def test_admin_set_sms_disabled_without_phone_number_is_rejected(cognito, pool_id, make_user):
    make_user(pool_id, "alice")
    with pytest.raises(ClientError) as exc:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username="alice", SMSMfaSettings={"Enabled": False}
        )
    assert error_of(exc)[0] == "InvalidParameterException"
    assert "phone_number" in error_of(exc)[1]


def test_admin_set_sms_with_phone_number_is_accepted(cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id, Username="alice", SMSMfaSettings=SMS_PREFERRED
    )
    assert mfa_of(cognito, pool_id, "alice") == ({"SMS_MFA"}, "SMS_MFA")


# ---- email MFA -------------------------------------------------------------------------------


def test_admin_set_email_without_email_attribute_is_rejected(cognito, make_pool, make_user):
    pool_id = make_pool(email=True)
    make_user(pool_id, "alice", phone=PHONE)
    with pytest.raises(ClientError) as exc:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username="alice", EmailMfaSettings=EMAIL_PREFERRED
        )
    assert error_of(exc) == (
        "InvalidParameterException",
        "User does not have an email set to turn on email MFA",
    )


def test_admin_set_email_when_pool_has_no_email_mfa_is_rejected(cognito, pool_id, make_user):
    make_user(pool_id, "alice", email=EMAIL)
    with pytest.raises(ClientError) as exc:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username="alice", EmailMfaSettings=EMAIL_PREFERRED
        )
    assert error_of(exc) == (
        "InvalidParameterException",
        "Email MFA is not enabled for this user pool.",
    )


def test_admin_set_email_is_emulated_and_shown_by_admin_get_user(cognito, make_pool, make_user):
    pool_id = make_pool(email=True)
    make_user(pool_id, "alice", email=EMAIL, phone=PHONE, sms_enabled=True, preferred="sms")
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id, Username="alice", EmailMfaSettings=EMAIL_PREFERRED
    )
    assert mfa_of(cognito, pool_id, "alice") == ({"SMS_MFA", "EMAIL_OTP"}, "EMAIL_OTP")


def test_admin_set_email_disabled_removes_it(cognito, make_pool, make_user):
    pool_id = make_pool(email=True)
    make_user(pool_id, "alice", email=EMAIL, email_enabled=True, preferred="email")
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id, Username="alice", EmailMfaSettings={"Enabled": False}
    )
    assert mfa_of(cognito, pool_id, "alice") == (set(), None)


# ---- TOTP needs a verified token -------------------------------------------------------------


def test_admin_set_totp_without_verified_token_is_rejected(cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    with pytest.raises(ClientError) as exc:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username="alice", SoftwareTokenMfaSettings=TOTP_PREFERRED
        )
    # The service's current wording (aws/aws-sdk-js-v3#4645).
    assert error_of(exc) == (
        "InvalidParameterException",
        "User does not have delivery config set to turn on SOFTWARE_TOKEN_MFA",
    )


def test_admin_set_totp_disabled_when_never_set_up_is_rejected(cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    with pytest.raises(ClientError) as exc:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username="alice", SoftwareTokenMfaSettings={"Enabled": False}
        )
    assert error_of(exc) == ("InvalidParameterException", "User has not set up software token mfa")


def test_admin_set_totp_with_verified_token_is_accepted(cognito, pool_id, make_user):
    make_user(pool_id, "alice", totp_verified=True)
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id, Username="alice", SoftwareTokenMfaSettings=TOTP_PREFERRED
    )
    assert mfa_of(cognito, pool_id, "alice") == ({"SOFTWARE_TOKEN_MFA"}, "SOFTWARE_TOKEN_MFA")


# ---- preference consistency ------------------------------------------------------------------


@pytest.mark.parametrize(
    "block", [{"Enabled": False, "PreferredMfa": True}, {"PreferredMfa": True}]
)
def test_admin_set_preferred_without_enabled_is_rejected(cognito, pool_id, make_user, block):
    make_user(pool_id, "alice", phone=PHONE)
    with pytest.raises(ClientError) as exc:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username="alice", SMSMfaSettings=block
        )
    assert error_of(exc) == (
        "InvalidParameterException",
        "Cannot set SMS_MFA as the preferred MFA method when it is not enabled.",
    )


def test_admin_set_two_preferred_factors_is_rejected(cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE, totp_verified=True)
    with pytest.raises(ClientError) as exc:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id,
            Username="alice",
            SMSMfaSettings=SMS_PREFERRED,
            SoftwareTokenMfaSettings=TOTP_PREFERRED,
        )
    assert error_of(exc) == (
        "InvalidParameterException",
        "Only one MFA method can be set as preferred.",
    )


def test_admin_set_preferred_clears_the_other_factors_preference(cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE, totp_verified=True, sms_enabled=True, preferred="sms")
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id, Username="alice", SoftwareTokenMfaSettings=TOTP_PREFERRED
    )
    assert mfa_of(cognito, pool_id, "alice") == (
        {"SMS_MFA", "SOFTWARE_TOKEN_MFA"},
        "SOFTWARE_TOKEN_MFA",
    )


def test_admin_set_email_preferred_clears_totp_preference(cognito, make_pool, make_user):
    pool_id = make_pool(email=True)
    make_user(pool_id, "alice", email=EMAIL, totp_enabled=True, preferred="totp")
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id, Username="alice", EmailMfaSettings=EMAIL_PREFERRED
    )
    assert mfa_of(cognito, pool_id, "alice") == ({"SOFTWARE_TOKEN_MFA", "EMAIL_OTP"}, "EMAIL_OTP")


def test_admin_set_disabling_the_preferred_factor_clears_the_preference(
    cognito, pool_id, make_user
):
    make_user(pool_id, "alice", phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms")
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id, Username="alice", SMSMfaSettings={"Enabled": False}
    )
    assert mfa_of(cognito, pool_id, "alice") == ({"SOFTWARE_TOKEN_MFA"}, None)


def test_admin_set_enabling_without_preference_keeps_the_current_one(cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE, totp_enabled=True, preferred="totp")
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id, Username="alice", SMSMfaSettings=SMS_ON
    )
    assert mfa_of(cognito, pool_id, "alice") == (
        {"SMS_MFA", "SOFTWARE_TOKEN_MFA"},
        "SOFTWARE_TOKEN_MFA",
    )


def test_admin_set_rejected_request_changes_nothing(cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    with pytest.raises(ClientError):
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id,
            Username="alice",
            SMSMfaSettings=SMS_ON,
            SoftwareTokenMfaSettings=TOTP_PREFERRED,
        )
    assert mfa_of(cognito, pool_id, "alice") == (set(), None)


def test_admin_set_for_unknown_user_is_user_not_found(cognito, pool_id):
    with pytest.raises(ClientError) as exc:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username="nobody", SMSMfaSettings=SMS_ON
        )
    assert error_of(exc) == ("UserNotFoundException", "User does not exist.")


# ---- pool MFA required -----------------------------------------------------------------------


def test_admin_set_disabling_a_factor_when_pool_mfa_is_on_is_rejected(
    cognito, make_pool, make_user
):
    pool_id = make_pool(mfa="ON")
    make_user(pool_id, "alice", phone=PHONE, sms_enabled=True, totp_enabled=True)
    with pytest.raises(ClientError) as exc:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username="alice", SMSMfaSettings={"Enabled": False}
        )
    assert error_of(exc) == (
        "InvalidParameterException",
        "Cannot disable SMS_MFA for a user when MFA is required in the user pool.",
    )


def test_admin_set_preferring_a_factor_when_pool_mfa_is_on_is_accepted(
    cognito, make_pool, make_user
):
    pool_id = make_pool(mfa="ON")
    make_user(pool_id, "alice", phone=PHONE, sms_enabled=True, totp_enabled=True)
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id, Username="alice", SoftwareTokenMfaSettings=TOTP_PREFERRED
    )
    assert mfa_of(cognito, pool_id, "alice") == (
        {"SMS_MFA", "SOFTWARE_TOKEN_MFA"},
        "SOFTWARE_TOKEN_MFA",
    )


# ---- SetUserMFAPreference (access token) -----------------------------------------------------


def test_set_user_mfa_preference_applies_the_same_rules(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice", email=EMAIL)
    token = standin.issue_access_token(pool_id, "alice")
    with pytest.raises(ClientError) as exc:
        cognito.set_user_mfa_preference(AccessToken=token, SMSMfaSettings=SMS_PREFERRED)
    assert error_of(exc) == (
        "InvalidParameterException",
        "User does not have a phone_number set to turn on SMS MFA",
    )


def test_set_user_mfa_preference_updates_the_user(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE, totp_verified=True, sms_enabled=True, preferred="sms")
    token = standin.issue_access_token(pool_id, "alice")
    cognito.set_user_mfa_preference(AccessToken=token, SoftwareTokenMfaSettings=TOTP_PREFERRED)
    assert mfa_of(cognito, pool_id, "alice") == (
        {"SMS_MFA", "SOFTWARE_TOKEN_MFA"},
        "SOFTWARE_TOKEN_MFA",
    )


# ---- pool MFA configuration ------------------------------------------------------------------


def test_set_user_pool_mfa_config_stores_email_mfa_configuration(cognito, make_pool):
    pool_id = make_pool(email=True)
    config = cognito.get_user_pool_mfa_config(UserPoolId=pool_id)
    assert config["MfaConfiguration"] == "OPTIONAL"
    assert config["EmailMfaConfiguration"]["Subject"] == "Your sign-in code"
    assert config["SoftwareTokenMfaConfiguration"] == {"Enabled": True}
    assert "SnsCallerArn" in config["SmsMfaConfiguration"]["SmsConfiguration"]


def test_set_user_pool_mfa_config_email_only_is_accepted(cognito, make_pool):
    pool_id = make_pool(sms=False, totp=False, email=True)
    config = cognito.get_user_pool_mfa_config(UserPoolId=pool_id)
    assert config["MfaConfiguration"] == "OPTIONAL"
    assert "EmailMfaConfiguration" in config
    assert "SmsMfaConfiguration" not in config
    assert "SoftwareTokenMfaConfiguration" not in config


def test_set_user_pool_mfa_config_off_with_a_factor_is_rejected(cognito, make_pool):
    pool_id = make_pool(mfa="OFF")
    with pytest.raises(ClientError) as exc:
        cognito.set_user_pool_mfa_config(
            UserPoolId=pool_id,
            MfaConfiguration="OFF",
            SoftwareTokenMfaConfiguration={"Enabled": True},
        )
    assert error_of(exc) == (
        "InvalidParameterException",
        "Invalid MFA configuration given, can't turn off MFA and configure an MFA together.",
    )


def test_set_user_pool_mfa_config_optional_without_factors_is_rejected(cognito, make_pool):
    pool_id = make_pool(mfa="OFF")
    with pytest.raises(ClientError) as exc:
        cognito.set_user_pool_mfa_config(UserPoolId=pool_id, MfaConfiguration="OPTIONAL")
    assert error_of(exc)[0] == "InvalidParameterException"
    assert "can't disable all MFAs" in error_of(exc)[1]


def test_get_user_pool_mfa_config_of_unknown_pool_is_resource_not_found(cognito):
    with pytest.raises(ClientError) as exc:
        cognito.get_user_pool_mfa_config(UserPoolId="us-east-1_nope")
    assert error_of(exc)[0] == "ResourceNotFoundException"


# ---- AdminGetUser / GetUser response shape ---------------------------------------------------


def test_admin_get_user_omits_empty_mfa_fields(cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    user = cognito.admin_get_user(UserPoolId=pool_id, Username="alice")
    assert "PreferredMfaSetting" not in user
    assert "UserMFASettingList" not in user
    assert "MFAOptions" not in user


def test_admin_get_user_includes_legacy_mfa_options_for_sms(cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE, sms_enabled=True)
    user = cognito.admin_get_user(UserPoolId=pool_id, Username="alice")
    assert user["MFAOptions"] == [{"DeliveryMedium": "SMS", "AttributeName": "phone_number"}]
    assert user["UserMFASettingList"] == ["SMS_MFA"]
    assert "PreferredMfaSetting" not in user


def test_get_user_is_shaped_like_admin_get_user(standin, cognito, make_pool, make_user):
    pool_id = make_pool(email=True)
    make_user(pool_id, "alice", email=EMAIL, phone=PHONE, sms_enabled=True, email_enabled=True)
    make_user(pool_id, "bob", email="bob@example.com")
    alice = cognito.get_user(AccessToken=standin.issue_access_token(pool_id, "alice"))
    bob = cognito.get_user(AccessToken=standin.issue_access_token(pool_id, "bob"))
    assert set(alice["UserMFASettingList"]) == {"SMS_MFA", "EMAIL_OTP"}
    assert alice["MFAOptions"] == [{"DeliveryMedium": "SMS", "AttributeName": "phone_number"}]
    assert not {"UserMFASettingList", "PreferredMfaSetting", "MFAOptions"} & set(bob)


# ---- ListUsers limit -------------------------------------------------------------------------


def test_list_users_limit_above_60_is_rejected(cognito, pool_id):
    with pytest.raises(ClientError) as exc:
        cognito.list_users(UserPoolId=pool_id, Limit=61)
    assert error_of(exc) == (
        "InvalidParameterException",
        "1 validation error detected: Value '61' at 'limit' failed to satisfy constraint: "
        "Member must have value less than or equal to 60",
    )


def test_list_users_in_group_limit_above_60_is_rejected(cognito, pool_id, make_user):
    make_user(pool_id, "alice", groups=["admins"])
    with pytest.raises(ClientError) as exc:
        cognito.list_users_in_group(UserPoolId=pool_id, GroupName="admins", Limit=100)
    assert error_of(exc)[0] == "InvalidParameterException"
    assert "Value '100' at 'limit'" in error_of(exc)[1]


def test_list_users_limit_60_is_accepted(cognito, pool_id, make_user):
    for i in range(3):
        make_user(pool_id, f"user-{i}")
    assert len(cognito.list_users(UserPoolId=pool_id, Limit=60)["Users"]) == 3


# ---- access tokens ---------------------------------------------------------------------------


def test_issue_access_token_works_with_get_user(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    token = standin.issue_access_token(pool_id, "alice")
    assert cognito.get_user(AccessToken=token)["Username"] == "alice"


def test_issue_access_token_for_unknown_user_raises(standin, pool_id):
    with pytest.raises(LookupError):
        standin.issue_access_token(pool_id, "nobody")


def test_expired_token_is_rejected_by_get_user(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    token = standin.issue_access_token(pool_id, "alice")
    standin.expire_token(token)
    with pytest.raises(ClientError) as exc:
        cognito.get_user(AccessToken=token)
    assert error_of(exc) == ("NotAuthorizedException", "Access Token has expired")


def test_expired_token_is_rejected_by_set_user_mfa_preference(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    token = standin.issue_access_token(pool_id, "alice")
    standin.expire_all_tokens(pool_id)
    with pytest.raises(ClientError) as exc:
        cognito.set_user_mfa_preference(AccessToken=token, SMSMfaSettings=SMS_ON)
    assert error_of(exc) == ("NotAuthorizedException", "Access Token has expired")
    assert mfa_of(cognito, pool_id, "alice") == (set(), None)


def test_token_expires_after_token_ttl(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    standin.token_ttl_seconds = 0.2
    token = standin.issue_access_token(pool_id, "alice")
    cognito.get_user(AccessToken=token)
    time.sleep(0.25)
    with pytest.raises(ClientError) as exc:
        cognito.get_user(AccessToken=token)
    assert error_of(exc) == ("NotAuthorizedException", "Access Token has expired")


def test_token_from_admin_initiate_auth_is_tracked(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE, password="Passw0rd!")
    client_id = cognito.create_user_pool_client(UserPoolId=pool_id, ClientName="app")[
        "UserPoolClient"
    ]["ClientId"]
    standin.token_ttl_seconds = 0.2
    token = cognito.admin_initiate_auth(
        UserPoolId=pool_id,
        ClientId=client_id,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "alice", "PASSWORD": "Passw0rd!"},
    )["AuthenticationResult"]["AccessToken"]
    cognito.get_user(AccessToken=token)
    time.sleep(0.25)
    with pytest.raises(ClientError) as exc:
        cognito.get_user(AccessToken=token)
    assert error_of(exc) == ("NotAuthorizedException", "Access Token has expired")


def test_disabled_users_token_is_rejected_by_set_user_mfa_preference(
    standin, cognito, pool_id, make_user
):
    make_user(pool_id, "alice", phone=PHONE)
    token = standin.issue_access_token(pool_id, "alice")
    # AdminDisableUser revokes the user's tokens, and enabling them again does not restore
    # them.
    cognito.admin_disable_user(UserPoolId=pool_id, Username="alice")
    with pytest.raises(ClientError) as exc:
        cognito.set_user_mfa_preference(AccessToken=token, SMSMfaSettings=SMS_ON)
    assert error_of(exc) == ("NotAuthorizedException", "Access Token has been revoked")
    cognito.admin_enable_user(UserPoolId=pool_id, Username="alice")
    with pytest.raises(ClientError) as exc:
        cognito.get_user(AccessToken=token)
    assert error_of(exc) == ("NotAuthorizedException", "Access Token has been revoked")


def test_revoked_token_is_rejected(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    token = standin.issue_access_token(pool_id, "alice")
    cognito.admin_user_global_sign_out(UserPoolId=pool_id, Username="alice")
    with pytest.raises(ClientError) as exc:
        cognito.get_user(AccessToken=token)
    assert error_of(exc) == ("NotAuthorizedException", "Access Token has been revoked")


def test_malformed_token_is_rejected(cognito):
    with pytest.raises(ClientError) as exc:
        cognito.get_user(AccessToken="not-a-token")
    assert error_of(exc) == ("NotAuthorizedException", "Invalid Access Token")


# ---- throttling ------------------------------------------------------------------------------


def test_burst_over_quota_is_throttled_and_counted(standin, pool_id, make_user):
    make_user(pool_id, "alice")
    client = standin.client(config=NO_RETRIES)
    standin.quotas = Quotas(user_read=2)  # a bucket of 2, refilled at 2 a second
    standin.reset_counters()
    errors = []
    for _ in range(20):
        try:
            client.admin_get_user(UserPoolId=pool_id, Username="alice")
        except ClientError as error:
            errors.append(error.response)
    assert 10 <= len(errors) <= 18
    assert {(e["Error"]["Code"], e["Error"]["Message"]) for e in errors} == {
        ("TooManyRequestsException", "Rate exceeded")
    }
    assert {e["ResponseMetadata"]["HTTPStatusCode"] for e in errors} == {400}
    assert standin.throttled == {"AdminGetUser": len(errors)}
    assert standin.calls == {"AdminGetUser": 20}


def test_quota_categories_are_separate_buckets(standin, pool_id, make_user):
    make_user(pool_id, "alice")
    client = standin.client(config=NO_RETRIES)
    standin.quotas = Quotas(user_list=1)
    client.list_users(UserPoolId=pool_id)
    with pytest.raises(ClientError) as exc:
        client.list_users(UserPoolId=pool_id)
    assert error_of(exc)[0] == "TooManyRequestsException"
    for _ in range(10):
        client.admin_get_user(UserPoolId=pool_id, Username="alice")


def test_throttle_storm_throttles_that_fraction(standin, pool_id, make_user):
    make_user(pool_id, "alice")
    client = standin.client(config=NO_RETRIES)
    standin.throttle_storm(0.5, seconds=10)
    outcomes = []
    for _ in range(20):
        try:
            client.admin_get_user(UserPoolId=pool_id, Username="alice")
            outcomes.append("ok")
        except ClientError as error:
            outcomes.append(error.response["Error"]["Code"])
    assert outcomes.count("TooManyRequestsException") == 10
    assert standin.throttled["AdminGetUser"] == 10


# ---- latency and concurrency -----------------------------------------------------------------


def test_latency_delays_each_request(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice")
    standin.latency = (0.05, 0.06)
    started = time.perf_counter()
    for _ in range(3):
        cognito.admin_get_user(UserPoolId=pool_id, Username="alice")
    assert time.perf_counter() - started >= 0.15


def test_concurrent_requests_are_served_in_parallel(standin, cognito, pool_id, make_user):
    usernames = [make_user(pool_id, f"user-{i:02d}", phone=PHONE) for i in range(32)]
    standin.latency = (0.05, 0.05)
    standin.reset_counters()

    def read_and_write(username):
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username=username, SMSMfaSettings=SMS_PREFERRED
        )
        return cognito.admin_get_user(UserPoolId=pool_id, Username=username)["Username"]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(read_and_write, usernames))
    elapsed = time.perf_counter() - started
    standin.latency = None
    assert results == usernames
    # One at a time takes at least 64 x 50 ms; the bound is loose so a loaded machine passes.
    assert elapsed < 64 * 0.05
    assert standin.calls == {"AdminSetUserMFAPreference": 32, "AdminGetUser": 32}
    assert all(mfa_of(cognito, pool_id, u) == ({"SMS_MFA"}, "SMS_MFA") for u in usernames)


# ---- fault injection -------------------------------------------------------------------------


def test_injected_error_is_answered_the_given_number_of_times(standin, pool_id, make_user):
    make_user(pool_id, "alice")
    client = standin.client(config=NO_RETRIES)
    standin.inject("AdminGetUser", "UserNotFoundException", "User does not exist.", times=2)
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            client.admin_get_user(UserPoolId=pool_id, Username="alice")
        assert error_of(exc) == ("UserNotFoundException", "User does not exist.")
    assert client.admin_get_user(UserPoolId=pool_id, Username="alice")["Username"] == "alice"


def test_injected_error_with_match_applies_only_to_matching_requests(standin, pool_id, make_user):
    make_user(pool_id, "alice")
    make_user(pool_id, "bob")
    client = standin.client(config=NO_RETRIES)
    standin.inject(
        "AdminGetUser",
        "InternalErrorException",
        status=500,
        times=None,
        match=lambda body: body["Username"] == "bob",
    )
    assert client.admin_get_user(UserPoolId=pool_id, Username="alice")["Username"] == "alice"
    with pytest.raises(ClientError) as exc:
        client.admin_get_user(UserPoolId=pool_id, Username="bob")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_server_errors_are_http_500_internal_error(standin, pool_id, make_user):
    make_user(pool_id, "alice")
    client = standin.client(config=NO_RETRIES)
    standin.server_errors("AdminGetUser", times=1)
    with pytest.raises(ClientError) as exc:
        client.admin_get_user(UserPoolId=pool_id, Username="alice")
    assert error_of(exc)[0] == "InternalErrorException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_server_errors_are_retried_by_standard_retries(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice")
    standin.server_errors("AdminGetUser", times=1)
    response = cognito.admin_get_user(UserPoolId=pool_id, Username="alice")
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert standin.calls["AdminGetUser"] == 2


def test_stall_makes_the_client_time_out(standin, pool_id, make_user):
    make_user(pool_id, "alice", phone=PHONE)
    client = standin.client(
        config=Config(read_timeout=0.2, retries={"mode": "standard", "total_max_attempts": 1})
    )
    standin.stall("AdminSetUserMFAPreference", seconds=0.5)
    with pytest.raises(ReadTimeoutError):
        client.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username="alice", SMSMfaSettings=SMS_ON
        )
    # The stalled write still lands, as a slow write to the real service can.
    deadline = time.monotonic() + 3
    while mfa_of(client, pool_id, "alice")[0] != {"SMS_MFA"}:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_before_request_hook_can_delete_a_user_mid_run(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice")
    make_user(pool_id, "bob")
    seen = []

    def delete_bob(operation, body):
        seen.append(operation)
        if operation == "AdminGetUser" and body.get("Username") == "bob":
            with standin.lock:
                standin.backend.admin_delete_user(pool_id, "bob")

    standin.before_request(delete_bob)
    cognito.admin_get_user(UserPoolId=pool_id, Username="alice")
    with pytest.raises(ClientError) as exc:
        cognito.admin_get_user(UserPoolId=pool_id, Username="bob")
    assert error_of(exc) == ("UserNotFoundException", "User does not exist.")
    assert seen == ["AdminGetUser", "AdminGetUser"]


# ---- counters and pass-through ---------------------------------------------------------------


def test_calls_are_counted_per_operation_and_reset(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice")
    standin.reset_counters()
    cognito.admin_get_user(UserPoolId=pool_id, Username="alice")
    cognito.list_users(UserPoolId=pool_id)
    cognito.list_users(UserPoolId=pool_id)
    assert standin.calls == {"AdminGetUser": 1, "ListUsers": 2}
    assert standin.throttled == {}
    standin.reset_counters()
    assert standin.calls == {}


def test_dynamodb_passes_through_untouched(standin):
    dynamodb = standin.client("dynamodb")
    dynamodb.create_table(
        TableName="tokens",
        KeySchema=[{"AttributeName": "username", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "username", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(
        TableName="tokens", Item={"username": {"S": "alice"}, "access_token": {"S": "t0k"}}
    )
    item = dynamodb.get_item(TableName="tokens", Key={"username": {"S": "alice"}})["Item"]
    assert item["access_token"] == {"S": "t0k"}
    assert standin.calls == {}
    dynamodb.delete_table(TableName="tokens")


def test_s3_passes_through_untouched(standin):
    s3 = standin.client("s3")
    s3.create_bucket(Bucket="reports")
    s3.put_object(Bucket="reports", Key="run/summary.json", Body=b"{}")
    assert s3.get_object(Bucket="reports", Key="run/summary.json")["Body"].read() == b"{}"


# ---- lifecycle -------------------------------------------------------------------------------


def test_standin_is_a_context_manager():
    with CognitoStandIn() as other:
        assert other.running
        assert other.endpoint_url.startswith("http://127.0.0.1:")
        assert other.client().list_user_pools(MaxResults=1)["ResponseMetadata"]
    assert not other.running


def test_configured_restores_settings_afterwards(standin):
    with standin.configured(quotas=Quotas(user_read=1), latency=(0.01, 0.02)):
        assert standin.quotas == Quotas(user_read=1)
        assert standin.latency == (0.01, 0.02)
    assert standin.quotas is None
    assert standin.latency is None


def test_reset_clears_moto_and_standin_state(tmp_path):
    # In a fresh process: reset() clears all of moto, which would pull state out from under
    # other tests sharing this worker's stand-in.
    script = tmp_path / "reset.py"
    script.write_text(
        textwrap.dedent(
            """
            from botocore.exceptions import ClientError
            from mfa_policy.standin import CognitoStandIn, create_pool, seed_user

            with CognitoStandIn() as standin:
                pool_id = create_pool(standin, email=True)
                seed_user(standin, pool_id, "alice", email="a@example.com", email_enabled=True)
                standin.client().admin_get_user(UserPoolId=pool_id, Username="alice")
                standin.reset()
                assert standin.calls == {}
                try:
                    standin.client().get_user_pool_mfa_config(UserPoolId=pool_id)
                except ClientError as error:
                    assert error.response["Error"]["Code"] == "ResourceNotFoundException"
                else:
                    raise AssertionError("the pool survived reset()")
                assert not standin.fidelity.email_mfa_enabled(pool_id, "any")
                # Usable again after a reset.
                create_pool(standin)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PYTHONPATH": str(LAMBDA_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# ---- seeding ---------------------------------------------------------------------------------


def test_seed_user_rejects_a_preferred_factor_that_is_not_enabled(make_user, pool_id):
    with pytest.raises(ValueError, match="not enabled"):
        make_user(pool_id, "alice", phone=PHONE, preferred="sms")


def test_seed_user_federated_user_is_external_provider(cognito, pool_id, make_user):
    make_user(pool_id, "Google_1234", status="EXTERNAL_PROVIDER")
    assert cognito.admin_get_user(UserPoolId=pool_id, Username="Google_1234")["UserStatus"] == (
        "EXTERNAL_PROVIDER"
    )


def test_demo_counts_add_up_and_follow_the_mix():
    counts = demo_counts(1000)
    assert sum(counts.values()) == 1000
    assert counts["break_glass"] == len(BREAK_GLASS_USERS)
    assert set(counts) == {*DEMO_MIX, "break_glass"}
    assert all(counts[kind] > 0 for kind in DEMO_MIX)


def test_seed_demo_pool_seeds_every_kind_quickly(standin, cognito):
    started = time.perf_counter()
    demo = seed_demo_pool(standin, n=1000, seed=7)
    assert time.perf_counter() - started < 5
    try:
        users = [
            user
            for page in cognito.get_paginator("list_users").paginate(
                UserPoolId=demo.pool_id, PaginationConfig={"PageSize": 60}
            )
            for user in page["Users"]
        ]
        assert len(users) == demo.total == 1000
        assert {kind: len(names) for kind, names in demo.usernames.items()} == demo.counts
        assert demo.usernames["break_glass"] == list(BREAK_GLASS_USERS)
        admins = cognito.list_users_in_group(UserPoolId=demo.pool_id, GroupName="admins", Limit=60)
        assert len(admins["Users"]) == min(
            60, demo.counts["admin_sms_only"] + demo.counts["admin_totp_and_sms"]
        )
        federated = demo.usernames["federated"][0]
        assert federated.startswith("Google_")
        assert mfa_of(cognito, demo.pool_id, demo.usernames["totp_verified_sms_preferred"][0]) == (
            {"SMS_MFA"},
            "SMS_MFA",
        )
        cognito.admin_set_user_mfa_preference(  # verified, so TOTP can be enabled
            UserPoolId=demo.pool_id,
            Username=demo.usernames["totp_verified_sms_preferred"][0],
            SoftwareTokenMfaSettings=TOTP_PREFERRED,
        )
        assert mfa_of(cognito, demo.pool_id, demo.usernames["totp_preferred"][0]) == (
            {"SMS_MFA", "SOFTWARE_TOKEN_MFA"},
            "SOFTWARE_TOKEN_MFA",
        )
        no_phone = cognito.admin_get_user(
            UserPoolId=demo.pool_id, Username=demo.usernames["no_mfa_without_phone"][0]
        )
        assert "phone_number" not in {a["Name"] for a in no_phone["UserAttributes"]}
        disabled = demo.usernames["disabled"][0]
        assert not cognito.admin_get_user(UserPoolId=demo.pool_id, Username=disabled)["Enabled"]
    finally:
        with standin.lock:
            standin.backend.user_pools.pop(demo.pool_id, None)


def test_seed_demo_pool_is_deterministic(standin):
    first = seed_demo_pool(standin, n=60, seed=3)
    second = seed_demo_pool(standin, n=60, seed=3)
    try:
        assert first.usernames == second.usernames
        subs = []
        for demo in (first, second):
            with standin.lock:
                pool = standin.backend.user_pools[demo.pool_id]
                subs.append([user.id for user in pool.users.values()])
        assert subs[0] == subs[1]
    finally:
        with standin.lock:
            for demo in (first, second):
                standin.backend.user_pools.pop(demo.pool_id, None)


def test_hooks_run_outside_the_lock(standin, cognito, pool_id, make_user):
    make_user(pool_id, "alice")
    acquired = []

    def take_and_release():
        taken = standin.lock.acquire(timeout=1)
        if taken:
            standin.lock.release()
        acquired.append(taken)

    def try_lock(operation, body):
        # Another thread must be able to take the lock while a hook runs.
        worker = threading.Thread(target=take_and_release)
        worker.start()
        worker.join()

    standin.before_request(try_lock)
    cognito.admin_get_user(UserPoolId=pool_id, Username="alice")
    assert acquired == [True]


def test_admin_calls_accept_a_users_sub_as_username(standin, cognito, pool_id, make_user):
    make_user(pool_id, "dora", phone="+15550100999")
    sub = next(
        a["Value"]
        for a in cognito.admin_get_user(UserPoolId=pool_id, Username="dora")["UserAttributes"]
        if a["Name"] == "sub"
    )

    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id, Username=sub, SMSMfaSettings={"Enabled": True, "PreferredMfa": True}
    )

    user = cognito.admin_get_user(UserPoolId=pool_id, Username=sub)
    assert user["Username"] == "dora"
    assert user["PreferredMfaSetting"] == "SMS_MFA"
