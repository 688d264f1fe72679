"""Cognito as it really is: states the first model missed, each seeded in the stand-in and run
through drift, apply and rollback (research/cognito-cost-and-state.md, issue 11).

Each scenario is one user in a pool of their own. The expected outcomes, writes and states
come from the service's documented rules, not from the code's output; "no write" means the
stand-in received no (Admin)SetUserMFAPreference for that user at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from mfa_policy.aws.gateway import CognitoGateway
from mfa_policy.core.engine import Mode
from mfa_policy.core.policy import parse_policy
from mfa_policy.exceptions import PreflightError
from mfa_policy.run.local_run import run_locally
from mfa_policy.run.rollback import rollback
from mfa_policy.standin import CognitoStandIn, Quotas

PHONE = "+15550100123"
WRITES = ("AdminSetUserMFAPreference", "SetUserMFAPreference")


def policy_of(factors: dict[str, str], **top: Any) -> Any:
    return parse_policy(
        {"version": 1, "rules": [{"name": "r", "match": "all", "factors": factors}], **top}
    )


def rows_of(report_dir: Path) -> list[dict[str, Any]]:
    lines = (report_dir / "users.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def run(standin: CognitoStandIn, pool_id: str, policy: Any, mode: Mode, out: Path, **kw: Any):
    result = run_locally(
        policy,
        pool_id,
        mode,
        client=kw.pop("client", None) or standin.client(),
        state_dir=out.parent / "state",
        report_dir=out,
        **kw,
    )
    return result.summary, {r["username"]: r for r in rows_of(result.report_dir)}


def mfa_of(client: Any, pool_id: str, username: str) -> dict[str, Any]:
    """The user's MFA settings as AdminGetUser shows them (legacy MFAOptions included)."""
    user = client.admin_get_user(UserPoolId=pool_id, Username=username)
    return {
        "list": sorted(user.get("UserMFASettingList") or []),
        "preferred": user.get("PreferredMfaSetting"),
        "options": [o["DeliveryMedium"] for o in user.get("MFAOptions") or []],
    }


def writes_sent(standin: CognitoStandIn) -> int:
    return sum(standin.calls.get(op, 0) for op in WRITES)


@dataclass(frozen=True)
class Scenario:
    user: dict[str, Any]  # seed_user arguments
    factors: dict[str, str]  # the one rule's factors
    drift: str
    apply: str
    #: AdminGetUser's view after apply: sorted UserMFASettingList, PreferredMfaSetting.
    after: tuple[list[str], str | None]
    writes: int  # (Admin)SetUserMFAPreference requests the apply sends, accepted or not
    rollback: str | None  # the rollback's outcome for the user, None: nothing to restore
    reason: str = ""  # the apply's reason starts with or contains this
    pool: dict[str, Any] = field(default_factory=dict)  # create_pool arguments
    legacy_sms: bool = False  # the drift row says legacy_sms


