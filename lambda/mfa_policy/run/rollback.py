"""Undo an apply: restore each changed user's before-state, only where the apply's result stands.

Rollback trusts nothing it reads. Before any write it checks that the folder is the finished
apply report of this pool, that every row parses as a row, and that users.jsonl is byte for
byte what the apply wrote (the sha256 and row count its summary.json records). A report that
fails any check is refused with the reason and nothing is sent.

``force`` overrides only the digest (rows edited, added or removed since the apply, or a
report written before digests existed), and then rollback trusts those rows to add factors,
never to remove one: a request that would leave a user with fewer factors than they have now
is sent only when it restores the before-state of a row that matches its digest. A user whose
state is no longer what the apply left (they, or someone, changed it since) is left alone and
reported, never overwritten. Rollback writes only into its own, new report folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfa_policy.aws.gateway import CognitoError, CognitoGateway
from mfa_policy.core.engine import describe_change, request_between
from mfa_policy.core.model import Factor, MfaState, Outcome
from mfa_policy.core.report import SCHEMA_VERSION, Counts, LocalReport, RowsDigest
from mfa_policy.exceptions import RunError
from mfa_policy.run.local_run import pool_lock, require_fresh_report_folder
from mfa_policy.run.runner import Row, new_run_id, now_iso, summary_of
from mfa_policy.run.state import Checkpoint, PoolLocked


class ReportRefused(RunError):
    """A report rollback will not act on; the message says why and what to do."""


@dataclass(frozen=True)
class ApplyReport:
    """A finished apply report of one pool, checked row by row."""

    directory: Path
    summary: dict[str, Any]
    #: Rows whose user the apply wrote to (before and after differ).
    written: list[Row]
    #: users.jsonl is exactly what the apply wrote (its digest matches summary.json).
    digest_matched: bool


def read_apply_report(report_dir: Path, user_pool_id: str, *, force: bool = False) -> ApplyReport:
    """Check ``report_dir`` and return its rows, or raise ReportRefused; reads, never writes."""
    if not report_dir.is_dir():
        raise ReportRefused(f"{report_dir} is not a report folder (no such folder)")
    summary_path = report_dir / "summary.json"
    if not summary_path.is_file():
        raise ReportRefused(
            f"{report_dir} is not a finished report (no summary.json); a rollback needs the "
            "report of a finished apply (an interrupted one: finish it with --resume first)"
        )
    try:
        summary = json.loads(summary_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReportRefused(f"{summary_path} is damaged (not JSON: {exc})") from exc
    if not isinstance(summary, dict):
        raise ReportRefused(f"{summary_path} is damaged (not a JSON object)")
    if summary.get("mode") != "apply":
        raise ReportRefused(
            f"{report_dir} is a {summary.get('mode')} report; only an apply report can be "
            "rolled back"
        )
    if summary.get("user_pool_id") != user_pool_id:
        raise ReportRefused(
            f"{report_dir} is a report of {summary.get('user_pool_id')}, not of {user_pool_id}"
        )
    if summary.get("complete") is not True:
        raise ReportRefused(f"{report_dir} is the report of an apply that did not finish")
    version = summary.get("schema_version")
    if version is not None and version != SCHEMA_VERSION:
        raise ReportRefused(
            f"{report_dir} has report schema_version {version!r}; this mfa-policy reads "
            f"version {SCHEMA_VERSION}"
        )
    jsonl = report_dir / "users.jsonl"
    if not jsonl.is_file():
        raise ReportRefused(f"{report_dir} has no users.jsonl; its rows are missing")

    written = _written_rows(jsonl)  # a damaged line refuses the report, --force or not
    digest_matched, problem = _check_digest(summary, RowsDigest.of_file(jsonl))
    if not digest_matched and not force:
        raise ReportRefused(
            f"{jsonl} {problem}; rollback refuses rows it cannot trust (an edited before-state "
            "would be written to users as it is). With --force, rollback restores only changes "
            "that add factors and leaves every other user as they are"
        )
    return ApplyReport(report_dir, summary, written, digest_matched)


def _check_digest(summary: dict[str, Any], actual: RowsDigest) -> tuple[bool, str]:
    recorded = summary.get("rows")
    if not isinstance(recorded, dict) or "sha256" not in recorded:
        return False, "has no digest in summary.json (a report from before digests, or edited)"
    have = actual.to_dict()
    if have["count"] != recorded.get("count"):
        return False, (
            f"has {have['count']} rows where the apply wrote {recorded.get('count')}: rows were "
            "removed, added or cut short since"
        )
    if have["sha256"] != recorded["sha256"]:
        return False, "does not match the sha256 the apply recorded: rows were edited since"
    return True, ""


def _written_rows(jsonl: Path) -> list[Row]:
    """Every row parsed and checked (any damaged line refuses the report); those written to."""
    written: list[Row] = []
    seen: set[str] = set()
    with open(jsonl, "rb") as f:
        for number, raw in enumerate(f, start=1):
            row = _parse_row(raw, number, jsonl)
            if row["username"] in seen:
                raise ReportRefused(f"{jsonl} line {number}: {row['username']} appears twice")
            seen.add(row["username"])
            if None not in (row["before"], row["after"]) and row["before"] != row["after"]:
                written.append(row)
    return written


def _parse_row(raw: bytes, number: int, jsonl: Path) -> Row:
    where = f"{jsonl} line {number}"
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReportRefused(f"{where} is not a report row (damaged or cut short: {exc})") from exc
    if not isinstance(row, dict):
        raise ReportRefused(f"{where} is not a report row (not a JSON object)")
    username, sub = row.get("username"), row.get("sub")
    if not isinstance(username, str) or not username:
        raise ReportRefused(f"{where} has no username")
    if sub is not None and not isinstance(sub, str):
        raise ReportRefused(f"{where} has a sub that is not a string")
    if "***" in username and not sub:
        raise ReportRefused(f"{where}: masked username {username} and no sub to address it by")
    for key in ("before", "after"):
        row[key] = _strict_state(row.get(key), f"{where} {key}")
    return row


def _strict_state(value: Any, where: str) -> MfaState | None:
    if value is None:
        return None
    factors = {f.value for f in Factor}
    if (
        not isinstance(value, dict)
        or set(value) != {"enabled", "preferred"}
        or not isinstance(value["enabled"], list)
        or not all(isinstance(f, str) and f in factors for f in value["enabled"])
        or len(set(value["enabled"])) != len(value["enabled"])
        or not (value["preferred"] is None or value["preferred"] in value["enabled"])
    ):
        raise ReportRefused(f"{where} is not an MFA state: {json.dumps(value)[:200]}")
    return MfaState.from_dict(value)


def _lookup_name(row: Row) -> str:
    # Masked usernames (emails, phone numbers) are not usable; Cognito takes the sub instead.
    return str(row["sub"] if "***" in row["username"] else row["username"])


def restore_user(gateway: CognitoGateway, row: Row, *, digest_matched: bool = True) -> Row:
    before: MfaState = row["before"]
    left: MfaState = row["after"]
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
        # AdminGetUser: it shows legacy MFAOptions, which a read without the ListUsers row
        # would miss; the user was written by the apply, so the read adds no MAU of its own.
        read = gateway.admin_read(name)
    except CognitoError as exc:
        return {
            **out,
            "outcome": Outcome.SKIPPED.value
            if exc.code == "UserNotFoundException"
            else Outcome.FAILED.value,
            "reason": f"{exc.operation}: {exc.message}",
            "error": exc.code,
            "after": None,
        }
    current = read.mfa
    out["before"] = current.to_dict()
    now_sub = read.attributes.get("sub")
    if row["sub"] and now_sub and now_sub != row["sub"]:
        return {
            **out,
            "outcome": Outcome.SKIPPED.value,
            "after": current.to_dict(),
            "reason": f"{row['username']} is another user now (sub {now_sub}, the apply "
            f"changed {row['sub']}); left alone",
        }
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
    removed = sorted(f.value for f in current.enabled - before.enabled)
    if removed and not digest_matched:
        return {
            **out,
            "outcome": Outcome.SKIPPED.value,
            "after": current.to_dict(),
            "reason": f"restoring {before} would disable {', '.join(removed)}, and the report's "
            "rows do not match their digest (--force): an unverified before-state may add "
            "factors, never remove one; left alone",
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


def _check_out_dir(report_dir: Path, out_dir: Path) -> None:
    source, target = report_dir.resolve(), out_dir.resolve()
    if target == source or target.is_relative_to(source):
        raise ReportRefused(
            f"the rollback's report folder {out_dir} is inside the apply's report {report_dir}; "
            "rollback never writes into the report it reads: choose another --report-dir"
        )
    if source.is_relative_to(target):
        raise ReportRefused(
            f"the rollback's report folder {out_dir} holds the apply's report {report_dir}; "
            "choose another --report-dir"
        )


def default_out_dir(report_dir: Path) -> Path:
    """Beside the apply's report: ``REPORT-rollback`` (``.`` resolved first)."""
    source = report_dir.resolve()
    return source.with_name(source.name + "-rollback")


