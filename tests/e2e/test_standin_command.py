"""`mfa-policy standin`, then the commands it prints, each from a fresh shell: no AWS
configuration, no credentials, no Region in the environment."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mfa_policy.cli import standin_cmd

MFA_POLICY = Path(sys.executable).with_name("mfa-policy")


def fresh_shell_env(home: Path) -> dict[str, str]:
    """What a new terminal has: PATH and HOME, nothing AWS."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "LANG": "C.UTF-8"}


def test_standin_prints_commands_that_work_from_a_fresh_shell(tmp_path: Path) -> None:
    out = io.StringIO()
    started, stop = threading.Event(), threading.Event()
    server = threading.Thread(
        target=standin_cmd.serve_standin,
        kwargs={
            "users": 60,
            "port": 0,
            "policy_path": tmp_path / "mfa-policy-standin.yaml",
            "out": out,
            "started": started,
            "stop": stop,
        },
        daemon=True,
    )
    server.start()
    try:
        assert started.wait(60), out.getvalue()
        printed = out.getvalue()
        assert "Cognito stand-in: http://127.0.0.1:" in printed
        assert "user pool:        us-east-1_" in printed
        commands = [
            line.strip() for line in printed.splitlines() if line.strip().startswith("mfa-policy ")
        ]
        assert [c.split()[1] for c in commands] == ["drift", "apply", "rollback", "get-user-mfa"]
        codes = {}
        for command in commands:
            argv = shlex.split(command)
            run = subprocess.run(
                [str(MFA_POLICY), *argv[1:]],
                cwd=tmp_path,
                env=fresh_shell_env(tmp_path),
                capture_output=True,
                text=True,
                timeout=120,
            )
            codes[argv[1]] = run.returncode
            assert "Traceback" not in run.stderr, run.stderr
            assert run.returncode in (0, 2), (command, run.stdout, run.stderr)
        assert codes["drift"] == 2  # the demo pool has drift
        assert (tmp_path / "plan.json").is_file() and (
            tmp_path / "applied" / "summary.json"
        ).is_file()
    finally:
        stop.set()
        server.join(10)


def test_without_moto_the_standin_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [
        m for m in sys.modules if m == "moto" or m.startswith(("moto.", "mfa_policy.standin"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "moto", None)  # import moto -> ImportError

    with pytest.raises(standin_cmd.MissingDemoExtra) as raised:
        standin_cmd.load_standin()

    assert str(raised.value) == standin_cmd.MISSING_MOTO
    assert "pip install 'mfa-policy[demo]'" in str(raised.value)
