"""Property: over any history of changes, a drift that reads only what the ledger and CloudTrail
say can have changed reports exactly what a drift that reads everyone reports.

Histories mix the users' own token calls, admin calls, TOTP set-up through the managed login
pages, attribute and group changes, deletions, new users, incremental drifts and applies in
between, and events that CloudTrail delivers late (after runs that therefore could not see
them). The comparison is made once every event is delivered, as the ledger promises: a change
is reported by the first run whose CloudTrail lookup can see it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa_policy.cli.demo import demo_policy
from mfa_policy.core.engine import Mode
from mfa_policy.run.local_run import run_locally
from mfa_policy.standin import CognitoStandIn, create_pool, seed_user

FAST_LOOKUPS = 1000.0
HOW_LEARNED = ("state_source", "observed_at", "read_reason", "mau_added")
PHONE = "+15550100"
GROUPS = ("admins", "service-accounts")

SEEDED: list[dict[str, Any]] = [
    {"phone": PHONE + "001", "sms_enabled": True, "preferred": "sms"},
    {
        "phone": PHONE + "002",
        "totp_enabled": True,
        "sms_enabled": True,
        "preferred": "sms",
    },
    {"phone": PHONE + "003"},
    {},
    {"phone": PHONE + "005", "totp_enabled": True, "preferred": "totp", "groups": ["admins"]},
    {"phone": PHONE + "006", "totp_verified": True, "sms_enabled": True, "preferred": "sms"},
]

REQUESTS: list[dict[str, Any]] = [
    {"SMSMfaSettings": {"Enabled": True, "PreferredMfa": True}},
    {"SoftwareTokenMfaSettings": {"Enabled": True, "PreferredMfa": True}},
    {"SoftwareTokenMfaSettings": {"Enabled": False, "PreferredMfa": False}},
    {"SMSMfaSettings": {"Enabled": False, "PreferredMfa": False}},
    {
        "SMSMfaSettings": {"Enabled": True, "PreferredMfa": False},
        "SoftwareTokenMfaSettings": {"Enabled": True, "PreferredMfa": False},
    },
]

user_index = st.integers(0, len(SEEDED) + 1)  # two more than seeded: users created later
steps = st.one_of(
    st.tuples(st.just("admin_pref"), user_index, st.sampled_from(range(len(REQUESTS)))),
    st.tuples(st.just("token_pref"), user_index, st.sampled_from(range(len(REQUESTS)))),
    st.tuples(st.just("managed_login_totp"), user_index),
    st.tuples(st.just("drop_phone"), user_index),
    st.tuples(st.just("add_phone"), user_index),
    st.tuples(st.just("group_add"), user_index, st.sampled_from(GROUPS)),
    st.tuples(st.just("group_remove"), user_index, st.sampled_from(GROUPS)),
    st.tuples(st.just("disable"), user_index),
    st.tuples(st.just("delete"), user_index),
    st.tuples(st.just("create"), user_index),
    st.tuples(st.just("drift")),
    st.tuples(st.just("apply")),
    st.tuples(st.just("deliver")),
)
histories = st.lists(st.tuples(steps, st.booleans()), min_size=1, max_size=8)


class History:
    """One pool and the changes made to it, through the stand-in's API where one exists."""

    def __init__(self, standin: CognitoStandIn, root: Path) -> None:
        self.standin = standin
        self.cognito = standin.client()
        self.root = root
        self.pool_id = create_pool(standin)
        with standin.lock:
            for group in GROUPS:
                standin.backend.create_group(self.pool_id, group, "", "", 0)
        for i, seeded in enumerate(SEEDED):
            seed_user(standin, self.pool_id, f"u{i}", email=f"u{i}@example.com", **seeded)
        self.runs = 0

    def name(self, index: int) -> str:
        return f"u{index}"

    def step(self, step: tuple[Any, ...]) -> None:
        kind, *args = step
        pool, cognito = self.pool_id, self.cognito
        try:
            if kind in ("drift", "apply"):
                self.run(Mode.DRIFT if kind == "drift" else Mode.APPLY)
            elif kind == "deliver":
                self.standin.deliver_cloudtrail_events()
            elif kind == "admin_pref":
                cognito.admin_set_user_mfa_preference(
                    UserPoolId=pool, Username=self.name(args[0]), **REQUESTS[args[1]]
                )
            elif kind == "token_pref":
                token = self.standin.issue_access_token(pool, self.name(args[0]))
                cognito.set_user_mfa_preference(AccessToken=token, **REQUESTS[args[1]])
            elif kind == "managed_login_totp":
                self.managed_login_totp(self.name(args[0]))
            elif kind == "drop_phone":
                cognito.admin_delete_user_attributes(
                    UserPoolId=pool,
                    Username=self.name(args[0]),
                    UserAttributeNames=["phone_number"],
                )
            elif kind == "add_phone":
                cognito.admin_update_user_attributes(
                    UserPoolId=pool,
                    Username=self.name(args[0]),
                    UserAttributes=[{"Name": "phone_number", "Value": PHONE + "099"}],
                )
            elif kind == "group_add":
                cognito.admin_add_user_to_group(
                    UserPoolId=pool, Username=self.name(args[0]), GroupName=args[1]
                )
            elif kind == "group_remove":
                cognito.admin_remove_user_from_group(
                    UserPoolId=pool, Username=self.name(args[0]), GroupName=args[1]
                )
            elif kind == "disable":
                cognito.admin_disable_user(UserPoolId=pool, Username=self.name(args[0]))
            elif kind == "delete":
                cognito.admin_delete_user(UserPoolId=pool, Username=self.name(args[0]))
            elif kind == "create":
                cognito.admin_create_user(
                    UserPoolId=pool,
                    Username=self.name(args[0]),
                    MessageAction="SUPPRESS",
                    UserAttributes=[{"Name": "phone_number", "Value": PHONE + "077"}],
                )
        except (ClientError, LookupError):
            pass  # a user that does not exist (yet, or any more): Cognito refuses, as it would

    def managed_login_totp(self, username: str) -> None:
        """TOTP set up on the managed login pages: no API call, one page event."""
        with self.standin.lock:
            user = self.standin.backend.user_pools[self.pool_id]._get_user(username)
            if user is None:
                raise LookupError(username)
            user.token_verified = True
            user.software_token_mfa_enabled = True
            user.preferred_mfa_setting = "SOFTWARE_TOKEN_MFA"
        self.standin.record_managed_login(self.pool_id, username, "mfa_totp_POST")

    def run(self, mode: Mode, *, ledger: bool = True) -> dict[str, dict[str, Any]]:
        self.runs += 1
        result = run_locally(
            demo_policy(),
            self.pool_id,
            mode,
            client=self.cognito,
            state_dir=self.root / ("state" if ledger else f"full-state-{self.runs}"),
            report_dir=self.root / f"report-{self.runs}",
            cloudtrail=self.standin.client("cloudtrail") if ledger else None,
            lookups_per_second=FAST_LOOKUPS,
        )
        rows = (result.report_dir / "users.jsonl").read_text("utf-8").splitlines()
        parsed = [json.loads(line) for line in rows if line.strip()]
        return {r["sub"]: {k: v for k, v in r.items() if k not in HOW_LEARNED} for r in parsed}

    def close(self) -> None:
        with self.standin.lock:
            self.standin.backend.user_pools.pop(self.pool_id, None)


@settings(max_examples=15)
@given(history=histories)
def test_incremental_drift_reports_what_a_full_read_reports(
    standin: CognitoStandIn, history: list[tuple[tuple[Any, ...], bool]]
) -> None:
    with tempfile.TemporaryDirectory() as root:
        pool = History(standin, Path(root))
        try:
            pool.run(Mode.DRIFT)  # the first run observes everyone
            for step, late in history:
                with standin.configured(cloudtrail_lag_seconds=10**6 if late else 0):
                    pool.step(step)
            standin.deliver_cloudtrail_events()
            incremental = pool.run(Mode.DRIFT)
            full = pool.run(Mode.DRIFT, ledger=False)
            assert incremental == full
        finally:
            pool.close()
