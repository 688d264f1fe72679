"""Build boto3 clients for the drivers (CLI, Lambda handlers); the core takes them injected."""

from __future__ import annotations

from typing import Any

import boto3

from mfa_policy.aws.gateway import CLIENT_CONFIG


def aws_client(
    service: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    session: boto3.session.Session | None = None,
) -> Any:
    """A client with our retry/timeout settings for Cognito, and the standard mode elsewhere."""
    session = session or boto3.session.Session()
    config = CLIENT_CONFIG if service == "cognito-idp" else None
    return session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)
