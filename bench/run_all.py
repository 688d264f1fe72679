"""Run every benchmark and print every table (also written to bench/out/*.md and all.md).

.venv/bin/python -m bench.run_all          # about 10 minutes on 2 cores
.venv/bin/python bench/run_all.py --quick  # smaller pools and runs, about 3 minutes
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run_all.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import economy, engine, memory, throughput
from bench.common import OUT, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument(
        "--only", nargs="+", choices=["engine", "economy", "memory", "throughput"], default=None
    )
    args = parser.parse_args(argv)
    quick = args.quick
    benchmarks: list[tuple[str, Callable[[list[str]], int], list[str]]] = [
        ("engine", engine.main, ["--users", "5000"] if quick else []),
        ("economy", economy.main, ["--users", "1200"] if quick else []),
        ("memory", memory.main, ["--sizes", "10000", "100000"] if quick else []),
        (
            "throughput",
            throughput.main,
            ["--seconds", "8", "--workers", "16", "--baseline-seconds", "3", "--cli-users", "2"]
            if quick
            else [],
        ),
    ]
    timings = []
    for name, run, bench_args in benchmarks:
        if args.only and name not in args.only:
            continue
        print(f"## {name} {' '.join(bench_args)}".rstrip(), flush=True)
        start = time.perf_counter()
        code = run(bench_args)
        timings.append((name, time.perf_counter() - start))
        if code:
            return code
    order = [
        "throughput-scan",
        "throughput-migration",
        "throughput-unmanaged",
        "throughput-live-app",
        "throughput-weak-peers",
        "economy",
        "memory",
        "engine",
    ]
    sections = [OUT / f"{name}.md" for name in order if (OUT / f"{name}.md").exists()]
    text = (
        f"Machine: {machine()}; load average at the end {os.getloadavg()[0]:.1f}.\n\n"
        "Command: `.venv/bin/python -m bench.run_all"
        f"{' --quick' if quick else ''}`\n\n"
        + "\n".join(s.read_text("utf-8") for s in sections)
        + "\nRuntime: "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings)
        + "\n"
    )
    (OUT / "all.md").write_text(text, "utf-8")
    print("Runtime: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings))
    print(f"All tables: {OUT / 'all.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
