"""The decision engine: for one user, which rule applies, what state it wants, what to send.

Pure: no AWS import, no I/O, no clock. Every rule of DESIGN.md's "Semantics, precisely" lives
here, and nowhere else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from enum import StrEnum

from mfa_policy.core.model import (
    CODE_FACTORS,
    FACTOR_ORDER,
    FEDERATED_STATUS,
    REGISTRATION,
    REQUIRED_ATTRIBUTE,
    WRITE_REFUSED_STATUSES,
    Factor,
    FactorSetting,
    FactorWrite,
    MfaRequest,
    MfaState,
    Outcome,
    User,
)
from mfa_policy.core.policy import Policy, Rule


class Mode(StrEnum):
    DRIFT = "drift"
    APPLY = "apply"


class Rejection(StrEnum):
    """Cognito's refusals that mean "this user cannot have that factor yet", not an error."""

    #: Never verified a software token, or re-associated one and never verified it.
    TOTP_NOT_VERIFIED = "totp_not_verified"
    NO_PHONE_NUMBER = "no_phone_number"
    NO_EMAIL = "no_email"
    #: No passkey (WebAuthn credential) registered.
    PASSKEY_NOT_REGISTERED = "passkey_not_registered"

    @property
    def factor(self) -> Factor:
        return {
            Rejection.TOTP_NOT_VERIFIED: Factor.TOTP,
            Rejection.NO_PHONE_NUMBER: Factor.SMS,
            Rejection.NO_EMAIL: Factor.EMAIL,
            Rejection.PASSKEY_NOT_REGISTERED: Factor.PASSKEY,
        }[self]


class Guard(StrEnum):
    """Why part of a change is held back: sending it would lower protection or lock out."""

    LAST_FACTOR = "last_factor"
    PASSWORDLESS = "passwordless"
    POOL_REQUIRES_MFA = "pool_requires_mfa"
    PASSKEY_NEEDS_ANOTHER_FACTOR = "passkey_needs_another_factor"


@dataclass(frozen=True)
class PoolFacts:
    """What the engine needs to know of the pool (from preflight)."""

    mfa: str = "OPTIONAL"  # OFF | ON | OPTIONAL
    #: The sign-in policy allows a first factor other than a password (AllowedFirstAuthFactors).
    passwordless_sign_in: bool = False

    @property
    def requires_mfa(self) -> bool:
        return self.mfa == "ON"

    def maybe_passwordless(self, user: User) -> bool:
        """The user signs in without a password, or may: the pool allows it and the read
        (AdminGetUser) could not show whether they have one."""
        return user.passwordless or (user.auth_factors is None and self.passwordless_sign_in)


@dataclass(frozen=True)
class Decision:
    """What to do with one user, and the outcome if Cognito accepts ``request``."""

    username: str
    sub: str
    rule: str | None
    outcome: Outcome
    reason: str
    before: MfaState
    desired: MfaState | None = None
    #: The state ``request`` leaves the user in (``before`` when there is nothing to send).
    target: MfaState | None = None
    request: MfaRequest | None = None
    #: The request enables TOTP or passkey without knowing whether the user registered one.
    probing: bool = False
    #: Desired factors the user cannot have now: missing attribute (blocked), or an
    #: authenticator not registered or not verified (TOTP, passkey).
    blocked: frozenset[Factor] = frozenset()
    unenrolled: frozenset[Factor] = frozenset()
    #: Factors listed as enabled that are not in effect (stale TOTP): never counted as the
    #: factor a user keeps, never sent.
    stale: frozenset[Factor] = frozenset()
    #: Parts of the change held back, and why.
    guards: frozenset[Guard] = frozenset()
    #: SMS is on through the legacy MFAOptions only; the request moves it to the current API.
    legacy_sms: bool = False
    #: The pool requires MFA: factors are never turned off.
    keep_enabled: bool = False


def desired_state(rule: Rule, current: MfaState) -> MfaState:
    """Current factors, minus the rule's disabled ones, plus its enabled and preferred ones."""
    enabled = (current.enabled - rule.factors_set_to(FactorSetting.DISABLED)) | rule.factors_set_to(
        FactorSetting.ENABLED, FactorSetting.PREFERRED
    )
    preferred = rule.preferred
    if preferred is None and current.preferred in enabled:
        preferred = current.preferred
    return MfaState(frozenset(enabled), preferred)


