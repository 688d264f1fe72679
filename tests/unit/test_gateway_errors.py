"""Cognito's refusals are classified by the service's own messages, never by a word in one."""

import pytest

from mfa_policy.aws.gateway import CognitoError
from mfa_policy.core.engine import Rejection


@pytest.mark.parametrize(
    ("message", "rejection"),
    [
        (
            "User does not have delivery config set to turn on SOFTWARE_TOKEN_MFA",
            Rejection.TOTP_NOT_VERIFIED,
        ),
        ("User has not verified software token mfa", Rejection.TOTP_NOT_VERIFIED),
        ("User has not set up software token mfa", Rejection.TOTP_NOT_VERIFIED),
        ("User does not have a phone_number set to turn on SMS MFA", Rejection.NO_PHONE_NUMBER),
        ("User does not have delivery config set to turn on SMS_MFA", Rejection.NO_PHONE_NUMBER),
        (
            "User does not have applicable WebAuthn credentials to enable WebAuthn MFA.",
            Rejection.PASSKEY_NOT_REGISTERED,
        ),
        ("Cannot set SOFTWARE_TOKEN_MFA as the preferred MFA method when it is not enabled.", None),
        ("Email MFA is not enabled for this user pool.", None),
        ("WebAuthn MFA requires enabling an additional MFA setting.", None),
        ("1 validation error detected: Value 'x' at 'username' failed", None),
    ],
)
def test_invalid_parameter_messages(message, rejection):
    error = CognitoError("InvalidParameterException", message, "admin_set_user_mfa_preference")
    assert error.rejection is rejection


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("Access Token has expired", "expired"),
        ("Access Token has been revoked", "revoked"),
        ("Invalid Access Token", "invalid"),
        ("User is disabled.", None),
    ],
)
def test_token_problems(message, problem):
    assert CognitoError("NotAuthorizedException", message, "get_user").token_problem == problem
