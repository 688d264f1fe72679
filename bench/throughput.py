"""Throughput: drift scans and migrations, end to end, on three kinds of strict service.

Every tool runs as its own process against the bench stand-in (its own process on 127.0.0.1),
timed from process start to exit. The stand-in enforces Cognito's quotas (UserRead 120/s,
UserResourceUpdate 25/s, UserList 30/s) with 30-80 ms of latency, in three modes:

- ``burst``: a token bucket per category holding one second of requests (the old stand-in);
- ``no burst``: a bucket of one token (requests at least 1/rate apart, judged by the time each
  left its client), as Cognito documents its quotas: requests per second, no burst;
- ``no burst + tail``: the same, and 1% of requests take 1-2 s (p99 about 1 s).

Tools: mfa-policy (the `mfa-policy` CLI, `bench.cli_child`), a competent concurrent script
(`bench.competent`: thread pool + botocore adaptive retries) at several worker counts, and the
weak peers (a sequential boto3 script, an AWS CLI loop: subsets, extrapolated). A bursty live
application (65-115 AdminGetUser/s, its rate changing every 1-4 s) shares the UserRead quota in
the last table, alone and beside mfa-policy with and without ``--share-quota``.

    .venv/bin/python -m bench.throughput [--seconds 30] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bench.common import (
    DEFAULT_RATES,
    QUOTA_RATES,
    UNLIMITED_RATES,
    WRITES,
    bench_policy,
    emit,
    markdown_table,
    run_policy,
)
from bench.standin import BenchCognito, Quotas, RemoteStandIn
from mfa_policy.core.engine import Mode
from mfa_policy.core.policy import Policy, RateLimits, parse_policy

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


# ---- mfa-policy and the competent script, each in its own process ---------------------------

MODES = {
    "burst": {"quotas": Quotas(), "tail": None},
    "no burst": {"quotas": Quotas(burst=0), "tail": None},
    "no burst + tail": {"quotas": Quotas(burst=0), "tail": (0.01, 1.0, 2.0)},
}
CHILD_ENV = dict(
    os.environ,
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 (dummy)
    AWS_DEFAULT_REGION="us-east-1",
)


def set_mode(remote: RemoteStandIn, mode: str) -> None:
    settings = MODES[mode]
    remote.settings(quotas=settings["quotas"].__dict__, tail=settings["tail"])


@dataclass
class Run:
    """One process's run, counted at the stand-in (every request, throttled or not)."""

    tool: str
    settings: str
    users: int
    wall: float
    calls: dict[str, int]
    throttled: dict[str, int]
    writes_rejected: int
    failed: int
    gaps: dict[str, Any]
    metric_requests: int = 0
    cpu: float = 0.0
    spans: dict[str, list[float]] | None = None

    def in_run(self, category: str, accepted: int, budget: float) -> str:
        """Accepted / (budget x the span from the category's first request to its last)."""
        span = (self.spans or {}).get(category)
        if not span or span[1] <= span[0]:
            return "-"
        return f"{accepted / (budget * (span[1] - span[0])):.2f}"

    def accepted(self, operation: str) -> int:
        return self.calls.get(operation, 0) - self.throttled.get(operation, 0)

    @property
    def requests(self) -> int:
        return sum(self.calls.values())

    @property
    def throttle_share(self) -> float:
        return sum(self.throttled.values()) / max(1, self.requests)


