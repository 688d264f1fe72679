"""Throughput: a drift scan and a migration to TOTP-preferred, against quotas and latency.

mfa-policy (the CLI's code path, a real boto3 client over HTTP) runs side by side with what
operators script today, all against the same bench stand-in, in its own process on 127.0.0.1,
enforcing Cognito's quotas (UserRead 120/s, UserResourceUpdate 25/s, UserList 30/s) with 30-80 ms
of latency per request:

- (a) the AWS CLI in a shell loop: one ``aws cognito-idp admin-get-user`` (scan) or
  ``admin-set-user-mfa-preference --software-token-mfa-settings Enabled=true,PreferredMfa=true``
  (migration) process per user, after one ``list-users``;
- (b) a sequential boto3 script: list, then per user ``admin_get_user`` and, when TOTP is not
  preferred, ``admin_set_user_mfa_preference``; standard retries, no concurrency.

The baselines run on a subset of users and are extrapolated (their rate is constant: one user
after another). "Fraction of budget" is the requests of the bottleneck quota category that
Cognito accepted (throttled ones excluded) divided by (configured rate x wall time).

    .venv/bin/python -m bench.throughput [--seconds 40] [--rates both|quota|default]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

from bench.common import (
    DEFAULT_RATES,
    LISTS,
    QUOTA_RATES,
    READS,
    UNLIMITED_RATES,
    WRITES,
    bench_policy,
    emit,
    markdown_table,
    run_policy,
)
from bench.standin import BenchCognito, Quotas, RemoteStandIn
from mfa_policy.core.engine import Mode
from mfa_policy.core.policy import RateLimits

LATENCY = (0.030, 0.080)
TOTP = "SOFTWARE_TOKEN_MFA"
MILLION = 1_000_000


@dataclass
class Measured:
    """One tool's run: users done, wall time, requests by category."""

    tool: str
    users: int
    wall: float
    reads: int = 0
    writes: int = 0  # requests, accepted or rejected by a rule (not throttled)
    writes_rejected: int = 0
    throttled: int = 0
    failed: int = 0
    extrapolated: bool = False

    @property
    def users_per_second(self) -> float:
        return self.users / self.wall

    def fraction(self, requests: int, rate: float) -> float:
        return requests / (rate * self.wall)


# ---- (b) the sequential boto3 script ---------------------------------------------------------


def sequential_script(client: Any, pool_id: str, users: int, *, migrate: bool) -> Measured:
    """What an operator writes first: no concurrency, standard retries."""
    reads = writes = rejected = done = 0
    start = time.perf_counter()
    paginator = client.get_paginator("list_users")
    for page in paginator.paginate(UserPoolId=pool_id, PaginationConfig={"PageSize": 60}):
        for listed in page["Users"]:
            user = client.admin_get_user(UserPoolId=pool_id, Username=listed["Username"])
            reads += 1
            if migrate and user.get("PreferredMfaSetting") != TOTP:
                writes += 1
                try:
                    client.admin_set_user_mfa_preference(
                        UserPoolId=pool_id,
                        Username=listed["Username"],
                        SoftwareTokenMfaSettings={"Enabled": True, "PreferredMfa": True},
                    )
                except ClientError:
                    rejected += 1
            done += 1
            if done >= users:
                break
        if done >= users:
            break
    wall = time.perf_counter() - start
    return Measured(
        "sequential boto3 script", done, wall, reads, writes, rejected, extrapolated=True
    )


# ---- (a) the AWS CLI loop --------------------------------------------------------------------


def find_aws_cli() -> str | None:
    """The `aws` executable itself (a pyenv shim would add its own start-up to every call)."""
    found = shutil.which("aws")
    if found and "/.pyenv/shims/" in found and shutil.which("pyenv"):
        real = subprocess.run(["pyenv", "which", "aws"], capture_output=True, text=True)
        if real.returncode == 0 and real.stdout.strip():
            return real.stdout.strip()
    return found


