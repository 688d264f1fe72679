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
}
_SETTINGS_KEYS = {
    Factor.TOTP: "SoftwareTokenMfaSettings",
    Factor.SMS: "SMSMfaSettings",
    Factor.EMAIL: "EmailMfaSettings",
}
_BY_COGNITO_NAME = {name: factor for factor, name in _COGNITO_NAMES.items()}

#: A stable order for output, so reports and requests read the same way every run.
FACTOR_ORDER: tuple[Factor, ...] = (Factor.TOTP, Factor.SMS, Factor.EMAIL)

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
        return {
            f.settings_key: {"Enabled": w.enabled, "PreferredMfa": w.preferred}
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
                Factor(name): FactorWrite(bool(b["enabled"]), bool(b["preferred"]))
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

    def has_attribute(self, name: str) -> bool:
        return bool(self.attributes.get(name))


class Outcome(StrEnum):
    COMPLIANT = "compliant"
    WOULD_CHANGE = "would_change"
    CHANGED = "changed"
    NEEDS_ENROLLMENT = "needs_enrollment"
    BLOCKED = "blocked"
    #: The change would lower the user's protection or lock them out; nothing was sent.
    GUARDED = "guarded"
    EXCLUDED = "excluded"
    UNMANAGED = "unmanaged"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    TOKEN_INVALID = "token_invalid"  # noqa: S105 (an outcome name, not a secret)
    FAILED = "failed"


class GuardReason(StrEnum):
    """Why a change was refused as one that would lower a user's protection (``guarded``).

    The value is the reason's code at the head of the report row's ``reason``; ``explanation``
    is the sentence after it. A new guard is one member here and one sentence below.
    """

    LAST_FACTOR = "last_factor"

    @property
    def explanation(self) -> str:
        return _GUARD_EXPLANATIONS[self]


_GUARD_EXPLANATIONS: Mapping[GuardReason, str] = {
    GuardReason.LAST_FACTOR: "the policy would remove the user's last factor; it was kept",
}


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
    """A user's MFA state and attributes as a read of the user returns them."""

    mfa: MfaState
    attributes: Mapping[str, str]
    enabled: bool | None = None
    status: str | None = None

    @property
    def sub(self) -> str | None:
        """The sub of the user Cognito answered for."""
        return self.attributes.get("sub") or None


@dataclass(frozen=True)
class PoolMfaConfig:
    mode: str
    factors: frozenset[Factor]
