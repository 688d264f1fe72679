"""The CLI's help: every run subcommand says what it does, its exit codes and an example; -c
defaults to ./mfa-policy.yaml when that file is there."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from mfa_policy.cli.main import build_parser


@pytest.mark.parametrize(
    "command",
    [
        "validate",
        "drift",
        "apply",
        "rollback",
        "demo",
        "standin",
        "completion",
        "set-user-mfa-preference",
        "admin-set-user-mfa-preference",
        "get-user-mfa",
    ],
)
def test_every_subcommand_help_has_a_description_exit_codes_and_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "exit codes:" in text
    assert re.search(rf"example:\n  .*mfa-policy {command}", text), text
    body = text.split("\n\n")[1]  # the description, after the usage
    assert len(body.split()) > 8, text


@pytest.mark.parametrize(
    "command", ["drift", "apply", "rollback", "admin-set-user-mfa-preference", "get-user-mfa"]
)
def test_user_pool_id_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert re.search(r"--user-pool-id ID\s+the Cognito user pool", capsys.readouterr().out)


def test_config_defaults_to_mfa_policy_yaml_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mfa-policy.yaml").write_text("version: 1\nrules: []\n")

    args = build_parser().parse_args(["drift", "--user-pool-id", "eu-west-1_Abc"])

    assert args.config == "mfa-policy.yaml"


def test_config_is_required_without_mfa_policy_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(SystemExit):
        build_parser().parse_args(["drift", "--user-pool-id", "eu-west-1_Abc"])

    assert "-c/--config" in capsys.readouterr().err


def test_a_mistyped_subcommand_gets_a_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["drfit", "-c", "p.yaml"])
    err = capsys.readouterr().err
    assert "invalid choice" in err and "did you mean 'drift'?" in err


def test_completion_prints_a_shell_script_naming_the_subcommands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mfa_policy.cli.main import main

    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "complete" in script and "drift" in script and "--user-pool-id" in script


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_with_a_known_total_shows_percentage_and_time_left() -> None:
    from mfa_policy.cli.progress import Progress

    screen = _Terminal()
    with Progress("drift pool", stream=screen, total=240) as progress:
        progress.advance([{}] * 60)
        progress._bar.refresh()
        shown = screen.getvalue()
        progress.advance([{}] * 180)
    assert "25%" in shown
    assert "60/240 users" in shown
    assert "left" in shown


def test_quiet_progress_shows_nothing() -> None:
    from mfa_policy.cli.progress import Progress

    screen = _Terminal()
    with Progress("drift pool", stream=screen, total=10, quiet=True) as progress:
        progress.advance([{}] * 10)
    assert screen.getvalue() == ""
