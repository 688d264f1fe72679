"""Engine cost: CPU time per user of the decision and report path alone, without I/O.

Users come from the bench stand-in's `mixed` pool (every MFA state), already normalized to
`User` the way the gateway does it; each step runs over all of them in one thread and is
timed with `time.process_time` (best of several rounds).

    .venv/bin/python -m bench.engine [--users 20000]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.common import QUOTA_RATES, bench_policy, emit, markdown_table
from bench.standin import Pool
from mfa_policy.aws.gateway import attributes_of, mfa_state_of
from mfa_policy.core.engine import Mode, decide
from mfa_policy.core.model import User
from mfa_policy.core.report import csv_row
from mfa_policy.run.runner import _Outcome, row_of

TOTP = "SOFTWARE_TOKEN_MFA"


def users_of(size: int) -> tuple[list[User], list[dict[str, Any]]]:
    pool = Pool("us-east-1_engine", size)
    users, responses = [], []
    for index in range(size):
        listed, read = pool.listed(index), pool.user(index)
        attributes = attributes_of(listed["Attributes"])
        group = pool.group_of(index)
        users.append(
            User(
                username=listed["Username"],
                sub=attributes["sub"],
                status=read["UserStatus"],
                enabled=read["Enabled"],
                attributes=attributes,
                groups=frozenset({group} if group else ()),
                mfa=mfa_state_of(read)[0],
            )
        )
        responses.append(read)
    return users, responses


def best_of(rounds: int, step: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    policy = bench_policy(QUOTA_RATES)
    users, responses = users_of(args.users)
    drift = [decide(policy, u, Mode.DRIFT) for u in users]
    apply = [decide(policy, u, Mode.APPLY, probe_allowed=True) for u in users]
    rows = [row_of(_Outcome(d, after=d.target), Mode.APPLY) for d in apply]

    def decide_all(mode: Mode) -> Callable[[], None]:
        def step() -> None:
            for u in users:
                decide(policy, u, mode, probe_allowed=True)

        return step

    def rows_all() -> None:
        for d in apply:
            row_of(_Outcome(d, after=d.target), Mode.APPLY)

    def json_all() -> None:
        for r in rows:
            json.dumps(r, sort_keys=True)

    def csv_all() -> None:
        writer = csv.writer(io.StringIO(), lineterminator="\n")
        writer.writerows(csv_row(r) for r in rows)

    def whole_path() -> None:
        writer = csv.writer(io.StringIO(), lineterminator="\n")
        for u in users:
            d = decide(policy, u, Mode.APPLY, probe_allowed=True)
            r = row_of(_Outcome(d, after=d.target), Mode.APPLY)
            json.dumps(r, sort_keys=True)
            writer.writerow(csv_row(r))

    def naive() -> None:
        # The sequential script's whole "engine": write TOTP-preferred to whoever lacks it.
        for response in responses:
            if response.get("PreferredMfaSetting") != TOTP:
                json.dumps({"Enabled": True, "PreferredMfa": True})

    steps: list[tuple[str, Callable[[], object]]] = [
        ("decide, drift", decide_all(Mode.DRIFT)),
        ("decide, apply (probe allowed)", decide_all(Mode.APPLY)),
        ("report row (row_of)", rows_all),
        ("users.jsonl line (json.dumps, sorted keys)", json_all),
        ("users.csv line (csv_row + csv.writer)", csv_all),
        ("whole path: decide + row + JSON + CSV", whole_path),
        ("naive check (the sequential script's `!= TOTP`)", naive),
    ]
    table_rows = []
    for name, step in steps:
        seconds = best_of(args.rounds, step)
        per_user = seconds * 1e6 / len(users)
        table_rows.append(
            [
                name,
                round(per_user, 1),
                round(len(users) / seconds),
                f"{per_user * QUOTA_RATES.user_read / 1e4:.2f}%",
            ]
        )
    changes = sum(1 for d in apply if d.request is not None)
    emit(
        "engine",
        "Engine cost: CPU per user of the decision and report path (no I/O)",
        markdown_table(
            ["step", "CPU µs/user", "users/s on one core", "share of one core at 120 users/s"],
            table_rows,
        ),
        [
            f"{len(users):,} users of the `mixed` pool ({changes:,} with a write to send in "
            f"apply; {sum(1 for d in drift if d.outcome.value == 'compliant'):,} compliant); "
            f"best of {args.rounds} rounds, one thread, `time.process_time`.",
            "The last column is the CPU this path takes at Cognito's UserRead quota "
            "(120 users/s): the engine is not what bounds a run; the quota is.",
            "The naive check is not equivalent (no rules, groups, exclusions, preconditions, "
            "last-factor guard or minimal writes, no report); it is there for scale.",
        ],
    )
    print(f"engine: {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
