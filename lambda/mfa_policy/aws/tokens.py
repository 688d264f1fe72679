"""Stored access tokens for ``--auth access-token``: a DynamoDB table keyed by username.

Tokens are secrets: they pass from here to the gateway and nowhere else (never logged or
reported). A token is used only for the user it belongs to: ``binding_problem`` checks its
claims before anything is sent with it, and the runner checks the sub that ``GetUser`` answers
for before any write.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mfa_policy.exceptions import RunError

BATCH = 100  # BatchGetItem's maximum keys per request


class TokenSource(Protocol):
    def get_many(self, usernames: Iterable[str]) -> dict[str, str]: ...


class DynamoTokenTable:
    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        key: str = "username",
        attribute: str = "access_token",
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.key = key
        self.attribute = attribute

    def get_many(self, usernames: Iterable[str]) -> dict[str, str]:
        names = list(dict.fromkeys(usernames))
        found: dict[str, str] = {}
        for start in range(0, len(names), BATCH):
            keys = [{self.key: {"S": n}} for n in names[start : start + BATCH]]
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": keys,
                    "ProjectionExpression": "#k, #t",
                    "ExpressionAttributeNames": {"#k": self.key, "#t": self.attribute},
                }
            }
            for attempt in range(8):
                try:
                    response = self.client.batch_get_item(RequestItems=request)
                except self.client.exceptions.ResourceNotFoundException:
                    raise RunError(f"token table {self.table_name!r} not found") from None
                for item in response.get("Responses", {}).get(self.table_name, []):
                    token = item.get(self.attribute, {}).get("S")
                    if token:
                        found[item[self.key]["S"]] = token
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(2.0, 0.05 * 2**attempt))
        return found


@dataclass(frozen=True)
class TokenProblem:
    """Why a stored token must not be used for a user: ``code`` heads the row's reason."""

    code: str
    explanation: str

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.explanation}"


TOKEN_UNREADABLE = TokenProblem(
    "token_unreadable", "the stored access token is not a Cognito JWT; it was not used"
)
TOKEN_NOT_ACCESS = TokenProblem(
    "token_not_access", "the stored token is not an access token (token_use); it was not used"
)
TOKEN_OTHER_POOL = TokenProblem(
    "token_other_pool", "the stored access token was issued by another user pool; it was not used"
)
TOKEN_OTHER_USER = TokenProblem(
    "token_other_user", "the stored access token belongs to another user; it was not used"
)


def issuer_of(user_pool_id: str) -> str:
    """The ``iss`` claim of the pool's tokens; its Region is the pool id's prefix."""
    region = user_pool_id.split("_", 1)[0]
    return f"https://cognito-idp.{region}.amazonaws.com/{user_pool_id}"


def unverified_claims(token: str) -> dict[str, Any] | None:
    """A JWT's payload, not verified (``GetUser`` verifies the token); None when not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def binding_problem(token: str, *, user_pool_id: str, sub: str) -> TokenProblem | None:
    """Why ``token`` is not an access token of this pool's user ``sub``, from its claims.

    The claims are not verified here; they need not be: a forged payload fails ``GetUser``,
    and the runner compares the sub ``GetUser`` answers for as well.
    """
    claims = unverified_claims(token)
    if claims is None:
        return TOKEN_UNREADABLE
    if claims.get("token_use") != "access" or not claims.get("client_id"):
        return TOKEN_NOT_ACCESS
    if claims.get("iss") != issuer_of(user_pool_id):
        return TOKEN_OTHER_POOL
    if claims.get("sub") != sub:
        return TOKEN_OTHER_USER
    return None
