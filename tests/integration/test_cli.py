"""The `mfa-policy` command line in-process against the Cognito stand-in: exit codes, output."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mfa_policy.cli.demo import DEMO_POLICY
from mfa_policy.cli.main import main
from mfa_policy.standin import CognitoStandIn

PHONE = "+15550100123"
#: The stand-in shares its quota with nobody: spend more of it than a real run should.
FAST = {"rate_limits": {"user_read": 400, "user_resource_update": 200, "user_list": 100}}

Result = tuple[int, str, str]


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.chdir(tmp_path)  # the default state folder, .mfa-policy, lands here


@pytest.fixture
def cli(standin: CognitoStandIn, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`cli(*args) -> (exit code, stdout, stderr)`; AWS options are added to run commands."""

    def invoke(*args: str) -> Result:
        argv = list(args)
        if argv[0] in ("drift", "apply", "rollback"):
            argv += ["--endpoint-url", standin.endpoint_url, "--region", "us-east-1"]
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def policy_file(tmp_path: Path) -> Callable[..., Path]:
    """`policy_file(document=DEMO_POLICY + fast rates, name=...) -> path` of a YAML file."""

    def write(document: Any = None, name: str = "policy.yaml") -> Path:
        path = tmp_path / name
        content = {**DEMO_POLICY, **FAST} if document is None else document
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content), "utf-8")
        return path

    return write


def mfa_of(standin: CognitoStandIn, pool_id: str, username: str) -> tuple[set[str], str]:
    with standin.lock:
        user = standin.backend.user_pools[pool_id].users[username]
        enabled = {
            name
            for name, on in (
                ("totp", user.software_token_mfa_enabled),
                ("sms", user.sms_mfa_enabled),
            )
            if on
        }
        return enabled, user.preferred_mfa_setting


# ---- exit codes ------------------------------------------------------------------------------


def test_drift_with_drift_exits_2(cli, policy_file, demo_pool, tmp_path):
    pool = demo_pool(40)

    code, out, err = cli(
        "drift", "-c", str(policy_file()), "--user-pool-id", pool.pool_id, "--report-dir", "r"
    )

    assert code == 2, err
    assert f"drift of {pool.pool_id}: drift found ({pool.total} users" in out
    assert (tmp_path / "r" / "summary.json").exists()


def test_drift_on_a_compliant_pool_exits_0(cli, policy_file, pool_id, make_user, tmp_path):
    for name in ("ann", "bob"):
        make_user(pool_id, name, phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="totp")

    code, out, err = cli("drift", "-c", str(policy_file()), "--user-pool-id", pool_id)

    assert code == 0, err
    assert f"drift of {pool_id}: compliant (2 users" in out
    assert "report: .mfa-policy/reports/" in out


def test_apply_that_leaves_users_to_enroll_exits_2(cli, policy_file, demo_pool, standin):
    pool = demo_pool(40)
    fixable = pool.usernames["totp_and_sms_sms_preferred"][0]
    to_enroll = pool.usernames["sms_preferred"][0]

    code, out, err = cli("apply", "-c", str(policy_file()), "--user-pool-id", pool.pool_id)

    assert code == 2, err
    assert "not converged" in out and "needs_enrollment" in out
    assert mfa_of(standin, pool.pool_id, fixable) == ({"totp", "sms"}, "SOFTWARE_TOKEN_MFA")
    assert mfa_of(standin, pool.pool_id, to_enroll) == ({"sms"}, "SMS_MFA")


