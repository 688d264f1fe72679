"""The MfaPolicy construct, asserted on synthesized templates.

Stacks are built once per module where tests only read them: ``default`` (every default),
``custom`` (every optional prop set) and ``quiet`` (schedule and alarms off).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint

from mfa_policy.core.policy_file import load_policy_file
from mfa_policy.exceptions import PolicyError
from mfa_policy_cdk import DAILY, MfaPolicy

POOL_ACTIONS = {
    "cognito-idp:ListUsers",
    "cognito-idp:ListUsersInGroup",
    "cognito-idp:GetUserPoolMfaConfig",
    "cognito-idp:DescribeUserPool",
    "cognito-idp:AdminGetUserAuthFactors",
    "cognito-idp:AdminGetUser",
    "cognito-idp:AdminSetUserMFAPreference",
}
POWERTOOLS_PARAMETER = "/aws/service/powertools/python/arm64/python3.14/3.37.0"
TOKEN_KEYS = [{"AttributeName": "username", "KeyType": "HASH"}]


# ---------------------------------------------------------------------- helpers

ROOT = Path(__file__).resolve().parents[2]
#: The feature flags `cdk synth` would apply, so tests see what the CLI builds.
CDK_CONTEXT: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
EXAMPLE_POLICY = ROOT / "mfa-policy.yaml"

SLICE = "mfa_policy.handlers.slice_handler"
ON_EVENT = "mfa_policy.handlers.deploy_on_event"
IS_COMPLETE = "mfa_policy.handlers.deploy_is_complete"


def new_stack() -> Stack:
    # The built-in CloudFormation validation takes seconds; the example-app test runs it.
    app = App(context=CDK_CONTEXT, builtin_cloud_formation_validation=False)
    return Stack(app, "Test")


def example_pool(stack: Stack, **overrides: Any) -> cognito.UserPool:
    props: dict[str, Any] = {
        "mfa": cognito.Mfa.OPTIONAL,
        "mfa_second_factor": cognito.MfaSecondFactor(sms=True, otp=True),
        **overrides,
    }
    return cognito.UserPool(stack, "Pool", **props)


@dataclass
class Built:
    stack: Stack
    mfa: MfaPolicy
    extras: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def template(self) -> Template:
        return Template.from_stack(self.stack)

    @cached_property
    def json(self) -> dict[str, Any]:
        return dict(self.template.to_json())

    def resources(self, type_: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(self.template.find_resources(type_, {"Properties": props} if props else None))

    def function(self, handler: str) -> tuple[str, dict[str, Any]]:
        found = self.resources("AWS::Lambda::Function", {"Handler": handler})
        assert len(found) == 1, f"expected one function with handler {handler}, got {found}"
        return next(iter(found.items()))

    def statements(self, handler: str) -> list[dict[str, Any]]:
        """Every IAM statement of the role of the function with ``handler``."""
        _, fn = self.function(handler)
        return self.role_statements(fn["Properties"]["Role"]["Fn::GetAtt"][0])

    def role_statements(self, role_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for policy in self.resources("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                out += policy["Properties"]["PolicyDocument"]["Statement"]
        return out

    def one(self, type_: str) -> dict[str, Any]:
        found = self.resources(type_)
        assert len(found) == 1, f"expected one {type_}, got {list(found)}"
        return next(iter(found.values()))


def build(
    policy_file: Path | str = EXAMPLE_POLICY,
    props: Callable[[Stack], dict[str, Any]] | None = None,
    *,
    pool: Callable[[Stack], cognito.IUserPool] | None = None,
    **fixed: Any,
) -> Built:
    """A stack with a pool and the construct; ``props(stack)`` makes props that need the stack."""
    stack = new_stack()
    user_pool = pool(stack) if pool else example_pool(stack)
    extra = props(stack) if props else {}
    mfa = MfaPolicy(
        stack, "MfaPolicy", user_pool=user_pool, policy_file=policy_file, **extra, **fixed
    )
    return Built(stack, mfa, extras=extra)


def as_text(value: Any) -> str:
    """A template value (string or intrinsic) as one string, for substring checks."""
    return json.dumps(value, sort_keys=True)


def definition(state_machine: dict[str, Any]) -> dict[str, Any]:
    """A state machine's ASL with every intrinsic replaced by ``"<ref>"``."""
    body = state_machine["Properties"]["DefinitionString"]
    if isinstance(body, dict):
        body = "".join(part if isinstance(part, str) else "<ref>" for part in body["Fn::Join"][1])
    asl: dict[str, Any] = json.loads(body)
    return asl


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("policies")
    example = load_policy_file(EXAMPLE_POLICY).to_dict()
    # The same meaning as the example, written differently: JSON, other key order, no comments.
    (folder / "reformatted.json").write_text(json.dumps(dict(reversed(example.items())), indent=4))
    changed = json.loads(json.dumps(example))
    changed["rules"][1]["factors"]["sms"] = "disabled"
    (folder / "changed.json").write_text(json.dumps(changed))
    (folder / "bad.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            rules:
              - name: admins
                match: {groups: [admins]}
                factors: {totp: prefered, sms: disabled}
              - name: everyone
                match: all
                factors: {totp: preferred, sms: preferred}
            """
        )
    )
    huge = json.loads(json.dumps(example))
    huge["exclude"]["usernames"] = [f"service-user-{i:04d}@example.com" for i in range(300)]
    huge["rules"][0]["match"] = {"groups": ["admins"], "attributes": {"phone_number": "+15550100"}}
    (folder / "huge.json").write_text(json.dumps(huge))
    shadowed = json.loads(json.dumps(example))
    shadowed["rules"].reverse()  # "everyone" first: "admins" can never match
    (folder / "shadowed.json").write_text(json.dumps(shadowed))
    email = json.loads(json.dumps(example))
    email["rules"][0]["factors"] = {"email": "preferred"}
    (folder / "email.json").write_text(json.dumps(email))
    return folder


@pytest.fixture(scope="module")
def default() -> Built:
    return build()


def _custom_props(stack: Any) -> dict[str, Any]:
    table = dynamodb.Table(
        stack,
        "Tokens",
        partition_key=dynamodb.Attribute(name="username", type=dynamodb.AttributeType.STRING),
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        removal_policy=RemovalPolicy.DESTROY,
    )
    return {
        "apply_on_deploy": False,
        "drift_schedule": events.Schedule.cron(minute="0", hour="6"),
        "report_bucket": s3.Bucket.from_bucket_name(stack, "Reports", "audit-reports"),
        "report_prefix": "audit/",
        "token_table": table,
        "wait_for_completion": None,
        "alarm_actions": [cw_actions.SnsAction(sns.Topic(stack, "Alerts"))],
    }


@pytest.fixture(scope="module")
def custom() -> Built:
    return build(props=_custom_props)


@pytest.fixture(scope="module")
def quiet() -> Built:
    return build(drift_schedule=None, alarm_on_drift=False, alarm_on_failures=False)


# ---------------------------------------------------------------------- the slice function


def test_slice_function_runs_the_newest_python_on_arm64(default: Built) -> None:
    _, fn = default.function(SLICE)
    assert fn["Properties"]["Runtime"] == "python3.14"
    assert fn["Properties"]["Architectures"] == ["arm64"]


def test_slice_function_has_1024_mb_and_15_minutes(default: Built) -> None:
    _, fn = default.function(SLICE)
    # 1,024 MB = 0.58 vCPU: twice the CPU a slice uses at Cognito's full read quota.
    assert fn["Properties"]["MemorySize"] == 1024
    assert fn["Properties"]["Timeout"] == 900


def test_slice_function_logs_json_to_its_own_log_group(default: Built) -> None:
    _, fn = default.function(SLICE)
    config = fn["Properties"]["LoggingConfig"]
    assert config["LogFormat"] == "JSON"
    assert config["LogGroup"]["Ref"] in default.resources("AWS::Logs::LogGroup")


def test_log_groups_keep_logs_a_year_by_default(default: Built) -> None:
    groups = default.resources("AWS::Logs::LogGroup").values()
    assert {group["Properties"]["RetentionInDays"] for group in groups} == {365}


@pytest.mark.parametrize("handler", [SLICE, ON_EVENT, IS_COMPLETE])
def test_every_function_uses_the_public_powertools_layer_of_the_pinned_version(
    default: Built, handler: str
) -> None:
    _, fn = default.function(handler)
    (layer,) = fn["Properties"]["Layers"]
    # The layer's ARN is AWS's public SSM parameter for the pinned release, resolved at deploy.
    parameter = default.json["Parameters"][layer["Ref"]]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<String>"
    assert parameter["Default"] == POWERTOOLS_PARAMETER


def test_the_powertools_layer_is_the_version_the_tests_install() -> None:
    from importlib.metadata import version

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"aws-lambda-powertools=={version("aws-lambda-powertools")}"' in pyproject
    assert POWERTOOLS_PARAMETER.endswith("/" + version("aws-lambda-powertools"))


def test_slice_function_environment_is_exactly_what_the_handler_reads(default: Built) -> None:
    _, fn = default.function(SLICE)
    env = fn["Properties"]["Environment"]["Variables"]
    pool_id = next(iter(default.resources("AWS::Cognito::UserPool")))
    bucket_id = next(iter(default.resources("AWS::S3::Bucket", {"VersioningConfiguration": {}})))
    ledger_id = next(iter(default.resources("AWS::DynamoDB::Table")))
    assert env == {
        "LEDGER_TABLE": {"Ref": ledger_id},
        "USER_POOL_ID": {"Ref": pool_id},
        "POLICY_FILE": "policy.json",
        "POLICY_HASH": load_policy_file(EXAMPLE_POLICY).hash,
        "REPORT_BUCKET": {"Ref": bucket_id},
        "REPORT_PREFIX": "mfa-policy/",
        "AUTH": "admin",
        "RUN_TIMEOUT_SECONDS": "86400",
        "POWERTOOLS_SERVICE_NAME": "mfa-policy",
        "POWERTOOLS_METRICS_NAMESPACE": "MfaPolicy",
    }


def shipped_asset(built: Built) -> Path:
    """The folder the slice function's code asset was staged to in the cloud assembly."""
    assembly = built.stack.node.root.synth()  # type: ignore[attr-defined]
    _, fn = built.function(SLICE)
    asset_hash = fn["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    return Path(assembly.directory) / f"asset.{asset_hash}"


def test_the_asset_carries_the_normalized_policy_the_handler_reads(default: Built) -> None:
    shipped = json.loads((shipped_asset(default) / "policy.json").read_text())
    assert shipped == load_policy_file(EXAMPLE_POLICY).to_dict()


def test_asset_ships_the_runtime_without_the_standin_or_caches(default: Built) -> None:
    shipped = shipped_asset(default)
    files = {p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file()}
    assert "mfa_policy/core/policy.py" in files
    assert "mfa_policy/core/policy.schema.json" in files
    assert "mfa_policy/handlers/lambda_entry.py" in files
    assert not [f for f in files if f.startswith("mfa_policy/standin")]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert {f.split("/")[0] for f in files} == {"mfa_policy", "policy.json"}


def test_a_policy_over_4_kb_synthesizes_and_no_policy_content_is_in_the_template(
    policies: Path,
) -> None:
    built = build(policies / "huge.json")
    template = json.dumps(built.json)
    huge = json.loads((policies / "huge.json").read_text())
    assert len(load_policy_file(policies / "huge.json").to_json()) > 4096
    # Usernames (often emails), attribute values (phone numbers), group and rule names: none
    # of the policy's content is in CloudFormation or in any function's configuration.
    for secret in [
        *huge["exclude"]["usernames"],
        *huge["rules"][0]["match"]["attributes"].values(),
        "service-accounts",
    ]:
        assert secret not in template, secret
    _, fn = built.function(SLICE)
    assert fn["Properties"]["Environment"]["Variables"]["POLICY_HASH"] == built.mfa.policy_hash
    shipped = json.loads((shipped_asset(built) / "policy.json").read_text())
    assert shipped["exclude"]["usernames"] == sorted(huge["exclude"]["usernames"])


# ---------------------------------------------------------------------- deploy functions


@pytest.mark.parametrize("handler", [ON_EVENT, IS_COMPLETE])
def test_deploy_functions_share_the_asset_and_run_python_on_arm64(
    default: Built, handler: str
) -> None:
    _, fn = default.function(handler)
    _, slice_fn = default.function(SLICE)
    assert fn["Properties"]["Code"] == slice_fn["Properties"]["Code"]
    assert fn["Properties"]["Runtime"] == "python3.14"
    assert fn["Properties"]["Architectures"] == ["arm64"]
    assert fn["Properties"]["LoggingConfig"]["LogFormat"] == "JSON"


@pytest.mark.parametrize("handler", [ON_EVENT, IS_COMPLETE])
def test_deploy_functions_environment(default: Built, handler: str) -> None:
    _, fn = default.function(handler)
    env = fn["Properties"]["Environment"]["Variables"]
    machine_id = _machine_id(default)
    assert env["STATE_MACHINE_ARN"] == {"Ref": machine_id}
    assert env["WAIT_SECONDS"] == "600"
    assert env["REPORT_PREFIX"] == "mfa-policy/"
    assert set(env) == {
        "STATE_MACHINE_ARN",
        "WAIT_SECONDS",
        "REPORT_BUCKET",
        "REPORT_PREFIX",
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
    }


def test_no_wait_sets_wait_seconds_to_zero(custom: Built) -> None:
    _, fn = custom.function(IS_COMPLETE)
    assert fn["Properties"]["Environment"]["Variables"]["WAIT_SECONDS"] == "0"


def test_custom_wait_sets_wait_seconds_and_the_custom_resource_timeout() -> None:
    built = build(wait_for_completion=Duration.minutes(30))
    _, fn = built.function(IS_COMPLETE)
    assert fn["Properties"]["Environment"]["Variables"]["WAIT_SECONDS"] == "1800"
    run = built.one("Custom::MfaPolicyRun")
    # 30 minutes of waiting, 5 for the last poll, 2 for CloudFormation's reply.
    assert run["Properties"]["ServiceTimeout"] == str(37 * 60)


# ---------------------------------------------------------------------- IAM


def test_slice_function_gets_exactly_the_cognito_actions_it_calls_on_the_pool_only(
    default: Built,
) -> None:
    pool_id = next(iter(default.resources("AWS::Cognito::UserPool")))
    cognito_statements = [
        s for s in default.statements(SLICE) if "cognito-idp" in as_text(s["Action"])
    ]
    assert len(cognito_statements) == 1
    (statement,) = cognito_statements
    assert set(statement["Action"]) == POOL_ACTIONS
    assert statement["Resource"] == {"Fn::GetAtt": [pool_id, "Arn"]}


def test_no_statement_grants_a_cognito_wildcard_action(default: Built, custom: Built) -> None:
    for built in (default, custom):
        for policy in built.resources("AWS::IAM::Policy").values():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                for action in [actions] if isinstance(actions, str) else actions:
                    assert not (action.startswith("cognito-idp:") and "*" in action), statement


def test_only_the_slice_function_may_call_cognito(default: Built) -> None:
    _, slice_fn = default.function(SLICE)
    slice_role = slice_fn["Properties"]["Role"]["Fn::GetAtt"][0]
    roles = [
        policy["Properties"]["Roles"]
        for policy in default.resources("AWS::IAM::Policy").values()
        if "cognito-idp" in as_text(policy["Properties"]["PolicyDocument"])
    ]
    assert roles == [[{"Ref": slice_role}]]


def test_functions_use_no_aws_managed_policy(default: Built) -> None:
    for role in default.resources("AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"], role


def test_functions_may_write_only_their_own_log_group(default: Built) -> None:
    for handler in (SLICE, ON_EVENT, IS_COMPLETE):
        _, fn = default.function(handler)
        logs = [s for s in default.statements(handler) if "logs:" in as_text(s["Action"])]
        assert logs == [
            {
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Effect": "Allow",
                "Resource": {
                    "Fn::GetAtt": [fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"], "Arn"]
                },
            }
        ]


def test_no_table_access_without_a_token_table_or_a_ledger() -> None:
    built = build(ledger=False)
    assert "dynamodb:" not in as_text(built.resources("AWS::IAM::Policy"))
    assert "cloudtrail:" not in as_text(built.resources("AWS::IAM::Policy"))
    assert not built.resources("AWS::DynamoDB::Table")
    _, fn = built.function(SLICE)
    assert "LEDGER_TABLE" not in fn["Properties"]["Environment"]["Variables"]


def test_ledger_table_is_on_demand_encrypted_recoverable_and_retained(default: Built) -> None:
    ((_, table),) = default.resources("AWS::DynamoDB::Table").items()
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["KeySchema"] == [
        {"AttributeName": "pool", "KeyType": "HASH"},
        {"AttributeName": "sub", "KeyType": "RANGE"},
    ]
    assert table["DeletionPolicy"] == "Retain"


def test_slice_function_gets_exactly_the_ledger_calls_and_cloudtrail_lookups(
    default: Built,
) -> None:
    table_id = next(iter(default.resources("AWS::DynamoDB::Table")))
    statements = default.statements(SLICE)
    table = [s for s in statements if "dynamodb:" in as_text(s["Action"])]
    assert len(table) == 1
    assert sorted(table[0]["Action"]) == [
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    ]
    resources = table[0]["Resource"]
    assert (resources if isinstance(resources, list) else [resources]) == [
        {"Fn::GetAtt": [table_id, "Arn"]}
    ]
    lookups = [s for s in statements if "cloudtrail:" in as_text(s["Action"])]
    assert len(lookups) == 1 and lookups[0]["Resource"] == "*"  # no resource-level permissions
    actions = lookups[0]["Action"]
    cloudtrail = [
        a for a in ([actions] if isinstance(actions, str) else actions) if "cloudtrail" in a
    ]
    assert cloudtrail == ["cloudtrail:LookupEvents"]
    assert all("cloudtrail:" not in as_text(default.statements(h)) for h in (ON_EVENT, IS_COMPLETE))


def test_a_given_ledger_table_is_used_and_none_is_created() -> None:
    def props(stack: Stack) -> dict[str, Any]:
        return {"ledger_table": dynamodb.Table.from_table_name(stack, "Ledger", "my-ledger")}

    built = build(props=props)
    assert not built.resources("AWS::DynamoDB::Table")
    _, fn = built.function(SLICE)
    assert fn["Properties"]["Environment"]["Variables"]["LEDGER_TABLE"] == "my-ledger"


def test_token_table_switches_auth_and_names_the_table(custom: Built) -> None:
    _, fn = custom.function(SLICE)
    env = fn["Properties"]["Environment"]["Variables"]
    table_id = next(iter(custom.resources("AWS::DynamoDB::Table", {"KeySchema": TOKEN_KEYS})))
    assert env["AUTH"] == "access-token"
    assert env["TOKEN_TABLE"] == {"Ref": table_id}


def test_token_table_is_granted_batch_get_item_only(custom: Built) -> None:
    # Scan or Query would let the function read every stored token; the runner only ever
    # fetches a page's tokens by key.
    table_id = next(iter(custom.resources("AWS::DynamoDB::Table", {"KeySchema": TOKEN_KEYS})))
    table_statements = [
        s
        for s in custom.statements(SLICE)
        if "dynamodb:" in as_text(s["Action"]) and table_id in as_text(s["Resource"])
    ]
    assert table_statements == [
        {
            "Action": "dynamodb:BatchGetItem",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [table_id, "Arn"]},
        }
    ]


def test_access_token_mode_drops_the_admin_cognito_actions(custom: Built) -> None:
    (statement,) = [s for s in custom.statements(SLICE) if "cognito-idp" in as_text(s["Action"])]
    assert set(statement["Action"]) == POOL_ACTIONS - {
        "cognito-idp:AdminGetUserAuthFactors",
        "cognito-idp:AdminGetUser",
        "cognito-idp:AdminSetUserMFAPreference",
    }


def test_slice_function_reads_and_writes_reports_under_the_prefix_only(default: Built) -> None:
    bucket_id = _report_bucket_id(default)
    pool_id = next(iter(default.resources("AWS::Cognito::UserPool")))
    s3_statements = [s for s in default.statements(SLICE) if "s3:" in as_text(s["Action"])]
    assert sorted(s3_statements, key=as_text) == sorted(
        [
            {
                "Action": ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
                "Effect": "Allow",
                "Resource": {
                    "Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/mfa-policy/*"]]
                },
            },
            {
                "Action": "s3:ListBucket",
                "Condition": {"StringLike": {"s3:prefix": ["mfa-policy/*"]}},
                "Effect": "Allow",
                "Resource": {"Fn::GetAtt": [bucket_id, "Arn"]},
            },
            {
                # Giving the run lock back is the only delete.
                "Action": "s3:DeleteObject",
                "Effect": "Allow",
                "Resource": {
                    "Fn::Join": [
                        "",
                        [
                            {"Fn::GetAtt": [bucket_id, "Arn"]},
                            "/mfa-policy/locks/",
                            {"Ref": pool_id},
                            ".json",
                        ],
                    ]
                },
            },
        ],
        key=as_text,
    )


