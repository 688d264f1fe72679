"""Fixtures for tests against the Cognito stand-in (moto behind the fidelity layer).

The stand-in itself, `demo_pool` and the per-test reset are in tests/conftest.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mfa_policy.aws.tokens import DynamoTokenTable
from mfa_policy.standin import CognitoStandIn, create_pool, seed_user

MakePool = Callable[..., str]
MakeUser = Callable[..., str]


@pytest.fixture
def cognito(standin: CognitoStandIn) -> Any:
    """A cognito-idp client against the stand-in (standard retries)."""
    return standin.client()


@pytest.fixture
def make_pool(standin: CognitoStandIn) -> Iterator[MakePool]:
    """`make_pool(mfa="OPTIONAL", sms=True, totp=True, email=False) -> pool id`; deleted after."""
    client = standin.client()
    created: list[str] = []

    def make(**kwargs: Any) -> str:
        pool_id = create_pool(client, **kwargs)
        created.append(pool_id)
        return pool_id

    yield make
    with standin.lock:
        for pool_id in created:
            standin.backend.user_pools.pop(pool_id, None)


@pytest.fixture
def pool_id(make_pool: MakePool) -> str:
    """A pool with MFA OPTIONAL and SMS and TOTP configured."""
    return make_pool()


@pytest.fixture
def make_user(standin: CognitoStandIn) -> MakeUser:
    """`make_user(pool_id, username, phone=None, email=None, groups=(), totp_verified=False,
    sms_enabled=False, totp_enabled=False, email_enabled=False, preferred=None, enabled=True,
    status=None, ...) -> Username`, written straight into the backend."""

    def make(pool_id: str, username: str, **kwargs: Any) -> str:
        return seed_user(standin, pool_id, username, **kwargs)

    return make


@pytest.fixture
def token_table(
    standin: CognitoStandIn,
) -> Iterator[Callable[..., tuple[DynamoTokenTable, dict[str, str]]]]:
    """`token_table(pool_id, usernames, stored={}) -> (DynamoTokenTable, {token: username})`:
    a DynamoDB table of access tokens on the stand-in, as `--auth access-token` reads them.
    `stored` puts a given token under a username instead of that user's own (another user's
    token, one of another pool: `standin.issue_access_token(other_pool, name)`)."""
    dynamodb = standin.client("dynamodb")
    tables: list[str] = []

    def make(
        pool_id: str, usernames: list[str], stored: dict[str, str] | None = None
    ) -> tuple[DynamoTokenTable, dict[str, str]]:
        name = f"tokens-{uuid.uuid4().hex[:8]}"
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "username", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "username", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        tables.append(name)
        tokens = {standin.issue_access_token(pool_id, u): u for u in usernames}
        under = {u: t for t, u in tokens.items()} | (stored or {})
        items = [
            {"PutRequest": {"Item": {"username": {"S": u}, "access_token": {"S": t}}}}
            for u, t in under.items()
        ]
        for start in range(0, len(items), 25):
            dynamodb.batch_write_item(RequestItems={name: items[start : start + 25]})
        return DynamoTokenTable(dynamodb, name), tokens

    yield make
    for name in tables:
        dynamodb.delete_table(TableName=name)
