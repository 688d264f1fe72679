"""Every cdk-nag (AwsSolutions) finding this construct accepts, with the reason, in one place.

cdk-nag v3 reads acknowledgments made with ``Validations.of(scope).acknowledge(...)``: an
acknowledged id applies to the construct it is put on and everything below it, and each
wildcard finding is its own id (``AwsSolutions-IAM5[Resource::<Logical.Arn>:*]``). The ids are
computed from the resources themselves, flattened the way cdk-nag flattens them, so they stay
right whatever the construct's path. Acknowledgments are plain construct metadata: apps that do
not run cdk-nag are unaffected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_

from constructs import IConstruct

_INVOKE_VERSIONS = (
    "CDK's Lambda invoke grants cover the function's versions and aliases ('<function ARN>:*'); "
    "the grant is for this one function"
)
_NO_RESOURCE_LEVEL = (
    "X-Ray (PutTraceSegments, PutTelemetryRecords, GetSampling*) and CloudWatch Logs delivery "
    "(CreateLogDelivery, ...) actions do not support resource-level permissions; they are "
    "added by Step Functions for tracing and logging"
)


@dataclass(frozen=True)
class Finding:
    scope: IConstruct
    id: str
    reason: str


def acknowledge(findings: Iterable[Finding]) -> None:
    for finding in findings:
        Validations.of(finding.scope).acknowledge(
            Acknowledgment(id=finding.id, reason=finding.reason)
        )


def state_machine_role(state_machine: IConstruct, function: lambda_.IFunction) -> list[Finding]:
    """The run state machine's role: invoking the slice function, tracing and logging."""
    return [
        Finding(
            state_machine,
            _iam5(_flat(state_machine, function.function_arn) + ":*"),
            _INVOKE_VERSIONS,
        ),
        Finding(state_machine, _iam5("*"), _NO_RESOURCE_LEVEL),
    ]


def traced_function(function: lambda_.IFunction) -> list[Finding]:
    """A function with active X-Ray tracing: its role may send trace segments."""
    return [
        Finding(
            function.role or function,
            _iam5("*"),
            "X-Ray's PutTraceSegments and PutTelemetryRecords do not support resource-level "
            "permissions; Lambda adds them for active tracing",
        )
    ]


def provider(
    provider: IConstruct,
    roles: Iterable[iam.IRole],
    functions: Iterable[lambda_.IFunction],
) -> list[Finding]:
    """cdk's custom-resource Provider framework, which this construct cannot configure further.

    ``roles`` are the framework roles this construct passed in; ``functions`` the deploy
    handlers and the framework's own functions, which the framework invokes.
    """
    reason = (
        _INVOKE_VERSIONS + " (the Provider framework invokes the deploy handlers and its own "
        "is-complete and timeout functions)"
    )
    functions = list(functions)
    findings = [
        Finding(scope, _iam5(_flat(provider, fn.function_arn) + ":*"), reason)
        for scope in (provider, *roles)
        for fn in functions
    ]
    findings += [
        Finding(provider, _iam5("*"), _NO_RESOURCE_LEVEL + " (the framework's waiter)"),
        Finding(
            provider,
            "AwsSolutions-SF2",
            "the Provider framework's waiter state machine only polls the is-complete handler "
            "every 30 s and has no tracing option; the run itself is traced by the mfa-policy "
            "state machine",
        ),
    ]
    return findings


def statement_wildcards(
    scope: IConstruct, statement: iam.PolicyStatement, reason: str
) -> list[Finding]:
    """One finding per wildcard resource of a statement this construct wrote itself."""
    return [
        Finding(scope, _iam5(flat), reason)
        for flat in (_flat(scope, resource) for resource in statement.resources)
        if "*" in flat
    ]


def _iam5(resource: str) -> str:
    return f"AwsSolutions-IAM5[Resource::{resource}]"


def _flat(scope: IConstruct, value: str) -> str:
    """A token resolved in ``scope``'s stack and flattened as cdk-nag's flattenCfnReference does."""
    return _flatten(Stack.of(scope).resolve(value))


def _flatten(node: object) -> str:
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return str(delimiter).join(_flatten(item) for item in items)
        if "Fn::Sub" in node:
            return _flatten(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{_flatten(resource)}.{_flatten(attribute)}>"
        if "Fn::ImportValue" in node:
            return _flatten(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{_flatten(node['Ref'])}>"
    # cdk-nag falls back to JSON.stringify, which writes no spaces.
    return json.dumps(node, separators=(",", ":"))
