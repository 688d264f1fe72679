"""CDK construct library for mfa-policy (import name ``mfa_policy_cdk``).

``MfaPolicy`` keeps a Cognito user pool's per-user MFA preferences under a policy file.
"""

from mfa_policy_cdk.mfa_policy import (
    DAILY,
    DEFAULT_REPORT_RETENTION,
    DEFAULT_RUN_TIMEOUT,
    DEFAULT_WAIT_FOR_COMPLETION,
    MAX_WAIT_FOR_COMPLETION,
    METRIC_NAMESPACE,
    OUTCOMES,
    RUN_MODES,
    MfaPolicy,
)

__all__ = [
    "DAILY",
    "DEFAULT_REPORT_RETENTION",
    "DEFAULT_RUN_TIMEOUT",
    "DEFAULT_WAIT_FOR_COMPLETION",
    "MAX_WAIT_FOR_COMPLETION",
    "METRIC_NAMESPACE",
    "OUTCOMES",
    "RUN_MODES",
    "MfaPolicy",
]
