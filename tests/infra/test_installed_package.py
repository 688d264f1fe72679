"""The construct from an installed wheel, as a user's pipeline runs it: `pip install
'mfa-policy[cdk]'` in a fresh virtualenv and a CDK app in a folder of its own.

The wheel is built from a copy of the sources (no build folder lands in the checkout) and
installed with --no-deps into a fresh venv whose dependencies (aws-cdk-lib, boto3, ...) come from
the project's venv through a .pth path, so the test needs no network. That path adds the
project's site-packages to sys.path without running its .pth files, so the editable install of
this checkout stays out: `mfa_policy` is imported from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mfa_policy_cdk import MfaPolicy

ROOT = Path(__file__).resolve().parents[2]
SLICE = "mfa_policy.handlers.slice_handler"

APP = textwrap.dedent(
    """\
    import json
    import sys

    import aws_cdk as cdk
    from aws_cdk import aws_cognito as cognito

    import mfa_policy
    from mfa_policy_cdk import MfaPolicy

    app = cdk.App(outdir=sys.argv[1])
    stack = cdk.Stack(app, "Installed")
    pool = cognito.UserPool.from_user_pool_id(stack, "Pool", "eu-west-1_AbCdEfGhI")
    MfaPolicy(stack, "MfaPolicy", user_pool=pool, policy_file="mfa-policy.yaml")
    app.synth()
    print(json.dumps({"mfa_policy": mfa_policy.__file__}))
    """
)


def _slice_code(template: dict[str, Any]) -> dict[str, Any]:
    (fn,) = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == SLICE
    ]
    code: dict[str, Any] = fn["Properties"]["Code"]
    return code


@pytest.fixture(scope="module")
def installed_app(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build the wheel, install it in a fresh venv, synthesize an app outside the checkout."""
    work = tmp_path_factory.mktemp("installed")
    source = work / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for folder in ("lambda", "constructs"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, source],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("mfa_policy-*.whl")

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [*pip, "--python", python, "install", "--quiet", "--no-deps", f"{wheel}[cdk]"],
        check=True,
        capture_output=True,
    )
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    app = work / "app"
    app.mkdir()
    (app / "app.py").write_text(APP)
    shutil.copy2(ROOT / "mfa-policy.yaml", app / "mfa-policy.yaml")
    out = work / "cdk.out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run(
        [python, "app.py", out],
        cwd=app,
        env={**env, "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return {
        "site": site,
        "imported": json.loads(run.stdout.strip().splitlines()[-1])["mfa_policy"],
        "template": json.loads((out / "Installed.template.json").read_text()),
        "out": out,
    }


def test_the_construct_synthesizes_from_the_installed_wheel_outside_the_checkout(
    installed_app: dict[str, Any],
) -> None:
    assert Path(installed_app["imported"]).is_relative_to(installed_app["site"])
    template = installed_app["template"]
    assert any(r["Type"] == "Custom::MfaPolicyRun" for r in template["Resources"].values())
    code = _slice_code(template)
    asset = installed_app["out"] / f"asset.{code['S3Key'].removesuffix('.zip')}"
    assert (asset / "mfa_policy" / "handlers" / "lambda_entry.py").is_file()
    assert (asset / "policy.json").is_file()
    assert not (asset / "mfa_policy" / "standin").exists()


def test_the_asset_is_the_same_from_the_wheel_and_from_the_editable_checkout(
    installed_app: dict[str, Any],
) -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_cognito as cognito
    from aws_cdk.assertions import Template

    stack = Stack(App(), "Editable")
    pool = cognito.UserPool.from_user_pool_id(stack, "Pool", "eu-west-1_AbCdEfGhI")
    MfaPolicy(stack, "MfaPolicy", user_pool=pool, policy_file=ROOT / "mfa-policy.yaml")
    editable = _slice_code(Template.from_stack(stack).to_json())
    assert editable["S3Key"] == _slice_code(installed_app["template"])["S3Key"]