SCENARIOS: dict[str, Scenario] = {
    # MFAOptions SMS, no UserMFASettingList: SMS is in effect. `sms: disabled` must not read
    # as compliant; the apply turns it off with the current API.
    "legacy_sms_disabled": Scenario(
        user={"phone": PHONE, "legacy_sms": True, "totp_enabled": True, "preferred": "totp"},
        factors={"sms": "disabled"},
        drift="would_change",
        apply="changed",
        after=(["SOFTWARE_TOKEN_MFA"], "SOFTWARE_TOKEN_MFA"),
        writes=1,
        rollback="changed",
        reason="legacy SMS MFA",
        legacy_sms=True,
    ),
    # An enrolled legacy user under `sms: enabled` is not drift in factors, but is moved to
    # the current API (one SMS block), after which MFAOptions is no longer the only record.
    "legacy_sms_enabled": Scenario(
        user={"phone": PHONE, "legacy_sms": True},
        factors={"sms": "enabled"},
        drift="would_change",
        apply="changed",
        after=(["SMS_MFA"], None),
        writes=1,
        rollback=None,  # the state is the same; MFAOptions is not something to restore
        reason="legacy SMS MFA (MFAOptions): set sms with the current API",
        legacy_sms=True,
    ),
    # Re-associated TOTP, never verified: listed, not in effect. Disabling SMS would leave the
    # user with a factor that does nothing, so nothing is sent.
    "stale_totp": Scenario(
        user={"phone": PHONE, "totp_stale": True, "sms_enabled": True, "preferred": "sms"},
        factors={"totp": "preferred", "sms": "disabled"},
        drift="needs_enrollment",
        apply="needs_enrollment",
        after=(["SMS_MFA", "SOFTWARE_TOKEN_MFA"], "SMS_MFA"),
        writes=0,
        rollback=None,
        reason="totp is listed but not in effect",
    ),
    # Signs in with a one-time code, no password; MFA OPTIONAL: turning SMS on could lock
    # them out.
    "passwordless": Scenario(
        user={"phone": PHONE, "passwordless": True},
        factors={"sms": "enabled"},
        drift="guarded",
        apply="guarded",
        after=([], None),
        writes=0,
        rollback=None,
        reason="passwordless:",
        pool={"first_auth_factors": ["PASSWORD", "SMS_OTP"]},
    ),
    # MFA required: factors are never turned off; the preference change is still made.
    "required_pool": Scenario(
        user={"phone": PHONE, "totp_enabled": True, "sms_enabled": True, "preferred": "sms"},
        factors={"totp": "preferred", "sms": "disabled"},
        drift="guarded",
        apply="guarded",
        after=(["SMS_MFA", "SOFTWARE_TOKEN_MFA"], "SOFTWARE_TOKEN_MFA"),
        writes=1,
        rollback="changed",
        reason="pool_requires_mfa: sms kept",
        pool={"mfa": "ON"},
    ),
    "unconfirmed": Scenario(
        user={"phone": PHONE, "sms_enabled": True, "preferred": "sms", "status": "UNCONFIRMED"},
        factors={"sms": "disabled", "totp": "preferred"},
        drift="skipped",
        apply="skipped",
        after=(["SMS_MFA"], "SMS_MFA"),
        writes=0,
        rollback=None,
        reason="unconfirmed:",
    ),
    "reset_required": Scenario(
        user={"phone": PHONE, "status": "RESET_REQUIRED"},
        factors={"sms": "enabled"},
        drift="skipped",
        apply="skipped",
        after=([], None),
        writes=0,
        rollback=None,
        reason="reset_required:",
    ),
    # Passkey MFA beside TOTP: one write that also repeats TOTP's setting (Cognito refuses a
    # request that turns passkey MFA on alone).
    "passkey": Scenario(
        user={"phone": PHONE, "totp_enabled": True, "preferred": "totp", "passkey": True},
        factors={"passkey": "enabled"},
        drift="would_change",
        apply="changed",
        after=(["SOFTWARE_TOKEN_MFA", "WEB_AUTHN_MFA"], "SOFTWARE_TOKEN_MFA"),
        writes=1,
        rollback="changed",
        pool={"passkey": True},
    ),
    # A passkey but no other factor: passkey MFA alone is not allowed; nothing is sent.
    "passkey_alone": Scenario(
        user={"passkey": True},
        factors={"passkey": "enabled"},
        drift="guarded",
        apply="guarded",
        after=([], None),
        writes=0,
        rollback=None,
        reason="passkey_needs_another_factor",
        pool={"passkey": True},
    ),
    # No passkey registered: apply tries once (Cognito refuses), then remembers.
    "passkey_not_registered": Scenario(
        user={"phone": PHONE, "sms_enabled": True, "preferred": "sms"},
        factors={"passkey": "enabled"},
        drift="needs_enrollment",
        apply="needs_enrollment",
        after=(["SMS_MFA"], "SMS_MFA"),
        writes=1,
        rollback=None,
        reason="probe rejected: no passkey registered",
        pool={"passkey": True},
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_drift_apply_and_rollback_give_the_right_outcome(
    name, standin, make_pool, make_user, tmp_path
):
    s = SCENARIOS[name]
    pool_id = make_pool(**s.pool)
    client = standin.client()
    make_user(pool_id, name, **s.user)
    policy = policy_of(s.factors)
    before = mfa_of(client, pool_id, name)

    _, drift = run(standin, pool_id, policy, Mode.DRIFT, tmp_path / "drift")
    assert drift[name]["outcome"] == s.drift, drift[name]["reason"]
    assert drift[name].get("legacy_sms", False) is s.legacy_sms
    assert mfa_of(client, pool_id, name) == before

    standin.reset_counters()
    _, applied = run(standin, pool_id, policy, Mode.APPLY, tmp_path / "apply")
    row = applied[name]
    assert row["outcome"] == s.apply, row["reason"]
    assert s.reason in row["reason"]
    assert writes_sent(standin) == s.writes
    after = mfa_of(client, pool_id, name)
    assert (after["list"], after["preferred"]) == s.after

    standin.reset_counters()
    _, again = run(standin, pool_id, policy, Mode.APPLY, tmp_path / "apply-again")
    assert writes_sent(standin) == 0, "an apply repeated at once sends nothing"
    assert again[name]["outcome"] in (s.apply, "compliant")

    summary = rollback(
        CognitoGateway(standin.client(), pool_id), tmp_path / "apply", tmp_path / "rb"
    )
    restored = {r["username"]: r for r in rows_of(tmp_path / "rb")}
    if s.rollback is None:
        assert restored == {} and summary["users"] == 0
    else:
        assert restored[name]["outcome"] == s.rollback, restored[name]["reason"]
        now = mfa_of(client, pool_id, name)
        # Back to the before-state, with the current API: legacy MFAOptions is not restored.
        assert (now["list"], now["preferred"]) == (
            sorted({*before["list"], *(["SMS_MFA"] if "SMS" in before["options"] else [])}),
            before["preferred"],
        )


def test_the_passkey_write_turns_passkey_on_beside_a_repeated_totp_block(
    standin, make_pool, make_user, tmp_path
):
    pool_id = make_pool(passkey=True)
    make_user(pool_id, "pia", totp_enabled=True, preferred="totp", passkey=True)

    _, rows = run(standin, pool_id, policy_of({"passkey": "enabled"}), Mode.APPLY, tmp_path / "a")

    assert rows["pia"]["request"] == {
        "totp": {"enabled": True, "preferred": True},
        "passkey": {"enabled": True, "preferred": False},
    }
    assert rows["pia"]["after"] == {"enabled": ["totp", "passkey"], "preferred": "totp"}


# ---- the read: AdminGetUserAuthFactors, AdminGetUser where it is not allowed -----------------


def test_runs_read_with_admin_get_user_auth_factors_and_never_admin_get_user(
    standin, demo_pool, tmp_path
):
    pool = demo_pool(40)
    summary, _ = run(
        standin, pool.pool_id, policy_of({"totp": "preferred"}), Mode.DRIFT, tmp_path / "d"
    )
    calls = summary["counts"]["api_calls"]
    assert calls.get("admin_get_user_auth_factors", 0) > 0
    # AdminGetUser makes each user a billable MAU; the default read does not.
    assert "admin_get_user" not in calls and standin.calls.get("AdminGetUser", 0) == 0


def test_without_the_auth_factors_action_runs_fall_back_to_admin_get_user_with_a_warning(
    standin, make_pool, make_user, tmp_path
):
    pool_id = make_pool()
    make_user(pool_id, "ana", phone=PHONE, sms_enabled=True, preferred="sms", totp_verified=True)
    standin.inject(
        "AdminGetUserAuthFactors",
        "AccessDeniedException",
        "User is not authorized to perform: cognito-idp:AdminGetUserAuthFactors",
        times=None,
    )

    summary, rows = run(
        standin, pool_id, policy_of({"totp": "preferred"}), Mode.APPLY, tmp_path / "a"
    )

    assert rows["ana"]["outcome"] == "changed"  # the probe is accepted: she verified a token
    assert standin.calls["AdminGetUserAuthFactors"] == 1, "asked once, then not again"
    assert summary["counts"]["api_calls"]["admin_get_user"] == 1
    assert any("AdminGetUser" in w and "MAU" in w for w in summary["warnings"])


def test_with_the_fallback_read_a_pool_allowing_passwordless_sign_in_turns_no_factor_on(
    standin, make_pool, make_user, tmp_path
):
    """AdminGetUser cannot show who has a password; in a pool that allows sign-in without one,
    any user may be passwordless, so no write turns a factor on."""
    pool_id = make_pool(first_auth_factors=["PASSWORD", "EMAIL_OTP"])
    make_user(pool_id, "pat", phone=PHONE, email="pat@example.com", passwordless=True)
    make_user(pool_id, "sue", phone=PHONE, sms_enabled=True, preferred="sms")
    standin.inject("AdminGetUserAuthFactors", "AccessDeniedException", "denied", times=None)

    _, rows = run(standin, pool_id, policy_of({"sms": "enabled"}), Mode.APPLY, tmp_path / "a")

    assert rows["pat"]["outcome"] == "guarded"
    assert rows["pat"]["reason"].startswith("passwordless: the pool allows sign-in without")
    assert rows["sue"]["outcome"] == "compliant"
    assert writes_sent(standin) == 0


def test_a_stale_totp_that_only_a_refused_write_reveals_keeps_the_users_sms(
    standin, make_pool, make_user, tmp_path
):
    """With AdminGetUser (no ConfiguredUserAuthFactors) the stale TOTP looks in effect; the
    refusal is the first sign, and the follow-up must not disable SMS on its strength."""
    pool_id = make_pool()
    make_user(pool_id, "sam", phone=PHONE, totp_stale=True, sms_enabled=True, preferred="sms")
    standin.inject("AdminGetUserAuthFactors", "AccessDeniedException", "denied", times=None)
    client = standin.client()

    _, rows = run(
        standin,
        pool_id,
        policy_of({"totp": "preferred", "sms": "disabled"}),
        Mode.APPLY,
        tmp_path / "a",
        client=client,
    )

    assert rows["sam"]["outcome"] == "needs_enrollment", rows["sam"]["reason"]
    assert "last_factor: sms kept" in rows["sam"]["reason"]
    assert standin.calls["AdminSetUserMFAPreference"] == 1  # the refused one, no follow-up
    assert mfa_of(client, pool_id, "sam")["list"] == ["SMS_MFA", "SOFTWARE_TOKEN_MFA"]


def test_associating_a_new_software_token_makes_totp_stale_until_it_is_verified(
    standin, make_pool, make_user, tmp_path
):
    pool_id = make_pool()
    make_user(pool_id, "tom", phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="totp")
    token = standin.issue_access_token(pool_id, "tom")
    client = standin.client()
    client.associate_software_token(AccessToken=token)

    factors = client.admin_get_user_auth_factors(UserPoolId=pool_id, Username="tom")
    assert "SOFTWARE_TOKEN_MFA" in factors["UserMFASettingList"]
    assert "SOFTWARE_TOKEN" not in factors.get("ConfiguredUserAuthFactors", [])
    _, rows = run(standin, pool_id, policy_of({"sms": "disabled"}), Mode.APPLY, tmp_path / "a")
    # The user must verify the new token; until then SMS is the only factor that works.
    assert rows["tom"]["outcome"] == "needs_enrollment"
    assert "totp is listed but not in effect" in rows["tom"]["reason"]
    assert "last_factor: sms kept" in rows["tom"]["reason"]
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0


# ---- errors as the service words them --------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        # Neither is "this user has no authenticator": guessing from "SOFTWARE_TOKEN" or
        # "Email" would report needs_enrollment or blocked for what is a failure.
        "Cannot set SOFTWARE_TOKEN_MFA as the preferred MFA method when it is not enabled.",
        "Email MFA is not enabled for this user pool.",
    ],
)
def test_an_unknown_invalid_parameter_answer_is_failed_with_its_message(
    message, standin, make_pool, make_user, tmp_path
):
    pool_id = make_pool(email=True)
    make_user(pool_id, "fay", phone=PHONE, email="fay@example.com")
    standin.inject("AdminSetUserMFAPreference", "InvalidParameterException", message)

    _, rows = run(
        standin,
        pool_id,
        policy_of({"totp": "preferred", "email": "enabled"}),
        Mode.APPLY,
        tmp_path / "a",
    )

    assert rows["fay"]["outcome"] == "failed"
    assert rows["fay"]["error"] == "InvalidParameterException"
    assert rows["fay"]["reason"] == f"admin_set_user_mfa_preference: {message}"


