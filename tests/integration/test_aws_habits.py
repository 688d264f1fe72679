"""The AWS habits every run command keeps: Region from the pool id, AWS_PROFILE and --profile,
no credentials needed against a loopback endpoint, --output with --format as its alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mfa_policy.aws.clients import region_of_pool
from mfa_policy.cli.demo import DEMO_POLICY
from mfa_policy.cli.main import main
from mfa_policy.standin import CognitoStandIn

PHONE = "+15550100123"


@pytest.fixture(autouse=True)
def _no_aws_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fresh shell: no credentials, no Region, no profile, no AWS config at all."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(DEMO_POLICY))
    return path


@pytest.fixture
def pool(pool_id: str, make_user) -> str:
    make_user(pool_id, "ann", phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms")
    return pool_id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_region_is_the_one_the_pool_id_names() -> None:
    assert region_of_pool("eu-west-1_AbCdEfGhI") == "eu-west-1"
    assert region_of_pool("nounderscore") is None


@pytest.mark.parametrize("command", ["drift", "apply"])
def test_runs_against_a_loopback_endpoint_need_no_region_and_no_credentials(
    standin: CognitoStandIn, pool: str, policy: Path, capsys, command: str
) -> None:
    code, out, err = run(
        capsys, command, "-c", str(policy), "--user-pool-id", pool,
        "--endpoint-url", standin.endpoint_url,
    )  # fmt: skip

    assert code in (0, 2), err
    assert f"{command} of {pool}" in out
    assert "error" not in err


def test_rollback_against_a_loopback_endpoint_needs_no_region_and_no_credentials(
    standin: CognitoStandIn, pool: str, policy: Path, capsys, tmp_path: Path
) -> None:
    endpoint = ["--endpoint-url", standin.endpoint_url]
    run(capsys, "apply", "-c", str(policy), "--user-pool-id", pool, "--report-dir", "a", *endpoint)

    code, out, err = run(
        capsys, "rollback", "--user-pool-id", pool, "--from-report", "a", *endpoint
    )

    assert code == 0, err
    assert f"rollback of {pool}" in out


@pytest.mark.parametrize("command", ["drift", "apply", "rollback"])
def test_profile_is_honoured_from_the_option_and_from_aws_profile(
    standin: CognitoStandIn, pool: str, policy: Path, capsys, monkeypatch, command: str
) -> None:
    args = (
        ["--user-pool-id", pool, "--from-report", "nowhere"]
        if command == "rollback"
        else ["-c", str(policy), "--user-pool-id", pool]
    )
    code, _, err = run(capsys, command, *args, "--profile", "no-such-profile")
    assert code == 1
    assert "no-such-profile" in err and "could not be found" in err

    monkeypatch.setenv("AWS_PROFILE", "also-missing")
    code, _, err = run(capsys, command, *args)
    assert code == 1
    assert "also-missing" in err


def test_a_profile_s_credentials_are_used(
    standin: CognitoStandIn, pool: str, policy: Path, capsys, tmp_path: Path
) -> None:
    (tmp_path / "aws-credentials").write_text(
        "[ci]\naws_access_key_id = AKIACI\naws_secret_access_key = secret\n"
    )
    (tmp_path / "aws-config").write_text("[profile ci]\nregion = ap-south-1\n")

    code, out, err = run(
        capsys, "drift", "-c", str(policy), "--user-pool-id", pool, "--profile", "ci",
        "--endpoint-url", standin.endpoint_url,
    )  # fmt: skip

    assert code == 2, err
    assert f"drift of {pool}" in out


@pytest.mark.parametrize("option", ["--output", "--format"])
def test_output_names_the_summary_format_and_format_is_its_alias(
    standin: CognitoStandIn, pool: str, policy: Path, capsys, option: str
) -> None:
    code, out, err = run(
        capsys, "drift", "-c", str(policy), "--user-pool-id", pool,
        "--endpoint-url", standin.endpoint_url, option, "json",
    )  # fmt: skip

    assert code == 2, err
    assert json.loads(out)["user_pool_id"] == pool