def in_effect(
    factors: frozenset[Factor], stale: frozenset[Factor] = frozenset()
) -> frozenset[Factor]:
    """The code factors of ``factors`` that protect a sign-in (passkey and stale ones do not)."""
    return (factors & CODE_FACTORS) - stale


def reachable_state(
    before: MfaState,
    desired: MfaState,
    frozen: frozenset[Factor],
    *,
    stale: frozenset[Factor] = frozenset(),
    keep_enabled: bool = False,
) -> tuple[MfaState, frozenset[Guard]]:
    """The desired state without touching ``frozen`` factors, under the guards.

    A frozen factor is one Cognito will not let us change for this user now (no phone number,
    no verified token), so it keeps its current state, preference included. With
    ``keep_enabled`` (the pool requires MFA) no factor is turned off. A user with a factor in
    effect is never left with none (``stale`` ones do not count), passkey MFA is only turned
    on beside a code factor we can name in the same request, and the current preference is
    kept while its factor stays enabled when what the policy prefers is out of reach.
    """
    guards: set[Guard] = set()
    enabled = (desired.enabled - frozen) | (before.enabled & frozen)
    if keep_enabled and before.enabled - enabled:
        enabled |= before.enabled
        guards.add(Guard.POOL_REQUIRES_MFA)
    if in_effect(before.enabled, stale) and not in_effect(enabled, stale):
        enabled |= before.enabled & CODE_FACTORS
        guards.add(Guard.LAST_FACTOR)
    if Factor.PASSKEY in enabled - before.enabled and not in_effect(enabled, stale) - frozen:
        enabled -= {Factor.PASSKEY}
        guards.add(Guard.PASSKEY_NEEDS_ANOTHER_FACTOR)
    if before.preferred in frozen:
        preferred: Factor | None = before.preferred
    elif desired.preferred is not None and desired.preferred in enabled - frozen:
        preferred = desired.preferred
    elif before.preferred in enabled:
        preferred = before.preferred
    else:
        preferred = None
    return MfaState(frozenset(enabled), preferred), frozenset(guards)


def changed_factors(before: MfaState, after: MfaState) -> frozenset[Factor]:
    """Factors whose (enabled, preferred) differs between two states."""
    return frozenset(
        f
        for f in FACTOR_ORDER
        if (f in before.enabled, before.preferred == f)
        != (f in after.enabled, after.preferred == f)
    )


def request_between(
    before: MfaState,
    after: MfaState,
    *,
    force: frozenset[Factor] = frozenset(),
    avoid: frozenset[Factor] = frozenset(),
) -> MfaRequest | None:
    """The minimal request: one block per factor whose state changes (and per ``force``d
    factor), nothing else.

    Cognito refuses a request that turns passkey MFA on unless it also turns on another
    factor, even one already on ("WebAuthn MFA requires enabling an additional MFA
    setting."), so such a request repeats one enabled code factor's current setting, never
    one of ``avoid`` (factors Cognito would refuse a block for).
    """
    factors = changed_factors(before, after) | (force & (before.enabled | after.enabled))
    blocks = {
        f: FactorWrite(enabled=f in after.enabled, preferred=after.preferred == f) for f in factors
    }
    passkey = blocks.get(Factor.PASSKEY)
    if (
        passkey is not None
        and passkey.enabled
        and not any(w.enabled for f, w in blocks.items() if f in CODE_FACTORS)
    ):
        candidates = sorted(
            (after.enabled & CODE_FACTORS) - avoid,
            key=lambda f: (f != after.preferred, FACTOR_ORDER.index(f)),
        )
        if candidates:
            companion = candidates[0]
            blocks[companion] = FactorWrite(enabled=True, preferred=after.preferred == companion)
    return MfaRequest(blocks) if blocks else None


def apply_request(state: MfaState, request: MfaRequest) -> MfaState:
    """Cognito's effect of a request on a state (the model the property tests check against)."""
    enabled = set(state.enabled)
    preferred = state.preferred
    for factor, write in request.blocks.items():
        if write.enabled:
            enabled.add(factor)
        else:
            enabled.discard(factor)
        if not write.preferred and preferred == factor:
            preferred = None
    for factor, write in request.blocks.items():
        if write.preferred and factor.can_be_preferred:
            preferred = factor
    return MfaState(frozenset(enabled), preferred)


