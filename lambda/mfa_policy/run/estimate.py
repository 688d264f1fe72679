"""`drift --estimate`: what a drift would read, the MAUs it would add, and how long it would take,
before anything is read.

It lists the pool (ListUsers and ListUsersInGroup are not MAU-billed), brings a copy of the
state ledger up to date with CloudTrail, and asks ``needs_read`` about every user, as the run
would. The ledger itself is left as it was.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mfa_policy.aws.cloudtrail import DEFAULT_LOOKUPS_PER_SECOND, CloudTrailFeed
from mfa_policy.aws.gateway import PAGE_SIZE, CognitoGateway
from mfa_policy.core.engine import out_of_scope
from mfa_policy.core.ledger import active_in, month_of, needs_read
from mfa_policy.core.policy import Policy
from mfa_policy.run.ledger import SqliteLedger, sync_feed
from mfa_policy.run.runner import DEFAULT_SKEW_SECONDS, as_user, preflight, rate_limiter_for
from mfa_policy.run.state import StateFolder


def estimate_drift(
    client: Any,
    policy: Policy,
    user_pool_id: str,
    *,
    state_dir: str | Path,
    cloudtrail: Any | None,
    full: bool = False,
    lookups_per_second: float = DEFAULT_LOOKUPS_PER_SECOND,
) -> dict[str, Any]:
    gateway = CognitoGateway(client, user_pool_id, limiter=rate_limiter_for(policy))
    _, warnings = preflight(gateway, policy)
    source = StateFolder(state_dir).ledger_db(user_pool_id)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "ledger.sqlite"
        if source.exists():
            # The WAL holds the latest rows until a checkpoint; the ledger closes with one.
            shutil.copyfile(source, copy)
        ledger = SqliteLedger(copy, user_pool_id)
        try:
            feed = (
                CloudTrailFeed(
                    cloudtrail,
                    user_pool_id,
                    counters=gateway.counters,
                    lookups_per_second=lookups_per_second,
                )
                if cloudtrail is not None
                else None
            )
            now = time.time()
            sync = sync_feed(ledger, feed, now=now, full_requested=full)
            warnings += sync.warnings
            month = month_of(now)
            groups = {
                g: frozenset(gateway.group_members(g)) for g in sorted(policy.groups_referenced)
            }
            listed = in_scope = reads = maus_added = 0
            reasons: dict[str, int] = {}
            token: str | None = None
            while True:
                page = gateway.list_users_page(token)
                entries = ledger.get_many(u.sub for u in page.users)
                for user in page.users:
                    listed += 1
                    member_of = frozenset(g for g, m in groups.items() if user.username in m)
                    if out_of_scope(policy, as_user(user, member_of)) is not None:
                        continue
                    in_scope += 1
                    entry = entries.get(user.sub)
                    reason = needs_read(
                        user, entry, full=sync.full, skew_seconds=DEFAULT_SKEW_SECONDS
                    )
                    if reason is None:
                        continue
                    reads += 1
                    reasons[reason.value] = reasons.get(reason.value, 0) + 1
                    if not active_in(entry, month):
                        maus_added += 1
                token = page.next_token
                if token is None:
                    break
        finally:
            ledger.close()
    limits = policy.rate_limits
    pages = math.ceil(listed / PAGE_SIZE) + sum(
        math.ceil(len(m) / PAGE_SIZE) or 1 for m in groups.values()
    )
    # Listing and reads overlap (two pages in flight); the CloudTrail lookups come first.
    seconds = sync.lookups / lookups_per_second + max(
        pages / limits.user_list, reads / limits.user_read
    )
    return {
        "user_pool_id": user_pool_id,
        "users": listed,
        "in_scope": in_scope,
        "reads": reads,
        # Runs read with AdminGetUserAuthFactors, which is not documented to count as MAU;
        # where the caller may not use it they fall back to AdminGetUser, which does.
        "read_operation": "AdminGetUserAuthFactors",
        "mau_reads": 0,
        "maus_added": 0,
        "maus_added_with_admin_get_user": maus_added,
        "read_reasons": dict(sorted(reasons.items())),
        "full_read": sync.full,
        "reason": sync.reason,
        "cloudtrail_lookups": sync.lookups,
        "estimated_seconds": round(seconds, 1),
        "warnings": warnings,
    }


def render_estimate(estimate: dict[str, Any]) -> str:
    lines = [
        f"drift estimate for {estimate['user_pool_id']}: {estimate['reads']} of "
        f"{estimate['in_scope']} in-scope users would be read ({estimate['users']} listed; "
        f"{'full read' if estimate['full_read'] else 'incremental'}, {estimate['reason']})",
        f"  MAUs added: {estimate['maus_added']}: reads use {estimate['read_operation']}, "
        "which is not documented to count as MAU; a run that falls back to AdminGetUser (no "
        "permission for the other) would add "
        f"{estimate['maus_added_with_admin_get_user']} (users already active this month add "
        "none)",
        f"  duration: about {estimate['estimated_seconds']} s at the policy's rate limits",
    ]
    if estimate["read_reasons"]:
        lines.append("  why: " + ", ".join(f"{k} {v}" for k, v in estimate["read_reasons"].items()))
    lines += [f"  warning: {w}" for w in estimate["warnings"]]
    return "\n".join(lines) + "\n"
