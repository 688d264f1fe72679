"""The report model and its renderings: rows, counts, summary.json/.md, users.csv, text.

Pure apart from the local folder writer at the bottom. Rows never carry attributes or tokens;
a username that is an email address or a phone number is masked.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfa_policy import __version__
from mfa_policy.core.model import DRIFT_OUTCOMES, UNCONVERGED_OUTCOMES, Outcome

#: The layout of summary.json and of each users.jsonl row (report-*.schema.json beside this
#: file). Raise it when a field changes meaning or goes away; adding an optional one is fine.
SCHEMA_VERSION = 1
TOOL_VERSION = __version__
#: Row ``state_source`` values: the one read documented to count as MAU, every read, the ledger.
MAU_READ = "AdminGetUser"
READS = ("AdminGetUserAuthFactors", "GetUserAuthFactors", MAU_READ, "GetUser")
LEDGER = "ledger"

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
    #: Where before-states came from: read calls by name, "ledger", "maus_added",
    #: and "reason:<why>" per read.
    reads: Counter[str] = field(default_factory=Counter)
    #: Extra user reads sent because one went unanswered too long (also in ``api_calls``).
    hedged_reads: int = 0

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.by_outcome[row["outcome"]] += 1
        rule = row.get("rule") or "(no rule)"
        self.by_rule.setdefault(rule, Counter())[row["outcome"]] += 1
        source = row.get("state_source")
        if source:
            self.reads[source] += 1
            if row.get("read_reason"):
                self.reads[f"reason:{row['read_reason']}"] += 1
            if row.get("mau_added"):
                self.reads["maus_added"] += 1

    def cost_dict(self) -> dict[str, Any]:
        """What the run's reads cost: reads that count as MAU, and the MAUs they added."""
        mau_reads = self.reads.get(MAU_READ, 0)
        return {
            "mfa_reads": sum(self.reads.get(read, 0) for read in READS),
            "mau_reads": mau_reads,
            "maus_added": self.reads.get("maus_added", 0),
            "from_ledger": self.reads.get(LEDGER, 0),
            "read_reasons": {
                k.split(":", 1)[1]: v
                for k, v in sorted(self.reads.items())
                if k.startswith("reason:")
            },
        }

    @property
    def users(self) -> int:
        return sum(self.by_outcome.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "by_outcome": {o.value: self.by_outcome.get(o.value, 0) for o in Outcome},
            "by_rule": {rule: dict(sorted(c.items())) for rule, c in sorted(self.by_rule.items())},
            "api_calls": dict(sorted(self.api_calls.items())),
            "throttled": dict(sorted(self.throttled.items())),
            "reads": dict(sorted(self.reads.items())),
            "hedged_reads": self.hedged_reads,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Counts:
        return cls(
            by_outcome=Counter({k: v for k, v in data.get("by_outcome", {}).items() if v}),
            by_rule={k: Counter(v) for k, v in data.get("by_rule", {}).items()},
            api_calls=Counter(data.get("api_calls", {})),
            throttled=Counter(data.get("throttled", {})),
            reads=Counter(data.get("reads", {})),
            hedged_reads=int(data.get("hedged_reads", 0)),
        )


def is_drifted(counts: Counts) -> bool:
    return any(counts.by_outcome.get(o.value, 0) for o in DRIFT_OUTCOMES)


def is_unconverged(counts: Counts) -> bool:
    return any(counts.by_outcome.get(o.value, 0) for o in UNCONVERGED_OUTCOMES)


#: A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading formula character gets a ``'``."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def csv_row(row: Mapping[str, Any]) -> list[str]:
    def state(key: str) -> tuple[str, str]:
        value = row.get(key)
        if not value:
            return "", ""
        return " ".join(value["enabled"]), value.get("preferred") or ""

    request = row.get("request")
    cells = [
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
    return [csv_cell(c) for c in cells]


def jsonl_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """users.jsonl lines for these rows, each stamped with the schema and tool version."""
    stamp = {"schema_version": SCHEMA_VERSION, "tool_version": TOOL_VERSION}
    return "".join(json.dumps({**r, **stamp}, sort_keys=True) + "\n" for r in rows)


class RowsDigest:
    """sha256 and count of users.jsonl as written, fed line by line (or chunk by chunk).

    summary.json records it, so a reader (rollback) can tell rows that are exactly what the
    run wrote from rows that were edited, cut short or damaged since.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.count = 0

    def update(self, data: bytes) -> None:
        self._sha.update(data)
        self.count += data.count(b"\n")

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sha256": self._sha.hexdigest()}

    @classmethod
    def of_file(cls, path: Path) -> RowsDigest:
        digest = cls()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest


def summary_document(summary: Mapping[str, Any], rows: RowsDigest) -> dict[str, Any]:
    """summary.json as written: the run's summary, versions, and the digest of its rows."""
    return {
        **summary,
        "schema_version": SCHEMA_VERSION,
        "tool_version": TOOL_VERSION,
        "rows": rows.to_dict(),
    }


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~#])")


def md_text(value: object) -> str:
    """Text safe in a Markdown table cell or line: specials escaped, line breaks flattened."""
    flat = " ".join(str(value).splitlines())
    return _MD_SPECIAL.sub(r"\\\1", flat)


def md_code(value: object) -> str:
    """A code span that no backtick or line break in ``value`` can end early."""
    flat = " ".join(str(value).splitlines())
    fence = "`" * (max((len(m) for m in re.findall(r"`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


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
        f"Pool {md_code(summary['user_pool_id'])} · policy {md_code(summary['policy_hash'])}"
        f" · run {md_code(summary['run_id'])} · {summary['users']} users · "
        f"{md_text(summary['started_at'])} → {md_text(summary.get('ended_at') or '…')}",
        "",
        "| outcome | users |",
        "|---|---:|",
    ]
    lines += [f"| {o} | {n} |" for o, n in counts["by_outcome"].items() if n]
    if counts["by_rule"]:
        outcomes = [o for o, n in counts["by_outcome"].items() if n]
        lines += ["", "| rule | " + " | ".join(outcomes) + " |", "|---|" + "---:|" * len(outcomes)]
        for rule, per in counts["by_rule"].items():
            cells = " | ".join(str(per.get(o, 0)) for o in outcomes)
            lines.append(f"| {md_text(rule)} | {cells} |")
    lines += _cost_lines(summary, markdown=True)
    calls = counts.get("api_calls") or {}
    if calls:
        lines += ["", "API calls: " + ", ".join(f"{md_text(op)} {n}" for op, n in calls.items())]
        throttled = counts.get("throttled") or {}
        if throttled:
            lines.append(
                "Throttled: " + ", ".join(f"{md_text(op)} {n}" for op, n in throttled.items())
            )
        if counts.get("hedged_reads"):
            lines.append(f"Hedged reads (sent twice, counted above): {counts['hedged_reads']}")
    for warning in summary.get("warnings", []):
        lines.append(f"\n> warning: {md_text(warning)}")
    return "\n".join(lines) + "\n"


def render_text(summary: Mapping[str, Any]) -> str:
    counts = summary["counts"]
    lines = [
        f"{summary['mode']} of {summary['user_pool_id']}: {_verdict(summary)} "
        f"({summary['users']} users, policy {summary['policy_hash']})"
    ]
    width = max((len(o) for o in counts["by_outcome"]), default=0)
    lines += [f"  {o:<{width}}  {n}" for o, n in counts["by_outcome"].items() if n]
    lines += _cost_lines(summary, markdown=False)
    calls = counts.get("api_calls") or {}
    if calls:
        lines.append("  api calls: " + ", ".join(f"{op}={n}" for op, n in calls.items()))
        if counts.get("hedged_reads"):
            lines.append(f"  hedged reads (sent twice, counted above): {counts['hedged_reads']}")
    lines += [f"  warning: {w}" for w in summary.get("warnings", [])]
    if summary.get("report_dir"):
        lines.append(f"  report: {summary['report_dir']}")
    return "\n".join(lines) + "\n"


def _cost_lines(summary: Mapping[str, Any], *, markdown: bool) -> list[str]:
    cost = summary.get("cost")
    if not cost:
        return []
    ledger = summary.get("ledger") or {}
    how = "full read" if ledger.get("full_read", True) else "incremental (state ledger)"
    text = (
        f"MFA reads: {cost['mfa_reads']} ({how}); {cost['mau_reads']} with AdminGetUser, "
        f"which counts as MAU; MAUs added: {cost['maus_added']} (read and not yet active "
        f"this month); {cost['from_ledger']} decided from the ledger"
    )
    return ["", text] if markdown else [f"  {text}"]


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
        document = summary_document(summary, RowsDigest.of_file(self.jsonl))
        # summary.md first: summary.json is what marks the report finished.
        (self.directory / "summary.md").write_text(render_markdown(document), "utf-8")
        path = self.directory / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def rows(self) -> Iterable[dict[str, Any]]:
        with open(self.jsonl, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