def rollback(
    gateway: CognitoGateway,
    report_dir: Path,
    out_dir: Path,
    *,
    workers: int = 16,
    force: bool = False,
    state_dir: Path | None = None,
    wait: float = 0.0,
    on_wait: Callable[[PoolLocked], None] | None = None,
) -> dict[str, Any]:
    """Restore the users ``report_dir``'s apply changed; the rollback's summary.

    Holds the pool's lock like a run (and the state folder's too when ``state_dir`` exists
    and is not inside the report: a rollback creates nothing outside its own report folder
    but the per-user lock).
    """
    _check_out_dir(report_dir, out_dir)
    run_id = new_run_id("rollback")
    share_state = (
        state_dir is not None
        and state_dir.is_dir()
        and not state_dir.resolve().is_relative_to(report_dir.resolve())
    )
    lock = pool_lock(gateway.user_pool_id, run_id, "rollback", state_dir if share_state else None)
    lock.acquire(wait, on_wait)
    try:
        applied = read_apply_report(report_dir, gateway.user_pool_id, force=force)
        require_fresh_report_folder(out_dir, hint="choose a new --report-dir")
        return _restore(gateway, applied, out_dir, run_id, workers)
    finally:
        lock.release()


def _restore(
    gateway: CognitoGateway, applied: ApplyReport, out_dir: Path, run_id: str, workers: int
) -> dict[str, Any]:
    started = now_iso()
    report = LocalReport(out_dir)
    counts = Counts()
    with ThreadPoolExecutor(workers) as pool:
        results = list(
            pool.map(
                lambda r: restore_user(gateway, r, digest_matched=applied.digest_matched),
                applied.written,
            )
        )
    report.append(results)
    for row in results:
        counts.add_row(row)
    gateway.counters.drain_into(counts)
    done = Checkpoint(
        run_id=run_id,
        user_pool_id=gateway.user_pool_id,
        mode="rollback",
        auth="admin",
        policy_hash=str(applied.summary.get("policy_hash", "")),
        started_at=started,
        done=True,
        ended_at=now_iso(),
        counts=counts.to_dict(),
        report_uri=str(out_dir),
        slices=1,
    )
    summary = {
        **summary_of(done),
        "rolled_back": str(applied.directory),
        "digest_matched": applied.digest_matched,
    }
    report.finish(summary)
    written: dict[str, Any] = json.loads((out_dir / "summary.json").read_text("utf-8"))
    return written
