"""Memory: peak RSS of a full drift run at 10k, 100k and 1M users, each in a fresh process.

The stand-in's latency is off and its quotas are lifted (memory, not time, is measured here);
it runs in the same process, but holds no user (users are generated from their index), so
what grows with the pool is the run's. The state and report folders go to tmpfs (/dev/shm)
when there is one: the run fsyncs each page's rows and checkpoint, and this VM's disk would
make a 1M-user run last many minutes for nothing this table measures (files in tmpfs do not
count in the process's RSS). The report itself is written in full (users.jsonl, users.csv).

    .venv/bin/python -m bench.memory [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import UNLIMITED_RATES, bench_policy, emit, markdown_table, run_policy


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def child(users: int, workers: int) -> dict[str, Any]:
    """One drift run in this (fresh) process; RSS before it and the peak after."""
    from bench.standin import BenchCognito
    from mfa_policy.core.engine import Mode

    cognito = BenchCognito(latency=None, quotas=None)
    pool_id = cognito.create_pool(users)
    policy = bench_policy(UNLIMITED_RATES)
    tmpfs = Path("/dev/shm")  # noqa: S108 (a private mkdtemp inside it)
    root = tempfile.mkdtemp(prefix="mfa-bench-memory-", dir=tmpfs if tmpfs.is_dir() else None)
    try:
        baseline = _status_kb("VmRSS")
        result = run_policy(
            policy, pool_id, Mode.DRIFT, client=cognito, state_dir=root, workers=workers
        )
        peak = _status_kb("VmHWM")
        report_bytes = sum(f.stat().st_size for f in result.report_dir.iterdir())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "users": result.users,
        "baseline_kb": baseline,
        "peak_kb": peak,
        "wall": result.wall,
        "cpu": result.cpu,
        "report_bytes": report_bytes,
        "reads": result.calls(("admin_get_user_auth_factors", "admin_get_user")),
        "tmpfs": tmpfs.is_dir(),
    }


def measure(users: int, workers: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", str(users), "--workers", str(workers)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.workers)))
        return 0

    started = time.perf_counter()
    results = []
    for size in args.sizes:
        result = measure(size, args.workers)
        results.append(result)
        print(
            f"  {size:,} users: peak {result['peak_kb'] / 1024:.1f} MB in {result['wall']:.0f}s",
            flush=True,
        )
    smallest = results[0]
    rows = [
        [
            f"{r['users']:,}",
            round(r["baseline_kb"] / 1024, 1),
            round(r["peak_kb"] / 1024, 1),
            round((r["peak_kb"] - r["baseline_kb"]) / 1024, 1),
            f"{r['peak_kb'] / smallest['peak_kb']:.2f}",
            round(r["wall"], 1),
            round(r["users"] / r["wall"]),
            round(r["cpu"] * 1e6 / r["users"]),
            round(r["report_bytes"] / 2**20),
        ]
        for r in results
    ]
    table = markdown_table(
        [
            "users",
            "RSS before run MB",
            "peak RSS MB",
            "growth MB",
            f"peak / peak at {smallest['users']:,}",
            "wall s",
            "users/s",
            "CPU µs/user",
            "report MB",
        ],
        rows,
    )
    largest = results[-1]
    emit(
        "memory",
        "Memory: peak RSS of a full drift run",
        table,
        [
            f"Ratio of peak RSS, {largest['users']:,} / {smallest['users']:,} users: "
            f"{largest['peak_kb'] / smallest['peak_kb']:.2f}.",
            "A fresh process per size (`python -m bench.memory --child N`); peak = VmHWM from "
            "/proc/self/status after the run, before = VmRSS after imports and set-up. "
            "The in-process bench stand-in (latency off, no quotas) is included and holds no "
            "user; `mfa-policy drift` code path (`run_locally`, 32 workers).",
            "State and report folders on tmpfs (/dev/shm): files there are not process memory; "
            "on this VM's disk the 3 fsyncs per 60-user page cap a latency-free run near "
            "2,000 users/s (irrelevant at Cognito's 120 reads/s: 2 pages/s).",
            "users/s and CPU µs/user here are with no latency and no quota, stand-in included: "
            f"the runner's own ceiling, {largest['users'] / largest['wall'] / 120:.0f}x "
            "Cognito's read quota (120/s).",
        ],
    )
    print(f"memory: {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
