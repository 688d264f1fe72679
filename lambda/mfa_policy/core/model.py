"""The vocabulary shared by every layer: factors, a user's MFA state, outcomes.

Pure: no AWS import. The gateway translates Cognito's names to these and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Factor(StrEnum):
    TOTP = "totp"
    SMS = "sms"
    EMAIL = "email"
    #: Passkey MFA (``WebAuthnMfaSettings``): on or off, never preferred, and only beside one of
    #: the code factors above.
    PASSKEY = "passkey"

    @property
    def can_be_preferred(self) -> bool:
        return self is not Factor.PASSKEY

    @property
    def cognito_name(self) -> str:
        """The value Cognito uses in UserMFASettingList and PreferredMfaSetting."""
        return _COGNITO_NAMES[self]

    @property
    def settings_key(self) -> str:
        """The request block that sets this factor in (Admin)SetUserMFAPreference."""
        return _SETTINGS_KEYS[self]

    @classmethod
    def from_cognito(cls, name: str) -> Factor | None:
        """Map a Cognito MFA name to a factor; None for names this tool does not manage."""
        return _BY_COGNITO_NAME.get(name)


_COGNITO_NAMES = {
    Factor.TOTP: "SOFTWARE_TOKEN_MFA",
    Factor.SMS: "SMS_MFA",
    Factor.EMAIL: "EMAIL_OTP",
    # Not among UserMFASettingList's documented values; a field report (GetUser after
    # WebAuthnMfaSettings {Enabled: true}) shows this name beside SOFTWARE_TOKEN_MFA.
    Factor.PASSKEY: "WEB_AUTHN_MFA",
}
_SETTINGS_KEYS = {
    Factor.TOTP: "SoftwareTokenMfaSettings",
    Factor.SMS: "SMSMfaSettings",
    Factor.EMAIL: "EmailMfaSettings",
    Factor.PASSKEY: "WebAuthnMfaSettings",
}
_BY_COGNITO_NAME = {name: factor for factor, name in _COGNITO_NAMES.items()}

#: A stable order for output, so reports and requests read the same way every run.
FACTOR_ORDER: tuple[Factor, ...] = (Factor.TOTP, Factor.SMS, Factor.EMAIL, Factor.PASSKEY)

#: Factors that answer an MFA challenge with a code. Passkey MFA protects only a passkey
#: sign-in and Cognito requires one of these beside it, so only these count as "a factor the
#: user keeps" for the last-factor guard.
CODE_FACTORS: frozenset[Factor] = frozenset({Factor.TOTP, Factor.SMS, Factor.EMAIL})

#: ConfiguredUserAuthFactors (AdminGetUserAuthFactors) names.
AUTH_FACTOR_PASSWORD = "PASSWORD"  # noqa: S105 (a factor name, not a secret)
#: The registered authenticator a factor needs before Cognito lets it be enabled, as
#: ConfiguredUserAuthFactors names it.
REGISTRATION: Mapping[Factor, str] = {Factor.TOTP: "SOFTWARE_TOKEN", Factor.PASSKEY: "WEB_AUTHN"}

#: The attribute a factor needs before Cognito lets it be set (TOTP needs a verified token).
REQUIRED_ATTRIBUTE: Mapping[Factor, str] = {Factor.SMS: "phone_number", Factor.EMAIL: "email"}


class FactorSetting(StrEnum):
    PREFERRED = "preferred"
    ENABLED = "enabled"
    DISABLED = "disabled"


USER_STATUSES: tuple[str, ...] = (
    "UNCONFIRMED",
    "CONFIRMED",
    "ARCHIVED",
    "COMPROMISED",
    "UNKNOWN",
    "RESET_REQUIRED",
    "FORCE_CHANGE_PASSWORD",
    "EXTERNAL_PROVIDER",
)
FEDERATED_STATUS = "EXTERNAL_PROVIDER"
#: Statuses whose users Cognito refuses MFA changes for (UserNotConfirmedException,
#: PasswordResetRequiredException), with the reason a report gives.
WRITE_REFUSED_STATUSES: Mapping[str, str] = {
    "UNCONFIRMED": "unconfirmed: Cognito refuses MFA changes until the user confirms the account",
    "RESET_REQUIRED": "reset_required: Cognito refuses MFA changes until the user resets "
    "their password",
}


def _sorted(factors: frozenset[Factor]) -> list[Factor]:
    return [f for f in FACTOR_ORDER if f in factors]


@dataclass(frozen=True)
class MfaState:
    """A user's enabled factors and the preferred one (always one of the enabled, or None)."""

    enabled: frozenset[Factor] = frozenset()
    preferred: Factor | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "enabled": [f.value for f in _sorted(self.enabled)],
            "preferred": self.preferred.value if self.preferred else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> MfaState:
        enabled = data.get("enabled") or []
        preferred = data.get("preferred")
        assert isinstance(enabled, list)
        return cls(
            enabled=frozenset(Factor(f) for f in enabled),
            preferred=Factor(preferred) if isinstance(preferred, str) else None,
        )

    def __str__(self) -> str:
        enabled = ",".join(f.value for f in _sorted(self.enabled))
        return f"{{{enabled}}} {self.preferred.value if self.preferred else '-'}"


