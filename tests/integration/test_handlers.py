"""The Lambda handlers with real Step Functions and CloudFormation event shapes, on the stand-in."""

import json
from types import SimpleNamespace

import pytest

from mfa_policy.cli.demo import demo_policy
from mfa_policy.core.engine import Mode
from mfa_policy.handlers.lambda_entry import (
    HandlerSettings,
    deploy_is_complete,
    deploy_on_event,
    emit_run_metrics,
    run_slice,
    settings_from_env,
    slice_handler,
)
from mfa_policy.run.local_run import run_locally
from mfa_policy.standin import seed_demo_pool

USERS = 150  # three ListUsers pages: a loop of several slices


@pytest.fixture
def bucket(standin, valid_report):
    """A report bucket; every report the test leaves in it must match the report schemas."""
    s3 = standin.client("s3")
    name = f"reports-{id(s3)}"
    s3.create_bucket(Bucket=name)
    yield name
    valid_report.bucket(s3, name)


@pytest.fixture
def demo_pool(standin):
    return seed_demo_pool(standin, n=USERS, seed=11)


def settings_for(pool_id, bucket):
    return HandlerSettings(
        user_pool_id=pool_id,
        policy_json=demo_policy().to_json(),
        report_bucket=bucket,
        report_prefix="mfa-policy/",
    )


def walk_state_machine(standin, settings, mode, *, budget=0.0, replay_each=False):
    """What the state machine does: feed each slice's output to the next until done."""
    state = {"mode": mode, "trigger": "deploy"}
    outputs = []
    for _ in range(50):
        kwargs = dict(
            settings=settings,
            cognito=standin.client(),
            s3=standin.client("s3"),
            dynamodb=None,
            time_budget=budget,
        )
        out = run_slice(state, **kwargs)
        if replay_each:  # Step Functions retried the task with the same input
            out = run_slice(state, **kwargs)
        json.dumps(out)  # the output must be JSON for Step Functions
        outputs.append(out)
        if out["done"]:
            return outputs
        state = out
    raise AssertionError("the loop did not finish in 50 slices")


def s3_text(standin, uri, name):
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    body = standin.client("s3").get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
    return body.decode()


def comparable(rows):
    return sorted(
        (r["username"], r["outcome"], json.dumps(r["before"]), json.dumps(r.get("after")))
        for r in rows
    )


def test_state_machine_loop_migrates_a_pool_larger_than_one_slice(standin, demo_pool, bucket):
    outputs = walk_state_machine(standin, settings_for(demo_pool.pool_id, bucket), "apply")

    assert len(outputs) >= 3
    final = outputs[-1]
    assert final["checkpoint"]["slices"] == len(outputs)
    rows = [
        json.loads(line)
        for line in s3_text(standin, final["report_uri"], "users.jsonl").splitlines()
    ]
    assert len(rows) == USERS
    assert len({r["sub"] for r in rows}) == USERS
    csv_lines = s3_text(standin, final["report_uri"], "users.csv").splitlines()
    assert len(csv_lines) == USERS + 1
    summary = json.loads(s3_text(standin, final["report_uri"], "summary.json"))
    assert summary["complete"] is True
    assert summary["users"] == USERS
    assert "## mfa-policy apply" in s3_text(standin, final["report_uri"], "summary.md")


def test_handlers_reach_the_same_final_state_and_report_as_the_cli(
    standin, demo_pool, bucket, tmp_path
):
    cli_pool = seed_demo_pool(standin, n=USERS, seed=11)  # the same users, another pool

    outputs = walk_state_machine(standin, settings_for(demo_pool.pool_id, bucket), "apply")
    local = run_locally(
        demo_policy(),
        cli_pool.pool_id,
        Mode.APPLY,
        client=standin.client(),
        state_dir=tmp_path / "state",
        report_dir=tmp_path / "report",
    )

    lambda_rows = [
        json.loads(x)
        for x in s3_text(standin, outputs[-1]["report_uri"], "users.jsonl").splitlines()
    ]
    cli_rows = [
        json.loads(x) for x in (tmp_path / "report" / "users.jsonl").read_text().splitlines()
    ]
    assert comparable(lambda_rows) == comparable(cli_rows)
    assert outputs[-1]["counts"] == {
        k: v for k, v in local.summary["counts"]["by_outcome"].items() if v
    }


def test_a_retried_slice_adds_no_duplicate_rows(standin, demo_pool, bucket):
    outputs = walk_state_machine(
        standin, settings_for(demo_pool.pool_id, bucket), "drift", replay_each=True
    )

    rows = s3_text(standin, outputs[-1]["report_uri"], "users.jsonl").splitlines()
    assert len(rows) == USERS


