"""The state ledger and the CloudTrail change feed against the stand-in: runs that read only
the users who can have changed, and report exactly what a full read reports.

Changes go through the stand-in's API (admin calls, users' own token calls), so CloudTrail
records them as the real service does; a "full read" is the same run without a ledger.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from mfa_policy.cli.demo import demo_policy
from mfa_policy.core.engine import Mode
from mfa_policy.core.report import READS
from mfa_policy.run.estimate import estimate_drift
from mfa_policy.run.ledger import SqliteLedger
from mfa_policy.run.local_run import run_locally
from mfa_policy.standin import CognitoStandIn, DemoPool

FAST_LOOKUPS = 1000.0  # the stand-in is not throttled here; real CloudTrail allows ~2/s
#: Row fields that say how a state was learned, not what the outcome is.
HOW_LEARNED = ("state_source", "observed_at", "read_reason", "mau_added")


def rows_of(report_dir: Path) -> list[dict[str, Any]]:
    text = (report_dir / "users.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def outcomes(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["sub"]: {k: v for k, v in r.items() if k not in HOW_LEARNED} for r in rows}


def read_subs(rows: list[dict[str, Any]]) -> set[str]:
    return {r["sub"] for r in rows if r.get("state_source") in READS}


def drift(
    standin: CognitoStandIn,
    pool_id: str,
    state_dir: Path,
    report_dir: Path,
    *,
    ledger: bool = True,
    mode: Mode = Mode.DRIFT,
    **kwargs: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = run_locally(
        demo_policy(),
        pool_id,
        mode,
        client=standin.client(),
        state_dir=state_dir,
        report_dir=report_dir,
        cloudtrail=standin.client("cloudtrail") if ledger else None,
        lookups_per_second=FAST_LOOKUPS,
        **kwargs,
    )
    return result.summary, rows_of(result.report_dir)


def full_read(standin: CognitoStandIn, pool_id: str, tmp_path: Path, name: str) -> list[dict]:
    return drift(standin, pool_id, tmp_path / f"{name}-state", tmp_path / name, ledger=False)[1]


def sub_of(standin: CognitoStandIn, pool_id: str, username: str) -> str:
    with standin.lock:
        return str(standin.backend.user_pools[pool_id]._get_user(username).id)


def test_second_drift_reads_only_the_changed_users_and_reports_what_a_full_read_does(
    standin: CognitoStandIn, demo_pool: Any, tmp_path: Path
) -> None:
    pool: DemoPool = demo_pool(100)
    cognito = standin.client()
    state = tmp_path / "state"
    first, first_rows = drift(standin, pool.pool_id, state, tmp_path / "1")
    assert first["ledger"]["reason"] == "first run"
    in_scope = {r["sub"] for r in first_rows if r["before"] is not None}
    assert read_subs(first_rows) == in_scope and len(in_scope) > 50  # never observed: read

    unchanged, unchanged_rows = drift(standin, pool.pool_id, state, tmp_path / "2")
    assert unchanged["cost"]["mfa_reads"] == 0 and unchanged["cost"]["maus_added"] == 0
    assert outcomes(unchanged_rows) == outcomes(first_rows)

    late_user = pool.usernames["totp_preferred"][0]
    with standin.configured(cloudtrail_lag_seconds=3600):
        # An admin turns this user's TOTP off; CloudTrail delivers the event after the next run.
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool.pool_id,
            Username=late_user,
            SoftwareTokenMfaSettings={"Enabled": False, "PreferredMfa": False},
            SMSMfaSettings={"Enabled": True, "PreferredMfa": True},
        )
        missed, _ = drift(standin, pool.pool_id, state, tmp_path / "3")
    assert missed["cost"]["mfa_reads"] == 0  # nothing delivered yet: nobody can be known changed
    assert standin.deliver_cloudtrail_events() >= 1

    token_user = pool.usernames["totp_preferred"][1]  # the user's own call, with their token
    token = standin.issue_access_token(pool.pool_id, token_user)
    cognito.set_user_mfa_preference(
        AccessToken=token, SMSMfaSettings={"Enabled": True, "PreferredMfa": True}
    )
    admin_user = pool.usernames["totp_and_sms_sms_preferred"][0]
    cognito.admin_set_user_mfa_preference(
        UserPoolId=pool.pool_id,
        Username=admin_user,
        SoftwareTokenMfaSettings={"Enabled": True, "PreferredMfa": True},
    )
    phone_user = pool.usernames["no_mfa_with_phone"][0]
    cognito.admin_delete_user_attributes(
        UserPoolId=pool.pool_id, Username=phone_user, UserAttributeNames=["phone_number"]
    )
    changed = {sub_of(standin, pool.pool_id, u) for u in (late_user, token_user, admin_user)}
    changed.add(sub_of(standin, pool.pool_id, phone_user))
    maus_before = standin.monthly_active_users(pool.pool_id)

    second, second_rows = drift(standin, pool.pool_id, state, tmp_path / "4")
    assert read_subs(second_rows) == changed
    assert second["cost"] == {
        "mfa_reads": 4,
        "mau_reads": 0,
        "maus_added": 0,  # all four were read (or signed in) earlier this month
        "from_ledger": len(in_scope) - 4,
        "read_reasons": {"event": 4},
    }
    assert standin.monthly_active_users(pool.pool_id) == maus_before
    full = full_read(standin, pool.pool_id, tmp_path, "full")
    assert outcomes(second_rows) == outcomes(full)
    by_sub = {r["sub"]: r for r in second_rows}
    # Their authenticator is still registered (the auth-factors read shows it): apply can
    # turn TOTP back on without a probe.
    assert by_sub[sub_of(standin, pool.pool_id, late_user)]["outcome"] == "would_change"
    assert by_sub[sub_of(standin, pool.pool_id, phone_user)]["outcome"] == "blocked"
    summary_md = (tmp_path / "4" / "summary.md").read_text("utf-8")
    # Read with AdminGetUserAuthFactors, which is not documented to count as MAU.
    assert "MFA reads: 4 (incremental (state ledger)); 0 with AdminGetUser" in summary_md
    assert "MAUs added: 0" in summary_md


def test_a_change_seen_only_in_the_listing_is_read(
    standin: CognitoStandIn, demo_pool: Any, tmp_path: Path
) -> None:
    pool = demo_pool(30)
    state = tmp_path / "state"
    drift(standin, pool.pool_id, state, tmp_path / "1")
    user = pool.usernames["sms_preferred"][0]
    time.sleep(1.1)  # UserLastModifiedDate has one-second steps in some encodings
    with standin.lock:  # no API call, so no CloudTrail event: only the listing shows it
        standin.backend.user_pools[pool.pool_id]._get_user(user).update_attributes(
            [{"Name": "given_name", "Value": "Changed"}]
        )
    summary, rows = drift(standin, pool.pool_id, state, tmp_path / "2")
    assert read_subs(rows) == {sub_of(standin, pool.pool_id, user)}
    assert summary["cost"]["read_reasons"] == {"listing_changed": 1}


def test_full_reads_everyone_and_keeps_the_ledger(
    standin: CognitoStandIn, demo_pool: Any, tmp_path: Path
) -> None:
    pool = demo_pool(30)
    state = tmp_path / "state"
    _, first = drift(standin, pool.pool_id, state, tmp_path / "1")
    summary, rows = drift(standin, pool.pool_id, state, tmp_path / "2", full=True)
    assert read_subs(rows) == read_subs(first)
    assert summary["ledger"]["reason"] == "--full"
    assert summary["cost"]["read_reasons"] == {"full": len(read_subs(first))}
    after, _ = drift(standin, pool.pool_id, state, tmp_path / "3")
    assert after["cost"]["mfa_reads"] == 0


def test_cloudtrail_access_denied_falls_back_to_a_full_read_with_a_warning(
    standin: CognitoStandIn, demo_pool: Any, tmp_path: Path
) -> None:
    pool = demo_pool(30)
    state = tmp_path / "state"
    _, first = drift(standin, pool.pool_id, state, tmp_path / "1")
    standin.inject(
        "LookupEvents",
        "AccessDeniedException",
        "User is not authorized to perform: cloudtrail:LookupEvents",
        times=None,
    )
    summary, rows = drift(standin, pool.pool_id, state, tmp_path / "2")
    assert read_subs(rows) == read_subs(first)
    assert summary["ledger"]["full_read"] is True
    assert any(
        "CloudTrail could not be read" in w and "AccessDeniedException" in w and "every user" in w
        for w in summary["warnings"]
    ), summary["warnings"]
    standin.clear_faults()
    # The cursor did not move, so the next run looks back over the denied run's window.
    again, _ = drift(standin, pool.pool_id, state, tmp_path / "3")
    assert again["cost"]["mfa_reads"] == 0 and not again["warnings"]


def test_a_ledger_of_another_pool_or_older_than_cloudtrail_history_is_not_trusted(
    standin: CognitoStandIn, demo_pool: Any, tmp_path: Path
) -> None:
    first_pool, second_pool = demo_pool(20, seed=1), demo_pool(20, seed=2)
    state = tmp_path / "state"
    _, rows = drift(standin, first_pool.pool_id, state, tmp_path / "1")
    ledgers = state / "ledger"
    shutil.copyfile(
        ledgers / f"{first_pool.pool_id}.sqlite", ledgers / f"{second_pool.pool_id}.sqlite"
    )
    summary, _ = drift(standin, second_pool.pool_id, state, tmp_path / "2")
    assert any(f"is of pool {first_pool.pool_id}" in w for w in summary["warnings"])

    ledger = SqliteLedger(ledgers / f"{first_pool.pool_id}.sqlite", first_pool.pool_id)
    ledger.set_meta(cursor=repr(time.time() - 100 * 86_400))
    ledger.close()
    summary, again = drift(standin, first_pool.pool_id, state, tmp_path / "3")
    assert any("CloudTrail keeps 90" in w for w in summary["warnings"]), summary["warnings"]
    assert read_subs(again) == read_subs(rows)


def test_apply_reads_fresh_before_it_writes_and_never_writes_on_a_stale_entry(
    standin: CognitoStandIn, demo_pool: Any, tmp_path: Path
) -> None:
    pool = demo_pool(30)
    cognito = standin.client()
    state = tmp_path / "state"
    drift(standin, pool.pool_id, state, tmp_path / "1")
    # The ledger says this user needs a write; the user fixes it themselves, and CloudTrail
    # has not delivered the event when apply runs.
    user = pool.usernames["totp_and_sms_sms_preferred"][0]
    with standin.configured(cloudtrail_lag_seconds=3600):
        token = standin.issue_access_token(pool.pool_id, user)
        cognito.set_user_mfa_preference(
            AccessToken=token, SoftwareTokenMfaSettings={"Enabled": True, "PreferredMfa": True}
        )
        standin.reset_counters()
        summary, rows = drift(standin, pool.pool_id, state, tmp_path / "2", mode=Mode.APPLY)
    row = {r["sub"]: r for r in rows}[sub_of(standin, pool.pool_id, user)]
    assert row["outcome"] == "compliant" and row["read_reason"] == "before_write"
    assert row["request"] is None
    written = summary["counts"]["api_calls"].get("admin_set_user_mfa_preference", 0)
    # Every write went to a user read in this run, just before it.
    assert written <= summary["cost"]["mfa_reads"] + summary["counts"]["by_outcome"]["changed"]
    assert all(r["state_source"] != "ledger" for r in rows if r["request"])


def test_estimate_predicts_the_reads_and_maus_without_reading_anyone(
    standin: CognitoStandIn, demo_pool: Any, tmp_path: Path
) -> None:
    pool = demo_pool(40)
    cognito = standin.client()
    state = tmp_path / "state"
    drift(standin, pool.pool_id, state, tmp_path / "1")
    for user in pool.usernames["sms_preferred"][:3]:
        cognito.admin_set_user_mfa_preference(
            UserPoolId=pool.pool_id,
            Username=user,
            SMSMfaSettings={"Enabled": True, "PreferredMfa": False},
        )
    standin.reset_counters()
    estimate = estimate_drift(
        standin.client(),
        demo_policy(),
        pool.pool_id,
        state_dir=state,
        cloudtrail=standin.client("cloudtrail"),
        lookups_per_second=FAST_LOOKUPS,
    )
    assert "AdminGetUser" not in standin.calls
    assert estimate["reads"] == 3 and estimate["maus_added"] == 0
    # The three changed users were active this month: even the fallback read adds no MAU.
    assert estimate["read_operation"] == "AdminGetUserAuthFactors"
    assert estimate["maus_added_with_admin_get_user"] == 0
    assert estimate["read_reasons"] == {"event": 3}
    summary, _ = drift(standin, pool.pool_id, state, tmp_path / "2")
    assert summary["cost"]["mfa_reads"] == estimate["reads"]


@pytest.mark.parametrize("events_late", [False, True])
def test_a_user_changed_during_a_run_is_read_by_the_next(
    standin: CognitoStandIn, demo_pool: Any, tmp_path: Path, events_late: bool
) -> None:
    pool = demo_pool(130)  # three pages
    cognito = standin.client()
    state = tmp_path / "state"
    drift(standin, pool.pool_id, state, tmp_path / "1")
    target = pool.usernames["totp_preferred"][0]
    fired: list[str] = []

    def change_mid_run(operation: str, body: Any) -> None:
        if operation == "ListUsers" and body.get("PaginationToken") and not fired:
            fired.append(operation)
            cognito.admin_set_user_mfa_preference(
                UserPoolId=pool.pool_id,
                Username=target,
                SoftwareTokenMfaSettings={"Enabled": False, "PreferredMfa": False},
            )

    standin.before_request(change_mid_run)
    with standin.configured(cloudtrail_lag_seconds=3600 if events_late else 0):
        drift(standin, pool.pool_id, state, tmp_path / "2", full=True)
    standin.clear_faults()
    standin.deliver_cloudtrail_events()
    _, rows = drift(standin, pool.pool_id, state, tmp_path / "3")
    assert sub_of(standin, pool.pool_id, target) in read_subs(rows)
    assert outcomes(rows) == outcomes(full_read(standin, pool.pool_id, tmp_path, "full"))


def test_the_lambda_keeps_the_ledger_in_dynamodb_and_reads_only_changed_users(
    standin: CognitoStandIn, demo_pool: Any
) -> None:
    from mfa_policy.handlers.lambda_entry import HandlerSettings, run_slice

    pool = demo_pool(70)  # two pages: two slices with a zero budget
    dynamodb, s3 = standin.client("dynamodb"), standin.client("s3")
    table, bucket = f"ledger-{pool.pool_id[-6:].lower()}", f"reports-{pool.pool_id[-6:].lower()}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "pool", "KeyType": "HASH"},
            {"AttributeName": "sub", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pool", "AttributeType": "S"},
            {"AttributeName": "sub", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    s3.create_bucket(Bucket=bucket)
    settings = HandlerSettings(
        user_pool_id=pool.pool_id,
        policy_json=demo_policy().to_json(),
        report_bucket=bucket,
        ledger_table=table,
        lookups_per_second=FAST_LOOKUPS,
    )

    def scheduled_drift() -> dict[str, Any]:
        state: dict[str, Any] = {"mode": "drift", "trigger": "schedule"}
        for _ in range(10):
            state = run_slice(
                state,
                settings=settings,
                cognito=standin.client(),
                s3=s3,
                dynamodb=dynamodb,
                cloudtrail=standin.client("cloudtrail"),
                time_budget=0.0,
            )
            if state["done"]:
                return state
        raise AssertionError("the run did not finish")

    first = scheduled_drift()
    assert first["checkpoint"]["counts"]["reads"]["AdminGetUserAuthFactors"] > 40
    assert "AdminGetUserAuthFactors" not in scheduled_drift()["checkpoint"]["counts"]["reads"]
    user = pool.usernames["sms_preferred"][0]
    standin.client().admin_set_user_mfa_preference(
        UserPoolId=pool.pool_id,
        Username=user,
        SMSMfaSettings={"Enabled": True, "PreferredMfa": False},
    )
    third = scheduled_drift()
    assert third["checkpoint"]["counts"]["reads"] == {
        "AdminGetUserAuthFactors": 1,
        "ledger": first["checkpoint"]["counts"]["reads"]["AdminGetUserAuthFactors"] - 1,
        "reason:event": 1,
    }
    item = dynamodb.get_item(
        TableName=table,
        Key={"pool": {"S": pool.pool_id}, "sub": {"S": sub_of(standin, pool.pool_id, user)}},
    )["Item"]
    assert json.loads(item["mfa"]["S"]) == {"enabled": ["sms"], "preferred": None}
    assert item["observed_by"]["S"] == "AdminGetUserAuthFactors"


def _ledger_table(standin: CognitoStandIn, name: str) -> None:
    standin.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pool", "KeyType": "HASH"},
            {"AttributeName": "sub", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pool", "AttributeType": "S"},
            {"AttributeName": "sub", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def test_an_eventbridge_event_puts_just_that_user_back_within_one_call(
    standin: CognitoStandIn, demo_pool: Any
) -> None:
    from mfa_policy.handlers.lambda_entry import HandlerSettings, evaluate_event

    pool = demo_pool(40)
    suffix = pool.pool_id[-6:].lower()
    _ledger_table(standin, f"rt-ledger-{suffix}")
    standin.client("s3").create_bucket(Bucket=f"rt-reports-{suffix}")
    settings = HandlerSettings(
        user_pool_id=pool.pool_id,
        policy_json=demo_policy().to_json(),
        report_bucket=f"rt-reports-{suffix}",
        ledger_table=f"rt-ledger-{suffix}",
    )
    user = pool.usernames["totp_preferred"][0]
    token = standin.issue_access_token(pool.pool_id, user)
    standin.client().set_user_mfa_preference(  # the user prefers SMS again, with their token
        AccessToken=token, SMSMfaSettings={"Enabled": True, "PreferredMfa": True}
    )
    (recorded,) = [
        e for e in standin.cloudtrail_events(pool.pool_id) if e.name == "SetUserMFAPreference"
    ]
    # EventBridge's "AWS API Call via CloudTrail" event carries the CloudTrail record as detail.
    event = {
        "source": "aws.cognito-idp",
        "detail-type": "AWS API Call via CloudTrail",
        "detail": json.loads(recorded.lookup_row()["CloudTrailEvent"]),
    }
    clients = {
        "cognito": standin.client(),
        "s3": standin.client("s3"),
        "dynamodb": standin.client("dynamodb"),
    }
    standin.reset_counters()
    (drifted,) = evaluate_event(event, settings=settings, mode=Mode.DRIFT, **clients)
    assert drifted["outcome"] == "would_change" and drifted["read_reason"] == "changed"
    (fixed,) = evaluate_event(event, settings=settings, mode=Mode.APPLY, **clients)
    assert fixed["outcome"] == "changed"
    assert fixed["after"] == {"enabled": ["totp", "sms"], "preferred": "totp"}
    # Only this user was listed (one filtered ListUsers each) and read.
    assert standin.calls.get("AdminGetUserAuthFactors") == 2
    assert standin.calls.get("ListUsers") == 2 and "AdminGetUser" not in standin.calls
    other_pool = {**event, "detail": {**event["detail"], "additionalEventData": {
        "sub": drifted["sub"], "userPoolId": "us-east-1_other"}}}  # fmt: skip
    assert evaluate_event(other_pool, settings=settings, mode=Mode.APPLY, **clients) == []


def test_a_flood_of_sign_ins_is_cut_short_with_a_warning(
    standin: CognitoStandIn, demo_pool: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mfa_policy.aws.cloudtrail as cloudtrail

    monkeypatch.setattr(cloudtrail, "MAX_SIGN_IN_PAGES", 1)
    pool = demo_pool(20)
    for user in pool.usernames["sms_preferred"] * 20:  # more than one page of 50
        standin.issue_access_token(pool.pool_id, user)
    summary, _ = drift(standin, pool.pool_id, tmp_path / "state", tmp_path / "1")
    assert any("more sign-ins than a run reads (InitiateAuth)" in w for w in summary["warnings"])
