"""The deploy-time run is named after the CloudFormation request, and a run's metrics include
throttles, API calls per operation and its duration."""

from __future__ import annotations

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


def test_run_metrics_include_throttles_api_calls_and_duration(capsys) -> None:
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
                },
            },
        },
        "us-east-1_pool",
    )

    emf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert emf["throttled"] == [2.0] or emf["throttled"] == 2.0
    assert emf["api_calls_admin_get_user"] in ([3.0], 3.0)
    assert emf["api_calls_list_users"] in ([1.0], 1.0)
    assert emf["run_duration"] in ([150.0], 150.0)
