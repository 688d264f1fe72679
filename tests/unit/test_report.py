"""The report renderings: Markdown cells escaped, CSV cells safe from formula injection, rows
and summaries stamped with versions, and the JSON Schemas of both shipped and in step."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import re
import tomllib
from importlib import resources
from pathlib import Path

from mfa_policy import __version__
from mfa_policy.core.model import Outcome
from mfa_policy.core.report import (
    CSV_COLUMNS,
    RowsDigest,
    csv_text,
    jsonl_text,
    render_markdown,
    summary_document,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ("report-row.schema.json", "report-summary.schema.json")


def summary_with_rules(*rules: str) -> dict:
    by_outcome = {o.value: 0 for o in Outcome}
    by_outcome.update(changed=2, compliant=1)
    return {
        "run_id": "r1",
        "user_pool_id": "us-east-1_pool",
        "mode": "apply",
        "policy_hash": "abc",
        "users": 3,
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T00:01:00+00:00",
        "counts": {
            "by_outcome": by_outcome,
            "by_rule": {r: {"changed": 1} for r in rules},
            "api_calls": {},
            "throttled": {},
        },
        "warnings": ["line one\nline two | with a pipe"],
    }


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_a_rule_named_with_a_pipe_keeps_the_markdown_table_whole():
    text = render_markdown(summary_with_rules("a|b", "plain"))
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    header = next(r for r in rows if r.startswith("| rule |"))
    rule_rows = [r for r in rows if r.startswith(("| a\\|b |", "| plain |"))]
    assert len(rule_rows) == 2
    for row in rule_rows:
        assert unescaped_pipes(row) == unescaped_pipes(header), row
    assert "| a\\|b |" in text


def test_a_warning_with_a_line_break_stays_one_quoted_line():
    text = render_markdown(summary_with_rules("plain"))
    warning = [line for line in text.splitlines() if "warning" in line]
    assert warning == ["> warning: line one line two \\| with a pipe"]


def test_a_backtick_in_a_run_id_does_not_end_its_code_span():
    summary = {**summary_with_rules("plain"), "run_id": "evil` **bold**"}
    assert "``evil` **bold**``" in render_markdown(summary)


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_neutralized():
    row = {
        "username": '=HYPERLINK("http://x.example","click")',
        "sub": "+1",
        "rule": "-2+3",
        "outcome": "changed",
        "reason": "@SUM(A1)",
        "before": None,
        "desired": None,
        "request": None,
        "error": "\tTAB",
    }
    cells = dict(zip(CSV_COLUMNS, next(csv.reader(io.StringIO(csv_text([row])))), strict=True))
    assert cells["username"] == "'" + row["username"]
    assert cells["sub"] == "'+1"
    assert cells["rule"] == "'-2+3"
    assert cells["reason"] == "'@SUM(A1)"
    assert cells["error"] == "'\tTAB"
    assert cells["outcome"] == "changed"  # ordinary text stays as it is


def test_rows_and_summaries_carry_the_schema_and_tool_version_and_the_rows_digest():
    text = jsonl_text([{"username": "u", "outcome": "compliant"}])
    row = json.loads(text)
    assert row["schema_version"] == 1 and row["tool_version"] == __version__
    digest = RowsDigest()
    digest.update(text.encode())
    document = summary_document(summary_with_rules(), digest)
    assert document["schema_version"] == 1 and document["tool_version"] == __version__
    assert document["rows"]["count"] == 1 and len(document["rows"]["sha256"]) == 64


def test_report_schemas_ship_with_the_package_and_list_every_outcome():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"][
        "setuptools"
    ]["package-data"]["mfa_policy"]
    for name in SCHEMAS:
        assert any(fnmatch.fnmatch(f"core/{name}", glob) for glob in package_data), name
        assert resources.files("mfa_policy.core").joinpath(name).is_file()
    row = json.loads(resources.files("mfa_policy.core").joinpath(SCHEMAS[0]).read_text("utf-8"))
    assert row["properties"]["outcome"]["enum"] == [o.value for o in Outcome]
