"""A plan: what a drift run found to change, written so that an apply sends exactly that.

``mfa-policy drift --out plan.json`` writes one; ``mfa-policy apply --plan plan.json`` sends
its requests and nothing else. A plan names its pool and the hash of the policy it was made
with, and for each user the state drift observed, the exact request, and the state the request
leaves. Users are named as in reports (emails and phone numbers masked) and addressed by
``sub``, so a plan can sit in a pull request. Its Markdown summary is what a reviewer reads.

Pure: no AWS import, no I/O.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mfa_policy.core.engine import apply_request, describe_change
from mfa_policy.core.model import MfaRequest, MfaState
from mfa_policy.exceptions import MfaPolicyError

PLAN_KIND = "mfa-policy-plan"
PLAN_VERSION = 1
#: A Markdown summary lists at most this many users (a pull request comment has a size limit).
MARKDOWN_USERS = 200


class PlanError(MfaPolicyError):
    """A plan file that cannot be read, or that does not fit the pool or policy."""


@dataclass(frozen=True)
class PlannedChange:
    """One user's planned write: sent only while the user is still in ``observed``."""

    username: str
    sub: str
    rule: str | None
    outcome: str
    reason: str
    observed: MfaState
    request: MfaRequest

    @property
    def expected(self) -> MfaState:
        """The state Cognito leaves the user in when it accepts ``request``."""
        return apply_request(self.observed, self.request)

    def to_dict(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "sub": self.sub,
            "rule": self.rule,
            "outcome": self.outcome,
            "reason": self.reason,
            "observed": self.observed.to_dict(),
            "request": self.request.to_dict(),
            "expected": self.expected.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlannedChange:
        return cls(
            username=str(data["username"]),
            sub=str(data["sub"]),
            rule=data.get("rule"),
            outcome=str(data.get("outcome", "")),
            reason=str(data.get("reason", "")),
            observed=MfaState.from_dict(data["observed"]),
            request=MfaRequest.from_dict(data["request"]),
        )


@dataclass(frozen=True)
class Plan:
    user_pool_id: str
    policy_hash: str
    drift_run_id: str
    created_at: str
    changes: tuple[PlannedChange, ...]
    #: The drift run's outcome counts, for the reviewer's summary.
    drift_counts: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": PLAN_KIND,
            "version": PLAN_VERSION,
            "user_pool_id": self.user_pool_id,
            "policy_hash": self.policy_hash,
            "drift_run_id": self.drift_run_id,
            "created_at": self.created_at,
            "drift_counts": dict(self.drift_counts),
            "changes": [change.to_dict() for change in self.changes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def check_fits(self, user_pool_id: str, policy_hash: str) -> None:
        """Refuse a plan made for another pool or with another policy than the one given."""
        if self.user_pool_id != user_pool_id:
            raise PlanError(
                f"the plan is for user pool {self.user_pool_id}, not {user_pool_id}; "
                "apply it to the pool it was made for"
            )
        if self.policy_hash != policy_hash:
            raise PlanError(
                f"the plan was made with policy {self.policy_hash}, but the policy file is now "
                f"policy {policy_hash}: the plan is stale; run drift --out again and review "
                "the new plan"
            )


def plan_from_drift(summary: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> Plan:
    """The plan of a finished drift run: every user it would send a request to.

    That is each ``would_change`` user, and the partial change of users who are
    ``needs_enrollment`` or ``blocked`` (the change without the factor they cannot have yet).
    A plan never probes TOTP: drift cannot know what a probe would be answered.
    """
    if summary.get("mode") != "drift":
        raise PlanError(f"a plan comes from a drift run, not from a {summary.get('mode')} run")
    if not summary.get("complete"):
        raise PlanError("the drift run stopped before the end; resume it to write a plan")
    changes = tuple(
        PlannedChange(
            username=str(row["username"]),
            sub=str(row["sub"]),
            rule=row.get("rule"),
            outcome=str(row["outcome"]),
            reason=str(row.get("reason") or ""),
            observed=MfaState.from_dict(row["before"]),
            request=MfaRequest.from_dict(row["request"]),
        )
        for row in rows
        if row.get("request") and row.get("before") is not None
    )
    by_outcome = summary.get("counts", {}).get("by_outcome", {})
    return Plan(
        user_pool_id=str(summary["user_pool_id"]),
        policy_hash=str(summary["policy_hash"]),
        drift_run_id=str(summary["run_id"]),
        created_at=str(summary.get("ended_at") or summary.get("started_at") or ""),
        changes=changes,
        drift_counts={k: int(v) for k, v in by_outcome.items() if v},
    )


def plan_from_json(text: str, *, source: str = "plan") -> Plan:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PlanError(f"{source}: not a plan file (not JSON: {exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != PLAN_KIND:
        raise PlanError(f"{source}: not a plan file (write one with: mfa-policy drift --out FILE)")
    if data.get("version") != PLAN_VERSION:
        raise PlanError(
            f"{source}: plan version {data.get('version')!r}; this mfa-policy reads version "
            f"{PLAN_VERSION}"
        )
    try:
        return Plan(
            user_pool_id=str(data["user_pool_id"]),
            policy_hash=str(data["policy_hash"]),
            drift_run_id=str(data.get("drift_run_id", "")),
            created_at=str(data.get("created_at", "")),
            changes=tuple(PlannedChange.from_dict(c) for c in data["changes"]),
            drift_counts=dict(data.get("drift_counts") or {}),
        )
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise PlanError(f"{source}: malformed plan ({type(exc).__name__}: {exc})") from exc


def render_plan_markdown(plan: Plan, *, limit: int = MARKDOWN_USERS) -> str:
    """What a reviewer reads: the pool, the policy, how many users change and how, each user."""
    changes = plan.changes
    by_change = Counter(describe_change(c.observed, c.expected) for c in changes)
    lines = [
        f"## mfa-policy plan: {len(changes)} user{'s' if len(changes) != 1 else ''} to change",
        "",
        f"Pool `{plan.user_pool_id}` · policy `{plan.policy_hash}` · from drift run "
        f"`{plan.drift_run_id}` · {plan.created_at}",
        "",
        "Applying this plan (`mfa-policy apply --plan FILE`) sends exactly the requests below, "
        "one per user, and only to users whose MFA state is still what drift observed; anyone "
        "changed since is skipped as `stale`. No TOTP probe is sent.",
    ]
    if by_change:
        lines += ["", "| change | users |", "|---|---:|"]
        lines += [f"| {change} | {n} |" for change, n in by_change.most_common()]
    if plan.drift_counts:
        lines += [
            "",
            "Drift found: "
            + ", ".join(f"{outcome} {n}" for outcome, n in sorted(plan.drift_counts.items())),
        ]
    if changes:
        lines += ["", "| user | rule | now | after | request |", "|---|---|---|---|---|"]
        for change in changes[:limit]:
            request = ", ".join(
                f"{factor} {'preferred' if w['preferred'] else 'on' if w['enabled'] else 'off'}"
                for factor, w in change.request.to_dict().items()
            )
            lines.append(
                f"| `{change.username}` | {change.rule or ''} | `{change.observed}` | "
                f"`{change.expected}` | {request} |"
            )
        if len(changes) > limit:
            lines.append(f"\n…and {len(changes) - limit} more users: see the plan file.")
    return "\n".join(lines) + "\n"