@dataclass(frozen=True)
class FactorWrite:
    """One settings block of a SetUserMFAPreference request."""

    enabled: bool
    preferred: bool


@dataclass(frozen=True)
class MfaRequest:
    """The blocks of one (Admin)SetUserMFAPreference call: only factors whose state changes."""

    blocks: Mapping[Factor, FactorWrite]

    def to_cognito(self) -> dict[str, dict[str, bool]]:
        # WebAuthnMfaSettings has no PreferredMfa member.
        return {
            f.settings_key: (
                {"Enabled": w.enabled, "PreferredMfa": w.preferred}
                if f.can_be_preferred
                else {"Enabled": w.enabled}
            )
            for f, w in sorted(self.blocks.items(), key=lambda kv: FACTOR_ORDER.index(kv[0]))
        }

    def to_dict(self) -> dict[str, dict[str, bool]]:
        return {
            f.value: {"enabled": w.enabled, "preferred": w.preferred}
            for f, w in sorted(self.blocks.items(), key=lambda kv: FACTOR_ORDER.index(kv[0]))
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, bool]]) -> MfaRequest:
        return cls(
            {
                Factor(name): FactorWrite(bool(b["enabled"]), bool(b.get("preferred")))
                for name, b in data.items()
            }
        )


@dataclass(frozen=True)
class User:
    """What the engine knows of one user: the ListUsers row joined with the MFA read."""

    username: str
    sub: str
    status: str = "CONFIRMED"
    enabled: bool = True
    attributes: Mapping[str, str] = field(default_factory=dict)
    groups: frozenset[str] = frozenset()
    mfa: MfaState = MfaState()
    #: SMS MFA is in effect through the legacy MFAOptions only (``mfa`` counts it as enabled).
    legacy_sms: bool = False
    #: ConfiguredUserAuthFactors; None when the read did not show them (AdminGetUser).
    auth_factors: frozenset[str] | None = None

    def has_attribute(self, name: str) -> bool:
        return bool(self.attributes.get(name))

    @property
    def passwordless(self) -> bool:
        """Signs in without a password (a passkey or a one-time code); False when unknown."""
        return self.auth_factors is not None and AUTH_FACTOR_PASSWORD not in self.auth_factors

    def registered(self, factor: Factor) -> bool:
        """The read shows the authenticator ``factor`` needs (False when it cannot tell)."""
        name = REGISTRATION.get(factor)
        return name is not None and self.auth_factors is not None and name in self.auth_factors

    @property
    def stale(self) -> frozenset[Factor]:
        """Factors listed as enabled that are not in effect: TOTP whose authenticator the read
        no longer shows (re-associated and never verified)."""
        if self.auth_factors is None or Factor.TOTP not in self.mfa.enabled:
            return frozenset()
        return frozenset() if self.registered(Factor.TOTP) else frozenset({Factor.TOTP})


