"""The report model and its renderings: rows, counts, summary.json/.md, users.csv, text.

Pure apart from the local folder writer at the bottom. Rows never carry attributes or tokens;
a username that is an email address or a phone number is masked.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfa_policy.core.model import DRIFT_OUTCOMES, UNCONVERGED_OUTCOMES, Outcome

_EMAIL = re.compile(r"^([^@\s])[^@\s]*(@[^@\s]+)$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{6,}[0-9]$")

CSV_COLUMNS = (
    "username",
    "sub",
    "rule",
    "outcome",
    "reason",
    "before_enabled",
    "before_preferred",
    "desired_enabled",
    "desired_preferred",
    "after_enabled",
    "after_preferred",
    "request",
    "error",
)


def mask_email(value: str) -> str:
    """``alice@example.com`` → ``a***@example.com``; a value that is not an address → ``***``."""
    match = _EMAIL.match(value)
    return f"{match.group(1)}***{match.group(2)}" if match else "***"


def mask_phone(value: str) -> str:
    """``+15550100123`` → ``+1******0123``: enough to recognise, not enough to call."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < 7:
        return "*" * len(value)
    plus = "+" if value.startswith("+") else ""
    return f"{plus}{digits[:1]}{'*' * (len(digits) - 5)}{digits[-4:]}"


def mask_identifier(value: str) -> str:
    """Mask a username that is an email address or a phone number; leave others as they are."""
    if _EMAIL.match(value):
        return mask_email(value)
    if _PHONE.match(value):
        return mask_phone(value)
    return value


def mask_attribute(name: str, value: str) -> str:
    """An attribute's value as it may be printed."""
    if name == "email":
        return mask_email(value)
    if name == "phone_number":
        return mask_phone(value)
    return mask_identifier(value)