def in_rollout(sub: str, percent: float) -> bool:
    """A stable share of users: the same sub is in or out on every run and every machine."""
    bucket = int.from_bytes(hashlib.sha256(sub.encode()).digest()[:8], "big") % 10_000
    return bucket < percent * 100


def matching_rule(policy: Policy, user: User) -> Rule | None:
    return next((rule for rule in policy.rules if rule.match.matches(user)), None)


def out_of_scope(policy: Policy, user: User) -> Decision | None:
    """The decision for a user the policy never manages (excluded, federated, disabled, or a
    status Cognito refuses MFA changes for).

    It needs only what ListUsers shows, never the user's MFA state, so the runner can decide
    these users without reading them.
    """
    base = Decision(user.username, user.sub, None, Outcome.COMPLIANT, "", user.mfa)
    if user.username in policy.exclude_usernames:
        return replace(base, outcome=Outcome.EXCLUDED, reason="excluded by username")
    excluded_groups = sorted(policy.exclude_groups & user.groups)
    if excluded_groups:
        return replace(
            base, outcome=Outcome.EXCLUDED, reason=f"excluded by group {excluded_groups[0]}"
        )
    if user.status == FEDERATED_STATUS:
        return replace(
            base, outcome=Outcome.SKIPPED, reason="federated user: MFA is the identity provider's"
        )
    if user.status in WRITE_REFUSED_STATUSES:
        return replace(base, outcome=Outcome.SKIPPED, reason=WRITE_REFUSED_STATUSES[user.status])
    if not user.enabled and not policy.include_disabled:
        return replace(base, outcome=Outcome.SKIPPED, reason="disabled user")
    return None


def decide_unread(policy: Policy, user: User) -> Decision | None:
    """The decision for a user whose outcome ListUsers alone settles, or None (read them).

    Besides the users the policy never manages (``out_of_scope``), no rule matching
    (``unmanaged``) and a matching rule whose rollout leaves the user out (``deferred``) depend
    only on the listing (groups, username, attributes, status, sub), so such users cost no
    read. A deferred user is reported deferred whatever their MFA state, since it is unknown.
    """
    unmanaged = out_of_scope(policy, user)
    if unmanaged is not None:
        return unmanaged
    base = Decision(user.username, user.sub, None, Outcome.UNMANAGED, "no rule matches", user.mfa)
    rule = matching_rule(policy, user)
    if rule is None:
        return base
    if outside_rollout(rule, user):
        return replace(
            base,
            rule=rule.name,
            outcome=Outcome.DEFERRED,
            reason=f"outside the rule's {rule.rollout_percent:g}% rollout; not read",
        )
    return None


def outside_rollout(rule: Rule, user: User) -> bool:
    return rule.rollout_percent is not None and not in_rollout(user.sub, rule.rollout_percent)


