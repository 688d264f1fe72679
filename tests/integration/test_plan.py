"""Plans you approve are what runs: `drift --out plan.json`, then `apply --plan plan.json`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mfa_policy.cli.demo import DEMO_POLICY
from mfa_policy.cli.main import main
from mfa_policy.standin import CognitoStandIn

PHONE = "+15550100123"
FAST = {"rate_limits": {"user_read": 400, "user_resource_update": 200, "user_list": 100}}
Result = tuple[int, str, str]


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(standin: CognitoStandIn, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def invoke(*args: str) -> Result:
        argv = [*args, "--endpoint-url", standin.endpoint_url, "--region", "us-east-1"]
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def write_policy(path: Path, **changes: Any) -> Path:
    document = {**DEMO_POLICY, **FAST, **changes}
    path.write_text(yaml.safe_dump(document), "utf-8")
    return path


def mfa_of(standin: CognitoStandIn, pool_id: str, username: str) -> tuple[set[str], str | None]:
    response = standin.client().admin_get_user(UserPoolId=pool_id, Username=username)
    names = {"SOFTWARE_TOKEN_MFA": "totp", "SMS_MFA": "sms", "EMAIL_OTP": "email"}
    enabled = {names[n] for n in response.get("UserMFASettingList") or []}
    return enabled, response.get("PreferredMfaSetting")


@pytest.fixture
def pool(pool_id: str, make_user: Callable[..., str]) -> str:
    # Four users the policy would move from SMS-preferred to TOTP-preferred, one compliant.
    for name in ("ann", "bob", "cid", "eve@example.com"):
        make_user(pool_id, name, phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms")
    make_user(pool_id, "dan", phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="totp")
    return pool_id


def test_a_plan_applied_later_changes_exactly_the_planned_users_and_skips_a_stale_one(
    cli, pool, make_user, standin, tmp_path
):
    policy = write_policy(tmp_path / "policy.yaml")

    code, _, err = cli("drift", "-c", str(policy), "--user-pool-id", pool, "--out", "plan.json")
    assert code == 2, err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["user_pool_id"] == pool
    by_sub = {c["sub"]: c for c in plan["changes"]}
    assert sorted(c["username"] for c in plan["changes"]) == [
        "ann",
        "bob",
        "cid",
        "e***@example.com",
    ]
    ann = next(c for c in plan["changes"] if c["username"] == "ann")
    assert ann["observed"] == {"enabled": ["totp", "sms"], "preferred": "sms"}
    assert ann["request"] == {
        "totp": {"enabled": True, "preferred": True},
        "sms": {"enabled": True, "preferred": False},
    }
    assert ann["expected"] == {"enabled": ["totp", "sms"], "preferred": "totp"}
    assert len(by_sub) == 4
    review = (tmp_path / "plan.md").read_text()
    assert "## mfa-policy plan: 4 users to change" in review
    assert "| prefer totp (was sms) | 4 |" in review
    assert "eve@example.com" not in review + (tmp_path / "plan.json").read_text()

    # Between the review and the apply: bob changes his own settings, a new user arrives.
    standin.client().admin_set_user_mfa_preference(
        UserPoolId=pool,
        Username="bob",
        SMSMfaSettings={"Enabled": False, "PreferredMfa": False},
    )
    make_user(pool, "fay", phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms")
    bob_before = mfa_of(standin, pool, "bob")
    standin.reset_counters()

    code, _, err = cli(
        "apply",
        "-c",
        str(policy),
        "--user-pool-id",
        pool,
        "--plan",
        "plan.json",
        "--report-dir",
        "applied",
    )

    calls = dict(standin.calls)
    assert code == 2, err  # not everything planned was applied
    assert "1 planned user(s) changed since the plan and were skipped (stale)" in err
    for name in ("ann", "cid", "eve@example.com"):
        assert mfa_of(standin, pool, name) == ({"totp", "sms"}, "SOFTWARE_TOKEN_MFA"), name
    assert mfa_of(standin, pool, "bob") == bob_before
    assert mfa_of(standin, pool, "fay") == ({"totp", "sms"}, "SMS_MFA")  # not in the plan
    rows = {
        r["username"]: r
        for r in map(json.loads, (tmp_path / "applied" / "users.jsonl").read_text().splitlines())
    }
    assert set(rows) == {"ann", "bob", "cid", "e***@example.com"}
    assert rows["bob"]["outcome"] == "skipped" and rows["bob"]["reason"].startswith("stale: ")
    assert rows["ann"]["outcome"] == "changed"
    assert rows["ann"]["request"] == ann["request"]
    # Nothing outside the plan is listed or read; one read and at most one write per user.
    assert calls == {"AdminGetUser": 4, "AdminSetUserMFAPreference": 3}
    summary = json.loads((tmp_path / "applied" / "summary.json").read_text())
    assert (summary["planned"], summary["stale"], summary["plan"]) == (4, 1, "plan.json")


def test_an_applied_plan_applied_again_changes_nobody(cli, pool, standin, tmp_path):
    policy = write_policy(tmp_path / "policy.yaml")
    cli("drift", "-c", str(policy), "--user-pool-id", pool, "--out", "plan.json")
    code, _, err = cli("apply", "-c", str(policy), "--user-pool-id", pool, "--plan", "plan.json")
    assert code == 0, err
    standin.reset_counters()

    code, out, err = cli("apply", "-c", str(policy), "--user-pool-id", pool, "--plan", "plan.json")

    assert code == 0, err
    assert re.search(r"compliant +4\n", out)  # each user is already as planned
    assert "stale" not in err
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0


def test_a_plan_for_another_pool_is_refused_before_any_call(
    cli, pool, make_pool, standin, tmp_path
):
    policy = write_policy(tmp_path / "policy.yaml")
    cli("drift", "-c", str(policy), "--user-pool-id", pool, "--out", "plan.json")
    other = make_pool()
    standin.reset_counters()

    code, _, err = cli("apply", "-c", str(policy), "--user-pool-id", other, "--plan", "plan.json")

    assert code == 1
    assert f"error: the plan is for user pool {pool}, not {other}" in err
    assert sum(standin.calls.values()) == 0


def test_a_plan_made_with_another_policy_is_refused_as_stale(cli, pool, standin, tmp_path):
    policy = write_policy(tmp_path / "policy.yaml")
    cli("drift", "-c", str(policy), "--user-pool-id", pool, "--out", "plan.json")
    changed = write_policy(tmp_path / "changed.yaml", include_disabled=True)
    standin.reset_counters()

    code, _, err = cli("apply", "-c", str(changed), "--user-pool-id", pool, "--plan", "plan.json")

    assert code == 1
    assert "the plan is stale; run drift --out again" in err
    assert sum(standin.calls.values()) == 0


def test_a_file_that_is_not_a_plan_is_refused(cli, pool, tmp_path):
    policy = write_policy(tmp_path / "policy.yaml")
    (tmp_path / "nope.json").write_text('{"hello": 1}')

    code, _, err = cli("apply", "-c", str(policy), "--user-pool-id", pool, "--plan", "nope.json")

    assert code == 1
    assert "nope.json: not a plan file (write one with: mfa-policy drift --out FILE)" in err
