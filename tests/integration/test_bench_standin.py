"""The bench stand-in (`bench/standin.py`) behaves like the moto stand-in's fidelity layer.

The benchmarks' numbers are only worth what the bench stand-in is: the same MFA rules and
messages as the fidelity layer, the same response shapes, quotas that throttle, pools that hold
no user, and its HTTP face speaking Cognito's protocol to boto3.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from mfa_policy.aws.gateway import CognitoGateway, mfa_state_of
from mfa_policy.core.model import Factor
from mfa_policy.standin import UserFacts, check_mfa_preference

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench.standin import (  # noqa: E402
    EMAIL,
    SMS,
    TOTP,
    BenchCognito,
    Quotas,
    RemoteStandIn,
    preference_error,
)

BLOCK_CHOICES = [None, (False, False), (True, False), (True, True), (False, True)]


def test_preference_rules_agree_with_the_fidelity_layer_on_every_combination():
    checked = 0
    for sms, totp, email in itertools.product(BLOCK_CHOICES, repeat=3):
        body = {
            key: {"Enabled": block[0], "PreferredMfa": block[1]}
            for key, block in (
                ("SMSMfaSettings", sms),
                ("SoftwareTokenMfaSettings", totp),
                ("EmailMfaSettings", email),
            )
            if block is not None
        }
        for phone, mail, verified, email_mfa in itertools.product([False, True], repeat=4):
            for pool_mfa in ("OFF", "OPTIONAL", "ON"):
                facts = UserFacts(phone, mail, verified, pool_mfa, email_mfa)
                expected = check_mfa_preference(body, facts)
                got = preference_error(
                    body,
                    has_phone=phone,
                    has_email=mail,
                    totp_verified=verified,
                    pool_mfa=pool_mfa,
                    pool_email_mfa=email_mfa,
                )
                assert got == (None if expected is None else (expected.code, expected.message)), (
                    body,
                    facts,
                )
                checked += 1
    assert checked == 125 * 16 * 3


def test_users_are_generated_deterministically_and_only_changes_are_stored():
    cognito = BenchCognito(latency=None, quotas=None)
    a, b = cognito.create_pool(1_000_000), cognito.create_pool(1_000_000)
    first = cognito.list_users(UserPoolId=a, Limit=60)
    assert [u["Username"] for u in first["Users"][:2]] == ["user-0000001", "user-0000002"]
    assert first["PaginationToken"] == "60"
    assert cognito.list_users(UserPoolId=b, Limit=60)["Users"] == first["Users"]  # same seed
    last = cognito.list_users(UserPoolId=a, Limit=60, PaginationToken="999990")
    assert len(last["Users"]) == 10 and "PaginationToken" not in last
    user = cognito.admin_get_user(UserPoolId=a, Username="user-0999999")
    assert {"Username", "UserAttributes", "Enabled", "UserStatus"} <= set(user)
    assert any(x["Name"] == "sub" for x in user["UserAttributes"])
    assert cognito.pool(a).mfa == {}  # nothing stored for reads


def test_admin_get_user_omits_empty_mfa_fields_and_a_write_is_read_back():
    cognito = BenchCognito(latency=None, quotas=None)
    pool_id = cognito.create_pool(5000, mix="verified")
    name = next(
        u["Username"]
        for u in cognito.list_users(UserPoolId=pool_id)["Users"]
        if cognito.admin_get_user(UserPoolId=pool_id, Username=u["Username"]).get(
            "PreferredMfaSetting"
        )
        == SMS
    )
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool_id,
        Username=name,
        SoftwareTokenMfaSettings={"Enabled": True, "PreferredMfa": True},
    )
    read = cognito.admin_get_user(UserPoolId=pool_id, Username=name)
    assert read["PreferredMfaSetting"] == TOTP and TOTP in read["UserMFASettingList"]
    cognito.set_mfa(pool_id, name, set(), None)
    empty = cognito.admin_get_user(UserPoolId=pool_id, Username=name)
    assert "UserMFASettingList" not in empty and "PreferredMfaSetting" not in empty
    assert EMAIL not in read["UserMFASettingList"]
    assert cognito.stats()["writes_accepted"] == 1 and len(cognito.pool(pool_id).mfa) == 1


def test_errors_are_client_errors_with_cognito_codes():
    cognito = BenchCognito(latency=None, quotas=None)
    pool_id = cognito.create_pool(100)
    cases = [
        (lambda: cognito.admin_get_user(UserPoolId=pool_id, Username="nobody"), "UserNotFound"),
        (lambda: cognito.list_users(UserPoolId=pool_id, Limit=61), "InvalidParameter"),
        (lambda: cognito.list_users(UserPoolId="us-east-1_none"), "ResourceNotFound"),
        (lambda: cognito.get_user(AccessToken="junk"), "NotAuthorized"),
    ]
    for call, code in cases:
        with pytest.raises(ClientError) as error:
            call()
        assert error.value.response["Error"]["Code"] == f"{code}Exception"
        assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_quota_throttles_requests_over_the_rate_like_the_service():
    cognito = BenchCognito(latency=None, quotas=Quotas(user_read=50))
    pool_id = cognito.create_pool(100)
    answers = []
    start = time.monotonic()
    for _ in range(120):
        try:
            cognito.admin_get_user(UserPoolId=pool_id, Username="user-0000001")
            answers.append("ok")
        except ClientError as error:
            answers.append(error.response["Error"]["Code"])
    elapsed = time.monotonic() - start
    # One second of burst, then the rate: what refilled while the loop ran, on a busy machine.
    assert 50 <= answers.count("ok") <= 50 + int(50 * elapsed) + 1
    assert set(answers) == {"ok", "TooManyRequestsException"}
    assert cognito.stats()["throttled"]["AdminGetUser"] == answers.count("TooManyRequestsException")


def test_latency_is_slept_outside_the_locks_so_requests_overlap():
    cognito = BenchCognito(latency=(0.1, 0.1), quotas=None)
    pool_id = cognito.create_pool(100)
    threads = [
        threading.Thread(
            target=cognito.admin_get_user,
            kwargs={"UserPoolId": pool_id, "Username": f"user-{i:07d}"},
        )
        for i in range(1, 21)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - start < 0.5  # 20 requests of 100 ms each, in parallel


def test_http_server_speaks_cognito_json_to_boto3_and_to_the_gateway():
    with RemoteStandIn(latency=None, quotas=Quotas()) as remote:
        pool_id = remote.create_pool(200)
        gateway = CognitoGateway(remote.client(), pool_id)
        page = gateway.list_users_page()
        assert len(page.users) == 60 and page.next_token == "60"
        assert gateway.pool_mfa_config().factors == {Factor.TOTP, Factor.SMS}
        read = gateway.admin_read(page.users[0].username)
        local = BenchCognito(latency=None, quotas=None)  # the same users, in-process
        assert read.mfa == mfa_state_of(local.pool(local.create_pool(200)).user(0))[0]
        with pytest.raises(ClientError) as error:
            remote.client().admin_set_user_mfa_preference(
                UserPoolId=pool_id,
                Username="user-0000001",
                SMSMfaSettings={"Enabled": False, "PreferredMfa": True},
            )
        assert error.value.response["Error"]["Code"] == "InvalidParameterException"
        assert remote.stats()["calls"]["AdminSetUserMFAPreference"] == 1
