"""Apply a reviewed plan: send exactly its requests, to users still in the state it observed.

Each planned user is read again just before the write. One whose MFA state is no longer what
drift observed (they enrolled, someone changed them, the policy's answer may differ now) is
skipped with reason ``stale`` and nothing is sent; the next drift plans them afresh. Nothing
outside the plan is read or written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mfa_policy.aws.gateway import CognitoError, CognitoGateway
from mfa_policy.core.engine import describe_change
from mfa_policy.core.model import Factor, Outcome
from mfa_policy.core.plan import Plan, PlannedChange
from mfa_policy.core.policy import Policy
from mfa_policy.core.report import Counts
from mfa_policy.run.runner import ReportSink, Row, new_run_id, now_iso, rate_limiter_for, summary_of
from mfa_policy.run.state import Checkpoint

#: The reason prefix of a planned user skipped because their state moved since the plan.
STALE = "stale"
#: Users applied and reported together, as a run commits a page of ListUsers.
PAGE = 60


def _address(change: PlannedChange) -> str:
    # Masked usernames (emails, phone numbers) are not usable; Cognito takes the sub instead.
    return change.sub if "***" in change.username else change.username


def apply_change(gateway: CognitoGateway, change: PlannedChange) -> Row:
    """Re-read the user; send the planned request only if they are still as observed."""
    out: Row = {
        "username": change.username,
        "sub": change.sub,
        "rule": change.rule,
        "before": None,
        "desired": change.expected.to_dict(),
        "request": None,
        "after": None,
    }
    name = _address(change)
    try:
        # AdminGetUser, like rollback: it shows legacy MFAOptions (drift saw them in ListUsers).
        read = gateway.admin_read(name)
        current = read.mfa
    except CognitoError as exc:
        gone = exc.code == "UserNotFoundException"
        return {
            **out,
            "outcome": (Outcome.SKIPPED if gone else Outcome.FAILED).value,
            "reason": f"{exc.operation}: {exc.message}",
            "error": exc.code,
        }
    out.update(before=current.to_dict(), after=current.to_dict())
    # A legacy SMS user's planned SMS block changes no state, only the API that holds it.
    migrating = read.legacy_sms and Factor.SMS in change.request.blocks
    if current == change.expected and not migrating:
        # Applied already (a retried slice, a plan applied twice): nothing left to send.
        return {**out, "outcome": Outcome.COMPLIANT.value, "reason": "already as planned"}
    if current != change.observed:
        return {
            **out,
            "outcome": Outcome.SKIPPED.value,
            "reason": f"{STALE}: now {current}, the plan observed {change.observed}; "
            "nothing sent (a new drift plans this user again)",
        }
    try:
        gateway.admin_write(name, change.request)
    except CognitoError as exc:
        failed = {
            **out,
            "outcome": Outcome.FAILED.value,
            "request": change.request.to_dict(),
            "reason": f"{exc.operation}: {exc.message}",
            "error": exc.code,
        }
        if not exc.unanswered:
            return failed
        # The last attempt timed out or got a 5xx: Cognito may have applied it all the same.
        try:
            now = gateway.admin_read(name).mfa
        except CognitoError:
            return failed
        if now != change.expected:
            return {
                **failed,
                "after": now.to_dict(),
                "reason": f"{failed['reason']}; read again after it: not applied",
            }
    return {
        **out,
        "outcome": Outcome.CHANGED.value,
        "request": change.request.to_dict(),
        "after": change.expected.to_dict(),
        "reason": f"as planned: {describe_change(change.observed, change.expected)}",
    }


def apply_changes(
    gateway: CognitoGateway, changes: Sequence[PlannedChange], *, workers: int = 16
) -> list[Row]:
    """Apply ``changes`` concurrently (paced by the gateway's limiter); rows in plan order."""
    with ThreadPoolExecutor(workers, thread_name_prefix="plan") as pool:
        return list(pool.map(lambda change: apply_change(gateway, change), changes))


def plan_summary(
    plan: Plan,
    plan_source: str,
    *,
    run_id: str,
    policy_hash: str,
    started_at: str,
    counts: Counts,
    report_uri: str,
    stale: int,
    slices: int = 1,
) -> dict[str, Any]:
    """The summary of an applied plan: an apply run's summary, plus what the plan asked."""
    done = Checkpoint(
        run_id=run_id,
        user_pool_id=plan.user_pool_id,
        mode="apply",
        auth="admin",
        policy_hash=policy_hash,
        started_at=started_at,
        done=True,
        ended_at=now_iso(),
        counts=counts.to_dict(),
        report_uri=report_uri,
        slices=slices,
    )
    return {**summary_of(done), "plan": plan_source, "planned": len(plan.changes), "stale": stale}


def is_stale(row: Row) -> bool:
    return str(row.get("reason", "")).startswith(STALE)


def apply_plan(
    client: Any,
    policy: Policy,
    plan: Plan,
    user_pool_id: str,
    *,
    report: ReportSink,
    plan_source: str,
    run_id: str | None = None,
    workers: int = 16,
    on_rows: Callable[[list[Row]], None] | None = None,
) -> dict[str, Any]:
    """Apply ``plan`` to ``user_pool_id`` under ``policy`` (both the plan's); the summary."""
    plan.check_fits(user_pool_id, policy.hash)
    gateway = CognitoGateway(client, user_pool_id, limiter=rate_limiter_for(policy))
    started = now_iso()
    counts = Counts()
    stale = 0
    for start in range(0, len(plan.changes), PAGE):
        rows = apply_changes(gateway, plan.changes[start : start + PAGE], workers=workers)
        report.append(rows)
        for row in rows:
            counts.add_row(row)
        stale += sum(1 for row in rows if is_stale(row))
        if on_rows:
            on_rows(rows)
    gateway.counters.drain_into(counts)
    summary = plan_summary(
        plan,
        plan_source,
        run_id=run_id or new_run_id("apply"),
        policy_hash=policy.hash,
        started_at=started,
        counts=counts,
        report_uri=report.uri,
        stale=stale,
    )
    report.finish(summary)
    return summary