def test_second_apply_through_the_handlers_writes_nothing(standin, demo_pool, bucket):
    settings = settings_for(demo_pool.pool_id, bucket)
    walk_state_machine(standin, settings, "apply", budget=60)
    standin.reset_counters()

    walk_state_machine(standin, settings, "apply", budget=60)

    # Probe results were kept in the bucket between runs, so nobody is probed again.
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0


def test_slice_handler_reads_its_settings_from_the_environment(
    standin, demo_pool, bucket, monkeypatch, tmp_path
):
    settings = settings_for(demo_pool.pool_id, bucket)
    # As the construct deploys it: the policy is a file in the code asset, the environment
    # names the file and the policy's hash only.
    (tmp_path / "policy.json").write_text(settings.policy_json)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    monkeypatch.setenv("AWS_ENDPOINT_URL", standin.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("USER_POOL_ID", settings.user_pool_id)
    monkeypatch.setenv("POLICY_FILE", "policy.json")
    monkeypatch.setenv("POLICY_HASH", demo_policy().hash)
    monkeypatch.setenv("REPORT_BUCKET", bucket)
    context = SimpleNamespace(
        get_remaining_time_in_millis=lambda: 900_000,
        function_name="slice",
        memory_limit_in_mb=512,
        invoked_function_arn="arn:aws:lambda:us-east-1:1:function:slice",
        aws_request_id="req-1",
    )

    out = slice_handler({"mode": "drift", "trigger": "schedule"}, context)

    assert out["done"] is True
    assert out["trigger"] == "schedule"
    assert sum(out["counts"].values()) == USERS


def test_run_metrics_are_one_embedded_metric_per_outcome(capsys):
    from aws_lambda_powertools import Metrics

    emit_run_metrics(
        Metrics(namespace="MfaPolicy", service=""),
        {"mode": "drift", "counts": {"would_change": 3, "blocked": 1}},
        "us-east-1_pool",
    )

    emf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "MfaPolicy"
    assert directive["Dimensions"] == [["UserPoolId", "Mode"]]
    assert (emf["would_change"], emf["blocked"], emf["failed"]) == ([3.0], [1.0], [0.0])
    assert emf["UserPoolId"] == "us-east-1_pool"


def test_settings_from_env_names_what_is_missing():
    with pytest.raises(
        ValueError, match="missing environment variables: POLICY_FILE, REPORT_BUCKET"
    ):
        settings_from_env({"USER_POOL_ID": "p"})


def test_settings_read_the_policy_from_the_asset_and_check_its_hash(tmp_path):
    policy = demo_policy()
    (tmp_path / "policy.json").write_text(policy.to_json())
    env = {
        "USER_POOL_ID": "p",
        "POLICY_FILE": "policy.json",
        "POLICY_HASH": policy.hash,
        "REPORT_BUCKET": "b",
        "LAMBDA_TASK_ROOT": str(tmp_path),
    }
    assert settings_from_env(env).policy_json == policy.to_json()

    with pytest.raises(ValueError, match=rf"is policy {policy.hash}, not 0000 \(POLICY_HASH\)"):
        settings_from_env({**env, "POLICY_HASH": "0000"})
    with pytest.raises(ValueError, match=r"cannot read the policy file .*nope\.json"):
        settings_from_env({**env, "POLICY_FILE": "nope.json"})


def test_settings_from_env_requires_a_table_for_access_tokens():
    env = {
        "USER_POOL_ID": "p",
        "POLICY_FILE": "p.json",
        "REPORT_BUCKET": "b",
        "AUTH": "access-token",
    }
    with pytest.raises(ValueError, match="AUTH=access-token needs TOKEN_TABLE"):
        settings_from_env(env)


# -- the custom resource ----------------------------------------------------------------------

STACK = "arn:aws:cloudformation:us-east-1:123456789012:stack/MfaPolicyExample/3f1c"


def cfn_event(request_type, **props):
    event = {
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider-onEvent",
        "ResponseURL": "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x",
        "StackId": STACK,
        "RequestId": "8f1c2d3e-0000-4000-8000-000000000001",
        "LogicalResourceId": "MfaPolicyRunOnDeploy",
        "ResourceType": "Custom::MfaPolicyRun",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:...",
            "UserPoolId": "us-east-1_x",
            "PolicyHash": "0123456789abcdef",
            "Mode": "apply",
            **props,
        },
    }
    if request_type != "Create":
        event["PhysicalResourceId"] = "mfa-policy-us-east-1_x"
    return event


class FakeStepFunctions:
    """Answers like Step Functions' StartExecution and DescribeExecution."""

    def __init__(self, status="RUNNING", output=None, cause=None):
        self.started = []
        self.status, self.output, self.cause = status, output, cause

    def start_execution(self, stateMachineArn, name, input):
        self.started.append(json.loads(input))
        return {
            "executionArn": f"{stateMachineArn.replace(':stateMachine:', ':execution:')}:{name}",
            "startDate": "2026-11-22T00:00:00Z",
        }

    def describe_execution(self, executionArn):
        out = {"executionArn": executionArn, "status": self.status}
        if self.output is not None:
            out["output"] = json.dumps(self.output)
        if self.cause is not None:
            out["error"], out["cause"] = "PreflightError", self.cause
        return out


