"""Stored access tokens for ``--auth access-token``: a DynamoDB table keyed by username.

Tokens are secrets: they pass from here to the gateway and nowhere else (never logged or
reported).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
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
