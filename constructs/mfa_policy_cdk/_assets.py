"""What the Lambda functions run and how they are configured.

One code asset backs all three functions: the runtime package (``mfa_policy``) staged from the
installed distribution, without the stand-in, tests and caches, plus the normalized policy as
``policy.json``. Nothing is bundled, so synth and deploy need no Docker. The files are read
through ``importlib.resources``, so a wheel install and an editable install stage the same
bytes, hence the same asset hash. Powertools comes from AWS's public layer, boto3 from the
Lambda runtime.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_ssm as ssm

from constructs import Construct
from mfa_policy.core.policy import Policy

#: Python 3.14 is the newest Python runtime aws-cdk-lib knows (cdk-nag L1 wants the newest);
#: aws-cdk-lib 2.222.0 is the first release that has it (pyproject's floor).
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64

SLICE_HANDLER = "mfa_policy.handlers.slice_handler"
CHANGED_USER_HANDLER = "mfa_policy.handlers.changed_user_handler"
DEPLOY_ON_EVENT_HANDLER = "mfa_policy.handlers.deploy_on_event"
DEPLOY_IS_COMPLETE_HANDLER = "mfa_policy.handlers.deploy_is_complete"

#: The runtime package, as it is imported in the Lambda.
RUNTIME_PACKAGE = "mfa_policy"
#: The policy's file in the asset, next to the package; the handler reads it (POLICY_FILE).
POLICY_FILE = "policy.json"
#: Sub-packages of the runtime that never run in AWS: the Cognito stand-in (moto) for demos.
EXCLUDED_SUBPACKAGES = frozenset({"standin"})
#: What the wheel ships of the package, and so all an editable checkout may contribute too:
#: sources, data files (the JSON schema) and the typing marker. Caches and strays stay out.
_SHIPPED_SUFFIXES = (".py", ".json")
_SHIPPED_NAMES = frozenset({"py.typed"})

#: AWS publishes Powertools for AWS Lambda (Python) v3 as public layers per Python version and
#: architecture, and an SSM public parameter per release that holds the layer version's ARN in
#: the Region it is read from. Keep this equal to the aws-lambda-powertools pin in pyproject.toml
#: (a test holds them together).
POWERTOOLS_VERSION = "3.37.0"


def runtime_files() -> Iterator[tuple[str, bytes]]:
    """(relative path, content) of every runtime file the asset ships, in a stable order."""
    root = resources.files(RUNTIME_PACKAGE)
    yield from _walk(root, RUNTIME_PACKAGE, top=True)


def _walk(folder: Traversable, prefix: str, *, top: bool = False) -> Iterator[tuple[str, bytes]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            if entry.name == "__pycache__" or (top and entry.name in EXCLUDED_SUBPACKAGES):
                continue
            # Only folders that are packages (as setuptools finds them) are shipped.
            if entry.joinpath("__init__.py").is_file():
                yield from _walk(entry, f"{prefix}/{entry.name}")
        elif entry.name.endswith(_SHIPPED_SUFFIXES) or entry.name in _SHIPPED_NAMES:
            yield f"{prefix}/{entry.name}", entry.read_bytes()


def stage(policy: Policy) -> Path:
    """A folder holding the runtime package and ``policy.json``; the same content, same folder.

    CDK copies the folder into the cloud assembly and names it by a hash of its content. The
    folder lives under the temporary directory, keyed by that content, so repeated synths reuse
    it instead of piling up copies.
    """
    files = [*runtime_files(), (POLICY_FILE, policy.to_json().encode("utf-8"))]
    digest = hashlib.sha256()
    for name, content in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    target = Path(tempfile.gettempdir()) / f"mfa-policy-asset-{digest.hexdigest()[:20]}"
    if target.is_dir():
        return target
    partial = Path(tempfile.mkdtemp(prefix="mfa-policy-asset-", suffix=".partial"))
    for name, content in files:
        path = partial / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    try:
        os.rename(partial, target)
    except OSError:
        # Another synth staged the same content first; its folder is as good as ours.
        shutil.rmtree(partial, ignore_errors=True)
    return target


def code(policy: Policy) -> lambda_.Code:
    return lambda_.Code.from_asset(str(stage(policy)))


def powertools_layer(scope: Construct, id: str) -> lambda_.ILayerVersion:
    """AWS's public Powertools layer for the pinned version, this runtime and architecture.

    The layer version's ARN is read at deploy time from AWS's public SSM parameter in the
    stack's Region, so no layer number is hard-coded.
    """
    python = RUNTIME.name  # python3.14, as the parameter names spell it
    arch = ARCHITECTURE.name  # arm64 or x86_64, as the parameter names spell them
    parameter = f"/aws/service/powertools/python/{arch}/{python}/{POWERTOOLS_VERSION}"
    arn = ssm.StringParameter.value_for_string_parameter(scope, parameter)
    return lambda_.LayerVersion.from_layer_version_arn(scope, id, arn)
