"""The decision engine: for one user, which rule applies, what state it wants, what to send.

Pure: no AWS import, no I/O, no clock. Every rule of DESIGN.md's "Semantics, precisely" lives
here, and nowhere else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from enum import StrEnum

from mfa_policy.core.model import (
    FACTOR_ORDER,
    FEDERATED_STATUS,
    REQUIRED_ATTRIBUTE,
    Factor,
    FactorSetting,
    FactorWrite,
    GuardReason,
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

    TOTP_NOT_VERIFIED = "totp_not_verified"
    NO_PHONE_NUMBER = "no_phone_number"
    NO_EMAIL = "no_email"

    @property
    def factor(self) -> Factor:
        return {
            Rejection.TOTP_NOT_VERIFIED: Factor.TOTP,
            Rejection.NO_PHONE_NUMBER: Factor.SMS,
            Rejection.NO_EMAIL: Factor.EMAIL,
        }[self]


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
    #: The request enables TOTP without knowing whether the user verified a token.
    probing: bool = False
    #: Desired factors the user cannot have now: missing attribute (blocked) or TOTP not enrolled.
    blocked: frozenset[Factor] = frozenset()
    unenrolled: frozenset[Factor] = frozenset()
    #: Why the change must not be made at all (outcome ``guarded``; nothing is sent).
    guard: GuardReason | None = None


def desired_state(rule: Rule, current: MfaState) -> MfaState:
    """Current factors, minus the rule's disabled ones, plus its enabled and preferred ones."""
    enabled = (current.enabled - rule.factors_set_to(FactorSetting.DISABLED)) | rule.factors_set_to(
        FactorSetting.ENABLED, FactorSetting.PREFERRED
    )
    preferred = rule.preferred
    if preferred is None and current.preferred in enabled:
        preferred = current.preferred
    return MfaState(frozenset(enabled), preferred)


def reachable_state(before: MfaState, desired: MfaState, frozen: frozenset[Factor]) -> MfaState:
    """The desired state without touching ``frozen`` factors, under the last-factor guard.

    A frozen factor is one Cognito will not let us change for this user now (no phone number,
    no verified token), so it keeps its current state, preference included. A user with an
    enabled factor is never left with none, and keeps the current preference while its factor
    stays enabled, when what the policy prefers is out of reach.
    """
    enabled = (desired.enabled - frozen) | (before.enabled & frozen)
    if not enabled and before.enabled:
        enabled = before.enabled
    if before.preferred in frozen:
        preferred: Factor | None = before.preferred
    elif desired.preferred is not None and desired.preferred in enabled - frozen:
        preferred = desired.preferred
    elif before.preferred in enabled:
        preferred = before.preferred
    else:
        preferred = None
    return MfaState(enabled, preferred)


def guard_refusal(before: MfaState, desired: MfaState) -> GuardReason | None:
    """Why the change from ``before`` to ``desired`` would lower the user's protection, or None.

    Only the policy itself can ask for this one: a user whose every enabled factor the rule
    disables. (``reachable_state`` keeps them too; this names it, so the user is ``guarded``
    rather than reported as a change that never happens.)
    """
    if before.enabled and not desired.enabled:
        return GuardReason.LAST_FACTOR
    return None


def changed_factors(before: MfaState, after: MfaState) -> frozenset[Factor]:
    """Factors whose (enabled, preferred) differs between two states."""
    return frozenset(
        f
        for f in FACTOR_ORDER
        if (f in before.enabled, before.preferred == f)
        != (f in after.enabled, after.preferred == f)
    )


def request_between(before: MfaState, after: MfaState) -> MfaRequest | None:
    """The minimal request: one block per factor whose state changes, nothing else."""
    blocks = {
        f: FactorWrite(enabled=f in after.enabled, preferred=after.preferred == f)
        for f in changed_factors(before, after)
    }
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
        if write.preferred:
            preferred = factor
    return MfaState(frozenset(enabled), preferred)


def in_rollout(sub: str, percent: float) -> bool:
    """A stable share of users: the same sub is in or out on every run and every machine."""
    bucket = int.from_bytes(hashlib.sha256(sub.encode()).digest()[:8], "big") % 10_000
    return bucket < percent * 100


def matching_rule(policy: Policy, user: User) -> Rule | None:
    return next((rule for rule in policy.rules if rule.match.matches(user)), None)