def test_a_disabled_users_token_is_revoked_for_good(
    standin, make_pool, make_user, token_table, tmp_path
):
    pool_id = make_pool()
    make_user(pool_id, "dan", phone=PHONE)
    table, _ = token_table(pool_id, ["dan"])
    client = standin.client()
    client.admin_disable_user(UserPoolId=pool_id, Username="dan")
    client.admin_enable_user(UserPoolId=pool_id, Username="dan")

    _, rows = run(
        standin,
        pool_id,
        policy_of({"sms": "enabled"}),
        Mode.APPLY,
        tmp_path / "a",
        auth="access-token",
        tokens=table,
    )

    assert rows["dan"]["outcome"] == "token_invalid"
    assert rows["dan"]["reason"] == "token_rejected: stored access token revoked"
    assert writes_sent(standin) == 0


def test_the_stand_in_refuses_writes_to_unconfirmed_and_reset_required_users(
    standin, make_pool, make_user, cognito
):
    pool_id = make_pool()
    for name, status, code in (
        ("una", "UNCONFIRMED", "UserNotConfirmedException"),
        ("rex", "RESET_REQUIRED", "PasswordResetRequiredException"),
    ):
        make_user(pool_id, name, phone=PHONE, status=status)
        with pytest.raises(ClientError) as caught:
            cognito.admin_set_user_mfa_preference(
                UserPoolId=pool_id, Username=name, SMSMfaSettings={"Enabled": True}
            )
        assert caught.value.response["Error"]["Code"] == code


