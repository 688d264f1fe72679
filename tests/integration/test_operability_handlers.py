"""The deploy-time run is named after the CloudFormation request, and a run's metrics include
throttles, API calls per operation and its duration."""

from __future__ import annotations

import io
import json

import pytest
from botocore.exceptions import ClientError

from mfa_policy.handlers.lambda_entry import deploy_on_event, emit_run_metrics

MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:MfaPolicyRuns"


class StepFunctions:
    """StartExecution as Step Functions answers it: a name is used once."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def start_execution(self, stateMachineArn: str, name: str, input: str) -> dict[str, str]:
        if name in self.names:
            raise ClientError(
                {"Error": {"Code": "ExecutionAlreadyExists", "Message": name}}, "StartExecution"
            )
        self.names.append(name)
        return {
            "executionArn": f"{stateMachineArn.replace(':stateMachine:', ':execution:')}:{name}"
        }


def event() -> dict[str, object]:
    return {
        "RequestType": "Update",
        "RequestId": "8f1c2d3e-0000-4000-8000-000000000001",
        "PhysicalResourceId": "mfa-policy-us-east-1_x",
        "ResourceProperties": {"UserPoolId": "us-east-1_x", "PolicyHash": "0123", "Mode": "apply"},
    }


def test_a_retried_deploy_request_starts_no_second_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_MACHINE_ARN", MACHINE)
    sfn = StepFunctions()

    first = deploy_on_event(event(), None, sfn=sfn)
    retried = deploy_on_event(event(), None, sfn=sfn)

    assert sfn.names == ["deploy-8f1c2d3e-0000-4000-8000-000000000001"]
    assert first["Data"]["ExecutionArn"] == retried["Data"]["ExecutionArn"]
    assert first["Data"]["ExecutionArn"].endswith(":deploy-8f1c2d3e-0000-4000-8000-000000000001")


def test_run_metrics_include_throttles_hedged_reads_api_calls_and_duration(capsys) -> None:
    from aws_lambda_powertools import Metrics

    emit_run_metrics(
        Metrics(namespace="MfaPolicy", service=""),
        {
            "mode": "drift",
            "counts": {"compliant": 3},
            "checkpoint": {
                "started_at": "2026-12-06T10:00:00+00:00",
                "ended_at": "2026-12-06T10:02:30+00:00",
                "counts": {
                    "api_calls": {"admin_get_user": 3, "list_users": 1},
                    "throttled": {"admin_get_user": 2},
                    "hedged_reads": 1,
                },
            },
        },
        "us-east-1_pool",
    )

    emf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert emf["throttled"] == [2.0] or emf["throttled"] == 2.0
    assert emf["api_calls_admin_get_user"] in ([3.0], 3.0)
    assert emf["api_calls_list_users"] in ([1.0], 1.0)
    assert emf["hedged_reads"] in ([1.0], 1.0)
    assert emf["run_duration"] in ([150.0], 150.0)


def test_every_log_line_of_a_slice_names_its_run() -> None:
    from mfa_policy.handlers.lambda_entry import run_id_of, with_run_id

    first = with_run_id({"mode": "apply", "trigger": "schedule"})
    assert "-apply-" in str(run_id_of(first))
    planned = with_run_id({"mode": "apply", "plan_key": "mfa-policy/plans/p.json"})
    assert run_id_of(planned) == planned["plan_state"]["run_id"]
    later = {"mode": "drift", "run_id": "r0", "checkpoint": {"run_id": "r1"}}
    assert with_run_id(later) is later and run_id_of(later) == "r1"


def test_a_slice_s_log_lines_carry_the_run_id(standin, demo_pool, monkeypatch, tmp_path):
    from types import SimpleNamespace

    from mfa_policy.cli.demo import demo_policy
    from mfa_policy.handlers.lambda_entry import slice_handler

    pool = demo_pool(20, seed=5)
    bucket = f"ops-{tmp_path.name[-12:]}".lower().replace("_", "-")
    standin.client("s3").create_bucket(Bucket=bucket)
    (tmp_path / "policy.json").write_text(demo_policy().to_json())
    for name, value in {
        "AWS_ENDPOINT_URL": standin.endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "USER_POOL_ID": pool.pool_id,
        "POLICY_FILE": "policy.json",
        "REPORT_BUCKET": bucket,
    }.items():
        monkeypatch.setenv(name, value)
    context = SimpleNamespace(
        get_remaining_time_in_millis=lambda: 900_000,
        function_name="slice",
        memory_limit_in_mb=512,
        invoked_function_arn="arn:aws:lambda:us-east-1:1:function:slice",
        aws_request_id="req-1",
    )

    from mfa_policy.handlers.lambda_entry import logger

    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    out = slice_handler({"mode": "drift", "trigger": "schedule"}, context)
    # A run started for a policy this function no longer carries logs its skip, too.
    slice_handler({"mode": "apply", "trigger": "deploy", "policy_hash": "0000"}, context)

    printed = stream.getvalue().splitlines()
    logs = [json.loads(line) for line in printed if line.startswith("{")]
    lines = [entry for entry in logs if "message" in entry]
    assert [entry["message"] for entry in lines] == [
        "slice finished",
        "run skipped: policy changed",
    ]
    assert lines[0]["run_id"] == out["run_id"]
    assert "-apply-" in lines[1]["run_id"]


def test_run_metrics_count_outcomes_per_rule_in_one_document_a_rule(capsys) -> None:
    from aws_lambda_powertools import Metrics

    emit_run_metrics(
        Metrics(namespace="MfaPolicy", service=""),
        {
            "mode": "drift",
            "counts": {"would_change": 3, "blocked": 1},
            "checkpoint": {
                "counts": {
                    "by_rule": {
                        "admins": {"would_change": 2, "compliant": 5},
                        "everyone": {"would_change": 1, "blocked": 1},
                    }
                }
            },
        },
        "us-east-1_pool",
        rules=["admins", "everyone"],
    )

    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    overall, *per_rule = docs
    # The {UserPoolId, Mode} document the alarms watch is unchanged.
    assert overall["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["UserPoolId", "Mode"]]
    assert [d["Rule"] for d in per_rule] == ["admins", "everyone"]
    for doc in per_rule:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Dimensions"] == [["UserPoolId", "Mode", "Rule"]]
        assert {m["Name"] for m in directive["Metrics"]} == {"would_change", "blocked", "guarded"}
        assert doc["UserPoolId"] == "us-east-1_pool" and doc["Mode"] == "drift"
    admins, everyone = per_rule
    assert (admins["would_change"], admins["blocked"], admins["guarded"]) == ([2.0], [0.0], [0.0])
    assert (everyone["would_change"], everyone["blocked"]) == ([1.0], [1.0])


def test_every_log_line_of_a_run_names_its_execution_and_run(
    standin, demo_pool, monkeypatch, tmp_path
):
    """Acquire, slices and release invoked as the state machine does (its Parameters)."""
    from types import SimpleNamespace

    from mfa_policy.cli.demo import demo_policy
    from mfa_policy.handlers.lambda_entry import logger, slice_handler

    pool = demo_pool(20, seed=6)
    bucket = f"ex-{tmp_path.name[-12:]}".lower().replace("_", "-")
    standin.client("s3").create_bucket(Bucket=bucket)
    (tmp_path / "policy.json").write_text(demo_policy().to_json())
    for name, value in {
        "AWS_ENDPOINT_URL": standin.endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "USER_POOL_ID": pool.pool_id,
        "POLICY_FILE": "policy.json",
        "REPORT_BUCKET": bucket,
    }.items():
        monkeypatch.setenv(name, value)
    context = SimpleNamespace(
        get_remaining_time_in_millis=lambda: 900_000,
        function_name="slice",
        memory_limit_in_mb=512,
        invoked_function_arn="arn:aws:lambda:us-east-1:1:function:slice",
        aws_request_id="req-1",
    )
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    execution = f"{MACHINE.replace(':stateMachine:', ':execution:')}:manual-1"

    state: dict[str, object] = {"mode": "drift", "trigger": "manual"}
    state["lock"] = slice_handler(
        {"action": "acquire_lock", "owner": execution, "run": state}, context
    )
    while not state.get("done"):
        state = slice_handler({"execution": execution, "run": state}, context)
    slice_handler({"action": "release_lock", "owner": execution, "run": state}, context)

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    messages = [entry for entry in lines if "message" in entry]
    said = [m["message"] for m in messages]
    assert said[0] == "run lock taken"
    assert said[-2:] == ["slice finished", "run lock released"]
    assert all(m["execution"] == execution for m in messages)
    assert all(m["run_id"] == state["run_id"] for m in messages)
