"""Undo an apply: restore each changed user's before-state, only where the apply's result stands.

A user whose state is no longer what the apply left (they, or someone, changed it since) is
left alone and reported, never overwritten.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mfa_policy.aws.gateway import CognitoError, CognitoGateway
from mfa_policy.core.engine import describe_change, request_between
from mfa_policy.core.model import MfaState, Outcome
from mfa_policy.core.report import Counts, LocalReport
from mfa_policy.exceptions import RunError
from mfa_policy.run.runner import Row, new_run_id, now_iso, summary_of
from mfa_policy.run.state import Checkpoint


def rows_to_restore(report_dir: Path, user_pool_id: str) -> tuple[dict[str, Any], list[Row]]:
    """The summary of an apply report, and its rows whose user was written to."""
    summary_path = report_dir / "summary.json"
    if not summary_path.exists():
        raise RunError(
            f"{report_dir} is not a report folder (no summary.json); a rollback "
            "needs the report of a finished apply"
        )
    summary = json.loads(summary_path.read_text("utf-8"))
    if summary.get("mode") != "apply":
        raise RunError(
            f"{report_dir} is a {summary.get('mode')} report; only an apply "
            "report can be rolled back"
        )
    if summary.get("user_pool_id") != user_pool_id:
        raise RunError(
            f"{report_dir} is a report of {summary.get('user_pool_id')}, not of {user_pool_id}"
        )
    return summary, [
        row
        for row in LocalReport(report_dir).rows()
        if row.get("after") and row.get("before") and row["after"] != row["before"]
    ]


def _lookup_name(row: Row) -> str:
    # Masked usernames (emails, phone numbers) are not usable; Cognito takes the sub instead.
    return str(row["sub"] if "***" in row["username"] else row["username"])


def restore_user(gateway: CognitoGateway, row: Row) -> Row:
    before = MfaState.from_dict(row["before"])
    left = MfaState.from_dict(row["after"])
    out: Row = {
        "username": row["username"],
        "sub": row["sub"],
        "rule": row.get("rule"),
        "before": None,
        "desired": before.to_dict(),
        "request": None,
    }
    name = _lookup_name(row)
    try:
        current = gateway.admin_read(name).mfa
    except CognitoError as exc:
        return {
            **out,
            "outcome": Outcome.SKIPPED.value
            if exc.code == "UserNotFoundException"
            else Outcome.FAILED.value,
            "reason": f"{exc.operation}: {exc.message}",
            "error": exc.code,
        }
    out["before"] = current.to_dict()
    if current != left:
        return {
            **out,
            "outcome": Outcome.SKIPPED.value,
            "after": current.to_dict(),
            "reason": f"changed since the apply (now {current}, the apply left {left}); left alone",
        }
    request = request_between(current, before)
    if request is None:
        return {
            **out,
            "outcome": Outcome.COMPLIANT.value,
            "after": current.to_dict(),
            "reason": "already in its before-state",
        }
    try:
        gateway.admin_write(name, request)
    except CognitoError as exc:
        return {
            **out,
            "outcome": Outcome.FAILED.value,
            "after": current.to_dict(),
            "request": request.to_dict(),
            "reason": f"{exc.operation}: {exc.message}",
            "error": exc.code,
        }
    return {
        **out,
        "outcome": Outcome.CHANGED.value,
        "after": before.to_dict(),
        "request": request.to_dict(),
        "reason": f"restored: {describe_change(current, before)}",
    }


def rollback(
    gateway: CognitoGateway, report_dir: Path, out_dir: Path, *, workers: int = 16
) -> dict[str, Any]:
    applied, rows = rows_to_restore(report_dir, gateway.user_pool_id)
    started = now_iso()
    report = LocalReport(out_dir)
    counts = Counts()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda r: restore_user(gateway, r), rows))
    report.append(results)
    for row in results:
        counts.add_row(row)
    gateway.counters.drain_into(counts.api_calls, counts.throttled)
    done = Checkpoint(
        run_id=new_run_id("rollback"),
        user_pool_id=gateway.user_pool_id,
        mode="rollback",
        auth="admin",
        policy_hash=applied.get("policy_hash", ""),
        started_at=started,
        done=True,
        ended_at=now_iso(),
        counts=counts.to_dict(),
        report_uri=str(out_dir),
        slices=1,
    )
    summary = {**summary_of(done), "rolled_back": str(report_dir)}
    report.finish(summary)
    return summary
