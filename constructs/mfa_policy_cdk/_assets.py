"""Where the runtime code lives and how the Lambda functions that run it are configured.

One asset (the `lambda/` source root) backs all three functions; nothing is bundled, so
synth and deploy need no Docker. Powertools comes from AWS's public layer, boto3 from the
Lambda runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Stack, Token
from aws_cdk import aws_lambda as lambda_

import mfa_policy
from constructs import Construct

#: Python 3.14 is the newest Python runtime aws-cdk-lib 2.275 knows (cdk-nag L1 wants the newest).
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64

SLICE_HANDLER = "mfa_policy.handlers.slice_handler"
DEPLOY_ON_EVENT_HANDLER = "mfa_policy.handlers.deploy_on_event"
DEPLOY_IS_COMPLETE_HANDLER = "mfa_policy.handlers.deploy_is_complete"

#: Development-only code (the Cognito stand-in server) and build leftovers stay out of the asset.
ASSET_EXCLUDE = ("**/__pycache__", "**/*.pyc", "mfa_policy/standin", "*.egg-info")

#: AWS publishes Powertools for AWS Lambda (Python) v3 as a public layer per Python version and
#: architecture from this account. Version 38 of the python314-arm64 layer is the newest one this
#: project has seen in use; bump it when upgrading Powertools.
POWERTOOLS_LAYER_ACCOUNT = "017000801446"
POWERTOOLS_LAYER_VERSION = 38

#: Lambda caps all environment variables of a function together at 4 KB.
LAMBDA_ENV_LIMIT_BYTES = 4096

#: Unresolved tokens (pool id, bucket and table names) are sized at their longest legal value.
_TOKEN_SIZE = {"USER_POOL_ID": 55, "REPORT_BUCKET": 63, "TOKEN_TABLE": 255}
_UNKNOWN_TOKEN_SIZE = 255


def lambda_root() -> Path:
    """The `lambda/` source root: the folder that holds the `mfa_policy` package."""
    root = Path(mfa_policy.__file__).resolve().parent.parent
    if root.name in {"site-packages", "dist-packages"}:
        # Shipping all of site-packages as the asset would be wrong and huge.
        raise RuntimeError(
            f"mfa_policy is installed in {root}, not in a source checkout; the construct ships "
            "the lambda/ folder of the checkout as its Lambda asset, so install the project "
            "with 'pip install -e .'"
        )
    return root


def code() -> lambda_.Code:
    return lambda_.Code.from_asset(str(lambda_root()), exclude=list(ASSET_EXCLUDE))


def powertools_layer(scope: Construct, id: str) -> lambda_.ILayerVersion:
    """AWS's public Powertools layer for this runtime and architecture, in the stack's Region."""
    python = RUNTIME.name.replace(".", "")  # python3.14 -> python314
    arch = ARCHITECTURE.name  # arm64 or x86_64, as the layer names spell them
    region = Stack.of(scope).region
    arn = (
        f"arn:aws:lambda:{region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-{python}-{arch}:{POWERTOOLS_LAYER_VERSION}"
    )
    return lambda_.LayerVersion.from_layer_version_arn(scope, id, arn)


def environment_size(environment: Mapping[str, str]) -> int:
    """Bytes the environment takes against Lambda's limit, sizing tokens at their maximum."""
    total = 0
    for key, value in environment.items():
        if Token.is_unresolved(value):
            size = _TOKEN_SIZE.get(key, _UNKNOWN_TOKEN_SIZE)
        else:
            size = len(value.encode("utf-8"))
        total += len(key.encode("utf-8")) + size
    return total