class Outcome(StrEnum):
    COMPLIANT = "compliant"
    WOULD_CHANGE = "would_change"
    CHANGED = "changed"
    NEEDS_ENROLLMENT = "needs_enrollment"
    BLOCKED = "blocked"
    #: The change would lower the user's protection or lock them out (the last factor, a
    #: passwordless user, a pool that requires MFA): that part is never sent.
    GUARDED = "guarded"
    EXCLUDED = "excluded"
    UNMANAGED = "unmanaged"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    TOKEN_INVALID = "token_invalid"  # noqa: S105 (an outcome name, not a secret)
    FAILED = "failed"


#: Outcomes that make a drift report non-compliant.
DRIFT_OUTCOMES = frozenset(
    {Outcome.WOULD_CHANGE, Outcome.NEEDS_ENROLLMENT, Outcome.BLOCKED, Outcome.GUARDED}
)
#: The outcomes counted per rule in CloudWatch (dimension ``Rule``), by run mode: whom a rule
#: would change (drift) or changed (apply), and whom it could not change (blocked, guarded).
#: Few on purpose: each rule adds these many metrics per mode.
RULE_METRIC_OUTCOMES: dict[str, tuple[Outcome, ...]] = {
    "drift": (Outcome.WOULD_CHANGE, Outcome.BLOCKED, Outcome.GUARDED),
    "apply": (Outcome.CHANGED, Outcome.BLOCKED, Outcome.GUARDED),
}
#: Outcomes that leave an apply short of convergence (exit code 2).
UNCONVERGED_OUTCOMES = frozenset(
    {
        Outcome.WOULD_CHANGE,
        Outcome.NEEDS_ENROLLMENT,
        Outcome.BLOCKED,
        Outcome.GUARDED,
        Outcome.TOKEN_INVALID,
        Outcome.FAILED,
    }
)


@dataclass(frozen=True)
class MfaRead:
    """A user's MFA state, normalized, whichever operation read it.

    ``mfa`` counts legacy SMS MFA (MFAOptions without SMS_MFA in UserMFASettingList) as
    enabled, and says so in ``legacy_sms``. ``auth_factors`` is ConfiguredUserAuthFactors,
    None when the read was AdminGetUser/GetUser, which do not show it. Attributes, status and
    ``enabled`` come only from AdminGetUser/GetUser (runs have them from ListUsers).
    """

    mfa: MfaState
    attributes: Mapping[str, str]
    enabled: bool | None = None
    status: str | None = None
    legacy_sms: bool = False
    auth_factors: frozenset[str] | None = None
    #: The operation that read it, e.g. ``admin_get_user_auth_factors``.
    operation: str = ""
    #: The username Cognito answered for (the token's owner, in access-token mode).
    username: str | None = None

    @property
    def sub(self) -> str | None:
        """The sub of the user Cognito answered for."""
        return self.attributes.get("sub") or None


@dataclass(frozen=True)
class PoolMfaConfig:
    mode: str
    #: Factors the pool offers; passkey when WebAuthnConfiguration.FactorConfiguration is
    #: MULTI_FACTOR_WITH_USER_VERIFICATION.
    factors: frozenset[Factor]
    passkey_factor_configuration: str | None = None


@dataclass(frozen=True)
class PoolSettings:
    """What DescribeUserPool says that decides which factors a policy may use."""

    #: LITE, ESSENTIALS or PLUS; None when the answer has no tier.
    tier: str | None
    #: AccountRecoverySetting's mechanism names by priority; None when not set (legacy).
    recovery: tuple[str, ...] | None
    #: Policies.SignInPolicy.AllowedFirstAuthFactors; None when not set (password only).
    first_auth_factors: frozenset[str] | None