# ---- pools: preflight ------------------------------------------------------------------------


PREFLIGHT_REFUSALS: dict[str, tuple[dict[str, Any], dict[str, str], str]] = {
    "email_only_recovery": (
        {"email": True, "recovery": ["verified_email"]},
        {"email": "preferred"},
        "recovers accounts by email only",
    ),
    "lite_plan_email": ({"tier": "LITE"}, {"email": "enabled"}, "Lite feature plan"),
    "lite_plan_passkey": ({"tier": "LITE"}, {"passkey": "enabled"}, "Lite feature plan"),
    "no_passkey_mfa": (
        {},
        {"passkey": "enabled", "totp": "enabled"},
        "FactorConfiguration is not set, not MULTI_FACTOR_WITH_USER_VERIFICATION",
    ),
}


@pytest.mark.parametrize("name", list(PREFLIGHT_REFUSALS))
def test_preflight_refuses_a_policy_the_pool_cannot_honour_before_any_user_read(
    name, standin, make_pool, make_user, tmp_path
):
    pool_kwargs, factors, message = PREFLIGHT_REFUSALS[name]
    pool_id = make_pool(**pool_kwargs)
    make_user(pool_id, "eve", phone=PHONE, email="eve@example.com")

    with pytest.raises(PreflightError, match=message):
        run(standin, pool_id, policy_of(factors), Mode.DRIFT, tmp_path / "d")
    assert not any(standin.calls.get(op) for op in ("ListUsers", "AdminGetUserAuthFactors"))