def decide(
    policy: Policy,
    user: User,
    mode: Mode,
    *,
    probe_allowed: bool = True,
    pool: PoolFacts = PoolFacts(),
) -> Decision:
    """Decide one user. In apply mode ``probe_allowed`` says whether to try enabling a factor
    whose authenticator the read cannot show (TOTP, passkey)."""
    unmanaged = out_of_scope(policy, user)
    if unmanaged is not None:
        return unmanaged
    base = Decision(
        user.username, user.sub, None, Outcome.COMPLIANT, "", user.mfa, legacy_sms=user.legacy_sms
    )

    rule = matching_rule(policy, user)
    if rule is None:
        return replace(base, outcome=Outcome.UNMANAGED, reason="no rule matches")

    current = user.mfa
    stale = user.stale
    desired = desired_state(rule, current)
    # A legacy SMS user under a rule that manages SMS gets an SMS block: the current API's
    # setting replaces MFAOptions.
    migrate_sms = user.legacy_sms and Factor.SMS in rule.factors
    base = replace(
        base,
        rule=rule.name,
        desired=desired,
        target=current,
        stale=stale,
        keep_enabled=pool.requires_mfa,
    )
    settled = desired == current and not migrate_sms and not stale & desired.enabled
    if outside_rollout(rule, user):
        # Deferred whatever the state, as in a run, which decides these users unread
        # (``decide_unread``); a caller that did read the user learns what would change.
        would = (
            "already as the rule wants" if settled else "would " + describe_change(current, desired)
        )
        return replace(
            base,
            outcome=Outcome.DEFERRED,
            reason=f"outside the rule's {rule.rollout_percent:g}% rollout; {would}",
        )
    if settled:
        return replace(
            base, reason="legacy SMS MFA (MFAOptions) in effect" if user.legacy_sms else ""
        )

    wanted = desired.enabled - current.enabled
    if pool.maybe_passwordless(user) and pool.mfa == "OPTIONAL" and wanted:
        names = ", ".join(f.value for f in FACTOR_ORDER if f in wanted)
        who = (
            "the user signs in without a password"
            if user.passwordless
            else "the pool allows sign-in without a password and this read cannot show "
            "whether the user has one"
        )
        return replace(
            base,
            outcome=Outcome.GUARDED,
            guards=frozenset({Guard.PASSWORDLESS}),
            reason=f"passwordless: {who}, and turning on {names} in a pool with optional MFA "
            "could lock them out; nothing sent",
        )

    # Cognito refuses any block, even a disabling one, for a factor whose attribute is missing.
    touched = changed_factors(current, desired) | (
        frozenset({Factor.SMS}) if migrate_sms else frozenset()
    )
    blocked = frozenset(
        f
        for f in touched
        if f in REQUIRED_ATTRIBUTE and not user.has_attribute(REQUIRED_ATTRIBUTE[f])
    )
    unregistered = frozenset(f for f in wanted if f in REGISTRATION and not user.registered(f))
    probing = bool(unregistered) and mode is Mode.APPLY and probe_allowed
    unavailable = blocked | stale | (frozenset() if probing else unregistered)
    unenrolled = unregistered | stale
    decision = replace(
        base, probing=probing, blocked=blocked, unenrolled=unenrolled, legacy_sms=user.legacy_sms
    )
    decision = _planned(
        decision, unavailable, force=frozenset({Factor.SMS}) if migrate_sms else frozenset()
    )
    if current.enabled and not in_effect(desired.enabled):
        # The rule itself leaves no factor in effect (none, or passkey alone): refused whole,
        # whatever else stands in the way, so the user is ``guarded`` with nothing sent in
        # drift and apply alike.
        decision = replace(
            decision,
            target=current,
            request=None,
            probing=False,
            guards=frozenset({Guard.LAST_FACTOR}),
        )
    return replace(decision, outcome=_outcome(decision, mode), reason=_reason(decision, mode))


def _planned(
    decision: Decision, unavailable: frozenset[Factor], *, force: frozenset[Factor]
) -> Decision:
    """``decision`` with the target and request that reach as far as ``unavailable`` allows."""
    assert decision.desired is not None
    target, guards = reachable_state(
        decision.before,
        decision.desired,
        unavailable,
        stale=decision.stale,
        keep_enabled=decision.keep_enabled,
    )
    request = request_between(
        decision.before, target, force=force - unavailable, avoid=unavailable | decision.stale
    )
    return replace(decision, target=target, request=request, guards=guards)


def after_rejection(decision: Decision, rejection: Rejection) -> Decision:
    """The follow-up when Cognito refused ``decision.request`` because of ``rejection``.

    The user's state is unchanged (Cognito applies a request whole or not at all), so the new
    request again starts from ``before``, leaving out the refused factor. A refused TOTP the
    user had listed as enabled is not in effect (re-associated, never verified): the guard no
    longer counts it as the factor they keep.
    """
    assert decision.desired is not None, "only a decision with a desired state sends requests"
    factor = rejection.factor
    blocked = decision.blocked | ({factor} if factor in REQUIRED_ATTRIBUTE else set())
    unenrolled = decision.unenrolled | ({factor} if factor in REGISTRATION else set())
    stale = decision.stale | (
        {factor} if factor is Factor.TOTP and factor in decision.before.enabled else set()
    )
    followup = replace(
        decision,
        probing=False,
        blocked=frozenset(blocked),
        unenrolled=frozenset(unenrolled),
        stale=frozenset(stale),
    )
    force = (
        frozenset({Factor.SMS})
        if decision.legacy_sms and decision.request and Factor.SMS in decision.request.blocks
        else frozenset()
    )
    followup = _planned(
        followup, followup.blocked | followup.unenrolled | followup.stale, force=force
    )
    reason = _reason(followup, Mode.APPLY)
    if rejection is Rejection.TOTP_NOT_VERIFIED:
        reason = f"probe rejected: software token not verified; {reason}"
    elif rejection is Rejection.PASSKEY_NOT_REGISTERED:
        reason = f"probe rejected: no passkey registered; {reason}"
    return replace(followup, outcome=_outcome(followup, Mode.APPLY), reason=reason)