def out_of_scope(policy: Policy, user: User) -> Decision | None:
    """The decision for a user the policy never manages (excluded, federated, disabled).

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
    if not user.enabled and not policy.include_disabled:
        return replace(base, outcome=Outcome.SKIPPED, reason="disabled user")
    return None


def decide(policy: Policy, user: User, mode: Mode, *, probe_allowed: bool = True) -> Decision:
    """Decide one user. In apply mode ``probe_allowed`` says whether to try enabling TOTP."""
    unmanaged = out_of_scope(policy, user)
    if unmanaged is not None:
        return unmanaged
    base = Decision(user.username, user.sub, None, Outcome.COMPLIANT, "", user.mfa)

    rule = matching_rule(policy, user)
    if rule is None:
        return replace(base, outcome=Outcome.UNMANAGED, reason="no rule matches")

    desired = desired_state(rule, user.mfa)
    base = replace(base, rule=rule.name, desired=desired, target=user.mfa)
    if desired == user.mfa:
        return base

    # Cognito refuses any block, even a disabling one, for a factor whose attribute is missing.
    blocked = frozenset(
        f
        for f in changed_factors(user.mfa, desired)
        if f in REQUIRED_ATTRIBUTE and not user.has_attribute(REQUIRED_ATTRIBUTE[f])
    )
    unenrolled = frozenset((desired.enabled - user.mfa.enabled) & {Factor.TOTP})
    guard = guard_refusal(user.mfa, desired)
    probing = bool(unenrolled) and mode is Mode.APPLY and probe_allowed and guard is None
    unavailable = blocked | (frozenset() if probing else unenrolled)
    target = user.mfa if guard else reachable_state(user.mfa, desired, unavailable)
    request = request_between(user.mfa, target)
    decision = replace(
        base,
        target=target,
        request=request,
        probing=probing,
        blocked=blocked,
        unenrolled=unenrolled,
        guard=guard,
    )

    if rule.rollout_percent is not None and not in_rollout(user.sub, rule.rollout_percent):
        return replace(
            decision,
            outcome=Outcome.DEFERRED,
            target=user.mfa,
            request=None,
            probing=False,
            reason=f"outside the rule's {rule.rollout_percent:g}% rollout; "
            f"would {describe_change(user.mfa, desired)}",
        )
    return replace(decision, outcome=_outcome(decision, mode), reason=_reason(decision, mode))


def after_rejection(decision: Decision, rejection: Rejection) -> Decision:
    """The follow-up when Cognito refused ``decision.request`` because of ``rejection``.

    The user's state is unchanged (Cognito applies a request whole or not at all), so the new
    request again starts from ``before``, leaving out the refused factor.
    """
    assert decision.desired is not None, "only a decision with a desired state sends requests"
    factor = rejection.factor
    blocked = decision.blocked | ({factor} if factor in REQUIRED_ATTRIBUTE else set())
    unenrolled = decision.unenrolled | ({factor} if factor is Factor.TOTP else set())
    target = reachable_state(decision.before, decision.desired, blocked | unenrolled)
    followup = replace(
        decision,
        target=target,
        request=request_between(decision.before, target),
        probing=False,
        blocked=frozenset(blocked),
        unenrolled=frozenset(unenrolled),
    )
    reason = _reason(followup, Mode.APPLY)
    if rejection is Rejection.TOTP_NOT_VERIFIED:
        reason = f"probe rejected: software token not verified; {reason}"
    return replace(followup, outcome=_outcome(followup, Mode.APPLY), reason=reason)


def _outcome(decision: Decision, mode: Mode) -> Outcome:
    # A guard refusal sends nothing at all, so it wins: no other outcome tells the user that.
    if decision.guard is not None:
        return Outcome.GUARDED
    if decision.blocked:
        return Outcome.BLOCKED
    if decision.unenrolled and (mode is Mode.DRIFT or not decision.probing):
        return Outcome.NEEDS_ENROLLMENT
    return Outcome.WOULD_CHANGE if mode is Mode.DRIFT else Outcome.CHANGED


def _reason(decision: Decision, mode: Mode) -> str:
    assert decision.desired is not None
    if decision.guard is not None:
        return (
            f"{decision.guard.value}: {decision.guard.explanation}; wants to "
            f"{describe_change(decision.before, decision.desired)}"
        )
    parts = []
    for factor in sorted(decision.blocked, key=FACTOR_ORDER.index):
        parts.append(f"{factor.value} needs a {REQUIRED_ATTRIBUTE[factor]} attribute")
    if decision.unenrolled and (mode is Mode.DRIFT or not decision.probing):
        parts.append("totp needs an enrolled authenticator")
    change = describe_change(decision.before, decision.desired)
    if decision.blocked or (decision.unenrolled and not decision.probing):
        if decision.request is not None and decision.target is not None:
            parts.append(f"partial change: {describe_change(decision.before, decision.target)}")
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
