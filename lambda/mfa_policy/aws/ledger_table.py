"""The state ledger in AWS: a DynamoDB table, partition key ``pool`` and sort key ``sub``.

One item per user of a pool (the last observed MFA state, when and by which call, the latest
state-changing CloudTrail event, the latest month the user was active), plus one ``#meta``
item per pool (the CloudTrail cursor). Reads are BatchGetItem of one page of users; writes
are BatchWriteItem at each page's commit, so a slice's memory stays flat.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from mfa_policy.core.ledger import (
    ACTIVE_BY,
    FeedEvent,
    LedgerEntry,
    Observation,
    month_of,
    state_from_json,
    state_json,
)

META = "#meta"
_BATCH_GET = 100
_BATCH_WRITE = 25


class DynamoLedger:
    def __init__(self, client: Any, table: str, user_pool_id: str) -> None:
        self.client = client
        self.table = table
        self.user_pool_id = user_pool_id

    def _key(self, sub: str) -> dict[str, Any]:
        return {"pool": {"S": self.user_pool_id}, "sub": {"S": sub}}

    def get_many(self, subs: Iterable[str]) -> dict[str, LedgerEntry]:
        wanted = list(dict.fromkeys(subs))
        found: dict[str, LedgerEntry] = {}
        for start in range(0, len(wanted), _BATCH_GET):
            keys = [self._key(s) for s in wanted[start : start + _BATCH_GET]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(8):
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    entry = _entry(item)
                    found[entry.sub] = entry
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**attempt)
        return found

    def record(self, observations: Iterable[Observation]) -> None:
        # Updates, not puts: an item keeps its event time and active month.
        for o in observations:
            values: dict[str, Any] = {
                ":mfa": {"S": state_json(o.mfa, o.legacy_sms)},
                ":at": {"N": repr(o.observed_at)},
                ":by": {"S": o.observed_by},
            }
            sets = ["mfa = :mfa", "observed_at = :at", "observed_by = :by"]
            removes = []
            for name, value in (
                ("listed_modified", o.listed_modified),
                (
                    "auth_factors",
                    json.dumps(list(o.auth_factors)) if o.auth_factors is not None else None,
                ),
            ):
                if value is None:
                    removes.append(name)
                else:
                    values[f":{name}"] = {"S": value}
                    sets.append(f"{name} = :{name}")
            if o.observed_by in ACTIVE_BY:
                values[":month"] = {"S": month_of(o.observed_at)}
                sets.append("active_month = :month")
            expression = "SET " + ", ".join(sets)
            if removes:
                expression += " REMOVE " + ", ".join(removes)
            self.client.update_item(
                TableName=self.table,
                Key=self._key(o.sub),
                UpdateExpression=expression,
                ExpressionAttributeValues=values,
            )

    def note_events(self, events: Iterable[FeedEvent]) -> int:
        count = 0
        for event in events:
            count += 1
            if event.changes_state:
                self._raise_to(event.sub, "last_event_at", {"N": repr(event.time)})
            if event.makes_active:
                self._raise_to(event.sub, "active_month", {"S": month_of(event.time)})
        return count

    def _raise_to(self, sub: str, name: str, value: Mapping[str, str]) -> None:
        """Set ``name`` to ``value`` unless the item already holds a later one."""
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(
                TableName=self.table,
                Key=self._key(sub),
                UpdateExpression=f"SET {name} = :v",
                ConditionExpression=f"attribute_not_exists({name}) OR {name} < :v",
                ExpressionAttributeValues={":v": dict(value)},
            )

    def meta(self) -> Mapping[str, str]:
        item = self.client.get_item(
            TableName=self.table, Key=self._key(META), ConsistentRead=True
        ).get("Item")
        if not item:
            return {}
        return {k: v["S"] for k, v in item.items() if k not in ("pool", "sub") and "S" in v}

    def set_meta(self, **values: str) -> None:
        if not values:
            return
        names = {f"#k{i}": k for i, k in enumerate(values)}
        self.client.update_item(
            TableName=self.table,
            Key=self._key(META),
            UpdateExpression="SET " + ", ".join(f"#k{i} = :v{i}" for i in range(len(values))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":v{i}": {"S": v} for i, v in enumerate(values.values())},
        )

    def _items(self) -> Iterable[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pool = :p",
            "ExpressionAttributeValues": {":p": {"S": self.user_pool_id}},
            "ProjectionExpression": "#s, observed_at",
            "ExpressionAttributeNames": {"#s": "sub"},
        }
        while True:
            response = self.client.query(**kwargs)
            yield from response.get("Items", [])
            if not response.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def forget_observations(self) -> None:
        for item in self._items():
            sub = item["sub"]["S"]
            if sub == META or "observed_at" not in item:
                continue
            self.client.update_item(
                TableName=self.table,
                Key=self._key(sub),
                UpdateExpression="REMOVE mfa, observed_at, observed_by, listed_modified, "
                "auth_factors, last_event_at",
            )

    def has_observations(self) -> bool:
        return any("observed_at" in item for item in self._items())

    def close(self) -> None:
        return None


def _entry(item: Mapping[str, Any]) -> LedgerEntry:
    def text(name: str) -> str | None:
        value = item.get(name)
        return str(value["S"]) if value and "S" in value else None

    def number(name: str) -> float | None:
        value = item.get(name)
        return float(value["N"]) if value and "N" in value else None

    mfa = text("mfa")
    factors = text("auth_factors")
    state, legacy_sms = state_from_json(mfa) if mfa else (None, False)
    return LedgerEntry(
        sub=str(item["sub"]["S"]),
        mfa=state,
        legacy_sms=legacy_sms,
        auth_factors=tuple(json.loads(factors)) if factors else None,
        observed_at=number("observed_at"),
        observed_by=text("observed_by"),
        listed_modified=text("listed_modified"),
        last_event_at=number("last_event_at"),
        active_month=text("active_month"),
    )