def test_is_complete_function_only_reads_reports(default: Built) -> None:
    s3_actions = {
        action
        for s in default.statements(IS_COMPLETE)
        if "s3:" in as_text(s["Action"])
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert s3_actions == {"s3:GetObject", "s3:ListBucket"}


def test_on_event_may_only_start_executions_of_this_state_machine(default: Built) -> None:
    states = [s for s in default.statements(ON_EVENT) if "states:" in as_text(s["Action"])]
    assert states == [
        {
            "Action": "states:StartExecution",
            "Effect": "Allow",
            "Resource": {"Ref": _machine_id(default)},
        }
    ]
    assert "s3:" not in as_text(default.statements(ON_EVENT))


def test_is_complete_may_only_describe_executions_of_this_state_machine(default: Built) -> None:
    (states,) = [s for s in default.statements(IS_COMPLETE) if "states:" in as_text(s["Action"])]
    assert states["Action"] == "states:DescribeExecution"
    resource = as_text(states["Resource"])
    assert ":execution:" in resource
    assert _machine_id(default) in resource


def test_grant_start_run_allows_start_execution_on_this_state_machine_only() -> None:
    built = build()
    role = iam.Role(built.stack, "Operator", assumed_by=iam.AccountRootPrincipal())
    grant = built.mfa.grant_start_run(role)
    assert grant.success
    role_id = built.stack.get_logical_id(role.node.default_child)  # type: ignore[arg-type]
    statements = built.role_statements(built.stack.resolve(role_id))
    assert statements == [
        {
            "Action": "states:StartExecution",
            "Effect": "Allow",
            "Resource": {"Ref": _machine_id(built)},
        }
    ]


# ---------------------------------------------------------------------- the report bucket


def test_report_bucket_is_private_encrypted_versioned(default: Built) -> None:
    bucket = default.resources("AWS::S3::Bucket")[_report_bucket_id(default)]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}


