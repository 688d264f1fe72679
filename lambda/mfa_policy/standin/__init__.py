"""A local Cognito stand-in: moto behind a fidelity layer that enforces the real service's rules.

Used by the integration and e2e tests, `mfa-policy demo` and the benchmarks.
"""

from .fidelity import (
    EMAIL,
    MFA_PREFERENCE_RULES,
    OPERATION_CATEGORIES,
    SMS,
    TOTP,
    CognitoError,
    Fault,
    FidelityMiddleware,
    MfaState,
    Quotas,
    ThrottleStorm,
    UserFacts,
    apply_mfa_preference,
    check_mfa_preference,
)
from .seed import (
    ADMINS_GROUP,
    BREAK_GLASS_USERS,
    DEMO_MIX,
    SERVICE_ACCOUNTS_GROUP,
    DemoPool,
    create_pool,
    demo_counts,
    seed_demo_pool,
    seed_user,
)
from .server import CognitoStandIn

__all__ = [
    "ADMINS_GROUP",
    "BREAK_GLASS_USERS",
    "DEMO_MIX",
    "EMAIL",
    "MFA_PREFERENCE_RULES",
    "OPERATION_CATEGORIES",
    "SERVICE_ACCOUNTS_GROUP",
    "SMS",
    "TOTP",
    "CognitoError",
    "CognitoStandIn",
    "DemoPool",
    "Fault",
    "FidelityMiddleware",
    "MfaState",
    "Quotas",
    "ThrottleStorm",
    "UserFacts",
    "apply_mfa_preference",
    "check_mfa_preference",
    "create_pool",
    "demo_counts",
    "seed_demo_pool",
    "seed_user",
]
