"""What the benchmarks share: the bench policy, the run wrapper, markdown tables, bench/out/."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfa_policy.cli.demo import demo_policy
from mfa_policy.core.engine import Mode
from mfa_policy.core.policy import Policy, RateLimits
from mfa_policy.run.local_run import run_locally

OUT = Path(__file__).resolve().parent / "out"

#: Cognito's default quotas, and the policy file's default rate_limits.
QUOTA_RATES = RateLimits(user_read=120, user_resource_update=25, user_list=30)
DEFAULT_RATES = RateLimits()
UNLIMITED_RATES = RateLimits(user_read=1e6, user_resource_update=1e6, user_list=1e6)

#: gateway operation -> quota category, for the budget arithmetic.
#: Every user read: the auth-factors reads by default, AdminGetUser/GetUser as the fallback.
READS = ("admin_get_user_auth_factors", "get_user_auth_factors", "admin_get_user", "get_user")
WRITES = ("admin_set_user_mfa_preference", "set_user_mfa_preference")
LISTS = ("list_users", "list_users_in_group")


def bench_policy(rates: RateLimits = QUOTA_RATES) -> Policy:
    """The demo's policy (DESIGN.md's example without the staged rollout: the whole pool to
    TOTP-preferred, admins also off SMS) at the given rates; the bench pools have no
    break-glass users, so its username exclusions change nothing here."""
    return demo_policy(rates)


@dataclass
class RunResult:
    mode: str
    wall: float
    cpu: float
    summary: dict[str, Any]
    report_dir: Path

    @property
    def counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = self.summary["counts"]
        return counts

    def calls(self, operations: Sequence[str]) -> int:
        return sum(self.counts["api_calls"].get(op, 0) for op in operations)

    def throttled(self, operations: Sequence[str]) -> int:
        return sum(self.counts["throttled"].get(op, 0) for op in operations)

    def accepted(self, operations: Sequence[str]) -> int:
        """Requests that were not throttled (Cognito's quota counts the rejected ones too)."""
        return self.calls(operations) - self.throttled(operations)

    def outcome(self, name: str) -> int:
        return int(self.counts["by_outcome"].get(name, 0))

    @property
    def users(self) -> int:
        return int(self.summary["users"])


def run_policy(
    policy: Policy,
    pool_id: str,
    mode: Mode,
    *,
    client: Any,
    state_dir: str | Path | None = None,
    workers: int = 32,
) -> RunResult:
    """One mfa-policy run through the CLI's code path (`run_locally`), timed."""
    with tempfile.TemporaryDirectory(prefix="mfa-bench-") as tmp:
        state = Path(state_dir) if state_dir is not None else Path(tmp)
        start, cpu = time.perf_counter(), time.process_time()
        result = run_locally(
            policy,
            pool_id,
            mode,
            client=client,
            state_dir=state,
            workers=workers,
        )
        return RunResult(
            mode.value,
            time.perf_counter() - start,
            time.process_time() - cpu,
            result.summary,
            result.report_dir,
        )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(_is_number(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if num else c.ljust(w)
                for c, w, num in zip(row, widths, numeric, strict=True)
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if n else "-" * (w + 2)
            for w, n in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("%"))
    except ValueError:
        return text in ("-", "")
    return True


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def emit(name: str, title: str, body: str, notes: Sequence[str] = ()) -> str:
    """Print a table section and write it to bench/out/NAME.md; returns the markdown."""
    text = f"### {title}\n\n{body}\n"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(text, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.md").write_text(text, "utf-8")
    return text
