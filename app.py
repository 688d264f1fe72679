#!/usr/bin/env python3
"""Example CDK app: a Cognito user pool kept under the MFA policy in ``mfa-policy.yaml``.

    cdk synth                                    # a new example pool, ./mfa-policy.yaml
    cdk deploy -c userPoolId=eu-west-1_AbCdEfGhI # govern an existing pool instead
    cdk deploy -c policyFile=policies/strict.yaml

The stack is environment-agnostic and makes no lookups, so it synthesizes offline with no AWS
account. cdk-nag's AwsSolutions checks run on every synth and fail it on an error.
"""

from __future__ import annotations

import re
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cognito as cognito
from cdk_nag import AwsSolutionsChecks

from constructs import Construct
from mfa_policy_cdk import MfaPolicy

HERE = Path(__file__).resolve().parent
DEFAULT_POLICY_FILE = HERE / "mfa-policy.yaml"
_USER_POOL_ID = re.compile(r"^[\w-]+_[0-9a-zA-Z]+$")


class MfaPolicyExampleStack(cdk.Stack):
    """A user pool (new, or an existing one by id) and the MfaPolicy construct over it."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        policy_file: Path,
        user_pool_id: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(scope, id, description=description)
        user_pool = (
            cognito.UserPool.from_user_pool_id(self, "UserPool", user_pool_id)
            if user_pool_id
            else self._example_user_pool()
        )
        mfa = MfaPolicy(self, "MfaPolicy", user_pool=user_pool, policy_file=policy_file)

        outputs = {
            "UserPoolId": (user_pool.user_pool_id, "The user pool the policy governs"),
            "RunReportUri": (mfa.run_report_uri, "Report of the run the last deploy started"),
            "RunStatus": (mfa.run_status, "Status of that run when the deploy finished"),
            "RunChanged": (mfa.run_changed, "Users that run changed"),
            "RunDrifted": (mfa.run_drifted, "Users not compliant in that run"),
            "RunFailed": (mfa.run_failed, "Users that failed in that run"),
            "StateMachineArn": (
                mfa.state_machine.state_machine_arn,
                'Start a run: {"mode": "drift" or "apply", "trigger": "manual"}',
            ),
            "ReportBucketName": (mfa.report_bucket.bucket_name, "Where run reports are written"),
        }
        for name, (value, description) in outputs.items():
            cdk.CfnOutput(self, name, value=value, description=description)

    def _example_user_pool(self) -> cognito.UserPool:
        pool = cognito.UserPool(
            self,
            "UserPool",
            sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            self_sign_up_enabled=False,
            # OPTIONAL, not REQUIRED: the policy decides each user's factors and rolls them out
            # in stages; REQUIRED would force every user without a factor to enrol at sign-in.
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(sms=True, otp=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
            ),
        )
        cdk.Validations.of(pool).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-COG2",
                reason="MFA is OPTIONAL on purpose: mfa-policy sets and stages each user's "
                "factors; REQUIRED would force users without a factor to enrol at sign-in",
            ),
            cdk.Acknowledgment(
                id="AwsSolutions-COG8",
                reason="the example pool stays on the default Essentials plan to avoid per-user "
                "Plus charges; use the Plus plan (threat protection) in production",
            ),
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="Cognito's SMS role needs sns:Publish to send SMS to phone numbers, "
                "which have no ARN to scope it to",
            ),
        )
        return pool


def main() -> cdk.App:
    app = cdk.App()
    user_pool_id = app.node.try_get_context("userPoolId") or None
    if user_pool_id is not None and not _USER_POOL_ID.match(str(user_pool_id)):
        raise ValueError(
            f"-c userPoolId must be a Cognito user pool id like 'eu-west-1_AbCdEfGhI', "
            f"got {user_pool_id!r}"
        )
    policy_file = Path(app.node.try_get_context("policyFile") or DEFAULT_POLICY_FILE)
    MfaPolicyExampleStack(
        app,
        "MfaPolicyExample",
        description="mfa-policy example: keeps a user pool's MFA preferences under a policy",
        policy_file=policy_file,
        user_pool_id=user_pool_id,
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    return app


if __name__ == "__main__":
    main()