def _refused_whole(decision: Decision) -> bool:
    """The rule itself leaves the user no factor in effect: that wins over a factor the user
    lacks, since nothing would be sent whatever they did."""
    return (
        Guard.LAST_FACTOR in decision.guards
        and decision.request is None
        and decision.desired is not None
        and not in_effect(decision.desired.enabled)
    )


def _outcome(decision: Decision, mode: Mode) -> Outcome:
    if _refused_whole(decision):
        return Outcome.GUARDED
    if decision.blocked:
        return Outcome.BLOCKED
    if decision.unenrolled and (mode is Mode.DRIFT or not decision.probing):
        return Outcome.NEEDS_ENROLLMENT
    if decision.guards:
        return Outcome.GUARDED
    return Outcome.WOULD_CHANGE if mode is Mode.DRIFT else Outcome.CHANGED


def _names(factors: frozenset[Factor]) -> str:
    return " and ".join(f.value for f in FACTOR_ORDER if f in factors)


def _reason(decision: Decision, mode: Mode) -> str:
    assert decision.desired is not None and decision.target is not None
    before, target = decision.before, decision.target
    if _refused_whole(decision):
        return (
            "last_factor: the policy would remove the user's last factor; it was kept; "
            f"wants to {describe_change(before, decision.desired)}"
        )
    parts = []
    for factor in sorted(decision.blocked, key=FACTOR_ORDER.index):
        parts.append(f"{factor.value} needs a {REQUIRED_ATTRIBUTE[factor]} attribute")
    pending = decision.unenrolled - decision.stale
    if pending and (mode is Mode.DRIFT or not decision.probing):
        for factor in sorted(pending, key=FACTOR_ORDER.index):
            need = "an enrolled authenticator" if factor is Factor.TOTP else "a registered passkey"
            parts.append(f"{factor.value} needs {need}")
    if decision.stale:
        parts.append(
            "totp is listed but not in effect (software token re-associated and never "
            "verified): the user must verify it"
        )
    if Guard.POOL_REQUIRES_MFA in decision.guards:
        kept = decision.before.enabled - decision.desired.enabled
        parts.append(
            f"pool_requires_mfa: {_names(kept)} kept: the pool requires MFA, so Cognito does "
            "not let factors be turned off"
        )
    if Guard.LAST_FACTOR in decision.guards:
        kept = target.enabled - decision.desired.enabled
        parts.append(
            f"last_factor: {_names(kept) or 'the current factors'} kept: the change "
            "would leave the user no MFA factor in effect"
        )
    if Guard.PASSKEY_NEEDS_ANOTHER_FACTOR in decision.guards:
        parts.append(
            "passkey_needs_another_factor: passkey MFA is turned on only beside another MFA "
            "factor in effect"
        )
    if decision.legacy_sms and decision.request and Factor.SMS in decision.request.blocks:
        parts.append("legacy SMS MFA (MFAOptions): set sms with the current API")
    elif decision.legacy_sms:
        parts.append("legacy SMS MFA (MFAOptions) in effect")
    change = describe_change(before, decision.desired)
    if change == "no change" and parts:
        return "; ".join(parts)
    held = (
        decision.blocked or (pending and not decision.probing) or decision.stale or decision.guards
    )
    if held:
        if decision.request is not None:
            parts.append(f"partial change: {describe_change(before, target)}")
        else:
            parts.append(f"wants to {change}")
        return "; ".join(parts)
    return "; ".join([*parts, change])


def describe_change(before: MfaState, after: MfaState) -> str:
    """A short human account of a change, e.g. ``enable totp; prefer totp (was sms)``."""
    parts = []
    for factor in FACTOR_ORDER:
        if factor in after.enabled and factor not in before.enabled:
            parts.append(f"enable {factor.value}")
    if after.preferred != before.preferred:
        was = before.preferred.value if before.preferred else "none"
        parts.append(f"prefer {after.preferred.value if after.preferred else 'none'} (was {was})")
    for factor in FACTOR_ORDER:
        if factor in before.enabled and factor not in after.enabled:
            parts.append(f"disable {factor.value}")
    return "; ".join(parts) or "no change"
