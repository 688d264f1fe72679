"""`mfa-policy demo`: drift → apply → drift on a seeded pool in an embedded Cognito stand-in.

Everything runs on 127.0.0.1 through the same code path as `drift` and `apply` against AWS;
only the endpoint differs.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mfa_policy.cli.progress import Progress
from mfa_policy.core.engine import Mode
from mfa_policy.core.model import DRIFT_OUTCOMES, MfaState, Outcome
from mfa_policy.core.policy import Policy, RateLimits, parse_policy
from mfa_policy.core.report import LocalReport
from mfa_policy.run.local_run import run_locally

DEMO_POLICY = {
    "version": 1,
    "exclude": {"usernames": ["breakglass-1", "breakglass-2"], "groups": ["service-accounts"]},
    "include_disabled": False,
    "rules": [
        {
            "name": "admins",
            "match": {"groups": ["admins"]},
            "factors": {"totp": "preferred", "sms": "disabled"},
        },
        {"name": "everyone", "match": "all", "factors": {"totp": "preferred", "sms": "enabled"}},
    ],
    "enrollment": {"probe": True, "reprobe_after_days": 7},
}

#: The stand-in shares its quota with nobody, so the demo spends more of it than a real run should.
DEMO_RATES = RateLimits(user_read=400, user_resource_update=200, user_list=100)


def demo_policy(rates: RateLimits = DEMO_RATES) -> Policy:
    return replace(parse_policy(DEMO_POLICY, source="demo policy"), rate_limits=rates)


def run_demo(
    *,
    users: int = 1000,
    report_root: str | Path = "mfa-policy-demo",
    console: Console | None = None,
    quiet: bool = False,
) -> int:
    from mfa_policy.standin import CognitoStandIn, seed_demo_pool

    console = console or Console()
    policy = demo_policy()
    root = Path(report_root)
    with CognitoStandIn() as standin, tempfile.TemporaryDirectory() as state_dir:
        pool = seed_demo_pool(standin, n=users)
        console.print(
            f"[bold]Cognito stand-in[/] at {standin.endpoint_url}: pool "
            f"{pool.pool_id} seeded with {pool.total} users"
        )
        console.print(_mix_table(pool.counts))
        (root).mkdir(parents=True, exist_ok=True)
        (root / "policy.json").write_text(json.dumps(DEMO_POLICY, indent=2) + "\n", "utf-8")
        console.print(f"policy {policy.hash}: {root / 'policy.json'}\n")

        summaries = []
        for step, mode in enumerate((Mode.DRIFT, Mode.APPLY, Mode.DRIFT), start=1):
            with Progress(f"{step}. {mode.value}", total=pool.total, quiet=quiet) as progress:
                result = run_locally(
                    policy,
                    pool.pool_id,
                    mode,
                    client=standin.client(),
                    state_dir=state_dir,
                    report_dir=root / f"{step}-{mode.value}",
                    keep_going=progress.keep_going,
                    on_rows=progress.advance,
                )
            if not result.summary["complete"]:
                console.print("demo stopped")
                return 130
            summaries.append(result.summary)
            console.print(_summary_table(f"{step}. {mode.value}", result.summary))
            calls = result.summary["counts"]["api_calls"]
            console.print("API calls: " + ", ".join(f"{op} {n}" for op, n in calls.items()) + "\n")
            if mode is Mode.APPLY:
                console.print(_examples_table(LocalReport(result.report_dir)))
    first, applied, last = summaries
    legacy = sum(1 for row in LocalReport(root / "1-drift").rows() if row.get("legacy_sms"))
    if legacy:
        console.print(
            f"{legacy} users had SMS MFA through the legacy MFAOptions only: read as SMS on "
            "(legacy_sms in their rows), and apply set it with the current API.\n"
        )
    writes = applied["counts"]["api_calls"].get("admin_set_user_mfa_preference", 0)
    console.print(
        f"drift found {_drifted(first)} users out of policy; apply changed "
        f"{applied['counts']['by_outcome'][Outcome.CHANGED]} ({writes} write requests, TOTP "
        "probes Cognito rejected included); "
        f"drift now finds {_drifted(last)} (users who must enroll or re-verify an "
        "authenticator, lack a phone number, or whom the change could lock out: guarded).\n"
        f"Reports: {root}/1-drift, {root}/2-apply, {root}/3-drift "
        "(summary.md, summary.json, users.jsonl, users.csv)"
    )
    return 0


def _drifted(summary: dict[str, Any]) -> int:
    counts = summary["counts"]["by_outcome"]
    return sum(counts[o] for o in DRIFT_OUTCOMES)


def _mix_table(counts: dict[str, int]) -> Table:
    table = Table(title="seeded users", show_edge=False)
    table.add_column("kind")
    table.add_column("users", justify="right")
    for kind, count in counts.items():
        table.add_row(kind.replace("_", " "), str(count))
    return table


def _summary_table(title: str, summary: dict[str, Any]) -> Table:
    counts = summary["counts"]
    table = Table(title=f"{title}: {summary['users']} users", show_edge=False)
    table.add_column("outcome")
    table.add_column("users", justify="right")
    for outcome, n in counts["by_outcome"].items():
        if n:
            table.add_row(outcome, str(n))
    return table


def _examples_table(report: LocalReport) -> Table:
    table = Table(title="one user per outcome", show_edge=False)
    for column in ("user", "rule", "outcome", "before", "after", "reason"):
        table.add_column(column)
    seen: set[str] = set()
    for row in report.rows():
        if row["outcome"] in seen:
            continue
        seen.add(row["outcome"])
        table.add_row(
            row["username"],
            row.get("rule") or "-",
            row["outcome"],
            _state(row.get("before")),
            _state(row.get("after")),
            _shorten(row["reason"]),
        )
    return table


def _state(state: dict[str, Any] | None) -> str:
    return str(MfaState.from_dict(state)) if state else "-"


def _shorten(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