def test_an_email_only_recovery_pool_still_runs_a_policy_without_email(
    standin, make_pool, make_user, tmp_path
):
    pool_id = make_pool(email=True, recovery=["verified_email"])
    make_user(pool_id, "eve", phone=PHONE)
    _, rows = run(standin, pool_id, policy_of({"sms": "enabled"}), Mode.DRIFT, tmp_path / "d")
    assert rows["eve"]["outcome"] == "would_change"


def test_a_required_pool_warns_that_disabling_rules_are_guarded(
    standin, make_pool, make_user, tmp_path
):
    pool_id = make_pool(mfa="ON")
    make_user(pool_id, "ona", phone=PHONE, sms_enabled=True, preferred="sms")
    summary, _ = run(standin, pool_id, policy_of({"sms": "disabled"}), Mode.DRIFT, tmp_path / "d")
    assert any("pool_requires_mfa" in w and "guarded" in w for w in summary["warnings"])


# ---- quotas as documented --------------------------------------------------------------------


def _no_retries(standin: CognitoStandIn) -> Any:
    return standin.client(config=Config(retries={"total_max_attempts": 1}))


def _throttled(call: Callable[[], Any]) -> bool:
    try:
        call()
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
    else:
        return False
    assert code == "TooManyRequestsException"
    return True


