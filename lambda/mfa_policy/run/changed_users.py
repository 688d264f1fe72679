"""Re-evaluate (or fix) just the users a CloudTrail event names, within a minute of the change.

EventBridge delivers CloudTrail's Cognito events (this needs a trail: "To record events with a
detail-type value of AWS API Call via CloudTrail, a CloudTrail trail with logging enabled is
required"). Each named user is found with one filtered ListUsers (not MAU-billed), read fresh
(the event says they changed), decided, written in apply mode, and recorded in the ledger, so
the next scheduled drift does not read them again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mfa_policy.aws.gateway import CognitoGateway
from mfa_policy.core.engine import Mode
from mfa_policy.core.ledger import Ledger
from mfa_policy.core.policy import Policy
from mfa_policy.run.runner import Row, Runner, preflight, rate_limiter_for
from mfa_policy.run.state import IntentJournal, ProbeMemory


class _NoReport:
    """Rows go back to the caller (the handler logs them); nothing is written per event."""

    uri = ""

    def sizes(self) -> dict[str, int]:
        return {}

    def truncate(self, sizes: Mapping[str, int]) -> None:
        return None

    def append(self, rows: list[Row]) -> None:
        return None

    def finish(self, summary: Mapping[str, Any]) -> None:
        return None


def subs_of_event(event: Mapping[str, Any], user_pool_id: str) -> list[str]:
    """The user an EventBridge "AWS API Call via CloudTrail" event is about, if of this pool."""
    detail = event.get("detail") or {}
    if detail.get("errorCode"):
        return []  # a refused call changed nothing
    additional = detail.get("additionalEventData") or {}
    request = detail.get("requestParameters") or {}
    pool = additional.get("userPoolId") or request.get("userPoolId")
    if pool and pool != user_pool_id:
        return []
    sub = additional.get("sub") or additional.get("userSub")
    return [sub] if isinstance(sub, str) and sub else []


def evaluate_changed(
    client: Any,
    policy: Policy,
    user_pool_id: str,
    subs: Iterable[str],
    *,
    mode: Mode,
    ledger: Ledger,
    probe_db: Path,
) -> list[Row]:
    subs = list(dict.fromkeys(subs))
    if not subs:
        return []
    gateway = CognitoGateway(client, user_pool_id, limiter=rate_limiter_for(policy))
    preflight(gateway, policy)
    probes = ProbeMemory(probe_db, reprobe_after_days=policy.enrollment.reprobe_after_days)
    try:
        with tempfile.TemporaryDirectory(prefix="mfa-policy-event-") as work:
            runner = Runner(
                gateway,
                policy,
                mode=mode,
                report=_NoReport(),
                probes=probes,
                journal=IntentJournal(Path(work) / "intents.jsonl"),
                save_checkpoint=lambda _: None,
                ledger=ledger,
                changed_subs=frozenset(subs),
            )
            groups = runner.group_members()
            entries = ledger.get_many(subs)
            rows = []
            for sub in subs:
                listed = gateway.find_by_sub(sub)
                if listed is None:
                    continue  # deleted, or another pool's user
                row, observation = runner.process_user(listed, groups, entries.get(sub))
                if observation is not None:
                    ledger.record([observation])
                rows.append(row)
            return rows
    finally:
        probes.close()
