"""`mfa-policy demo`: drift -> apply -> drift on a seeded pool in an embedded stand-in."""

from __future__ import annotations

import io
import json

from rich.console import Console

from mfa_policy.cli.demo import run_demo


def test_demo_runs_drift_apply_drift_and_writes_three_reports(tmp_path):
    output = io.StringIO()

    code = run_demo(users=120, report_root=tmp_path, console=Console(file=output, width=160))

    assert code == 0
    summaries = []
    for folder in ("1-drift", "2-apply", "3-drift"):
        for name in ("summary.json", "summary.md", "users.jsonl", "users.csv"):
            assert (tmp_path / folder / name).stat().st_size > 0, f"{folder}/{name}"
        summary = json.loads((tmp_path / folder / "summary.json").read_text("utf-8"))
        assert summary["complete"] and summary["users"] == 120
        summaries.append(summary["counts"]["by_outcome"])
    first, applied, last = summaries
    assert first["would_change"] > 0
    assert applied["changed"] > 0
    assert last["would_change"] == 0
    assert last["needs_enrollment"] > 0 and last["blocked"] > 0
    # The states real pools have: passwordless users are guarded (nothing sent), unconfirmed
    # ones skipped, legacy SMS users read as SMS on and moved to the current API.
    assert first["guarded"] > 0 and applied["guarded"] == first["guarded"]
    drift_rows = [
        json.loads(line)
        for line in (tmp_path / "1-drift" / "users.jsonl").read_text("utf-8").splitlines()
    ]
    assert any(r["reason"].startswith("unconfirmed:") for r in drift_rows)
    assert any(r.get("legacy_sms") for r in drift_rows)
    assert "legacy MFAOptions only" in output.getvalue()
    assert json.loads((tmp_path / "policy.json").read_text("utf-8"))["version"] == 1
    assert "drift now finds" in output.getvalue()
