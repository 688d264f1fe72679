"""The same scenarios against a real user pool, when one is given; skipped otherwise.

    MFA_POLICY_LIVE_POOL_ID=us-east-1_xxx [MFA_POLICY_LIVE_POLICY=policy.yaml] \
    [MFA_POLICY_LIVE_APPLY=1] scripts/test tests/live

Drift is read-only. Apply runs only with MFA_POLICY_LIVE_APPLY=1: it changes real users.
"""

import json
import os

import pytest

from mfa_policy.cli.main import main

POOL = os.environ.get("MFA_POLICY_LIVE_POOL_ID")
POLICY = os.environ.get("MFA_POLICY_LIVE_POLICY", "mfa-policy.yaml")

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not POOL, reason="set MFA_POLICY_LIVE_POOL_ID to run against a real pool"),
]


def run(*args, capsys):
    code = main([*args, "-c", POLICY, "--user-pool-id", POOL, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_live_drift_reports_every_user_once(tmp_path, capsys):
    code, summary = run(
        "drift",
        "--report-dir",
        str(tmp_path / "drift"),
        "--state-dir",
        str(tmp_path / "state"),
        capsys=capsys,
    )

    assert code in (0, 2)
    rows = (tmp_path / "drift" / "users.jsonl").read_text().splitlines()
    assert len(rows) == summary["users"]
    assert summary["counts"]["api_calls"].get("admin_set_user_mfa_preference", 0) == 0


@pytest.mark.skipif(
    os.environ.get("MFA_POLICY_LIVE_APPLY") != "1",
    reason="set MFA_POLICY_LIVE_APPLY=1 to change real users",
)
def test_live_apply_twice_writes_nothing_the_second_time(tmp_path, capsys):
    state = str(tmp_path / "state")
    run("apply", "--report-dir", str(tmp_path / "a1"), "--state-dir", state, capsys=capsys)
    _, second = run(
        "apply", "--report-dir", str(tmp_path / "a2"), "--state-dir", state, capsys=capsys
    )

    assert second["counts"]["api_calls"].get("admin_set_user_mfa_preference", 0) == 0
