"""Pools and users for the stand-in: a pool with a given MFA config, single users, the demo pool.

Users are written straight into moto's backend (no HTTP round trips), so a 1000-user pool seeds
in a fraction of a second. Seeded state is state the real service can hold: a preferred factor
is always enabled, and TOTP is enabled only for a user who verified a token.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moto.cognitoidp.models import UserStatus

from .fidelity import EMAIL, PASSKEY_MFA_CONFIGURATION, SMS, TOTP
from .server import CognitoStandIn

SNS_CALLER_ARN = "arn:aws:iam::123456789012:role/sns"
ADMINS_GROUP = "admins"
SERVICE_ACCOUNTS_GROUP = "service-accounts"
BREAK_GLASS_USERS = ("breakglass-1", "breakglass-2")

_FACTOR_NAMES = {
    "sms": SMS,
    "totp": TOTP,
    "email": EMAIL,
    SMS: SMS,
    TOTP: TOTP,
    EMAIL: EMAIL,
}


def create_pool(
    target: CognitoStandIn | Any,
    *,
    mfa: str = "OPTIONAL",
    sms: bool = True,
    totp: bool = True,
    email: bool = False,
    passkey: bool = False,
    name: str | None = None,
    tier: str | None = None,
    recovery: Iterable[str] | None = None,
    first_auth_factors: Iterable[str] | None = None,
) -> str:
    """Create a user pool with this MFA configuration and return its id.

    `target` is a stand-in or a cognito-idp client. With `mfa="OFF"` no factor is configured:
    the service refuses MFA OFF together with a factor configuration. `passkey`: passkeys
    count as MFA (WebAuthnConfiguration.FactorConfiguration MULTI_FACTOR_WITH_USER_VERIFICATION).
    `tier`: the feature plan (LITE, ESSENTIALS, PLUS; the service's default is ESSENTIALS).
    `recovery`: AccountRecoverySetting mechanisms in priority order, e.g. `["verified_email"]`
    for "email only". `first_auth_factors`: the sign-in policy's AllowedFirstAuthFactors.
    """
    client = target.client() if isinstance(target, CognitoStandIn) else target
    create: dict[str, Any] = {"PoolName": name or f"pool-{uuid.uuid4().hex[:8]}"}
    if tier is not None:
        create["UserPoolTier"] = tier
    if recovery is not None:
        create["AccountRecoverySetting"] = {
            "RecoveryMechanisms": [
                {"Priority": i, "Name": mechanism} for i, mechanism in enumerate(recovery, 1)
            ]
        }
    if first_auth_factors is not None:
        create["Policies"] = {"SignInPolicy": {"AllowedFirstAuthFactors": list(first_auth_factors)}}
    pool_id: str = client.create_user_pool(**create)["UserPool"]["Id"]
    request: dict[str, Any] = {"UserPoolId": pool_id, "MfaConfiguration": mfa}
    if mfa != "OFF":
        if sms:
            request["SmsMfaConfiguration"] = {
                "SmsAuthenticationMessage": "Your code is {####}",
                "SmsConfiguration": {"SnsCallerArn": SNS_CALLER_ARN, "ExternalId": "standin"},
            }
        if totp:
            request["SoftwareTokenMfaConfiguration"] = {"Enabled": True}
        if email:
            request["EmailMfaConfiguration"] = {
                "Message": "Your sign-in code is {####}",
                "Subject": "Your sign-in code",
            }
        if passkey:
            request["WebAuthnConfiguration"] = {
                "RelyingPartyId": "auth.example.com",
                "UserVerification": "required",
                "FactorConfiguration": PASSKEY_MFA_CONFIGURATION,
            }
    client.set_user_pool_mfa_config(**request)
    return pool_id


def factor_name(factor: str) -> str:
    """`sms`/`totp`/`email` or a Cognito name (SMS_MFA, ...) -> the Cognito name."""
    try:
        return _FACTOR_NAMES[factor]
    except KeyError:
        raise ValueError(f"unknown MFA factor {factor!r}") from None


def seed_user(
    standin: CognitoStandIn,
    pool_id: str,
    username: str,
    *,
    phone: str | None = None,
    email: str | None = None,
    groups: Iterable[str] = (),
    totp_verified: bool = False,
    sms_enabled: bool = False,
    totp_enabled: bool = False,
    email_enabled: bool = False,
    preferred: str | None = None,
    enabled: bool = True,
    status: str | None = None,
    attributes: Mapping[str, str] | None = None,
    password: str | None = None,
    sub: str | None = None,
    legacy_sms: bool = False,
    totp_stale: bool = False,
    passwordless: bool = False,
    passkey: bool = False,
    passkey_mfa: bool = False,
) -> str:
    """Write one user straight into moto and return its Username.

    `status` defaults to CONFIRMED (EXTERNAL_PROVIDER for federated users). `preferred` is a
    factor (`sms`, `totp`, `email` or the Cognito name) and must be enabled. Missing groups
    are created. `sub` fixes the user's sub (deterministic seeds).

    States the first model missed: `legacy_sms` (SMS MFA on through the legacy MFAOptions
    only; needs `phone`), `totp_stale` (TOTP listed as enabled, the software token
    re-associated and never verified), `passwordless` (no password: signs in with a passkey
    or a one-time code), `passkey` (a registered passkey), `passkey_mfa` (passkey MFA on;
    needs `passkey` and another factor enabled).
    """
    if legacy_sms and (phone is None or sms_enabled):
        raise ValueError(f"{username}: legacy SMS MFA needs a phone and no current SMS setting")
    if passkey_mfa and not (passkey and (sms_enabled or totp_enabled or email_enabled)):
        raise ValueError(f"{username}: passkey MFA needs a passkey and another factor enabled")
    enabled_factors = {
        factor
        for factor, on in ((SMS, sms_enabled), (TOTP, totp_enabled), (EMAIL, email_enabled))
        if on
    }
    preferred_factor = factor_name(preferred) if preferred else None
    if preferred_factor is not None and preferred_factor not in enabled_factors:
        raise ValueError(f"{username}: preferred {preferred_factor} is not enabled")
    flat: dict[str, str] = {}
    if email is not None:
        flat.update(email=email, email_verified="true")
    if phone is not None:
        flat.update(phone_number=phone, phone_number_verified="true")
    flat.update(attributes or {})

    with standin.lock:
        backend = standin.backend
        user = backend.admin_create_user(
            pool_id,
            username,
            "SUPPRESS",
            password or "",
            [{"Name": name, "Value": value} for name, value in flat.items()],
        )
        if sub is not None:
            user.id = sub
            user.update_attributes([{"Name": "sub", "Value": sub}])
        user.status = _user_status(status)
        user.enabled = enabled
        # Cognito enables TOTP only for a verified token, so an enabled one was verified
        # (unless it was re-associated since: stale).
        user.token_verified = (totp_verified or totp_enabled) and not totp_stale
        user.sms_mfa_enabled = sms_enabled
        user.software_token_mfa_enabled = totp_enabled or totp_stale
        user.preferred_mfa_setting = preferred_factor or ""
        pool = backend.describe_user_pool(pool_id)
        for group in groups:
            if group not in pool.groups:
                backend.create_group(pool_id, group, "", "", 0)
            backend.admin_add_user_to_group(pool_id, group, user.username)
        standin.fidelity.set_email_mfa_enabled(pool_id, user.id, email_enabled)
        for flag, on in (
            ("legacy_sms", legacy_sms),
            ("passwordless", passwordless),
            ("passkey", passkey),
            ("passkey_mfa", passkey_mfa),
        ):
            standin.fidelity.set_user_flag(flag, pool_id, user.id, on)
        return str(user.username)


def _user_status(status: str | None) -> Any:
    # moto compares some statuses by identity with its enum; the rest (EXTERNAL_PROVIDER, ...)
    # are not in the enum and stay plain strings.
    if status is None:
        return UserStatus.CONFIRMED
    return UserStatus[status] if status in UserStatus.__members__ else status


# --------------------------------------------------------------------------------------------
# The demo pool.

#: Kind of demo user -> share of the pool (the two break-glass users come on top).
DEMO_MIX: dict[str, float] = {
    "no_mfa_with_phone": 0.15,
    "no_mfa_without_phone": 0.06,
    "sms_preferred": 0.17,
    "totp_verified_sms_preferred": 0.08,
    "totp_and_sms_no_preference": 0.06,
    "totp_and_sms_sms_preferred": 0.10,
    "totp_preferred": 0.12,
    "admin_sms_only": 0.03,
    "admin_totp_and_sms": 0.03,
    "service_account": 0.03,
    "disabled": 0.04,
    "federated": 0.05,
    # States the first model missed (research/cognito-cost-and-state.md).
    "legacy_sms": 0.03,
    "stale_totp": 0.02,
    "passwordless": 0.02,
    "unconfirmed": 0.01,
}

#: Kind -> seed_user arguments (beyond names and contact details).
_DEMO_STATES: dict[str, dict[str, Any]] = {
    "no_mfa_with_phone": {},
    "no_mfa_without_phone": {"phone": None},
    "sms_preferred": {"sms_enabled": True, "preferred": "sms"},
    "totp_verified_sms_preferred": {
        "totp_verified": True,
        "sms_enabled": True,
        "preferred": "sms",
    },
    "totp_and_sms_no_preference": {"totp_enabled": True, "sms_enabled": True},
    "totp_and_sms_sms_preferred": {"totp_enabled": True, "sms_enabled": True, "preferred": "sms"},
    "totp_preferred": {"totp_enabled": True, "sms_enabled": True, "preferred": "totp"},
    "admin_sms_only": {"sms_enabled": True, "preferred": "sms", "groups": (ADMINS_GROUP,)},
    "admin_totp_and_sms": {
        "totp_enabled": True,
        "sms_enabled": True,
        "preferred": "sms",
        "groups": (ADMINS_GROUP,),
    },
    "break_glass": {"sms_enabled": True, "preferred": "sms"},
    "service_account": {"phone": None, "groups": (SERVICE_ACCOUNTS_GROUP,)},
    "disabled": {"sms_enabled": True, "preferred": "sms", "enabled": False},
    "federated": {"phone": None, "status": "EXTERNAL_PROVIDER"},
    # SMS MFA on through the legacy MFAOptions only.
    "legacy_sms": {"legacy_sms": True},
    # TOTP listed, but the software token was re-associated and never verified.
    "stale_totp": {"totp_stale": True, "sms_enabled": True, "preferred": "sms"},
    # Signs in with an SMS one-time code, no password.
    "passwordless": {"passwordless": True},
    "unconfirmed": {"sms_enabled": True, "preferred": "sms", "status": "UNCONFIRMED"},
}

_PREFIXES = {"admin_sms_only": "admin", "admin_totp_and_sms": "admin", "service_account": "svc"}


@dataclass(frozen=True)
class DemoPool:
    """A seeded demo pool: its id, and its users by kind (see DEMO_MIX)."""

    pool_id: str
    counts: dict[str, int]
    usernames: dict[str, list[str]] = field(repr=False)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def demo_counts(n: int) -> dict[str, int]:
    """How many users of each kind a demo pool of `n` users has (largest remainder)."""
    regular = n - len(BREAK_GLASS_USERS)
    if regular < 0:
        raise ValueError(f"a demo pool needs at least {len(BREAK_GLASS_USERS)} users")
    exact = {kind: share * regular for kind, share in DEMO_MIX.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    by_remainder = sorted(exact, key=lambda kind: exact[kind] - counts[kind], reverse=True)
    for kind in by_remainder[: regular - sum(counts.values())]:
        counts[kind] += 1
    counts["break_glass"] = len(BREAK_GLASS_USERS)
    return counts


def seed_demo_pool(
    standin: CognitoStandIn, n: int = 1000, seed: int = 7, *, name: str = "mfa-policy-demo"
) -> DemoPool:
    """A pool with `n` users in every state mfa-policy cares about. Deterministic per seed.

    Groups `admins` and `service-accounts`; users `user-0001`..., `admin-0001`..., `svc-0001`...,
    `Google_<digits>` (federated), `breakglass-1` and `breakglass-2`; phones `+1555...`;
    emails `<username>@example.com`.
    """
    rng = random.Random(seed)
    counts = demo_counts(n)
    kinds = [kind for kind, count in counts.items() if kind != "break_glass" for _ in range(count)]
    rng.shuffle(kinds)
    pool_id = create_pool(
        standin,
        mfa="OPTIONAL",
        sms=True,
        totp=True,
        name=name,
        first_auth_factors=["PASSWORD", "SMS_OTP"],
    )
    usernames: dict[str, list[str]] = {kind: [] for kind in counts}
    numbers: dict[str, int] = {}

    with standin.lock:
        for group in (ADMINS_GROUP, SERVICE_ACCOUNTS_GROUP):
            standin.backend.create_group(pool_id, group, f"demo {group}", "", 0)
        for index, kind in enumerate([*kinds, *["break_glass"] * len(BREAK_GLASS_USERS)]):
            if kind == "break_glass":
                username = BREAK_GLASS_USERS[len(usernames[kind])]
            elif kind == "federated":
                username = f"Google_{rng.randrange(10**20, 10**21)}"
            else:
                prefix = _PREFIXES.get(kind, "user")
                numbers[prefix] = numbers.get(prefix, 0) + 1
                username = f"{prefix}-{numbers[prefix]:04d}"
            state = dict(_DEMO_STATES[kind])
            phone = state.pop("phone", f"+1555{index + 1:07d}")
            attributes = None
            if kind == "federated":
                attributes = {"identities": _google_identity(username)}
            seeded = seed_user(
                standin,
                pool_id,
                username,
                phone=phone,
                email=f"{username.lower()}@example.com",
                attributes=attributes,
                sub=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                **state,
            )
            usernames[kind].append(seeded)
    return DemoPool(pool_id, counts, usernames)


def _google_identity(username: str) -> str:
    user_id = username.split("_", 1)[1]
    return json.dumps(
        [
            {
                "userId": user_id,
                "providerName": "Google",
                "providerType": "Google",
                "issuer": None,
                "primary": "true",
                "dateCreated": "1700000000000",
            }
        ]
    )
