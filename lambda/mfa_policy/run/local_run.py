"""Wiring for runs on this machine (the CLI and the demo): state folder, local report folder.

A run holds its pool's lock (``PoolLock``: one in the per-user lock folder, which every state
folder of this user shares, and one in the state folder) from before it reads a checkpoint
until its summary is written, so two runs on one pool never interleave writes or reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mfa_policy.aws.cloudtrail import DEFAULT_LOOKUPS_PER_SECOND
from mfa_policy.aws.tokens import TokenSource
from mfa_policy.core.engine import Mode
from mfa_policy.core.policy import Policy
from mfa_policy.core.report import LocalReport
from mfa_policy.exceptions import RunError
from mfa_policy.run.groups import FileGroupSnapshot
from mfa_policy.run.ledger import SqliteLedger
from mfa_policy.run.runner import (
    ADMIN,
    DEFAULT_WORKERS,
    QuotaShareSettings,
    Row,
    execute_slice,
    new_run_id,
    now_iso,
    summary_of,
)
from mfa_policy.run.state import (
    Checkpoint,
    IntentJournal,
    PoolLock,
    PoolLocked,
    StateFolder,
    check_run_id,
    ensure_writable_dir,
    user_lock_dir,
)

DEFAULT_STATE_DIR = ".mfa-policy"


@dataclass(frozen=True)
class LocalRun:
    summary: dict[str, Any]
    report_dir: Path


def pool_lock(user_pool_id: str, run_id: str, mode: str, state_dir: str | Path | None) -> PoolLock:
    """The lock every local run and rollback of this pool takes."""
    folders = [user_lock_dir()]
    if state_dir is not None:
        folders.append(StateFolder(state_dir).lock_dir())
    return PoolLock(user_pool_id, run_id, mode, folders)


def _is_unreported(checkpoint: Checkpoint) -> bool:
    """Done, but killed before summary.json was written: resuming writes it."""
    return checkpoint.done and not (Path(checkpoint.report_uri) / "summary.json").exists()


def require_fresh_report_folder(
    path: Path, hint: str = "choose a new folder, or --resume the run that wrote it"
) -> None:
    """A report folder holds exactly one run: refuse one that holds anything already."""
    if path.exists() and not path.is_dir():
        raise RunError(f"report folder {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise RunError(
            f"report folder {path} is not empty; a report folder holds exactly one run: {hint}"
        )


def run_locally(
    policy: Policy,
    user_pool_id: str,
    mode: Mode,
    *,
    client: Any,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    report_dir: str | Path | None = None,
    auth: str = ADMIN,
    tokens: TokenSource | None = None,
    resume: str | bool = False,
    workers: int = DEFAULT_WORKERS,
    keep_going: Callable[[], bool] = lambda: True,
    on_rows: Callable[[list[Row]], None] | None = None,
    wait: float = 0.0,
    on_wait: Callable[[PoolLocked], None] | None = None,
    cloudtrail: Any | None = None,
    full: bool = False,
    lookups_per_second: float = DEFAULT_LOOKUPS_PER_SECOND,
    quota_share: QuotaShareSettings | None = None,
) -> LocalRun:
    """Run (or resume) ``mode`` over the pool; returns the summary, complete or not.

    Refuses (RunError) while another run holds the pool, unless ``wait`` seconds is enough
    for it to end. With a ``cloudtrail`` client the run keeps the pool's state ledger in the
    state folder and reads only users who can have changed (``full`` reads everyone); without
    one it reads every in-scope user and keeps no ledger.
    """
    if workers < 1:
        raise RunError(f"workers must be at least 1, not {workers}")
    state = StateFolder(state_dir)
    state.check_writable()  # before any lock or request: a run must be able to checkpoint
    if isinstance(resume, str):
        check_run_id(resume)
    run_id = resume if isinstance(resume, str) else new_run_id(mode.value)
    lock = pool_lock(user_pool_id, run_id, mode.value, state_dir)
    lock.acquire(wait, on_wait)
    try:
        return _run_holding(
            lock,
            state,
            policy,
            user_pool_id,
            mode,
            client=client,
            run_id=run_id,
            report_dir=report_dir,
            auth=auth,
            tokens=tokens,
            resume=resume,
            workers=workers,
            keep_going=keep_going,
            on_rows=on_rows,
            cloudtrail=cloudtrail,
            full=full,
            lookups_per_second=lookups_per_second,
            quota_share=quota_share,
        )
    finally:
        lock.release()  # exceptions and Ctrl-C too; the kernel does it on SIGKILL


def _run_holding(
    lock: PoolLock,
    state: StateFolder,
    policy: Policy,
    user_pool_id: str,
    mode: Mode,
    *,
    client: Any,
    run_id: str,
    report_dir: str | Path | None,
    auth: str,
    tokens: TokenSource | None,
    resume: str | bool,
    workers: int,
    keep_going: Callable[[], bool],
    on_rows: Callable[[list[Row]], None] | None,
    cloudtrail: Any | None,
    full: bool,
    lookups_per_second: float,
    quota_share: QuotaShareSettings | None,
) -> LocalRun:
    checkpoint = None
    if resume:
        checkpoint = (
            state.load(resume)
            if isinstance(resume, str)
            else state.latest_unfinished(user_pool_id, mode.value, _is_unreported)
        )
        if checkpoint is None:
            what = (
                f"run {resume}"
                if isinstance(resume, str)
                else f"unfinished {mode.value} run of {user_pool_id}"
            )
            raise RunError(f"nothing to resume: no {what} in {state.root}")
        if checkpoint.user_pool_id != user_pool_id or checkpoint.mode != mode.value:
            raise RunError(
                f"run {checkpoint.run_id} is a {checkpoint.mode} of "
                f"{checkpoint.user_pool_id}, not a {mode.value} of {user_pool_id}"
            )
        if report_dir is not None and (
            Path(report_dir).resolve() != Path(checkpoint.report_uri).resolve()
        ):
            raise RunError(
                f"run {checkpoint.run_id} writes its report to {checkpoint.report_uri}, "
                f"not to --report-dir {report_dir}; a report folder holds exactly one run"
            )
        run_id = checkpoint.run_id
        lock.rename(run_id)
        report = _report_folder(checkpoint.report_uri)
    else:
        directory = Path(report_dir) if report_dir else state.root / "reports" / run_id
        require_fresh_report_folder(directory)
        report = _report_folder(directory)

    if checkpoint is not None and _is_unreported(checkpoint):
        return LocalRun(_finish_unreported(state, report, checkpoint), report.directory)

    # The pool's lock (held here) also keeps two runs from updating one ledger at once.
    ledger = (
        SqliteLedger(state.ledger_db(user_pool_id), user_pool_id)
        if cloudtrail is not None
        else None
    )
    try:
        checkpoint = execute_slice(
            client,
            policy,
            user_pool_id,
            mode=mode,
            report=report,
            probe_db=state.probe_db(user_pool_id),
            journal=IntentJournal(state.run_dir(run_id) / "intents.jsonl", run_id=run_id),
            group_snapshot=FileGroupSnapshot(state.run_dir(run_id) / "groups.json"),
            checkpoint=checkpoint,
            run_id=run_id,
            keep_going=keep_going,
            save_checkpoint=state.save,
            auth=auth,
            tokens=tokens,
            workers=workers,
            on_rows=on_rows,
            ledger=ledger,
            cloudtrail=cloudtrail,
            full=full,
            lookups_per_second=lookups_per_second,
            quota_share=quota_share,
        )
    finally:
        if ledger is not None:
            ledger.close()
    return LocalRun(_written_summary(report, checkpoint), report.directory)


def _finish_unreported(
    state: StateFolder, report: LocalReport, checkpoint: Checkpoint
) -> dict[str, Any]:
    """The last page was committed but the summary never written: drop rows past the last
    commit, then write the summary the uninterrupted run would have."""
    report.truncate(checkpoint.report)
    if checkpoint.ended_at is None:
        checkpoint = replace(checkpoint, ended_at=now_iso())
        state.save(checkpoint)
    report.finish(summary_of(checkpoint))
    return _written_summary(report, checkpoint)


def _written_summary(report: LocalReport, checkpoint: Checkpoint) -> dict[str, Any]:
    """summary.json as written (with its versions and row digest) once the run is done."""
    path = report.directory / "summary.json"
    if checkpoint.done and path.exists():
        written: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return written
    return summary_of(checkpoint)


def _report_folder(directory: str | Path) -> LocalReport:
    path = Path(directory)
    ensure_writable_dir(path, "report folder")
    try:
        return LocalReport(path)
    except OSError as exc:
        raise RunError(f"cannot write the report folder {path}: {exc.strerror or exc}") from None