def _measure(remote: RemoteStandIn, args: list[str]) -> tuple[float, float, str, dict[str, Any]]:
    """(wall s, CPU s of the child process, its stdout, the stand-in's counters)."""
    remote.reset_counters()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=CHILD_ENV,
        cwd=Path(__file__).resolve().parent.parent,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode not in (0, 2):  # 2: drift found (or apply unconverged), not an error
        raise RuntimeError(f"{args[:3]} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, cpu, done.stdout, remote.stats()


def mfa_policy_process(
    remote: RemoteStandIn,
    pool_id: str,
    mode: Mode,
    rates: RateLimits,
    workdir: Path,
    *,
    share_quota: float | None = None,
    usage_period: int = 60,
    policy: Policy | None = None,
) -> Run:
    policy = policy or bench_policy(rates)
    policy_file = workdir / f"policy-{policy.hash}.json"
    policy_file.write_text(json.dumps(policy.to_dict()), "utf-8")
    args = ["-m", "bench.cli_child"]
    if share_quota is not None:
        args += ["--cloudwatch-standin", remote.endpoint_url]
    args += [mode.value, "-c", str(policy_file), "--user-pool-id", pool_id]
    args += ["--state-dir", str(workdir / f"state-{pool_id}"), "--format", "json"]
    args += ["--endpoint-url", remote.endpoint_url]
    if share_quota is not None:
        args += ["--share-quota", str(share_quota), "--usage-period", str(usage_period)]
    wall, cpu, stdout, stats = _measure(remote, args)
    summary = json.loads(stdout)
    return Run(
        "mfa-policy " + mode.value,
        f"rate_limits {rates.user_read:g}/{rates.user_resource_update:g}/{rates.user_list:g}",
        int(summary["users"]),
        wall,
        stats["calls"],
        stats["throttled"],
        stats["rejected"].get("InvalidParameterException", 0),
        int(summary["counts"]["by_outcome"].get("failed", 0)),
        stats.get("arrival_gaps_ms", {}),
        int(stats.get("metric_requests", 0)),
        cpu,
        stats.get("spans"),
    )


def competent_process(
    remote: RemoteStandIn, pool_id: str, mode: Mode, workers: int, retries: str = "adaptive"
) -> Run:
    args = ["-m", "bench.competent", remote.endpoint_url, pool_id, mode.value, str(workers)]
    args.append(retries)
    wall, cpu, stdout, stats = _measure(remote, args)
    counts = json.loads(stdout.strip().splitlines()[-1])
    return Run(
        f"competent script {mode.value}",
        f"{workers} workers, {retries} retries",
        int(counts["users"]),
        wall,
        stats["calls"],
        stats["throttled"],
        stats["rejected"].get("InvalidParameterException", 0),
        int(counts["failed"]),
        stats.get("arrival_gaps_ms", {}),
        0,
        cpu,
        stats.get("spans"),
    )


# ---- the bursty live application ----------------------------------------------------------------


class BurstyApp:
    """The application sharing UserRead: AdminGetUser on its own pool at a rate that changes
    every 1-4 s between 65 and 115/s (seeded), each request retried up to 3 attempts with
    exponential backoff, as botocore's standard mode does. Counts attempts, throttled
    attempts, requests lost (every attempt throttled) and latency per request."""

    def __init__(self, remote: RemoteStandIn, *, low: float = 65, high: float = 115) -> None:
        self.client = remote.client(
            config=Config(retries={"total_max_attempts": 1}, max_pool_connections=64)
        )
        self._pool = ThreadPoolExecutor(64, thread_name_prefix="app")
        self.pool_id = remote.create_pool(1000)
        self.low, self.high = low, high
        self.attempts = self.throttled = self.lost = 0
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _one(self, index: int) -> None:
        start = time.perf_counter()
        for attempt in range(3):
            with self._lock:
                self.attempts += 1
            try:
                self.client.admin_get_user(
                    UserPoolId=self.pool_id, Username=f"user-{index % 1000 + 1:07d}"
                )
                break
            except (ClientError, BotoCoreError):
                with self._lock:
                    self.throttled += 1
                if attempt == 2:
                    with self._lock:
                        self.lost += 1
                    return
                time.sleep(random.uniform(0, 0.05 * 2**attempt))
        with self._lock:
            self.latencies.append(time.perf_counter() - start)

    def _loop(self) -> None:
        rng = random.Random(14)
        due, index = time.monotonic(), 0
        rate, change_at = self.low, due
        while not self._stop.is_set():
            if due >= change_at:
                rate = rng.uniform(self.low, self.high)
                change_at = due + rng.uniform(1, 4)
            due += 1 / rate
            time.sleep(max(0.0, due - time.monotonic()))
            self._pool.submit(self._one, index)
            index += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def row(self, label: str, settings: str) -> list[Any]:
        return [
            label,
            settings,
            self.attempts,
            f"{self.throttled} ({self.throttled / max(1, self.attempts):.1%})",
            f"{self.lost} ({self.lost / max(1, self.attempts - self.throttled + self.lost):.2%})",
            round(self.p99() * 1000),
        ]

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(len(ordered) * 0.99)] if ordered else 0.0


def write_requests_per_user(mix: str, users: int = 3000) -> float:
    """Write requests (probes included) an apply sends per user of a pool with this mix."""
    cognito = BenchCognito(latency=None, quotas=None)
    pool_id = cognito.create_pool(users, mix=mix)
    result = run_policy(bench_policy(UNLIMITED_RATES), pool_id, Mode.APPLY, client=cognito)
    return result.calls(WRITES) / users


