"""Text output of the single-user commands."""

from __future__ import annotations

from mfa_policy.core.engine import describe_change
from mfa_policy.core.model import FACTOR_ORDER, MfaRequest, MfaState
from mfa_policy.core.report import mask_attribute
from mfa_policy.run.single_user import SetResult, UserMfaView


def describe_state(state: MfaState) -> str:
    enabled = ", ".join(f.value for f in FACTOR_ORDER if f in state.enabled) or "none"
    return f"enabled {enabled}; preferred {state.preferred.value if state.preferred else 'none'}"


def describe_request(request: MfaRequest) -> str:
    if not request.blocks:
        return "nothing"
    return " ".join(
        f"{key} Enabled={str(block['Enabled']).lower()},"
        f"PreferredMfa={str(block['PreferredMfa']).lower()}"
        for key, block in request.to_cognito().items()
    )


def _row(label: str, value: str) -> str:
    return f"{label + ':':<14}{value}"


def render_set_result(result: SetResult) -> list[str]:
    plan = result.plan
    lines = [result.target.label, _row("before", describe_state(plan.before))]
    if plan.dropped:
        names = ", ".join(f.settings_key for f in plan.dropped)
        lines.append(_row("not sent", f"{names} (changes nothing for this user)"))
    if not plan.changes:
        lines.append("no change: the user already has this setting; nothing sent")
        return lines
    if result.dry_run:
        return [
            *lines,
            _row("would send", describe_request(plan.request)),
            _row("after", f"{describe_state(plan.after)} (predicted)"),
            _row("change", describe_change(plan.before, plan.after)),
            "dry run: nothing sent",
        ]
    return [
        *lines,
        _row("sent", describe_request(plan.request)),
        _row("after", describe_state(result.after)),
        _row("change", describe_change(plan.before, result.after)),
    ]


def render_user_view(view: UserMfaView, policy_source: str | None = None) -> list[str]:
    state = view.read.mfa
    lines = [
        view.target.label,
        _row("enabled", ", ".join(f.value for f in FACTOR_ORDER if f in state.enabled) or "none"),
        _row("preferred", state.preferred.value if state.preferred else "none"),
    ]
    for name in ("phone_number", "email"):
        value = view.read.attributes.get(name)
        lines.append(_row(name, mask_attribute(name, value) if value else "none"))
    if view.read.status:
        disabled = " (user disabled)" if view.read.enabled is False else ""
        lines.append(_row("status", f"{view.read.status}{disabled}"))
    exp = view.explanation
    if exp is None:
        return lines
    lines.append(_row("policy", policy_source or "policy"))
    for miss in exp["not_matched"]:
        lines.append(f"  rule {miss['rule']}: does not match ({'; '.join(miss['why'])})")
    if exp["rule"] is None:
        lines.append("  no rule matches")
    else:
        lines.append(
            f"  rule {exp['rule']} (rules[{exp['rule_index']}]) matches: {'; '.join(exp['why'])}"
            + ("" if exp["applied"] else " (not applied: the user is excluded or skipped)")
        )
    reason = f": {exp['reason']}" if exp["reason"] else ""
    lines.append(_row("outcome", f"{exp['outcome']}{reason}"))
    if exp["desired"] is not None:
        lines.append(_row("desired", describe_state(MfaState.from_dict(exp["desired"]))))
    return lines
