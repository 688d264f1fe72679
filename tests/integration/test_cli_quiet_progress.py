"""--quiet, and progress with a total in the demo and the run commands."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from mfa_policy.cli.demo import DEMO_POLICY, run_demo
from mfa_policy.cli.main import main


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.chdir(tmp_path)


def test_quiet_prints_no_summary_and_keeps_the_exit_code_and_report(
    standin, pool_id, make_user, capsys, tmp_path
):
    make_user(pool_id, "ann", phone="+15550100123", totp_enabled=True, sms_enabled=True,
              preferred="sms")  # fmt: skip
    (tmp_path / "mfa-policy.yaml").write_text(yaml.safe_dump(DEMO_POLICY))

    code = main(["drift", "--user-pool-id", pool_id, "--endpoint-url", standin.endpoint_url,
                 "--quiet", "--report-dir", "r"])  # fmt: skip

    out, err = capsys.readouterr()
    assert code == 2  # drift found; -c defaulted to ./mfa-policy.yaml
    assert out == "" and err == ""
    assert (tmp_path / "r" / "summary.json").is_file()


def test_a_run_on_a_terminal_shows_a_bar_with_the_pool_s_size(
    standin, demo_pool, monkeypatch, capsys, tmp_path
):
    pool = demo_pool(120)
    (tmp_path / "mfa-policy.yaml").write_text(yaml.safe_dump(DEMO_POLICY))
    screen = _Terminal()
    monkeypatch.setattr("sys.stderr", screen)

    main(["drift", "--user-pool-id", pool.pool_id, "--endpoint-url", standin.endpoint_url])

    assert f"/{pool.total} users" in screen.getvalue()
    assert "100%" in screen.getvalue()


def test_the_demo_shows_progress_on_a_terminal(monkeypatch, tmp_path):
    screen = _Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    from rich.console import Console

    run_demo(users=60, report_root=tmp_path / "demo", console=Console(file=io.StringIO()))

    shown = screen.getvalue()
    assert "1. drift" in shown and "2. apply" in shown and "3. drift" in shown
    assert "/60 users" in shown