def _until_throttled(call: Callable[[], Any], limit: int = 80) -> tuple[int, float]:
    """Send ``call`` until Cognito throttles it: (requests let through, seconds it took)."""
    started = time.monotonic()
    for sent in range(limit):
        if _throttled(call):
            return sent, time.monotonic() - started
    raise AssertionError(f"{limit} requests and no throttle")


def _within_quota(allowed: int, seconds: float, rate: float) -> bool:
    # A full bucket (one second's worth) plus what it refilled while the requests ran.
    return rate <= allowed <= rate + rate * seconds + 1


def test_pool_resource_reads_are_limited_to_five_a_second_per_pool(standin, make_pool):
    first, second = make_pool(), make_pool()
    client = _no_retries(standin)
    with standin.configured(quotas=Quotas()):
        allowed, seconds = _until_throttled(
            lambda: client.get_user_pool_mfa_config(UserPoolId=first)
        )
        other_pool = _throttled(lambda: client.get_user_pool_mfa_config(UserPoolId=second))
        other_operation = _throttled(lambda: client.describe_user_pool(UserPoolId=first))
    assert _within_quota(allowed, seconds, 5), (allowed, seconds)
    assert not other_pool and not other_operation


def test_each_user_gets_ten_reads_and_ten_writes_a_second(standin, make_pool, make_user):
    pool_id = make_pool()
    for name in ("amy", "bob"):
        make_user(pool_id, name, phone=PHONE)
    client = _no_retries(standin)

    def read(name: str) -> Callable[[], Any]:
        return lambda: client.admin_get_user_auth_factors(UserPoolId=pool_id, Username=name)

    def write(name: str) -> Callable[[], Any]:
        return lambda: client.admin_set_user_mfa_preference(
            UserPoolId=pool_id, Username=name, SMSMfaSettings={"Enabled": True}
        )

    with standin.configured(quotas=Quotas()):
        reads = _until_throttled(read("amy"))
        writes = _until_throttled(write("amy"))
        others = (_throttled(read("bob")), _throttled(write("bob")))
    assert _within_quota(*reads, 10), reads
    assert _within_quota(*writes, 10), writes
    assert others == (False, False)
