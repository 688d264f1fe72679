"""API economy: Cognito calls per user, by operation, from the gateway's counters.

In-process bench stand-in with no latency and no quota (call counts do not depend on time):
a drift and two applies of a `mixed` pool (every MFA state), an apply of a pool where everyone
has a verified authenticator but prefers SMS, and a drift and an apply of a compliant pool.

    .venv/bin/python -m bench.economy [--users 6000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    LISTS,
    READS,
    UNLIMITED_RATES,
    WRITES,
    RunResult,
    bench_policy,
    emit,
    markdown_table,
    run_policy,
)
from bench.standin import BenchCognito
from mfa_policy.core.engine import Mode

OUT_OF_SCOPE = ("excluded", "skipped")


def _rows(report_dir: Path) -> list[dict[str, Any]]:
    with open(report_dir / "users.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def measure(
    cognito: BenchCognito, pool_id: str, mode: Mode, state_dir: Path, label: str
) -> list[Any]:
    cognito.reset_counters()
    result: RunResult = run_policy(
        bench_policy(UNLIMITED_RATES), pool_id, mode, client=cognito, state_dir=state_dir
    )
    rows = _rows(result.report_dir)
    stats = cognito.stats()
    users = result.users
    in_scope = users - sum(result.outcome(o) for o in OUT_OF_SCOPE)
    lists = result.calls(("list_users",))
    reads = result.calls(READS)
    accepted = stats["writes_accepted"]
    rejected = result.calls(WRITES) - accepted
    # Users an accepted write changed: `changed`, and partial changes (a fallback after a
    # rejected probe, the rest of a blocked user's change).
    written = sum(1 for r in rows if r.get("after") and r["after"] != r["before"])
    fixable = result.outcome("changed") if mode is Mode.APPLY else result.outcome("would_change")
    max_writes = max((int(k) for k in stats["users_by_writes"]), default=0)
    return [
        label,
        users,
        in_scope,
        lists,
        round(users / lists, 1),
        result.calls(("list_users_in_group",)),
        reads,
        f"{reads / in_scope:.2f}",
        fixable,
        accepted,
        f"{accepted / written:.2f}" if written else "-",
        rejected,
        max_writes,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.economy")
    parser.add_argument("--users", type=int, default=6000)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cognito = BenchCognito(latency=None, quotas=None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mfa-bench-economy-") as tmp:
        root = Path(tmp)
        mixed = cognito.create_pool(args.users, mix="mixed")
        state = root / "mixed"
        rows.append(measure(cognito, mixed, Mode.DRIFT, state, "drift, mixed pool"))
        rows.append(measure(cognito, mixed, Mode.APPLY, state, "apply, mixed pool"))
        rows.append(measure(cognito, mixed, Mode.APPLY, state, "apply again at once"))
        rows.append(measure(cognito, mixed, Mode.DRIFT, state, "drift after apply"))
        verified = cognito.create_pool(args.users, mix="verified")
        rows.append(
            measure(cognito, verified, Mode.APPLY, root / "verified", "apply, all verified")
        )
        compliant = cognito.create_pool(args.users, mix="compliant")
        rows.append(
            measure(cognito, compliant, Mode.DRIFT, root / "compliant", "drift, compliant pool")
        )
        rows.append(
            measure(cognito, compliant, Mode.APPLY, root / "compliant", "apply, compliant pool")
        )
    table = markdown_table(
        [
            "run",
            "users",
            "in scope",
            "ListUsers",
            "users per ListUsers",
            "ListUsersInGroup",
            "user reads",
            "reads per in-scope user",
            "fixable (would_change / changed)",
            "writes accepted",
            "accepted writes per user changed",
            "writes rejected (TOTP probes)",
            "max accepted writes on one user",
        ],
        rows,
    )
    emit(
        "economy",
        "API economy: Cognito calls per user",
        table,
        [
            f"Pools of {args.users:,} users in the in-process bench stand-in; counts from the "
            "gateway's counters (the run's summary.json), accepted writes from the stand-in. "
            f"Operations: {', '.join(LISTS + READS + WRITES)} (plus one "
            "GetUserPoolMfaConfig per run).",
            "In scope = not excluded and not skipped (federated, disabled): those outcomes do "
            "not depend on MFA state, so those users are never read.",
            "'users changed' counts every user an accepted write changed: `changed`, and the "
            "partial changes of `needs_enrollment`/`blocked` users (SMS enabled after a "
            "rejected TOTP probe).",
            "A TOTP probe is the write that enables TOTP for a user who may have verified an "
            "authenticator without enabling it (Cognito shows no sign of it otherwise); a "
            "rejected probe is remembered and not repeated for 7 days, so an apply repeated at "
            "once makes no write.",
            "ListUsersInGroup: one page per 60 members of the groups the policy names (60 "
            "admins, 20 service accounts here), whatever the pool size.",
        ],
    )
    print(f"economy: {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