@dataclass
class Counts:
    """Outcome counts overall and per rule, plus API calls; merges across slices."""

    by_outcome: Counter[str] = field(default_factory=Counter)
    by_rule: dict[str, Counter[str]] = field(default_factory=dict)
    api_calls: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.by_outcome[row["outcome"]] += 1
        rule = row.get("rule") or "(no rule)"
        self.by_rule.setdefault(rule, Counter())[row["outcome"]] += 1

    @property
    def users(self) -> int:
        return sum(self.by_outcome.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "by_outcome": {o.value: self.by_outcome.get(o.value, 0) for o in Outcome},
            "by_rule": {rule: dict(sorted(c.items())) for rule, c in sorted(self.by_rule.items())},
            "api_calls": dict(sorted(self.api_calls.items())),
            "throttled": dict(sorted(self.throttled.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Counts:
        return cls(
            by_outcome=Counter({k: v for k, v in data.get("by_outcome", {}).items() if v}),
            by_rule={k: Counter(v) for k, v in data.get("by_rule", {}).items()},
            api_calls=Counter(data.get("api_calls", {})),
            throttled=Counter(data.get("throttled", {})),
        )


def is_drifted(counts: Counts) -> bool:
    return any(counts.by_outcome.get(o.value, 0) for o in DRIFT_OUTCOMES)


def is_unconverged(counts: Counts) -> bool:
    return any(counts.by_outcome.get(o.value, 0) for o in UNCONVERGED_OUTCOMES)


def csv_row(row: Mapping[str, Any]) -> list[str]:
    def state(key: str) -> tuple[str, str]:
        value = row.get(key)
        if not value:
            return "", ""
        return " ".join(value["enabled"]), value.get("preferred") or ""

    request = row.get("request")
    return [
        row["username"],
        row.get("sub") or "",
        row.get("rule") or "",
        row["outcome"],
        row.get("reason") or "",
        *state("before"),
        *state("desired"),
        *state("after"),
        json.dumps(request, sort_keys=True) if request else "",
        row.get("error") or "",
    ]


def jsonl_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """users.jsonl lines for these rows."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """users.csv lines for these rows (no header)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(csv_row(r) for r in rows)
    return buffer.getvalue()


def render_markdown(summary: Mapping[str, Any]) -> str:
    counts = summary["counts"]
    verdict = _verdict(summary)
    lines = [
        f"## mfa-policy {summary['mode']}: {verdict}",
        "",
        f"Pool `{summary['user_pool_id']}` · policy `{summary['policy_hash']}` · run "
        f"`{summary['run_id']}` · {summary['users']} users · {summary['started_at']} → "
        f"{summary.get('ended_at') or '…'}",
        "",
        "| outcome | users |",
        "|---|---:|",
    ]
    lines += [f"| {o} | {n} |" for o, n in counts["by_outcome"].items() if n]
    if counts["by_rule"]:
        outcomes = [o for o, n in counts["by_outcome"].items() if n]
        lines += ["", "| rule | " + " | ".join(outcomes) + " |", "|---|" + "---:|" * len(outcomes)]
        for rule, per in counts["by_rule"].items():
            lines.append(f"| {rule} | " + " | ".join(str(per.get(o, 0)) for o in outcomes) + " |")
    calls = counts.get("api_calls") or {}
    if calls:
        lines += ["", "API calls: " + ", ".join(f"{op} {n}" for op, n in calls.items())]
        throttled = counts.get("throttled") or {}
        if throttled:
            lines.append("Throttled: " + ", ".join(f"{op} {n}" for op, n in throttled.items()))
    for warning in summary.get("warnings", []):
        lines.append(f"\n> warning: {warning}")
    return "\n".join(lines) + "\n"


def render_text(summary: Mapping[str, Any]) -> str:
    counts = summary["counts"]
    lines = [
        f"{summary['mode']} of {summary['user_pool_id']}: {_verdict(summary)} "
        f"({summary['users']} users, policy {summary['policy_hash']})"
    ]
    width = max((len(o) for o in counts["by_outcome"]), default=0)
    lines += [f"  {o:<{width}}  {n}" for o, n in counts["by_outcome"].items() if n]
    calls = counts.get("api_calls") or {}
    if calls:
        lines.append("  api calls: " + ", ".join(f"{op}={n}" for op, n in calls.items()))
    lines += [f"  warning: {w}" for w in summary.get("warnings", [])]
    if summary.get("report_dir"):
        lines.append(f"  report: {summary['report_dir']}")
    return "\n".join(lines) + "\n"


def _verdict(summary: Mapping[str, Any]) -> str:
    counts = Counts.from_dict(summary["counts"])
    if summary["mode"] == "drift":
        return "drift found" if is_drifted(counts) else "compliant"
    if summary["mode"] == "apply":
        return "not converged" if is_unconverged(counts) else "converged"
    return "incomplete" if counts.by_outcome.get(Outcome.FAILED.value) else "done"


class LocalReport:
    """A report folder: rows appended page by page, summary written at the end.

    ``sizes()`` and ``truncate()`` let a resumed run drop rows written after its last
    checkpoint, so an interrupted run's report ends up the same as an uninterrupted one's.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.directory / "users.jsonl"
        self.csv = self.directory / "users.csv"
        if not self.csv.exists():
            self.csv.write_text(",".join(CSV_COLUMNS) + "\n", "utf-8")
        self.jsonl.touch()

    @property
    def uri(self) -> str:
        return str(self.directory)

    def sizes(self) -> dict[str, int]:
        return {"users.jsonl": self.jsonl.stat().st_size, "users.csv": self.csv.stat().st_size}

    def truncate(self, sizes: Mapping[str, int]) -> None:
        for name, size in sizes.items():
            with open(self.directory / name, "r+b") as f:
                f.truncate(size)

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        for path, text in ((self.jsonl, jsonl_text(rows)), (self.csv, csv_text(rows))):
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())

    def finish(self, summary: Mapping[str, Any]) -> None:
        (self.directory / "summary.json").write_text(
            json.dumps(summary, indent=2, sort_keys=True) + "\n", "utf-8"
        )
        (self.directory / "summary.md").write_text(render_markdown(summary), "utf-8")

    def rows(self) -> Iterable[dict[str, Any]]:
        with open(self.jsonl, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
