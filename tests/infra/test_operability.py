"""Operable in AWS: tracing, alarms on what can be fixed, the enrollment backlog, a topic that
hears about alarms and finished runs, run metrics, and the construct conventions (removal
policy, a read grant for auditors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, RemovalPolicy, Stack
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

from mfa_policy_cdk import MfaPolicy

ROOT = Path(__file__).resolve().parents[2]
CDK_CONTEXT: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
POLICY = ROOT / "mfa-policy.yaml"


def build(**props: Any) -> tuple[Stack, MfaPolicy, dict[str, Any]]:
    stack = Stack(App(context=CDK_CONTEXT, builtin_cloud_formation_validation=False), "Ops")
    pool = cognito.UserPool(
        stack,
        "Pool",
        mfa=cognito.Mfa.OPTIONAL,
        mfa_second_factor=cognito.MfaSecondFactor(sms=True, otp=True),
    )
    extra = {k: (v(stack) if callable(v) else v) for k, v in props.items()}
    mfa = MfaPolicy(stack, "MfaPolicy", user_pool=pool, policy_file=POLICY, **extra)
    return stack, mfa, Template.from_stack(stack).to_json()


def resources(template: dict[str, Any], type_: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def logical_id(stack: Stack, construct: Any) -> str:
    return str(stack.resolve(stack.get_logical_id(construct.node.default_child)))


@pytest.fixture(scope="module")
def default() -> tuple[Stack, MfaPolicy, dict[str, Any]]:
    return build()


@pytest.fixture(scope="module")
def notified() -> tuple[Stack, MfaPolicy, dict[str, Any]]:
    return build(
        notification_topic=lambda stack: sns.Topic(stack, "Ops"),
        alarm_on_enrollment_backlog=True,
        enrollment_backlog_threshold=25,
        removal_policy=RemovalPolicy.DESTROY,
    )


def test_every_function_is_traced(default) -> None:
    _, _, template = default
    functions = resources(template, "AWS::Lambda::Function")
    ours = [
        f
        for f in functions.values()
        if str(f["Properties"].get("Handler", "")).startswith("mfa_policy.")
    ]
    assert len(ours) == 3
    assert all(f["Properties"]["TracingConfig"] == {"Mode": "Active"} for f in ours)


def test_the_drift_alarm_fires_only_on_drift_apply_can_fix(default) -> None:
    stack, mfa, template = default
    alarm = template["Resources"][logical_id(stack, mfa.drift_alarm)]["Properties"]
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert names == {"would_change"}


def test_the_enrollment_backlog_has_its_own_metric_and_optional_alarm(default, notified) -> None:
    assert default[1].enrollment_backlog_alarm is None
    stack, mfa, template = notified
    alarm = template["Resources"][logical_id(stack, mfa.enrollment_backlog_alarm)]["Properties"]
    (stat,) = [m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m]
    assert stat["Metric"]["MetricName"] == "needs_enrollment"
    assert alarm["Threshold"] == 25
    assert {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]}["Mode"] == "drift"
    assert mfa.metric_enrollment_backlog().metric_name == "needs_enrollment"


def test_the_topic_hears_every_alarm_and_every_finished_run(notified) -> None:
    _stack, _mfa, template = notified
    (topic_id,) = resources(template, "AWS::SNS::Topic")
    for alarm in resources(template, "AWS::CloudWatch::Alarm").values():
        assert {"Ref": topic_id} in alarm["Properties"]["AlarmActions"]
        assert {"Ref": topic_id} in alarm["Properties"]["OKActions"]
    (rule,) = [
        r for r in resources(template, "AWS::Events::Rule").values()
        if "EventPattern" in r["Properties"]
    ]  # fmt: skip
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.states"]
    assert set(pattern["detail"]["status"]) == {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Ref": topic_id}


def test_run_metrics_for_throttles_api_calls_and_duration(default) -> None:
    mfa = default[1]
    assert mfa.metric_throttled().metric_name == "throttled"
    assert mfa.metric_api_calls("admin_get_user").metric_name == "api_calls_admin_get_user"
    assert mfa.metric_run_duration(mode="apply").metric_name == "run_duration"


def test_removal_policy_applies_to_the_buckets_it_creates(default, notified) -> None:
    for built, policy in ((default, "Retain"), (notified, "Delete")):
        buckets = resources(built[2], "AWS::S3::Bucket").values()
        assert {b["DeletionPolicy"] for b in buckets} == {policy}


def test_grant_read_reports_lets_auditors_read_reports_only() -> None:
    stack = Stack(App(context=CDK_CONTEXT, builtin_cloud_formation_validation=False), "Ops")
    pool = cognito.UserPool(
        stack, "Pool", mfa=cognito.Mfa.OPTIONAL,
        mfa_second_factor=cognito.MfaSecondFactor(sms=True, otp=True),
    )  # fmt: skip
    mfa = MfaPolicy(stack, "MfaPolicy", user_pool=pool, policy_file=POLICY)
    auditor = iam.Role(stack, "Auditor", assumed_by=iam.AccountRootPrincipal())
    mfa.grant_read_reports(auditor)
    template = Template.from_stack(stack).to_json()
    role = logical_id(stack, auditor)
    statements = [
        s
        for p in resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    actions = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert not [a for a in actions if "Put" in a or "Delete" in a]
    assert "s3:GetObject*" in actions or "s3:GetObject" in actions
    assert "mfa-policy/runs/*" in json.dumps(statements)


def test_an_optional_dashboard_shows_outcomes_backlog_throttles_duration_and_failures(
    default,
) -> None:
    assert default[1].dashboard is None
    _, mfa, template = build(dashboard=True)
    assert mfa.dashboard is not None
    (board,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(board["Properties"]["DashboardBody"])
    for title in (
        "Drift runs: users by outcome",
        "Apply runs: users by outcome",
        "Enrollment backlog",
        "Cognito throttles per run",
        "Run duration",
        "Runs failed or timed out",
    ):
        assert title in body
    for metric in ("would_change", "changed", "throttled", "run_duration", "ExecutionsFailed"):
        assert metric in body


def test_a_pool_changed_after_the_construct_is_checked_again_at_synth() -> None:
    stack = Stack(App(context=CDK_CONTEXT, builtin_cloud_formation_validation=False), "Ops")
    pool = cognito.UserPool(
        stack, "Pool", mfa=cognito.Mfa.OPTIONAL,
        mfa_second_factor=cognito.MfaSecondFactor(sms=True, otp=True),
    )  # fmt: skip
    MfaPolicy(stack, "MfaPolicy", user_pool=pool, policy_file=POLICY)
    # Later in the app, someone turns the pool's MFA off.
    cfn_pool = pool.node.default_child
    assert isinstance(cfn_pool, cognito.CfnUserPool)
    cfn_pool.mfa_configuration = "OFF"

    with pytest.raises(RuntimeError, match=r"the policy enables .* does not offer"):
        Template.from_stack(stack)


def test_the_dashboard_draws_outcomes_over_time_per_rule() -> None:
    _, mfa, template = build(dashboard=True)
    (board,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(board["Properties"]["DashboardBody"])
    for title in (
        "Drift runs by rule: would_change",
        "Drift runs by rule: blocked",
        "Drift runs by rule: guarded",
        "Apply runs by rule: changed",
        "Apply runs by rule: blocked",
        "Apply runs by rule: guarded",
    ):
        assert title in body
    for rule in ("admins", "everyone"):  # the rules of mfa-policy.yaml
        assert f'\\"Rule\\",\\"{rule}\\"' in body
    assert mfa.metric("changed", mode="apply", rule="admins").dimensions["Rule"] == "admins"
    with pytest.raises(ValueError, match="rule must be one of the policy's"):
        mfa.metric("blocked", rule="nobody")
    with pytest.raises(ValueError, match="drift runs count would_change, blocked, guarded"):
        mfa.metric("compliant", rule="admins")