# ---- the tables ---------------------------------------------------------------------------------


def _hours(users_per_second: float) -> str:
    seconds = MILLION / users_per_second
    return f"{seconds / 3600:.1f} h" if seconds < 72 * 3600 else f"{seconds / 86400:.1f} days"


#: The reads of UserRead: mfa-policy reads with AdminGetUserAuthFactors, the scripts with
#: AdminGetUser.
READS = ("AdminGetUserAuthFactors", "AdminGetUser")


def scan_row(mode: str, run: Run, budget: float) -> list[Any]:
    reads = sum(run.accepted(read) for read in READS)
    return [
        mode,
        run.tool,
        run.settings,
        run.users,
        round(run.wall, 1),
        round(run.users / run.wall, 1),
        round(reads / run.wall, 1),
        f"{reads / (budget * run.wall):.2f}",
        run.in_run("user_read", reads, budget),
        f"{sum(run.throttled.values())} ({run.throttle_share:.1%})",
        run.failed,
        round(run.cpu * 1000 / max(1, run.users), 2),
        _hours(run.users / run.wall),
    ]


def migration_row(mode: str, run: Run, budget: float) -> list[Any]:
    writes = run.accepted("AdminSetUserMFAPreference")
    useful = writes - run.writes_rejected
    return [
        mode,
        run.tool,
        run.settings,
        run.users,
        round(run.wall, 1),
        round(run.users / run.wall, 1),
        round(writes / run.wall, 1),
        f"{writes / (budget * run.wall):.2f}",
        run.in_run("user_resource_update", writes, budget),
        useful,
        run.writes_rejected,
        f"{sum(run.throttled.values())} ({run.throttle_share:.1%})",
        run.failed,
        round(run.cpu * 1000 / max(1, run.users), 2),
    ]


