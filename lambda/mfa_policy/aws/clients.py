"""Build boto3 clients for the drivers (CLI, Lambda handlers); the core takes them injected."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from mfa_policy.aws.gateway import CLIENT_CONFIG
from mfa_policy.exceptions import RunError

#: Services other than Cognito (the token table, S3): botocore's own retries, but the same
#: bounded wait as Cognito instead of botocore's 60 s read timeout.
OTHER_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=CLIENT_CONFIG.connect_timeout,
    read_timeout=CLIENT_CONFIG.read_timeout,
)


def aws_client(
    service: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    session: boto3.session.Session | None = None,
) -> Any:
    """A client with our retry/timeout settings for Cognito, and the standard mode elsewhere."""
    if endpoint_url is not None:
        check_endpoint_url(endpoint_url)
    session = session or boto3.session.Session()
    config = CLIENT_CONFIG if service == "cognito-idp" else OTHER_CLIENT_CONFIG
    try:
        return session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)
    except ValueError as exc:  # botocore's "Invalid endpoint", a malformed region name
        raise RunError(f"cannot make a {service} client: {exc}") from None


def check_endpoint_url(endpoint_url: str) -> None:
    """An endpoint is an http(s) URL with a host; anything else fails here, not mid-run."""
    try:
        parts = urlsplit(endpoint_url)
        port = parts.port  # raises on a port that is not a number
    except ValueError as exc:
        raise RunError(f"--endpoint-url {endpoint_url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RunError(
            f"--endpoint-url {endpoint_url!r} is not an http:// or https:// URL with a host"
        )
    del port


#: Hosts of a local endpoint (a stand-in): no real AWS account behind it.
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: Credentials a loopback endpoint is sent when none are configured: it checks no signature.
LOCAL_CREDENTIALS = {"aws_access_key_id": "mfa-policy-local", "aws_secret_access_key": "local"}


def region_of_pool(user_pool_id: str | None) -> str | None:
    """The Region a user pool id names (``eu-west-1_AbCdEfGhI`` -> ``eu-west-1``)."""
    if user_pool_id and "_" in user_pool_id:
        region = user_pool_id.split("_", 1)[0]
        return region or None
    return None


def is_loopback(endpoint_url: str | None) -> bool:
    from urllib.parse import urlsplit

    if not endpoint_url:
        return False
    host = urlsplit(endpoint_url).hostname or ""
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def cli_session(
    *,
    profile: str | None = None,
    region: str | None = None,
    user_pool_id: str | None = None,
    endpoint_url: str | None = None,
) -> tuple[boto3.session.Session, str | None]:
    """The session and Region a command uses, as the AWS CLI picks them.

    The profile is ``--profile``, else ``AWS_PROFILE`` (boto3 reads it). The Region is
    ``--region``, else the one the pool id names (a pool lives in exactly one Region), else the
    profile's or ``AWS_REGION``. Against a loopback endpoint with no credentials configured,
    placeholder credentials are used: a local stand-in needs none.
    """
    session = boto3.session.Session(profile_name=profile)
    chosen = region or region_of_pool(user_pool_id) or session.region_name
    if is_loopback(endpoint_url) and session.get_credentials() is None:
        session = boto3.session.Session(region_name=chosen, **LOCAL_CREDENTIALS)
    return session, chosen