@pytest.fixture
def machine_env(monkeypatch):
    monkeypatch.setenv(
        "STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:MfaPolicyRuns"
    )
    monkeypatch.setenv("WAIT_SECONDS", "600")


def test_create_starts_a_run_in_the_mode_the_stack_asks(machine_env):
    sfn = FakeStepFunctions()

    response = deploy_on_event(cfn_event("Create", Mode="drift"), None, sfn=sfn)

    assert sfn.started == [
        {"mode": "drift", "trigger": "deploy", "policy_hash": "0123456789abcdef"}
    ]
    assert response["PhysicalResourceId"] == "mfa-policy-us-east-1_x"
    assert response["Data"]["ExecutionArn"].startswith(
        "arn:aws:states:us-east-1:123456789012:execution:MfaPolicyRuns:deploy-"
    )


def test_update_keeps_the_physical_id_and_starts_a_run(machine_env):
    sfn = FakeStepFunctions()

    response = deploy_on_event(cfn_event("Update"), None, sfn=sfn)

    assert response["PhysicalResourceId"] == "mfa-policy-us-east-1_x"
    assert sfn.started == [
        {"mode": "apply", "trigger": "deploy", "policy_hash": "0123456789abcdef"}
    ]


def test_delete_changes_no_user(machine_env):
    sfn = FakeStepFunctions()

    assert deploy_on_event(cfn_event("Delete"), None, sfn=sfn) == {
        "PhysicalResourceId": "mfa-policy-us-east-1_x"
    }
    assert deploy_is_complete(cfn_event("Delete"), None, sfn=sfn) == {"IsComplete": True}
    assert sfn.started == []


def started_event(started_at):
    return {
        **cfn_event("Create"),
        "PhysicalResourceId": "mfa-policy-us-east-1_x",
        "Data": {
            "ExecutionArn": "arn:aws:states:us-east-1:1:execution:M:deploy-1",
            "StartedAt": str(started_at),
        },
    }


def test_is_complete_returns_counts_and_report_uri_when_the_run_succeeds(machine_env):
    sfn = FakeStepFunctions(
        "SUCCEEDED",
        output={
            "done": True,
            "report_uri": "s3://b/mfa-policy/runs/r1/",
            "counts": {
                "changed": 5,
                "would_change": 0,
                "needs_enrollment": 2,
                "blocked": 1,
                "guarded": 4,
                "failed": 0,
            },
        },
    )

    response = deploy_is_complete(started_event(1000.0), None, sfn=sfn, now=1010.0)

    assert response == {
        "IsComplete": True,
        "Data": {
            "Status": "SUCCEEDED",
            "ReportUri": "s3://b/mfa-policy/runs/r1/",
            "Changed": "5",
            "Drifted": "7",
            "NeedsEnrollment": "2",
            "Blocked": "1",
            "Guarded": "4",
            "Failed": "0",
        },
    }


def test_is_complete_waits_while_the_run_is_within_the_bound(machine_env):
    assert deploy_is_complete(started_event(1000.0), None, sfn=FakeStepFunctions(), now=1300.0) == {
        "IsComplete": False
    }


def test_deploy_stops_waiting_at_the_bound_and_the_run_goes_on(machine_env):
    response = deploy_is_complete(started_event(1000.0), None, sfn=FakeStepFunctions(), now=1600.0)

    assert response["IsComplete"] is True
    assert response["Data"]["Status"] == "RUNNING"


def test_a_failed_run_fails_the_deploy_with_its_message(machine_env):
    cause = json.dumps(
        {
            "errorMessage": "user pool us-east-1_x does not offer totp MFA",
            "errorType": "PreflightError",
        }
    )
    sfn = FakeStepFunctions("FAILED", cause=cause)

    with pytest.raises(
        RuntimeError, match="mfa-policy run failed: user pool us-east-1_x does not offer totp MFA"
    ):
        deploy_is_complete(started_event(1000.0), None, sfn=sfn, now=1010.0)


def test_a_run_for_another_policy_changes_nobody(standin, demo_pool, bucket):
    # CloudFormation rolling back: the run was started for the old policy's hash.
    settings = settings_for(demo_pool.pool_id, bucket)

    out = run_slice(
        {"mode": "apply", "trigger": "deploy", "policy_hash": "0ld0ld0ld0ld0ld0"},
        settings=settings,
        cognito=standin.client(),
        s3=standin.client("s3"),
        dynamodb=None,
        time_budget=60,
    )

    assert out["done"] is True
    assert "started for policy 0ld0ld0ld0ld0ld0" in out["skipped"]
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0
    assert standin.calls.get("ListUsers", 0) == 0