def aws_cli_loop(
    endpoint_url: str, pool_id: str, users: int, *, migrate: bool
) -> tuple[Measured, str]:
    """`aws cognito-idp list-users`, then one `aws` process per user, as a shell loop does.

    Without the AWS CLI on PATH, each user costs one `python -c "import boto3; ..."` process
    instead: a lower bound of the CLI's start-up (it imports botocore too, and more).
    """
    aws = find_aws_cli()
    with tempfile.TemporaryDirectory() as home:
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 (dummy)
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=str(Path(home) / "config"),
            AWS_SHARED_CREDENTIALS_FILE=str(Path(home) / "credentials"),
            AWS_PAGER="",
        )
        start = time.perf_counter()
        if aws is not None:
            version = subprocess.run([aws, "--version"], capture_output=True, text=True, env=env)
            label = f"AWS CLI loop ({(version.stdout or version.stderr).split()[0]})"
            listed = subprocess.run(
                [
                    *(aws, "cognito-idp", "list-users", "--user-pool-id", pool_id),
                    *("--max-items", str(users), "--query", "Users[].Username"),
                    *("--output", "text", "--endpoint-url", endpoint_url),
                ],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            names = listed.stdout.split()[:users]
        else:
            label = "python+boto3 process per user (lower bound of the AWS CLI, not installed)"
            names = [f"user-{i + 1:07d}" for i in range(users)]
        rejected = 0
        for name in names:
            if aws is not None:
                args = [aws, "cognito-idp", "--endpoint-url", endpoint_url]
                if migrate:
                    args += ["admin-set-user-mfa-preference", "--user-pool-id", pool_id]
                    args += ["--username", name]
                    args += ["--software-token-mfa-settings", "Enabled=true,PreferredMfa=true"]
                else:
                    args += ["admin-get-user", "--user-pool-id", pool_id, "--username", name]
            else:
                call = (
                    f"admin_set_user_mfa_preference(UserPoolId={pool_id!r}, Username={name!r}, "
                    "SoftwareTokenMfaSettings={'Enabled': True, 'PreferredMfa': True})"
                    if migrate
                    else f"admin_get_user(UserPoolId={pool_id!r}, Username={name!r})"
                )
                args = [
                    sys.executable,
                    "-c",
                    "import boto3; boto3.client('cognito-idp', endpoint_url="
                    f"{endpoint_url!r}).{call}",
                ]
            done = subprocess.run(args, capture_output=True, env=env)
            rejected += done.returncode != 0
        wall = time.perf_counter() - start
    reads = 0 if migrate else len(names)
    writes = len(names) if migrate else 0
    measured = Measured("", len(names), wall, reads, writes, rejected, extrapolated=True)
    measured.tool = label
    return measured, label


# ---- mfa-policy --------------------------------------------------------------------------------


def mfa_policy_run(
    remote: RemoteStandIn, pool_id: str, mode: Mode, rates: RateLimits, label: str
) -> Measured:
    remote.reset_counters()
    result = run_policy(bench_policy(rates), pool_id, mode, client=remote.client())
    server = remote.stats()
    rejected = server["rejected"].get("InvalidParameterException", 0)
    return Measured(
        label,
        result.users,
        result.wall,
        reads=result.accepted(READS),
        writes=result.accepted(WRITES),
        writes_rejected=rejected,
        throttled=result.throttled(READS + WRITES + LISTS),
        failed=result.outcome("failed"),
    )


class LiveApp:
    """The application that shares the quota: AdminGetUser at a steady rate on its own pool."""

    def __init__(self, remote: RemoteStandIn, rate: float) -> None:
        self.client = remote.client(config=Config(retries={"mode": "standard"}))
        self.pool_id = remote.create_pool(1000)
        self.rate = rate
        self.ok = self.throttled = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _one(self, index: int) -> None:
        try:
            self.client.admin_get_user(
                UserPoolId=self.pool_id, Username=f"user-{index % 1000 + 1:07d}"
            )
            with self._lock:
                self.ok += 1
        except ClientError:
            with self._lock:
                self.throttled += 1

    def _loop(self) -> None:
        due, index = time.monotonic(), 0
        while not self._stop.is_set():
            due += 1 / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            threading.Thread(target=self._one, args=(index,), daemon=True).start()
            index += 1

    def __enter__(self) -> LiveApp:
        self._thread.start()
        time.sleep(1)  # the app is running before the scan starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_requests_per_user(mix: str, users: int = 3000) -> float:
    """Write requests (probes included) an apply sends per user of a pool with this mix."""
    cognito = BenchCognito(latency=None, quotas=None)
    pool_id = cognito.create_pool(users, mix=mix)
    result = run_policy(bench_policy(UNLIMITED_RATES), pool_id, Mode.APPLY, client=cognito)
    return result.calls(WRITES) / users


# ---- the tables --------------------------------------------------------------------------------


def _hours(users_per_second: float) -> str:
    seconds = MILLION / users_per_second
    return f"{seconds / 3600:.1f} h" if seconds < 72 * 3600 else f"{seconds / 86400:.1f} days"


def rows_for(runs: list[tuple[Measured, float, str]], category: str) -> list[list[Any]]:
    rows = []
    for m, rate, rates_label in runs:
        requests = m.reads if category == "read" else m.writes
        rows.append(
            [
                m.tool,
                rates_label,
                f"{m.users:,}" + (" (subset)" if m.extrapolated else ""),
                round(m.wall, 1),
                round(m.users_per_second, 1),
                round(requests / m.wall, 1),
                f"{m.fraction(requests, rate):.2f}",
                m.throttled,
                m.failed,
                _hours(m.users_per_second),
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument(
        "--seconds", type=float, default=40, help="target length of each mfa-policy run"
    )
    parser.add_argument("--rates", choices=["both", "quota", "default"], default="both")
    parser.add_argument("--baseline-seconds", type=float, default=20)
    parser.add_argument("--cli-users", type=int, default=20)
    parser.add_argument(
        "--live-app", type=float, default=30, help="reads/s of the app sharing the quota (0: off)"
    )
    args = parser.parse_args(argv)

    configs: list[tuple[str, RateLimits]] = []
    if args.rates in ("both", "quota"):
        configs.append(("= quotas 120/25/30", QUOTA_RATES))
    if args.rates in ("both", "default"):
        configs.append(("defaults 60/15/15", DEFAULT_RATES))

    per_user_writes = write_requests_per_user("mixed")
    scans: list[tuple[Measured, float, str]] = []
    migrations: list[tuple[Measured, float, str]] = []
    started = time.perf_counter()
    with RemoteStandIn(latency=LATENCY, quotas=Quotas()) as remote:
        for label, rates in configs:
            users = int(rates.user_read * args.seconds)
            pool_id = remote.create_pool(users, mix="mixed")
            run = mfa_policy_run(remote, pool_id, Mode.DRIFT, rates, "mfa-policy drift")
            scans.append((run, rates.user_read, label))
            print(f"  drift, rate_limits {label}: {run.users} users in {run.wall:.1f}s", flush=True)

            users = int(rates.user_resource_update * args.seconds / per_user_writes)
            pool_id = remote.create_pool(users, mix="mixed")
            run = mfa_policy_run(remote, pool_id, Mode.APPLY, rates, "mfa-policy apply")
            migrations.append((run, rates.user_resource_update, label))
            print(f"  apply, rate_limits {label}: {run.users} users in {run.wall:.1f}s", flush=True)

        if args.live_app:
            # The quota is shared with the live application: mfa-policy, configured for all of
            # it, must find and use what is left without starving the app.
            users = int((QUOTA_RATES.user_read - args.live_app) * args.seconds)
            pool_id = remote.create_pool(users, mix="mixed")
            with LiveApp(remote, args.live_app) as app:
                run = mfa_policy_run(remote, pool_id, Mode.DRIFT, QUOTA_RATES, "mfa-policy drift")
            run.tool += f" beside a live app reading {args.live_app:g}/s"
            available = QUOTA_RATES.user_read - args.live_app
            scans.insert(1, (run, available, f"= quotas 120/25/30 ({available:g}/s left)"))
            live_note = (
                f"Live-app row: another client reads {args.live_app:g} users/s from the same "
                f"UserRead quota during the scan; its fraction is of the {available:g}/s left. "
                f"The app's own requests: {app.ok:,} answered, {app.throttled:,} throttled "
                "(after standard retries)."
            )
            print(f"  drift beside a live app: {run.users} users in {run.wall:.1f}s", flush=True)

        budget = QUOTA_RATES
        sequential = remote.client(config=Config(retries={"mode": "standard"}))
        for migrate, runs, rate in (
            (False, scans, budget.user_read),
            (True, migrations, budget.user_resource_update),
        ):
            pool_id = remote.create_pool(10_000, mix="mixed")
            remote.reset_counters()
            users = int(args.baseline_seconds / (0.055 * (1 + migrate * 0.85)))
            m = sequential_script(sequential, pool_id, users, migrate=migrate)
            runs.append((m, rate, "none (1 request at a time)"))
            print(
                f"  sequential boto3 ({'apply' if migrate else 'drift'}): {m.users} users",
                flush=True,
            )

            pool_id = remote.create_pool(10_000, mix="mixed")
            m, _ = aws_cli_loop(remote.endpoint_url, pool_id, args.cli_users, migrate=migrate)
            runs.append((m, rate, "none (1 process per user)"))
            print(f"  {m.tool}: {m.users} users in {m.wall:.1f}s", flush=True)

    headers = [
        "tool",
        "rate_limits",
        "users",
        "wall s",
        "users/s",
        "{cat} req/s",
        "fraction of budget",
        "throttled",
        "failed",
        "1M users",
    ]
    notes_common = [
        "Stand-in: `bench/standin.py` in its own process on 127.0.0.1, enforcing Cognito's "
        "default quotas (UserRead 120/s, UserResourceUpdate 25/s, UserList 30/s; a token bucket "
        "per category, 1 s of burst) and 30-80 ms of latency per request; pool mix `mixed` "
        "(every MFA state; 60 admins, 20 service accounts).",
        "mfa-policy runs the CLI's code path (`run_locally`, 32 workers, a boto3 client with "
        "mfa-policy's retry config) over the whole pool; `rate_limits` is the policy's setting. "
        "Fraction of budget = accepted requests in the bottleneck category / (configured rate x "
        "wall time, start-up and preflight included).",
        "Baselines run on a subset and are extrapolated (their rate does not depend on the pool "
        "size); their fraction is of the same budget as the mfa-policy row above them "
        "(Cognito's quota).",
    ]
    scan_table = markdown_table(
        [h.format(cat="AdminGetUser") for h in headers], rows_for(scans, "read")
    )
    emit(
        "throughput-scan",
        "Drift scan: read every user's MFA state (bottleneck: UserRead)",
        scan_table,
        [*notes_common, live_note] if args.live_app else notes_common,
    )
    migration_table = markdown_table(
        [h.format(cat="write") for h in headers], rows_for(migrations, "write")
    )
    emit(
        "throughput-migration",
        "Migration to TOTP-preferred: apply (bottleneck: UserResourceUpdate)",
        migration_table,
        [
            *notes_common,
            f"An apply of this mix sends {per_user_writes:.2f} write requests per user "
            "(TOTP probes that Cognito rejects for users without a verified authenticator "
            "count against the quota too); write req/s counts them all.",
            "The AWS CLI and boto3 loops write TOTP-preferred blindly: Cognito rejects the "
            "write for every user without a verified authenticator, and they neither fall "
            "back (SMS for users with a phone) nor disable SMS for admins.",
        ],
    )
    print(f"throughput: {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