def test_report_bucket_denies_requests_without_tls(default: Built) -> None:
    bucket_id = _report_bucket_id(default)
    policy = default.resources("AWS::S3::BucketPolicy", {"Bucket": {"Ref": bucket_id}})
    statements = next(iter(policy.values()))["Properties"]["PolicyDocument"]["Statement"]
    conditions = [s["Condition"] for s in statements if s["Effect"] == "Deny"]
    assert {"Bool": {"aws:SecureTransport": "false"}} in conditions
    assert {"NumericLessThan": {"s3:TlsVersion": 1.2}} in conditions


def test_report_bucket_expires_reports_and_old_versions(default: Built) -> None:
    bucket = default.resources("AWS::S3::Bucket")[_report_bucket_id(default)]["Properties"]
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 365
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert rule["Status"] == "Enabled"


def test_report_retention_none_keeps_reports() -> None:
    built = build(report_retention=None)
    bucket = built.resources("AWS::S3::Bucket")[_report_bucket_id(built)]["Properties"]
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert "ExpirationInDays" not in rule


def test_report_bucket_logs_access_to_a_separate_private_bucket(default: Built) -> None:
    buckets = default.resources("AWS::S3::Bucket")
    bucket = buckets[_report_bucket_id(default)]["Properties"]
    logs_id = bucket["LoggingConfiguration"]["DestinationBucketName"]["Ref"]
    assert logs_id != _report_bucket_id(default)
    assert buckets[logs_id]["Properties"]["PublicAccessBlockConfiguration"]["BlockPublicAcls"]
    assert "BucketEncryption" in buckets[logs_id]["Properties"]