def weak_peer_rows(remote: RemoteStandIn, seconds: float, cli_users: int) -> list[Measured]:
    sequential = remote.client(config=Config(retries={"mode": "standard"}))
    peers = []
    for migrate in (False, True):
        pool_id = remote.create_pool(10_000, mix="mixed")
        users = int(seconds / (0.055 * (1 + migrate * 0.85)))
        peers.append(sequential_script(sequential, pool_id, users, migrate=migrate))
        pool_id = remote.create_pool(10_000, mix="mixed")
        peers.append(aws_cli_loop(remote.endpoint_url, pool_id, cli_users, migrate=migrate)[0])
    return peers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument("--seconds", type=float, default=30, help="length of each run at quota")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--baseline-seconds", type=float, default=10)
    parser.add_argument("--cli-users", type=int, default=10)
    parser.add_argument("--headroom", type=float, default=10, help="--share-quota percent")
    args = parser.parse_args(argv)
    seconds = args.seconds
    per_user_writes = write_requests_per_user("mixed")
    budget = QUOTA_RATES
    scans: list[list[Any]] = []
    migrations: list[list[Any]] = []
    best_settings: tuple[int, str] = (args.workers[0], "adaptive")
    started = time.perf_counter()
    with (
        RemoteStandIn(latency=LATENCY, quotas=Quotas()) as remote,
        tempfile.TemporaryDirectory(prefix="mfa-bench-") as tmp,
    ):
        workdir = Path(tmp)
        for mode in MODES:
            set_mode(remote, mode)
            for rates in (QUOTA_RATES, DEFAULT_RATES) if mode == "no burst" else (QUOTA_RATES,):
                pool_id = remote.create_pool(int(rates.user_read * seconds), mix="mixed")
                run = mfa_policy_process(remote, pool_id, Mode.DRIFT, rates, workdir)
                scans.append(scan_row(mode, run, rates.user_read))
                print(f"  {mode}: {run.tool} {run.settings}: {run.wall:.1f} s", flush=True)
                users = int(rates.user_resource_update * seconds / per_user_writes)
                pool_id = remote.create_pool(users, mix="mixed")
                run = mfa_policy_process(remote, pool_id, Mode.APPLY, rates, workdir)
                migrations.append(migration_row(mode, run, rates.user_resource_update))
                print(f"  {mode}: {run.tool} {run.settings}: {run.wall:.1f} s", flush=True)
            if mode == "burst":
                continue
            # The competent script at several worker counts on the no-burst service, then at
            # its best one with the tail; on a pool a third the size (its rate does not depend
            # on the pool's size, and it is slow enough to take minutes otherwise).
            # Its settings: adaptive retries at each worker count, and standard retries at 16
            # workers (its best with standard retries); the best of them again with the tail.
            settings = (
                [(w, "adaptive") for w in args.workers] + [(16, "standard")]
                if mode == "no burst"
                else [best_settings]
            )
            best: tuple[float, tuple[int, str]] = (-1.0, settings[0])
            for workers, retries in settings:
                pool_id = remote.create_pool(int(budget.user_read * seconds / 3), mix="mixed")
                run = competent_process(remote, pool_id, Mode.DRIFT, workers, retries)
                scans.append(scan_row(mode, run, budget.user_read))
                best = max(best, (run.users / run.wall, (workers, retries)))
                users = int(budget.user_resource_update * seconds / per_user_writes / 3)
                pool_id = remote.create_pool(users, mix="mixed")
                run = competent_process(remote, pool_id, Mode.APPLY, workers, retries)
                migrations.append(migration_row(mode, run, budget.user_resource_update))
                print(f"  {mode}: competent script, {workers} workers, {retries}", flush=True)
            best_settings = best[1]

        # A 90%-unmanaged pool: drift reads only the users a rule manages.
        set_mode(remote, "no burst")
        unmanaged = unmanaged_run(remote, workdir, seconds)

        # The bursty live application, on the burst stand-in (a no-burst service throttles an
        # unpaced app by itself): alone, then beside mfa-policy at rate_limits = quotas.
        set_mode(remote, "burst")
        live_rows = []
        app = BurstyApp(remote)
        app.start()
        time.sleep(seconds)
        app.stop()
        live_rows.append([*app.row("app alone", "-"), "-", "-"])
        for share in (None, args.headroom):
            app = BurstyApp(remote)
            app.start()
            if share is not None:
                time.sleep(3 * USAGE_PERIOD)  # the app's history, which --share-quota reads
            pool_id = remote.create_pool(int(20 * seconds), mix="mixed")
            run = mfa_policy_process(
                remote,
                pool_id,
                Mode.DRIFT,
                QUOTA_RATES,
                workdir,
                share_quota=share,
                usage_period=USAGE_PERIOD,
            )
            app.stop()
            label = "beside mfa-policy" + (f" --share-quota {share:g}" if share else "")
            live_rows.append(
                [
                    *app.row(label, run.settings),
                    round(run.users / run.wall, 1),
                    run.metric_requests if share is not None else "-",
                ]
            )
            print(f"  live app {label}: tool {run.users} users in {run.wall:.1f} s", flush=True)

        set_mode(remote, "burst")
        weak = weak_peer_rows(remote, args.baseline_seconds, args.cli_users)

    common_notes = [
        "Every row is one process timed from its start to its exit (imports, preflight and "
        "listing included) against `bench/standin.py` in its own process on 127.0.0.1: "
        "Cognito's default quotas (UserRead 120/s, UserResourceUpdate 25/s, UserList 30/s), "
        "30-80 ms latency; pool mix `mixed`; runs scaled down to about "
        f"{seconds:g} s of the quota each (users = rate x {seconds:g} s).",
        "Modes: `burst` = a token bucket holding 1 s of requests; `no burst` = a bucket of one "
        "token (requests at least 1/rate apart by the time each left its client: every bench "
        "client stamps it, so the stand-in's own scheduling on this loaded 2-core machine does "
        "not bunch arrivals); `+ tail` = 1% of requests take 1-2 s.",
        "Fraction of budget = accepted requests in the bottleneck category / (configured rate x "
        "wall); for the competent script, of Cognito's quota. Throttled: requests the stand-in "
        "refused, and their share of all requests sent. CPU ms/user: the process's user + "
        "system CPU (start-up included) per user. First to last: the same fraction over the "
        "span from the category's first request to its last, without start-up and the "
        "listing of the first page (what a long run converges to).",
        f"Load average when the table was made: {os.getloadavg()[0]:.1f} on 2 cores shared "
        "with other work; start-up (imports) and pacing precision suffer from it.",
    ]
    scan_headers = [
        "service",
        "tool",
        "settings",
        "users",
        "wall s",
        "users/s",
        "reads/s",
        "fraction of budget",
        "first to last read",
        "throttled",
        "failed",
        "CPU ms/user",
        "1M users",
    ]
    emit(
        "throughput-scan",
        "Drift scan, end to end (bottleneck: UserRead)",
        markdown_table(scan_headers, scans),
        common_notes,
    )
    migration_headers = [
        "service",
        "tool",
        "settings",
        "users",
        "wall s",
        "users/s",
        "write/s",
        "fraction of budget",
        "first to last write",
        "useful writes",
        "rejected TOTP probes",
        "throttled",
        "failed",
        "CPU ms/user",
    ]
    emit(
        "throughput-migration",
        "Migration to TOTP-preferred, end to end (bottleneck: UserResourceUpdate)",
        markdown_table(migration_headers, migrations),
        [
            *common_notes,
            f"An apply of this mix sends {per_user_writes:.2f} write requests per user; "
            "useful writes are the accepted ones, rejected TOTP probes are the writes Cognito "
            "refused because the user has no verified authenticator (they count against the "
            "quota too). The competent script writes TOTP-preferred blindly: its rejected "
            "writes are the same kind of refusal, and it neither falls back to SMS nor "
            "disables SMS for admins.",
        ],
    )
    emit(
        "throughput-unmanaged",
        "A pool that is 90% unmanaged: only managed users are read",
        markdown_table(
            [
                "users",
                "managed (a rule matches)",
                "unmanaged",
                "MFA reads",
                "ListUsersInGroup",
                "wall s",
                "users/s",
            ],
            [unmanaged],
        ),
        [
            "Policy: one rule, for the `admins` group, which holds every tenth user of this pool; "
            "`no burst` stand-in, rate_limits = quotas. Unmanaged users are decided from the "
            "listing (outcome `unmanaged`, no read)."
        ],
    )
    emit(
        "throughput-live-app",
        "A bursty live application sharing UserRead (65-115 reads/s)",
        markdown_table(
            [
                "app",
                "mfa-policy settings",
                "app attempts",
                "app attempts throttled",
                "app requests lost",
                "app p99 ms",
                "mfa-policy users/s",
                "GetMetricData calls",
            ],
            live_rows,
        ),
        [
            "`burst` stand-in (on the no-burst one, an app that sends when its users do, "
            "unpaced, is throttled by itself). The app retries each request up to 3 attempts; "
            "a request is lost when all 3 are throttled (share: of its requests). mfa-policy "
            "runs with rate_limits = quotas (120/25/30) over a pool of "
            f"{int(20 * seconds):,} users.",
            f"`--share-quota {args.headroom:g}`: mfa-policy reads the account's CallCount/"
            "ThrottleCount (the stand-in serves them) before the run and once a period, and "
            f"keeps UserRead under quota x (1 - {args.headroom:g}%) - the app's peak rate. "
            f"The metric period is scaled from 60 s to {USAGE_PERIOD} s with the run length; "
            "the app ran 3 periods before mfa-policy started.",
        ],
    )
    emit(
        "throughput-weak-peers",
        "Weak peers (burst stand-in, subsets, extrapolated)",
        markdown_table(
            ["tool", "users", "wall s", "users/s", "1M users"],
            [
                [
                    m.tool,
                    m.users,
                    round(m.wall, 1),
                    round(m.users_per_second, 1),
                    _hours(m.users_per_second),
                ]
                for m in weak
            ],
        ),
        ["One request at a time (sequential boto3) or one process per user (AWS CLI)."],
    )
    print(f"throughput: {time.perf_counter() - started:.0f} s", flush=True)
    return 0


USAGE_PERIOD = 5


def unmanaged_run(remote: RemoteStandIn, workdir: Path, seconds: float) -> list[Any]:
    """Drift of a pool where one user in ten is managed: the policy's only rule is for the
    `admins` group, which holds every tenth user of this pool."""
    size = int(QUOTA_RATES.user_read * seconds)
    pool_id = remote.create_pool(size, mix="mixed", admins=size // 10, service_accounts=0)
    document = {
        "version": 1,
        "rules": [
            {
                "name": "admins",
                "match": {"groups": ["admins"]},
                "factors": {"totp": "preferred", "sms": "disabled"},
            }
        ],
        "rate_limits": {"user_read": 120, "user_resource_update": 25, "user_list": 30},
    }
    policy = parse_policy(document, source="bench")
    run = mfa_policy_process(remote, pool_id, Mode.DRIFT, QUOTA_RATES, workdir, policy=policy)
    managed = size // 10
    return [
        run.users,
        managed,
        run.users - managed,
        sum(run.calls.get(read, 0) for read in READS),
        run.calls.get("ListUsersInGroup", 0),
        round(run.wall, 1),
        round(run.users / run.wall, 1),
    ]


if __name__ == "__main__":
    sys.exit(main())
