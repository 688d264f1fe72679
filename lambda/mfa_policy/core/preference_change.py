"""One user's preference change, checked before it is sent (set-user-mfa-preference).

``plan_change`` turns what was asked (``PreferenceInput``, from any of the AWS CLI's input
forms) and the user's current state into the request to send, what Cognito would reject and
what would hurt. Pure: the reads and the write are in ``mfa_policy.run.single_user``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mfa_policy.core.engine import apply_request, changed_factors
from mfa_policy.core.model import (
    CODE_FACTORS,
    FACTOR_ORDER,
    FEDERATED_STATUS,
    REQUIRED_ATTRIBUTE,
    Factor,
    FactorWrite,
    MfaRead,
    MfaRequest,
    MfaState,
    PoolMfaConfig,
)


@dataclass(frozen=True)
class FactorInput:
    """One ``*MfaSettings`` block as given; ``None`` is a member left out."""

    enabled: bool | None = None
    preferred: bool | None = None

    def to_cognito(self) -> dict[str, bool]:
        out = {}
        if self.enabled is not None:
            out["Enabled"] = self.enabled
        if self.preferred is not None:
            out["PreferredMfa"] = self.preferred
        return out


@dataclass(frozen=True)
class PreferenceInput:
    """Everything a set-user-mfa-preference invocation asks for, from every input form."""

    settings: Mapping[Factor, FactorInput]
    access_token: str | None = None
    user_pool_id: str | None = None
    username: str | None = None
    notes: tuple[str, ...] = ()

    def settings_to_cognito(self) -> dict[str, dict[str, bool]]:
        return {
            f.settings_key: self.settings[f].to_cognito()
            for f in FACTOR_ORDER
            if f in self.settings
        }


def static_problems(settings: Mapping[Factor, FactorInput]) -> list[str]:
    """What Cognito rejects whatever the user's state: checked before any request is sent.

    Only members given explicitly count; one left out is resolved against the user's state.
    """
    preferred = MfaRequest({f: FactorWrite(True, True) for f, s in settings.items() if s.preferred})
    preferred_off = MfaRequest(
        {
            f: FactorWrite(False, True)
            for f, s in settings.items()
            if s.preferred and s.enabled is False
        }
    )
    two = more_than_one_preferred(preferred)
    return [*([two] if two else []), *preferred_but_disabled(preferred_off)]


def resolve_request(settings: Mapping[Factor, FactorInput], before: MfaState) -> MfaRequest:
    """Every block complete: a member left out keeps the user's current value.

    ``Enabled`` left out: the factor stays as it is. ``PreferredMfa`` left out: the factor stays
    preferred if it is now and stays enabled, unless another block asks to be preferred.
    """
    another_preferred = any(s.preferred for s in settings.values())
    blocks = {}
    for factor, given in settings.items():
        enabled = given.enabled if given.enabled is not None else factor in before.enabled
        if given.preferred is not None:
            preferred = given.preferred
        else:
            preferred = enabled and not another_preferred and before.preferred == factor
        blocks[factor] = FactorWrite(enabled, preferred)
    return MfaRequest(blocks)


def effective_request(request: MfaRequest, before: MfaState) -> MfaRequest:
    """The request without blocks that change nothing for this user (Cognito may reject those:
    an SMS block of any kind, for a user with no phone number).

    Cognito refuses a request that turns passkey MFA on without turning another factor on in
    the same request ("WebAuthn MFA requires enabling an additional MFA setting."), so such a
    request keeps (or gains) one enabled factor's block, with its current setting.
    """
    after = apply_request(before, request)
    changed = changed_factors(before, after)
    blocks = {f: w for f, w in request.blocks.items() if f in changed}
    passkey = blocks.get(Factor.PASSKEY)
    if (
        passkey is not None
        and passkey.enabled
        and not any(w.enabled for f, w in blocks.items() if f in CODE_FACTORS)
    ):
        companions = sorted(
            after.enabled & CODE_FACTORS,
            key=lambda f: (f != after.preferred, FACTOR_ORDER.index(f)),
        )
        if companions:
            blocks[companions[0]] = FactorWrite(True, after.preferred == companions[0])
    return MfaRequest(blocks)


def more_than_one_preferred(request: MfaRequest) -> str | None:
    preferred = [f for f in FACTOR_ORDER if f in request.blocks and request.blocks[f].preferred]
    if len(preferred) > 1:
        return (
            "only one factor can be preferred, and this request prefers "
            f"{' and '.join(f.value for f in preferred)} (Cognito rejects it); set "
            "PreferredMfa=true on one of them"
        )
    return None


def preferred_but_disabled(request: MfaRequest) -> list[str]:
    return [
        f"{f.settings_key}: PreferredMfa=true needs Enabled=true (Cognito rejects a preferred "
        "factor that is off)"
        for f in FACTOR_ORDER
        if f in request.blocks and request.blocks[f].preferred and not request.blocks[f].enabled
    ]


def missing_attributes(request: MfaRequest, attributes: Mapping[str, str]) -> list[str]:
    """Cognito rejects any block, even a disabling one, for a factor whose attribute is missing."""
    out = []
    for factor in FACTOR_ORDER:
        name = REQUIRED_ATTRIBUTE.get(factor)
        if factor in request.blocks and name and not attributes.get(name):
            out.append(
                f"{factor.settings_key}: the user has no {name} attribute, and Cognito rejects "
                f"any {factor.value} MFA setting without one; add it first (admin-update-user-"
                f"attributes --user-attributes Name={name},Value=...)"
            )
    return out


def passkey_problems(request: MfaRequest, after: MfaState) -> list[str]:
    write = request.blocks.get(Factor.PASSKEY)
    if write is not None and write.enabled and not after.enabled & CODE_FACTORS:
        return [
            "WebAuthnMfaSettings: passkey MFA needs another MFA factor (SMS, TOTP or email) "
            "enabled beside it, and Cognito rejects it alone; turn one on in the same command"
        ]
    return []


def pool_problems(request: MfaRequest, pool: PoolMfaConfig, pool_id: str) -> list[str]:
    out = []
    passkey = request.blocks.get(Factor.PASSKEY)
    if passkey is not None and passkey.enabled and Factor.PASSKEY not in pool.factors:
        out.append(
            f"WebAuthnMfaSettings: user pool {pool_id} does not let passkeys count as MFA (its "
            "WebAuthnConfiguration.FactorConfiguration is not "
            "MULTI_FACTOR_WITH_USER_VERIFICATION), and Cognito rejects passkey MFA until it does"
        )
    if Factor.EMAIL in request.blocks and Factor.EMAIL not in pool.factors:
        out.append(
            f"EmailMfaSettings: user pool {pool_id} has no email MFA configured (it needs the "
            "Essentials tier and an SES email configuration), and Cognito rejects email MFA "
            "settings until it has"
        )
    if pool.mode == "ON":
        for factor in FACTOR_ORDER:
            write = request.blocks.get(factor)
            if write is not None and not write.enabled:
                out.append(
                    f"{factor.settings_key}: user pool {pool_id} requires MFA (ON), and Cognito "
                    f"refuses to turn {factor.value} off; it only lets you change which factor "
                    "is preferred"
                )
    return out


def last_factor_removed(before: MfaState, after: MfaState) -> str | None:
    # Passkey MFA protects only a passkey sign-in: it does not count as a factor left.
    if before.enabled & CODE_FACTORS and not after.enabled & CODE_FACTORS:
        names = ", ".join(f.value for f in FACTOR_ORDER if f in before.enabled & CODE_FACTORS)
        return (
            f"this turns off the user's last MFA factor ({names}): they would sign in with a "
            "password alone. Pass --force to do it anyway"
        )
    return None


def totp_enrollment_note(request: MfaRequest, before: MfaState) -> str | None:
    write = request.blocks.get(Factor.TOTP)
    if write is not None and write.enabled and Factor.TOTP not in before.enabled:
        return (
            "totp is not enabled for this user yet; Cognito accepts this only if they have "
            "verified an authenticator app (associate-software-token, then "
            "verify-software-token), which no API shows, so mfa-policy sends it and reports "
            "the answer"
        )
    return None


def downgrade_warning(before: MfaState, after: MfaState) -> str | None:
    if before.preferred is Factor.TOTP and after.preferred not in (Factor.TOTP, None):
        assert after.preferred is not None
        return f"the preferred factor moves from totp to {after.preferred.value}, a weaker one"
    return None


@dataclass(frozen=True)
class Plan:
    """What set-user-mfa-preference would do for one user, decided before anything is sent."""

    before: MfaState
    request: MfaRequest  # what is sent: the resolved request without blocks that change nothing
    after: MfaState  # the state Cognito leaves if it accepts ``request``
    dropped: tuple[Factor, ...] = ()  # blocks left out because they change nothing
    problems: tuple[str, ...] = ()  # Cognito would reject: never sent
    refusal: str | None = None  # would hurt: sent only with --force
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.request.blocks)


def plan_change(
    settings: Mapping[Factor, FactorInput],
    read: MfaRead,
    pool: PoolMfaConfig | None = None,
    pool_id: str = "",
) -> Plan:
    """Resolve the request against the user's state and check it; pure."""
    before = read.mfa
    resolved = resolve_request(settings, before)
    request = effective_request(resolved, before)
    after = apply_request(before, request)
    problems: list[str] = []
    two = more_than_one_preferred(resolved)
    if two:
        problems.append(two)
    problems += preferred_but_disabled(resolved)
    problems += missing_attributes(request, read.attributes)
    problems += passkey_problems(request, after)
    if pool is not None:
        problems += pool_problems(request, pool, pool_id)
    notes = [n for n in (totp_enrollment_note(request, before),) if n]
    warnings = [w for w in (downgrade_warning(before, after),) if w]
    if read.status == FEDERATED_STATUS:
        warnings.append(
            "this is a federated user: their identity provider does the sign-in, and Cognito "
            "never asks them for MFA, whatever is set here"
        )
    if read.enabled is False:
        warnings.append("this user is disabled; the setting applies once they are enabled")
    return Plan(
        before=before,
        request=request,
        after=after,
        dropped=tuple(f for f in FACTOR_ORDER if f in resolved.blocks and f not in request.blocks),
        problems=tuple(problems),
        refusal=last_factor_removed(before, after),
        notes=tuple(notes),
        warnings=tuple(warnings),
    )