def test_report_buckets_are_retained_with_the_stack(default: Built) -> None:
    for bucket in default.resources("AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Retain"
        assert bucket["UpdateReplacePolicy"] == "Retain"


def test_given_report_bucket_creates_no_bucket(custom: Built) -> None:
    assert custom.resources("AWS::S3::Bucket") == {}
    _, fn = custom.function(SLICE)
    env = fn["Properties"]["Environment"]["Variables"]
    assert env["REPORT_BUCKET"] == "audit-reports"
    assert env["REPORT_PREFIX"] == "audit/"
    assert ':s3:::audit-reports/audit/*"' in as_text(custom.statements(SLICE))


# ---------------------------------------------------------------------- the state machine


def test_state_machine_takes_the_lock_then_loops_slices_until_done(default: Built) -> None:
    states = definition(_machine(default))["States"]
    assert definition(_machine(default))["StartAt"] == "AcquireLock"
    acquire = states["AcquireLock"]
    assert acquire["Parameters"] == {
        "action": "acquire_lock",
        "owner.$": "$$.Execution.Id",
        "run.$": "$",
    }
    assert acquire["ResultPath"] == "$.lock"  # the run's input stays, with the lock beside it
    taken = states[acquire["Next"]]
    assert taken["Type"] == "Choice"
    assert taken["Choices"] == [
        {"Variable": "$.lock.acquired", "BooleanEquals": True, "Next": "RunSlice"},
        {"Variable": "$.lock.wait", "BooleanEquals": True, "Next": "WaitForLock"},
    ]
    assert states["WaitForLock"] == {"Type": "Wait", "Seconds": 60, "Next": "AcquireLock"}
    assert states[taken["Default"]] == {"Type": "Succeed", "OutputPath": "$.lock.output"}
    run_slice = states["RunSlice"]
    assert run_slice["Type"] == "Task"
    # The whole state is the payload, with the execution beside it for the slice's log lines.
    assert run_slice["Parameters"] == {"execution.$": "$$.Execution.Id", "run.$": "$"}
    choice = states[run_slice["Next"]]
    assert choice["Type"] == "Choice"
    assert choice["Choices"] == [
        {"Variable": "$.done", "BooleanEquals": True, "Next": "ReleaseLock"}
    ]
    assert choice["Default"] == "RunSlice"
    assert states["ReleaseLock"]["Next"] == "Finished"
    assert states["Finished"] == {"Type": "Succeed"}


def test_every_way_out_of_a_run_gives_the_lock_back(default: Built) -> None:
    states = definition(_machine(default))["States"]
    release = {"action": "release_lock", "owner.$": "$$.Execution.Id", "run.$": "$"}
    for name in ("ReleaseLock", "ReleaseLockAfterFailure"):
        assert states[name]["Parameters"] == release
        assert states[name]["ResultPath"] is None  # the run's output passes through
    # A slice or the lock that fails (after its retries; a run past run_timeout fails its
    # slice) goes through the release, then fails the execution with the slice's own error.
    for name in ("AcquireLock", "RunSlice"):
        assert states[name]["Catch"] == [
            {
                "ErrorEquals": ["States.ALL"],
                "ResultPath": "$.error",
                "Next": "ReleaseLockAfterFailure",
            }
        ]
    assert states["ReleaseLockAfterFailure"]["Next"] == "RunFailed"
    assert states["RunFailed"] == {
        "Type": "Fail",
        "ErrorPath": "$.error.Error",
        "CausePath": "$.error.Cause",
    }
    # A lock that cannot be given back runs out with its lease: it fails no run.
    assert states["ReleaseLock"]["Catch"][0]["Next"] == "Finished"
    assert states["ReleaseLockAfterFailure"]["Catch"][0]["Next"] == "RunFailed"
    terminal = {n for n, st in states.items() if st["Type"] in ("Succeed", "Fail")}
    assert terminal == {"Finished", "Refused", "RunFailed"}


def test_run_slice_invokes_the_slice_function_and_keeps_only_its_result(default: Built) -> None:
    machine = _machine(default)
    slice_id, _ = default.function(SLICE)
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    assert {"Fn::GetAtt": [slice_id, "Arn"]} in parts  # payload_response_only: direct ARN
    assert "ResultSelector" not in definition(machine)["States"]["RunSlice"]


def test_run_slice_retries_lambda_service_errors_and_throttles_with_backoff(default: Built) -> None:
    retries = definition(_machine(default))["States"]["RunSlice"]["Retry"]
    retried = {error for retry in retries for error in retry["ErrorEquals"]}
    assert {
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    } <= retried
    assert all(retry["BackoffRate"] >= 2 for retry in retries)


def test_state_machine_logs_everything_traces_and_backs_up_the_run_timeout(
    default: Built,
) -> None:
    machine = _machine(default)["Properties"]
    assert machine["LoggingConfiguration"]["Level"] == "ALL"
    assert machine["TracingConfiguration"] == {"Enabled": True}
    # The run stops itself at a slice boundary past a day and gives its lock back; the
    # execution's own timeout (no way to give the lock back from there) only backs that up.
    _, fn = default.function(SLICE)
    assert fn["Properties"]["Environment"]["Variables"]["RUN_TIMEOUT_SECONDS"] == "86400"
    assert definition(_machine(default))["TimeoutSeconds"] == 24 * 3600 + 20 * 60


# ---------------------------------------------------------------------- the deploy run


def test_deploy_run_carries_the_pool_policy_hash_and_mode(default: Built) -> None:
    run = default.one("Custom::MfaPolicyRun")["Properties"]
    pool_id = next(iter(default.resources("AWS::Cognito::UserPool")))
    assert run["UserPoolId"] == {"Ref": pool_id}
    assert run["PolicyHash"] == load_policy_file(EXAMPLE_POLICY).hash
    assert run["Mode"] == "apply"
    assert set(run) == {"ServiceToken", "ServiceTimeout", "UserPoolId", "PolicyHash", "Mode"}


def test_apply_on_deploy_false_runs_drift_on_deploy(custom: Built) -> None:
    assert custom.one("Custom::MfaPolicyRun")["Properties"]["Mode"] == "drift"


def test_policy_hash_changes_with_the_policy_meaning(policies: Path) -> None:
    original = build().mfa.policy_hash
    changed = build(policies / "changed.json").mfa.policy_hash
    assert changed != original


def test_policy_hash_ignores_comments_format_and_key_order(policies: Path) -> None:
    built = build(policies / "reformatted.json")
    assert built.mfa.policy_hash == load_policy_file(EXAMPLE_POLICY).hash
    assert built.one("Custom::MfaPolicyRun")["Properties"]["PolicyHash"] == built.mfa.policy_hash


def test_provider_polls_every_30_seconds_for_the_wait_plus_a_margin(default: Built) -> None:
    waiter = next(
        machine
        for machine in default.resources("AWS::StepFunctions::StateMachine").values()
        if "framework-isComplete-task" in as_text(machine)
    )
    retry = definition(waiter)["States"]["framework-isComplete-task"]["Retry"][0]
    assert retry["IntervalSeconds"] == 30
    assert retry["MaxAttempts"] == (600 + 300) // 30


def test_run_attributes_are_the_custom_resource_attributes(default: Built) -> None:
    resolve = default.stack.resolve
    run_id = next(iter(default.resources("Custom::MfaPolicyRun")))
    assert resolve(default.mfa.run_report_uri) == {"Fn::GetAtt": [run_id, "ReportUri"]}
    assert resolve(default.mfa.run_changed) == {"Fn::GetAtt": [run_id, "Changed"]}
    assert resolve(default.mfa.run_drifted) == {"Fn::GetAtt": [run_id, "Drifted"]}
    assert resolve(default.mfa.run_failed) == {"Fn::GetAtt": [run_id, "Failed"]}
    assert resolve(default.mfa.run_guarded) == {"Fn::GetAtt": [run_id, "Guarded"]}
    assert resolve(default.mfa.run_status) == {"Fn::GetAtt": [run_id, "Status"]}


# ---------------------------------------------------------------------- scheduled drift


def test_drift_runs_daily_by_default(default: Built) -> None:
    rule = default.one("AWS::Events::Rule")["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 day)"
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": _machine_id(default)}
    assert json.loads(target["Input"]) == {"mode": "drift", "trigger": "schedule"}


def test_daily_is_the_documented_default() -> None:
    assert DAILY.expression_string == "rate(1 day)"


def test_custom_drift_schedule_is_honoured(custom: Built) -> None:
    rule = custom.one("AWS::Events::Rule")["Properties"]
    assert rule["ScheduleExpression"] == "cron(0 6 * * ? *)"


def test_drift_schedule_none_creates_no_rule(quiet: Built) -> None:
    assert quiet.resources("AWS::Events::Rule") == {}


# ---------------------------------------------------------------------- metrics and alarms


def test_metric_names_the_outcome_in_the_mfa_policy_namespace(default: Built) -> None:
    metric = default.mfa.metric("blocked", mode="apply")
    assert metric.namespace == "MfaPolicy"
    assert metric.metric_name == "blocked"
    assert default.stack.resolve(metric.dimensions) == {
        "UserPoolId": {"Ref": next(iter(default.resources("AWS::Cognito::UserPool")))},
        "Mode": "apply",
    }
    assert metric.statistic == "Sum"


@pytest.mark.parametrize(
    ("method", "name", "mode"),
    [
        ("metric_compliant", "compliant", "drift"),
        ("metric_would_change", "would_change", "drift"),
        ("metric_changed", "changed", "apply"),
        ("metric_needs_enrollment", "needs_enrollment", "drift"),
        ("metric_blocked", "blocked", "drift"),
        ("metric_guarded", "guarded", "drift"),
        ("metric_excluded", "excluded", "drift"),
        ("metric_unmanaged", "unmanaged", "drift"),
        ("metric_deferred", "deferred", "drift"),
        ("metric_skipped", "skipped", "drift"),
        ("metric_token_invalid", "token_invalid", "drift"),
        ("metric_failed", "failed", "drift"),
    ],
)
def test_metric_helpers_name_their_outcome_and_mode(
    default: Built, method: str, name: str, mode: str
) -> None:
    metric = getattr(default.mfa, method)()
    assert metric.metric_name == name
    assert default.stack.resolve(metric.dimensions)["Mode"] == mode


def test_metric_passes_options_through(default: Built) -> None:
    metric = default.mfa.metric_failed(mode="apply", period=Duration.hours(1), statistic="Maximum")
    assert metric.period.to_seconds() == 3600
    assert metric.statistic == "Maximum"


def test_metric_rejects_an_unknown_outcome(default: Built) -> None:
    with pytest.raises(ValueError, match=r"outcome must be one of compliant, .*, got 'drifted'"):
        default.mfa.metric("drifted")


def test_metric_rejects_an_unknown_mode(default: Built) -> None:
    with pytest.raises(ValueError, match=r"mode must be one of drift, apply, got 'rollback'"):
        default.mfa.metric("failed", mode="rollback")


def test_drift_alarm_fires_on_drift_apply_can_fix_in_a_drift_run(default: Built) -> None:
    alarm = default.resources("AWS::CloudWatch::Alarm")[
        _logical_id(default, default.mfa.drift_alarm)
    ]
    props = alarm["Properties"]
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["Threshold"] == 0
    assert props["TreatMissingData"] == "notBreaching"
    metrics = {
        m["MetricStat"]["Metric"]["MetricName"]: m for m in props["Metrics"] if "MetricStat" in m
    }
    # Users who must enrol or lack a phone number are not drift apply can fix: they have the
    # enrollment backlog's metric and alarm instead.
    assert set(metrics) == {"would_change"}
    for metric in metrics.values():
        dims = {d["Name"]: d["Value"] for d in metric["MetricStat"]["Metric"]["Dimensions"]}
        assert dims["Mode"] == "drift"
        assert metric["MetricStat"]["Metric"]["Namespace"] == "MfaPolicy"
    (expression,) = [m["Expression"] for m in props["Metrics"] if "Expression" in m]
    assert expression.count("FILL(") == 1


def test_failure_alarm_fires_on_failed_users_or_failed_runs(default: Built) -> None:
    alarm = default.resources("AWS::CloudWatch::Alarm")[
        _logical_id(default, default.mfa.failure_alarm)
    ]
    props = alarm["Properties"]
    assert props["TreatMissingData"] == "notBreaching"
    assert props["Threshold"] == 0
    names = {
        (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"])
        for m in props["Metrics"]
        if "MetricStat" in m
    }
    assert names == {
        ("MfaPolicy", "failed"),
        ("AWS/States", "ExecutionsFailed"),
        ("AWS/States", "ExecutionsTimedOut"),
    }


def test_alarms_take_the_given_actions(custom: Built) -> None:
    topic_id = next(iter(custom.resources("AWS::SNS::Topic")))
    for alarm in custom.resources("AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]


def test_alarms_can_be_turned_off(quiet: Built) -> None:
    assert quiet.mfa.drift_alarm is None
    assert quiet.mfa.failure_alarm is None
    assert quiet.resources("AWS::CloudWatch::Alarm") == {}


# ---------------------------------------------------------------------- validation at synth


def test_a_bad_policy_fails_synth_listing_every_error_with_its_path(policies: Path) -> None:
    with pytest.raises(PolicyError) as raised:
        build(policies / "bad.yaml")
    message = str(raised.value)
    assert "2 errors" in message
    assert "line 5: rules[0].factors.totp: 'prefered' is not one of preferred" in message
    assert "line 8: rules[1].factors: at most one factor may be preferred" in message


def test_a_missing_policy_file_fails_synth(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read file"):
        build(tmp_path / "nope.yaml")


def test_a_rejected_configuration_adds_no_resources(policies: Path) -> None:
    stack = new_stack()
    pool = example_pool(stack)
    with pytest.raises(ValueError, match="the policy enables email"):
        MfaPolicy(stack, "MfaPolicy", user_pool=pool, policy_file=policies / "email.json")
    assert stack.node.find_child("MfaPolicy").node.children == []


@pytest.mark.parametrize(
    ("props", "message"),
    [
        (
            {"wait_for_completion": Duration.hours(2)},
            r"wait_for_completion must be at most 50 minutes .* got 2 hours",
        ),
        (
            {"run_timeout": Duration.seconds(30)},
            r"run_timeout must be between 1 minute and 365 days .* got 30 seconds",
        ),
        ({"report_prefix": "reports"}, r"report_prefix must be empty or .* got 'reports'"),
        ({"report_prefix": "/reports/"}, r"report_prefix must be empty or .* got '/reports/'"),
    ],
    ids=["wait_too_long", "run_timeout_too_short", "prefix_without_slash", "prefix_leading_slash"],
)
def test_props_out_of_bounds_fail_synth_showing_the_value_and_what_is_allowed(
    props: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build(**props)


def test_every_bad_prop_is_reported_at_once() -> None:
    with pytest.raises(ValueError, match="invalid MfaPolicy props") as raised:
        build(wait_for_completion=Duration.hours(2), report_prefix="reports")
    assert "wait_for_completion" in str(raised.value)
    assert "report_prefix" in str(raised.value)


def test_a_pool_that_does_not_offer_a_policy_factor_fails_synth(policies: Path) -> None:
    with pytest.raises(ValueError, match=r"the policy enables email, but user pool .* does not"):
        build(policies / "email.json")


def test_a_pool_with_mfa_off_fails_synth() -> None:
    with pytest.raises(ValueError, match=r"factors the pool offers: none \(MFA is OFF\)"):
        build(pool=lambda stack: cognito.UserPool(stack, "Pool"))


def test_an_imported_pool_is_left_to_the_runtime_preflight(policies: Path) -> None:
    built = build(
        policies / "email.json",
        pool=lambda stack: cognito.UserPool.from_user_pool_id(stack, "Pool", "eu-west-1_Abc"),
    )
    _, fn = built.function(SLICE)
    assert fn["Properties"]["Environment"]["Variables"]["USER_POOL_ID"] == "eu-west-1_Abc"


def test_policy_warnings_become_synth_warnings(policies: Path) -> None:
    built = build(policies / "shadowed.json")
    warnings = Annotations.from_stack(built.stack).find_warning(
        "/Test/MfaPolicy", Match.string_like_regexp("later rules never match: admins")
    )
    assert len(warnings) == 1


# ---------------------------------------------------------------------- cdk-nag and cfn-lint


@pytest.mark.parametrize("variant", ["default", "custom"])
def test_cdk_nag_aws_solutions_finds_nothing_in_the_construct(
    variant: str, request: pytest.FixtureRequest
) -> None:
    built: Built = request.getfixturevalue(variant)
    report = AwsSolutionsChecks().validate_scope(built.mfa)
    found = {
        violation.rule_name: [r.construct_path for r in violation.violating_resources]
        for violation in report.violations
    }
    assert found == {}


def test_cloudformation_lint_finds_no_errors(default: Built) -> None:
    matches = lint(json.dumps(default.json), config=ManualArgs(regions=["us-east-1"]))
    errors = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]
    assert errors == []


# ---------------------------------------------------------------------- the example app


_APP_CONTEXTS: dict[str, dict[str, str]] = {
    "new": {},
    "existing": {"userPoolId": "eu-west-1_AbCdEfGhI"},
}
# The built-in CloudFormation validation takes seconds and is the same for both; run it once.
_APP_ENV: dict[str, dict[str, str]] = {"new": {}, "existing": {"CDK_VALIDATION": "false"}}


class ExampleAppRuns:
    """Runs of app.py as `cdk synth` runs it (cdk.json's context, CDK_OUTDIR), each at most once."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._runs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, name: str) -> None:
        if name in self._runs:
            return
        outdir = self._tmp.mktemp(f"cdk-out-{name}")
        env = {
            **os.environ,
            "CDK_OUTDIR": str(outdir),
            "CDK_CONTEXT_JSON": json.dumps({**CDK_CONTEXT, **_APP_CONTEXTS[name]}),
            **_APP_ENV[name],
        }
        with (outdir.parent / f"{outdir.name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "app.py")],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._runs[name] = (proc, outdir)

    def template(self, name: str) -> dict[str, Any]:
        self.start(name)
        proc, outdir = self._runs[name]
        proc.wait(timeout=300)
        log = (outdir.parent / f"{outdir.name}.log").read_text(errors="replace")
        assert proc.returncode == 0, log
        template: dict[str, Any] = json.loads(
            (outdir / "MfaPolicyExample.template.json").read_text()
        )
        return template

    def stop(self) -> None:
        for proc, _ in self._runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def example_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleAppRuns]:
    runs = ExampleAppRuns(tmp_path_factory)
    if "PYTEST_XDIST_WORKER" not in os.environ:
        # Both at once: they are independent. (Under xdist each worker starts what it needs.)
        for name in _APP_CONTEXTS:
            runs.start(name)
    yield runs
    runs.stop()


def test_example_app_synthesizes_with_cdk_nag_and_validation(example_app: ExampleAppRuns) -> None:
    template = example_app.template("new")
    types = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::Cognito::UserPool", "Custom::MfaPolicyRun", "AWS::Events::Rule"} <= types
    assert {
        "RunReportUri",
        "RunChanged",
        "RunDrifted",
        "RunFailed",
        "StateMachineArn",
        "ReportBucketName",
    } <= set(template["Outputs"])


def test_example_app_uses_an_existing_pool_from_context(example_app: ExampleAppRuns) -> None:
    template = example_app.template("existing")
    types = [r["Type"] for r in template["Resources"].values()]
    assert "AWS::Cognito::UserPool" not in types
    run = next(r for r in template["Resources"].values() if r["Type"] == "Custom::MfaPolicyRun")
    assert run["Properties"]["UserPoolId"] == "eu-west-1_AbCdEfGhI"
    assert "userpool/eu-west-1_AbCdEfGhI" in as_text(template["Resources"])


# ---------------------------------------------------------------------- helpers


def _machine(built: Built) -> dict[str, Any]:
    machine: dict[str, Any] = built.resources("AWS::StepFunctions::StateMachine")[
        _machine_id(built)
    ]
    return machine


def _machine_id(built: Built) -> str:
    return _logical_id(built, built.mfa.state_machine)


def _report_bucket_id(built: Built) -> str:
    return _logical_id(built, built.mfa.report_bucket)


def _logical_id(built: Built, construct: Any) -> str:
    return str(built.stack.resolve(built.stack.get_logical_id(construct.node.default_child)))


def test_grant_submit_plan_allows_uploading_plans_and_starting_a_run_only() -> None:
    stack = new_stack()
    pool = example_pool(stack)
    mfa = MfaPolicy(stack, "MfaPolicy", user_pool=pool, policy_file=EXAMPLE_POLICY)
    pipeline = iam.Role(
        stack, "Pipeline", assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com")
    )
    mfa.grant_submit_plan(pipeline)
    built = Built(stack, mfa)
    role_id = built.stack.resolve(built.stack.get_logical_id(pipeline.node.default_child))
    statements = built.role_statements(role_id)
    actions = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert "states:StartExecution" in actions
    assert {a for a in actions if a.startswith("s3:")} <= {
        "s3:PutObject",
        "s3:PutObjectLegalHold",
        "s3:PutObjectRetention",
        "s3:PutObjectTagging",
        "s3:PutObjectVersionTagging",
        "s3:Abort*",
    }
    put = next(s for s in statements if "s3:PutObject" in s["Action"])
    assert "mfa-policy/plans/*" in as_text(put["Resource"])
    assert mfa.plan_prefix == "mfa-policy/plans/"


def test_the_cloudtrail_wildcard_is_acknowledged_with_why_it_must_be_star(default: Built) -> None:
    acknowledged = json.dumps(
        [entry.data for entry in default.mfa.function.role.node.metadata]  # type: ignore[union-attr]
    )
    assert "AwsSolutions-IAM5[Resource::*]" in acknowledged
    assert "cloudtrail:LookupEvents supports no resource-level permissions" in acknowledged


@pytest.fixture(scope="module")
def realtime() -> Built:
    return build(realtime="apply")


def test_realtime_adds_a_rule_on_cognito_cloudtrail_events_for_the_changed_user_function(
    realtime: Built,
) -> None:
    from mfa_policy.aws.cloudtrail import STATE_CHANGING_EVENTS

    rules = realtime.resources("AWS::Events::Rule", {"EventPattern": {}})
    (rule,) = rules.values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.cognito-idp"]
    assert "AWS API Call via CloudTrail" in pattern["detail-type"]
    assert set(pattern["detail"]["eventName"]) == set(STATE_CHANGING_EVENTS)
    fn_id, fn = realtime.function("mfa_policy.handlers.changed_user_handler")
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    env = fn["Properties"]["Environment"]["Variables"]
    assert env["REALTIME_MODE"] == "apply" and "LEDGER_TABLE" in env
    assert fn["Properties"]["Timeout"] == 60


def test_realtime_drift_may_not_write_and_neither_may_read_cloudtrail() -> None:
    built = build(realtime="drift")
    statements = built.statements("mfa_policy.handlers.changed_user_handler")
    actions = as_text([s["Action"] for s in statements])
    assert "cognito-idp:AdminGetUser" in actions
    assert "AdminSetUserMFAPreference" not in actions
    assert "cloudtrail:" not in actions
    report = AwsSolutionsChecks().validate_scope(built.mfa)
    assert [v.rule_name for v in report.violations] == []


def test_realtime_needs_the_ledger_and_admin_auth() -> None:
    with pytest.raises(ValueError, match="realtime needs the ledger"):
        build(realtime="apply", ledger=False)
    with pytest.raises(ValueError, match="realtime must be"):
        build(realtime="sometimes")


def test_no_realtime_rule_by_default(default: Built) -> None:
    assert not default.resources("AWS::Events::Rule", {"EventPattern": {}})
    assert default.mfa.changed_user_function is None
