"""A reviewed plan from S3, applied by the state machine's slice function (a pipeline's approval
step between drift and apply)."""

from __future__ import annotations

import json

import pytest

from mfa_policy.cli.demo import demo_policy
from mfa_policy.core.engine import Mode
from mfa_policy.core.model import Factor
from mfa_policy.core.plan import PlanError, plan_from_drift
from mfa_policy.core.report import LocalReport
from mfa_policy.handlers.lambda_entry import HandlerSettings, run_slice
from mfa_policy.run.local_run import run_locally


@pytest.fixture
def bucket(standin, valid_report):
    s3 = standin.client("s3")
    name = f"plans-{id(s3)}"
    s3.create_bucket(Bucket=name)
    yield name
    valid_report.bucket(s3, name)  # every report the plan's runs left there fits the schemas


def drift_plan(standin, pool_id, tmp_path):
    result = run_locally(
        demo_policy(),
        pool_id,
        Mode.DRIFT,
        client=standin.client(),
        state_dir=tmp_path / "state",
        report_dir=tmp_path / "drift",
    )
    return plan_from_drift(result.summary, LocalReport(result.report_dir).rows())


def walk(standin, settings, state, *, replay_each=True):
    outputs = []
    for _ in range(50):
        kwargs = dict(
            settings=settings,
            cognito=standin.client(),
            s3=standin.client("s3"),
            dynamodb=None,
            time_budget=0.0,  # one page a slice: several slices
        )
        out = run_slice(state, **kwargs)
        if replay_each:  # Step Functions retried the task with the same input
            out = run_slice(state, **kwargs)
        json.dumps(out)
        outputs.append(out)
        if out["done"]:
            return outputs
        state = out
    raise AssertionError("the loop did not finish")


def test_the_state_machine_applies_a_plan_from_s3_and_skips_a_user_changed_since(
    standin, demo_pool, bucket, tmp_path
):
    pool = demo_pool(200, seed=11)
    plan = drift_plan(standin, pool.pool_id, tmp_path)
    assert len(plan.changes) > 60  # more than one slice's page
    key = "mfa-policy/plans/reviewed.json"
    standin.client("s3").put_object(Bucket=bucket, Key=key, Body=plan.to_json().encode())
    moved = next(c for c in plan.changes if Factor.TOTP in c.observed.enabled)
    standin.client().admin_set_user_mfa_preference(
        UserPoolId=pool.pool_id,
        Username=moved.sub,
        SoftwareTokenMfaSettings={"Enabled": False, "PreferredMfa": False},
    )
    settings = HandlerSettings(
        user_pool_id=pool.pool_id, policy_json=demo_policy().to_json(), report_bucket=bucket
    )

    start = {"mode": "apply", "trigger": "manual", "plan_key": key}
    outputs = walk(standin, settings, start, replay_each=False)

    assert len(outputs) >= 2
    final = outputs[-1]
    assert final["counts"]["changed"] == len(plan.changes) - 1
    assert final["counts"]["skipped"] == 1
    bucket_name, _, prefix = final["report_uri"].removeprefix("s3://").partition("/")
    s3 = standin.client("s3")
    summary = json.loads(
        s3.get_object(Bucket=bucket_name, Key=prefix + "summary.json")["Body"].read()
    )
    assert (summary["planned"], summary["stale"]) == (len(plan.changes), 1)
    rows = [
        json.loads(line)
        for line in s3.get_object(Bucket=bucket_name, Key=prefix + "users.jsonl")["Body"]
        .read()
        .decode()
        .splitlines()
    ]
    assert len(rows) == len(plan.changes)
    (stale,) = [r for r in rows if r["outcome"] == "skipped"]
    assert stale["sub"] == moved.sub and stale["reason"].startswith("stale: ")

    # Step Functions retries a slice with the same input: its users are already as planned.
    standin.reset_counters()
    replayed = run_slice(
        start,
        settings=settings,
        cognito=standin.client(),
        s3=s3,
        dynamodb=None,
        time_budget=0.0,
    )
    assert "changed" not in replayed["counts"]
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0


def test_a_plan_for_another_policy_fails_the_run(standin, demo_pool, bucket, tmp_path):
    pool = demo_pool(20, seed=3)
    plan = drift_plan(standin, pool.pool_id, tmp_path)
    key = "mfa-policy/plans/old.json"
    standin.client("s3").put_object(Bucket=bucket, Key=key, Body=plan.to_json().encode())
    other = json.loads(demo_policy().to_json())
    other["include_disabled"] = True
    settings = HandlerSettings(
        user_pool_id=pool.pool_id, policy_json=json.dumps(other), report_bucket=bucket
    )

    with pytest.raises(PlanError, match="the plan is stale"):
        run_slice(
            {"mode": "apply", "plan_key": key},
            settings=settings,
            cognito=standin.client(),
            s3=standin.client("s3"),
            dynamodb=None,
            time_budget=0.0,
        )
