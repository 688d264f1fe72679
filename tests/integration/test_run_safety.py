"""Runs that must not write to the wrong user, report what did not happen, or leak usernames.

Against the Cognito stand-in: stored access tokens of another user or another pool, a rule
the last-factor guard refuses, writes whose answer is lost to a timeout or a 5xx, retry
budgets, and what the state folder holds.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.config import Config

from mfa_policy.aws.gateway import CLIENT_CONFIG, CognitoError, CognitoGateway, RetryPolicy
from mfa_policy.cli.main import main
from mfa_policy.core.engine import Mode
from mfa_policy.core.model import Factor, FactorWrite, MfaRequest, MfaState
from mfa_policy.core.plan import PlannedChange
from mfa_policy.core.policy import Policy, parse_policy
from mfa_policy.core.report import LocalReport
from mfa_policy.run.local_run import run_locally
from mfa_policy.run.plan_apply import apply_change
from mfa_policy.run.runner import Runner
from mfa_policy.run.state import IntentJournal, ProbeMemory
from mfa_policy.standin import CognitoStandIn

PHONE = "+15550100123"
FAST = {"user_read": 400, "user_resource_update": 200, "user_list": 100}
TOKEN_OPERATIONS = ("GetUserAuthFactors", "GetUser", "SetUserMFAPreference")

#: admins lose SMS; everyone else keeps it beside a preferred TOTP.
ADMINS_AND_EVERYONE = parse_policy(
    {
        "version": 1,
        "rules": [
            {
                "name": "admins",
                "match": {"groups": ["admins"]},
                "factors": {"totp": "preferred", "sms": "disabled"},
            },
            {
                "name": "everyone",
                "match": "all",
                "factors": {"totp": "preferred", "sms": "enabled"},
            },
        ],
        "rate_limits": FAST,
    }
)
BOTH_SMS_PREFERRED = {"enabled": ["totp", "sms"], "preferred": "sms"}
BOTH_TOTP_PREFERRED = {"enabled": ["totp", "sms"], "preferred": "totp"}


def seed_totp_and_sms(make_user: Any, pool_id: str, username: str, **kwargs: Any) -> str:
    """A user with a verified token, TOTP and SMS enabled, SMS preferred."""
    return make_user(
        pool_id,
        username,
        phone=PHONE,
        totp_verified=True,
        totp_enabled=True,
        sms_enabled=True,
        preferred="sms",
        **kwargs,
    )


def mfa_of(standin: CognitoStandIn, pool_id: str, username: str) -> dict[str, Any]:
    names = {"SOFTWARE_TOKEN_MFA": "totp", "SMS_MFA": "sms"}
    with standin.lock:
        user = standin.backend.user_pools[pool_id].users[username]
        enabled = [
            name
            for name, on in (
                ("totp", user.software_token_mfa_enabled),
                ("sms", user.sms_mfa_enabled),
            )
            if on
        ]
        return {"enabled": enabled, "preferred": names.get(user.preferred_mfa_setting or "")}


def rows_of(report_dir: Path) -> dict[str, dict[str, Any]]:
    lines = (report_dir / "users.jsonl").read_text("utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return {row["username"]: row for row in rows}


class TokensSent:
    """Which access tokens reach the stand-in, per operation."""

    def __init__(self, standin: CognitoStandIn) -> None:
        self.lock = threading.Lock()
        self.sent: Counter[tuple[str, str]] = Counter()
        standin.before_request(self._hook)

    def _hook(self, operation: str, body: Mapping[str, Any]) -> None:
        if operation in TOKEN_OPERATIONS:
            with self.lock:
                self.sent[(operation, str(body.get("AccessToken")))] += 1

    def count(self, token: str) -> dict[str, int]:
        return {op: self.sent[(op, token)] for op in TOKEN_OPERATIONS}


def token_apply(
    standin: CognitoStandIn, pool_id: str, table: Any, tmp_path: Path, *, client: Any = None
) -> dict[str, dict[str, Any]]:
    result = run_locally(
        ADMINS_AND_EVERYONE,
        pool_id,
        Mode.APPLY,
        client=client or standin.client(),
        state_dir=tmp_path / "state",
        report_dir=tmp_path / "report",
        auth="access-token",
        tokens=table,
    )
    return rows_of(result.report_dir)


# ---- access tokens bound to their user --------------------------------------------------------


def test_a_token_of_another_user_is_token_invalid_and_never_used(
    standin, pool_id, make_user, token_table, tmp_path
):
    seed_totp_and_sms(make_user, pool_id, "alice", groups=["admins"])
    seed_totp_and_sms(make_user, pool_id, "mallory")
    mallorys = standin.issue_access_token(pool_id, "mallory")
    # The table holds mallory's token under her name and under alice's.
    table, _ = token_table(pool_id, [], stored={"alice": mallorys, "mallory": mallorys})
    sent = TokensSent(standin)

    rows = token_apply(standin, pool_id, table, tmp_path)

    alice = rows["alice"]
    assert alice["outcome"] == "token_invalid"
    assert alice["reason"].startswith("token_other_user: ")
    assert (alice["before"], alice["after"], alice["request"]) == (None, None, None)
    # Mallory got her own rule (keep SMS), not alice's admin rule, and only her own row says so.
    assert mfa_of(standin, pool_id, "mallory") == BOTH_TOTP_PREFERRED
    assert rows["mallory"]["outcome"] == "changed"
    assert rows["mallory"]["after"] == BOTH_TOTP_PREFERRED
    assert sent.count(mallorys) == {
        "GetUserAuthFactors": 1,
        "GetUser": 0,
        "SetUserMFAPreference": 1,
    }
    assert mfa_of(standin, pool_id, "alice") == BOTH_SMS_PREFERRED


class AnswersForAnotherUser:
    """A client whose token reads (GetUserAuthFactors, and GetUser, the fallback) answer for
    another token's user: what a token whose claims were edited, or a confused token service,
    would look like from here."""

    def __init__(self, client: Any, swap: Mapping[str, str]) -> None:
        self._client = client
        self._swap = dict(swap)

    def get_user(self, AccessToken: str) -> Any:
        return self._client.get_user(AccessToken=self._swap.get(AccessToken, AccessToken))

    def get_user_auth_factors(self, AccessToken: str) -> Any:
        return self._client.get_user_auth_factors(
            AccessToken=self._swap.get(AccessToken, AccessToken)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_token_that_cognito_answers_for_another_user_is_never_written_with(
    standin, pool_id, make_user, token_table, tmp_path
):
    seed_totp_and_sms(make_user, pool_id, "alice", groups=["admins"])
    seed_totp_and_sms(make_user, pool_id, "mallory")
    table, user_of_token = token_table(pool_id, ["alice", "mallory"])
    token_of = {u: t for t, u in user_of_token.items()}
    client = AnswersForAnotherUser(standin.client(), {token_of["alice"]: token_of["mallory"]})
    sent = TokensSent(standin)

    rows = token_apply(standin, pool_id, table, tmp_path, client=client)

    assert rows["alice"]["outcome"] == "token_invalid"
    assert rows["alice"]["reason"].startswith("token_other_user: ")
    assert rows["alice"]["before"] is None
    assert sent.count(token_of["alice"])["SetUserMFAPreference"] == 0
    assert mfa_of(standin, pool_id, "alice") == BOTH_SMS_PREFERRED
    assert mfa_of(standin, pool_id, "mallory") == BOTH_TOTP_PREFERRED


def test_a_token_of_another_pool_is_token_invalid_and_nothing_is_sent_with_it(
    standin, make_pool, make_user, token_table, tmp_path
):
    pool_id, other_pool = make_pool(), make_pool()
    seed_totp_and_sms(make_user, pool_id, "alice", groups=["admins"])
    seed_totp_and_sms(make_user, pool_id, "bob")
    # Another pool's alice: same username, another user.
    seed_totp_and_sms(make_user, other_pool, "alice")
    foreign = standin.issue_access_token(other_pool, "alice")
    table, _ = token_table(pool_id, ["bob"], stored={"alice": foreign})
    sent = TokensSent(standin)

    rows = token_apply(standin, pool_id, table, tmp_path)

    assert rows["alice"]["outcome"] == "token_invalid"
    assert rows["alice"]["reason"].startswith("token_other_pool: ")
    assert sent.count(foreign) == {"GetUserAuthFactors": 0, "GetUser": 0, "SetUserMFAPreference": 0}
    assert mfa_of(standin, other_pool, "alice") == BOTH_SMS_PREFERRED
    assert mfa_of(standin, pool_id, "alice") == BOTH_SMS_PREFERRED
    assert rows["bob"]["outcome"] == "changed"  # the rest of the run goes on


# ---- the last-factor guard: guarded, never changed -------------------------------------------


@pytest.fixture
def cli(standin: CognitoStandIn, capsys: pytest.CaptureFixture[str], monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> int:
        argv = [*args, "--endpoint-url", standin.endpoint_url, "--region", "us-east-1"]
        code = main(argv)
        capsys.readouterr()
        return code

    return invoke


def test_a_rule_that_would_remove_a_users_only_factor_is_guarded_in_drift_and_apply(
    standin, pool_id, make_user, cli, tmp_path
):
    make_user(pool_id, "sam", phone=PHONE, sms_enabled=True, preferred="sms")
    make_user(pool_id, "tess", phone=PHONE, totp_verified=True, totp_enabled=True, sms_enabled=True)
    policy = tmp_path / "no-sms.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "rules": [{"name": "no-sms", "match": "all", "factors": {"sms": "disabled"}}],
                "rate_limits": FAST,
            }
        ),
        "utf-8",
    )
    common = ["-c", str(policy), "--user-pool-id", pool_id]

    for step, mode in enumerate(("drift", "apply", "drift")):
        standin.reset_counters()
        report = tmp_path / f"{step}-{mode}"
        code = cli(mode, *common, "--report-dir", str(report))

        sam = rows_of(report)["sam"]
        assert (sam["outcome"], sam["request"]) == ("guarded", None), mode
        assert sam["reason"].startswith(
            "last_factor: the policy would remove the user's last factor; it was kept"
        )
        summary = json.loads((report / "summary.json").read_text("utf-8"))
        assert summary["counts"]["by_outcome"]["guarded"] == 1
        assert code == 2, f"{mode}: a guarded user is not compliant, and apply cannot fix it"
        if mode == "apply":
            assert sam["after"] == {"enabled": ["sms"], "preferred": "sms"}
            assert standin.calls.get("AdminSetUserMFAPreference", 0) == 1  # tess only
            assert summary["counts"]["by_outcome"]["changed"] == 1
    assert mfa_of(standin, pool_id, "sam") == {"enabled": ["sms"], "preferred": "sms"}
    assert mfa_of(standin, pool_id, "tess") == {"enabled": ["totp"], "preferred": None}


# ---- a write whose answer was lost is read again ---------------------------------------------


def apply_with_fast_retries(
    standin: CognitoStandIn, pool_id: str, tmp_path: Path, policy: Policy, client: Any
) -> dict[str, dict[str, Any]]:
    """An apply as `execute_slice` runs it, with retries that do not wait."""
    gateway = CognitoGateway(client, pool_id, retry=RetryPolicy(base_delay=0.001))
    report = LocalReport(tmp_path / "report")
    probes = ProbeMemory(tmp_path / "probes.sqlite")
    try:
        runner = Runner(
            gateway,
            policy,
            mode=Mode.APPLY,
            report=report,
            probes=probes,
            journal=IntentJournal(tmp_path / "intents.jsonl"),
            save_checkpoint=lambda checkpoint: None,
        )
        runner.run_slice(runner.start())
    finally:
        probes.close()
    return rows_of(report.directory)


def test_a_write_whose_every_answer_was_lost_is_read_again_and_reported_as_it_stands(
    standin, pool_id, make_user, tmp_path
):
    for name in ("landed", "lost", "slow", "clean"):
        seed_totp_and_sms(make_user, pool_id, name)
    # landed: every attempt is applied, then answered 500. lost: every attempt answered 500,
    # none applied. slow: every attempt outlasts the client's read timeout and is applied late,
    # but before the read that follows the last of the 3 timed-out attempts (3 x 0.3 s).
    standin.server_errors(
        "AdminSetUserMFAPreference",
        times=None,
        match=lambda body: body.get("Username") == "landed",
        after_handling=True,
    )
    standin.server_errors(
        "AdminSetUserMFAPreference", times=None, match=lambda body: body.get("Username") == "lost"
    )
    standin.stall(
        "AdminSetUserMFAPreference",
        0.5,
        times=None,
        match=lambda body: body.get("Username") == "slow",
    )
    client = standin.client(config=CLIENT_CONFIG.merge(Config(read_timeout=0.3)))

    rows = apply_with_fast_retries(standin, pool_id, tmp_path, ADMINS_AND_EVERYONE, client)

    for name in ("landed", "slow", "clean"):
        assert mfa_of(standin, pool_id, name) == BOTH_TOTP_PREFERRED, name
        row = rows[name]
        assert (row["outcome"], row["after"]) == ("changed", BOTH_TOTP_PREFERRED), name
        assert "error" not in row
    lost = rows["lost"]
    assert mfa_of(standin, pool_id, "lost") == BOTH_SMS_PREFERRED
    assert (lost["outcome"], lost["error"]) == ("failed", "InternalErrorException")
    assert lost["after"] == BOTH_SMS_PREFERRED  # what Cognito holds, not null
    assert lost["reason"].endswith("read again after it: not applied")


def test_a_planned_write_whose_answer_was_lost_is_read_again(standin, pool_id, make_user):
    for name in ("landed", "lost"):
        seed_totp_and_sms(make_user, pool_id, name)
    observed = MfaState(frozenset({Factor.TOTP, Factor.SMS}), Factor.SMS)
    request = MfaRequest(
        {
            Factor.TOTP: FactorWrite(enabled=True, preferred=True),
            Factor.SMS: FactorWrite(enabled=True, preferred=False),
        }
    )
    standin.server_errors(
        "AdminSetUserMFAPreference",
        times=None,
        match=lambda body: body.get("Username") == "landed",
        after_handling=True,
    )
    standin.server_errors(
        "AdminSetUserMFAPreference", times=None, match=lambda body: body.get("Username") == "lost"
    )
    gateway = CognitoGateway(
        standin.client(config=CLIENT_CONFIG), pool_id, retry=RetryPolicy(base_delay=0.001)
    )

    rows = {
        name: apply_change(
            gateway, PlannedChange(name, f"sub-{name}", "everyone", "", "", observed, request)
        )
        for name in ("landed", "lost")
    }

    assert (rows["landed"]["outcome"], rows["landed"]["after"]) == ("changed", BOTH_TOTP_PREFERRED)
    assert (rows["lost"]["outcome"], rows["lost"]["after"]) == ("failed", BOTH_SMS_PREFERRED)
    assert rows["lost"]["reason"].endswith("read again after it: not applied")


# ---- retry budgets ---------------------------------------------------------------------------


def no_sleep(seconds: float) -> None:
    pass


def test_throttles_and_server_errors_have_separate_retry_budgets(standin, pool_id, make_user):
    make_user(pool_id, "rita", phone=PHONE, sms_enabled=True, preferred="sms")
    gateway = CognitoGateway(standin.client(config=CLIENT_CONFIG), pool_id, sleep=no_sleep)
    sms_only = MfaState(frozenset({Factor.SMS}), Factor.SMS)
    budget = RetryPolicy()

    # Five throttles, then a 5xx: one error of six allowed, so the read goes on.
    standin.inject("AdminGetUser", "TooManyRequestsException", "Rate exceeded", times=5)
    standin.server_errors("AdminGetUser", times=1)
    assert gateway.admin_read("rita").mfa == sms_only
    # Every budget but its last attempt, both kinds interleaved.
    for _ in range(budget.error_attempts - 1):
        standin.inject("AdminGetUser", "TooManyRequestsException", "Rate exceeded", times=2)
        standin.server_errors("AdminGetUser", times=1)
    standin.inject(
        "AdminGetUser",
        "TooManyRequestsException",
        "Rate exceeded",
        times=budget.throttle_attempts - 1 - 2 * (budget.error_attempts - 1),
    )
    assert gateway.admin_read("rita").mfa == sms_only

    standin.inject(
        "AdminGetUser", "TooManyRequestsException", "Rate exceeded", times=budget.throttle_attempts
    )
    with pytest.raises(CognitoError) as throttled:
        gateway.admin_read("rita")
    assert (throttled.value.code, throttled.value.unanswered) == ("TooManyRequestsException", False)

    standin.server_errors("AdminGetUser", times=budget.error_attempts)
    with pytest.raises(CognitoError) as failed:
        gateway.admin_read("rita")
    assert (failed.value.code, failed.value.unanswered) == ("InternalErrorException", True)


# ---- the state folder holds no username ------------------------------------------------------


def test_the_state_folder_never_holds_a_username(standin, pool_id, make_user, tmp_path):
    names = ["ursula.quist@example.com", "victor-quist-7731", "wanda-quist"]
    for name in names:
        seed_totp_and_sms(make_user, pool_id, name)
    # A TOTP probe that Cognito rejects, so probe memory has a row.
    make_user(pool_id, "xena-quist", phone=PHONE, sms_enabled=True, preferred="sms")
    names.append("xena-quist")
    state_dir = tmp_path / "state"
    snapshots: list[dict[str, bytes]] = []

    def snapshot_state(operation: str, body: Mapping[str, Any]) -> None:
        # While writes are in flight the journal holds them: look at everything then.
        if operation == "AdminSetUserMFAPreference":
            files = [p for p in state_dir.rglob("*") if p.is_file()]
            snapshots.append({str(p): p.read_bytes() for p in files})

    standin.before_request(snapshot_state)

    result = run_locally(
        ADMINS_AND_EVERYONE,
        pool_id,
        Mode.APPLY,
        client=standin.client(),
        state_dir=state_dir,
        report_dir=tmp_path / "report",
        workers=1,
    )

    assert result.summary["counts"]["by_outcome"]["changed"] == 3
    journals = [text for snap in snapshots for path, text in snap.items() if "intents" in path]
    assert any(journals), "the journal should hold the writes in flight"
    snapshots.append({str(p): p.read_bytes() for p in state_dir.rglob("*") if p.is_file()})
    for snap in snapshots:
        for path, content in snap.items():
            leaked = [n for n in names if n.encode() in content or n.split("@")[0] in str(path)]
            assert leaked == [], f"{path} holds {leaked}"