def test_apply_that_converges_exits_0_and_drift_then_finds_none(
    cli, policy_file, pool_id, make_user, standin
):
    for name in ("ann", "bob", "cid"):
        make_user(pool_id, name, phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms")

    code, out, err = cli("apply", "-c", str(policy_file()), "--user-pool-id", pool_id)
    assert code == 0, err
    assert "converged" in out and "not converged" not in out
    assert mfa_of(standin, pool_id, "bob") == ({"totp", "sms"}, "SOFTWARE_TOKEN_MFA")

    code, out, err = cli("drift", "-c", str(policy_file()), "--user-pool-id", pool_id)
    assert code == 0, err


def test_bad_policy_exits_1_printing_every_error_without_a_traceback(
    cli, policy_file, pool_id, standin
):
    bad = policy_file(
        "version: 1\n"
        "rules:\n"
        "  - name: admins\n"
        "    match: {groups: [admins]}\n"
        "    factors: {totp: prefered, sms: disabled}\n"
        "  - name: everyone\n"
        "    match: all\n"
        "    factors: {totp: preferred, sms: preferred}\n"
        "    colour: blue\n",
        name="bad.yaml",
    )

    for command in (
        ["validate"],
        ["drift", "--user-pool-id", pool_id],
        ["apply", "--user-pool-id", pool_id],
    ):
        code, out, err = cli(*command, "-c", str(bad))
        assert code == 1, command
        assert "3 errors" in err
        assert "rules[0].factors.totp: 'prefered' is not one of preferred, enabled, disabled" in err
        assert "rules[1].factors" in err and "rules[1].colour" in err
        assert "Traceback" not in err + out
    assert "GetUserPoolMfaConfig" not in standin.calls and "ListUsers" not in standin.calls


def test_unknown_pool_exits_1_with_a_message_naming_the_pool(cli, policy_file):
    missing = "us-east-1_NoSuchPool"

    code, _, err = cli("drift", "-c", str(policy_file()), "--user-pool-id", missing)

    assert code == 1
    assert missing in err and "not found" in err
    assert "Traceback" not in err


def test_access_token_auth_without_a_token_table_exits_1(cli, policy_file, pool_id, standin):
    code, _, err = cli(
        "apply", "-c", str(policy_file()), "--user-pool-id", pool_id, "--auth", "access-token"
    )

    assert code == 1
    assert "--token-table" in err
    assert standin.calls.get("ListUsers", 0) == 0


def test_access_token_auth_with_a_token_table_applies_through_users_tokens(
    cli, policy_file, pool_id, make_user, standin
):
    for name in ("ann", "bob"):
        make_user(pool_id, name, phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms")
    dynamodb = standin.client("dynamodb")
    table = f"tokens-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "username", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "username", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for name in ("ann", "bob"):
        token = standin.issue_access_token(pool_id, name)
        dynamodb.put_item(
            TableName=table, Item={"username": {"S": name}, "access_token": {"S": token}}
        )

    code, out, err = cli(
        "apply",
        "-c",
        str(policy_file()),
        "--user-pool-id",
        pool_id,
        "--auth",
        "access-token",
        "--token-table",
        table,
        "--format",
        "json",
    )

    assert code == 0, err
    assert json.loads(out)["counts"]["by_outcome"]["changed"] == 2
    assert standin.calls["SetUserMFAPreference"] == 2
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0
    assert mfa_of(standin, pool_id, "ann") == ({"totp", "sms"}, "SOFTWARE_TOKEN_MFA")
    dynamodb.delete_table(TableName=table)


# ---- output formats --------------------------------------------------------------------------


def test_format_json_prints_parseable_json_with_counts(cli, policy_file, demo_pool):
    pool = demo_pool(40)

    code, out, _ = cli(
        "drift", "-c", str(policy_file()), "--user-pool-id", pool.pool_id, "--format", "json"
    )

    assert code == 2
    summary = json.loads(out)
    assert summary["user_pool_id"] == pool.pool_id and summary["mode"] == "drift"
    assert sum(summary["counts"]["by_outcome"].values()) == pool.total == summary["users"]
    assert summary["counts"]["by_outcome"]["excluded"] == 2 + pool.counts["service_account"]
    assert 0 < summary["counts"]["api_calls"]["admin_get_user_auth_factors"] <= pool.total
    assert Path(summary["report_dir"], "users.jsonl").exists()


def test_format_md_prints_the_markdown_table(cli, policy_file, demo_pool):
    pool = demo_pool(40)

    code, out, _ = cli(
        "drift", "-c", str(policy_file()), "--user-pool-id", pool.pool_id, "--format", "md"
    )

    assert code == 2
    assert out.startswith("## mfa-policy drift: drift found")
    assert "| outcome | users |" in out
    excluded = 2 + pool.counts["service_account"]
    assert f"| excluded | {excluded} |" in out
    assert "| rule | " in out and "| admins |" in out


# ---- resume, validate, rollback --------------------------------------------------------------


def test_resume_with_nothing_to_resume_exits_1_with_a_clear_message(cli, policy_file, pool_id):
    code, _, err = cli("apply", "-c", str(policy_file()), "--user-pool-id", pool_id, "--resume")

    assert code == 1
    assert "nothing to resume" in err and pool_id in err
    assert "Traceback" not in err

    code, _, err = cli(
        "apply", "-c", str(policy_file()), "--user-pool-id", pool_id, "--resume", "no-such-run"
    )
    assert code == 1 and "nothing to resume" in err and "no-such-run" in err


def test_validate_a_good_file_exits_0_with_one_line(cli, policy_file):
    path = policy_file(DEMO_POLICY)

    code, out, err = cli("validate", "-c", str(path))

    assert code == 0, err
    assert out.count("\n") == 1
    assert out.startswith(f"{path}: valid") and "2 rule(s)" in out


def test_rollback_from_a_drift_report_exits_1_with_a_message(cli, policy_file, demo_pool, standin):
    pool = demo_pool(n=20)
    code, _, _ = cli(
        "drift", "-c", str(policy_file()), "--user-pool-id", pool.pool_id, "--report-dir", "drift"
    )
    assert code == 2
    standin.reset_counters()

    code, _, err = cli("rollback", "--user-pool-id", pool.pool_id, "--from-report", "drift")

    assert code == 1
    assert "drift report" in err and "only an apply report can be rolled back" in err
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0


def test_rollback_of_an_apply_report_exits_0_and_restores_the_users(
    cli, policy_file, pool_id, make_user, standin, tmp_path
):
    for name in ("ann", "bob"):
        make_user(pool_id, name, phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms")
    code, _, _ = cli(
        "apply", "-c", str(policy_file()), "--user-pool-id", pool_id, "--report-dir", "apply"
    )
    assert code == 0
    assert mfa_of(standin, pool_id, "ann") == ({"totp", "sms"}, "SOFTWARE_TOKEN_MFA")

    code, _, err = cli("rollback", "--user-pool-id", pool_id, "--from-report", "apply")

    assert code == 0, err
    assert mfa_of(standin, pool_id, "ann") == ({"totp", "sms"}, "SMS_MFA")
    assert mfa_of(standin, pool_id, "bob") == ({"totp", "sms"}, "SMS_MFA")
    assert (tmp_path / "apply-rollback" / "summary.json").exists()
