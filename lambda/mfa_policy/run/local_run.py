"""Wiring for runs on this machine (the CLI and the demo): state folder, local report folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfa_policy.aws.tokens import TokenSource
from mfa_policy.core.engine import Mode
from mfa_policy.core.policy import Policy
from mfa_policy.core.report import LocalReport
from mfa_policy.exceptions import RunError
from mfa_policy.run.runner import ADMIN, Row, execute_slice, new_run_id, summary_of
from mfa_policy.run.state import IntentJournal, StateFolder

DEFAULT_STATE_DIR = ".mfa-policy"


@dataclass(frozen=True)
class LocalRun:
    summary: dict[str, Any]
    report_dir: Path


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
    workers: int = 32,
    keep_going: Callable[[], bool] = lambda: True,
    on_rows: Callable[[list[Row]], None] | None = None,
) -> LocalRun:
    """Run (or resume) ``mode`` over the pool; returns the summary, complete or not."""
    state = StateFolder(state_dir)
    checkpoint = None
    if resume:
        checkpoint = (
            state.load(resume)
            if isinstance(resume, str)
            else state.latest_unfinished(user_pool_id, mode.value)
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
        run_id = checkpoint.run_id
        report = LocalReport(checkpoint.report_uri)
    else:
        run_id = new_run_id(mode.value)
        report = LocalReport(report_dir or state.root / "reports" / run_id)

    checkpoint = execute_slice(
        client,
        policy,
        user_pool_id,
        mode=mode,
        report=report,
        probe_db=state.probe_db(user_pool_id),
        journal=IntentJournal(state.run_dir(run_id) / "intents.jsonl"),
        checkpoint=checkpoint,
        run_id=run_id,
        keep_going=keep_going,
        save_checkpoint=state.save,
        auth=auth,
        tokens=tokens,
        workers=workers,
        on_rows=on_rows,
    )
    return LocalRun(summary_of(checkpoint), report.directory)
