"""The stand-in's CloudTrail: every cognito-idp call recorded as an event, and LookupEvents.

Real Cognito records its user pool API calls as CloudTrail management events, token calls
included, with the user's sub (never the username) for requests about one user; CloudTrail's
Event history serves them through ``LookupEvents`` (one lookup attribute, 50 events a page,
about 2 requests a second) minutes after the call. The stand-in does the same on its one port,
so a run against it pays the same lookups and sees the same delays.

It also counts monthly active users the way Cognito bills them: a user read with
``AdminGetUser``, written by an admin call, or signed in during a calendar month is one MAU of
that month. Which admin calls count is our reading of the pricing page ("an administrative
create or update"); a second source is missing for everything but ``AdminGetUser``.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

CLOUDTRAIL_TARGET_PREFIX = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101."
LOOKUP_EVENTS = "LookupEvents"
EVENT_SOURCE = "cognito-idp.amazonaws.com"
MAX_RESULTS = 50
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"

#: Calls that make the user they touch an MAU of the month (besides a sign-in).
MAU_READS = frozenset({"AdminGetUser", "AdminGetUserAuthFactors"})
ADMIN_UPDATES = frozenset(
    {
        "AdminCreateUser",
        "AdminSetUserMFAPreference",
        "AdminSetUserSettings",
        "AdminUpdateUserAttributes",
        "AdminDeleteUserAttributes",
        "AdminDisableUser",
        "AdminEnableUser",
        "AdminAddUserToGroup",
        "AdminRemoveUserFromGroup",
        "AdminSetUserPassword",
        "AdminResetUserPassword",
        "AdminConfirmSignUp",
        "AdminUserGlobalSignOut",
        "AdminLinkProviderForUser",
    }
)
SIGN_INS = frozenset(
    {"InitiateAuth", "AdminInitiateAuth", "RespondToAuthChallenge", "AdminRespondToAuthChallenge"}
)
_LOOKUP_KEYS = frozenset({"EventId", "EventName", "ReadOnly", "Username", "EventSource"})


class LookupError_(Exception):
    """An error answer of LookupEvents: (code, message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TrailEvent:
    """One recorded call. Kept small: the CloudTrail JSON is built only when looked up."""

    seq: int
    event_id: str
    name: str
    time: float  # whole seconds, as CloudTrail records them
    delivered_at: float
    account_id: str
    region: str
    pool_id: str | None
    sub: str | None
    principal: str | None  # the IAM caller of an admin call; None for token calls
    error_code: str | None

    @property
    def read_only(self) -> bool:
        return self.name.startswith(("Get", "List", "Describe", "AdminGet", "AdminList"))

    def lookup_row(self) -> dict[str, Any]:
        iso = datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        request: dict[str, Any] = {}
        if self.pool_id and self.principal is not None:
            request = {"userPoolId": self.pool_id, "username": HIDDEN}
        additional: dict[str, Any] = {}
        if self.sub:
            additional["sub"] = self.sub
        if self.pool_id:
            additional["userPoolId"] = self.pool_id
        identity: dict[str, Any] = {"accountId": self.account_id}
        if self.principal is not None:
            identity.update(type="AssumedRole", principalId=self.principal)
        else:
            identity["type"] = "Unknown"
        detail = {
            "eventVersion": "1.08",
            "userIdentity": identity,
            "eventTime": iso,
            "eventSource": EVENT_SOURCE,
            "eventName": self.name,
            "awsRegion": self.region,
            "requestParameters": request or None,
            "additionalEventData": additional or None,
            "eventID": self.event_id,
            "readOnly": self.read_only,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": self.account_id,
            "eventCategory": "Management",
        }
        if self.error_code:
            detail["errorCode"] = self.error_code
        row: dict[str, Any] = {
            "EventId": self.event_id,
            "EventName": self.name,
            "ReadOnly": "true" if self.read_only else "false",
            "EventTime": self.time,
            "EventSource": EVENT_SOURCE,
            "Resources": [],
            "CloudTrailEvent": json.dumps(detail),
        }
        if self.principal is not None:
            row["Username"] = self.principal
        return row


def month_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m")


class Trail:
    """Recorded events and monthly active users; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[TrailEvent] = []
        #: Positions in _events by event name: a lookup by name scans only its own.
        self._by_name: dict[str, list[int]] = {}
        self._maus: dict[tuple[str, str], set[str]] = {}
        self.lag_seconds = 0.0

    def reset(self) -> None:
        with self._lock:
            self._events.clear()
            self._by_name.clear()
            self._maus.clear()

    def record(
        self,
        name: str,
        *,
        at: float,
        account_id: str,
        region: str,
        pool_id: str | None,
        sub: str | None,
        principal: str | None,
        error_code: str | None = None,
        counts_as_mau: bool = False,
    ) -> None:
        with self._lock:
            self._by_name.setdefault(name, []).append(len(self._events))
            self._events.append(
                TrailEvent(
                    seq=len(self._events),
                    event_id=str(uuid.uuid4()),
                    name=name,
                    time=float(int(at)),
                    delivered_at=at + self.lag_seconds,
                    account_id=account_id,
                    region=region,
                    pool_id=pool_id,
                    sub=sub,
                    principal=principal,
                    error_code=error_code,
                )
            )
            if counts_as_mau and pool_id and sub and error_code is None:
                self._maus.setdefault((pool_id, month_of(at)), set()).add(sub)

    def deliver_all(self, now: float) -> int:
        """Deliver every event still in flight (as if the lag had passed); returns how many."""
        with self._lock:
            late = [i for i, e in enumerate(self._events) if e.delivered_at > now]
            for i in late:
                self._events[i] = replace(self._events[i], delivered_at=now)
            return len(late)

    def events(self, pool_id: str | None = None) -> list[TrailEvent]:
        with self._lock:
            return [e for e in self._events if pool_id is None or e.pool_id == pool_id]

    def monthly_active_users(self, pool_id: str, month: str) -> set[str]:
        with self._lock:
            return set(self._maus.get((pool_id, month), set()))

    # ---- LookupEvents ----------------------------------------------------------------------

    def lookup(
        self, body: Mapping[str, Any], *, account_id: str, region: str, now: float
    ) -> dict[str, Any]:
        attributes = body.get("LookupAttributes") or []
        if len(attributes) > 1:
            raise LookupError_(
                "InvalidLookupAttributesException",
                "You cannot specify more than one lookup attribute.",
            )
        match: tuple[str, str] | None = None
        if attributes:
            key = attributes[0].get("AttributeKey")
            if key not in _LOOKUP_KEYS:
                raise LookupError_(
                    "InvalidLookupAttributesException", f"Unsupported lookup attribute {key}."
                )
            match = (str(key), str(attributes[0].get("AttributeValue", "")))
        max_results = int(body.get("MaxResults") or MAX_RESULTS)
        if not 1 <= max_results <= MAX_RESULTS:
            raise LookupError_("InvalidMaxResultsException", "MaxResults must be between 1 and 50.")
        start = float(body["StartTime"]) if body.get("StartTime") is not None else 0.0
        end = float(body["EndTime"]) if body.get("EndTime") is not None else now
        if start > end:
            raise LookupError_(
                "InvalidTimeRangeException", "StartTime must be earlier than EndTime."
            )
        before = _decode_token(body.get("NextToken"))
        with self._lock:
            if match is not None and match[0] == "EventName":
                pool = [self._events[i] for i in reversed(self._by_name.get(match[1], []))]
            else:
                pool = list(reversed(self._events))
            candidates = [
                e
                for e in pool
                if (before is None or e.seq < before)
                and e.delivered_at <= now
                and e.account_id == account_id
                and e.region == region
                and start <= e.time <= end
                and (match is None or _matches(e, match))
            ]
        page = candidates[:max_results]
        answer: dict[str, Any] = {"Events": [e.lookup_row() for e in page]}
        if len(candidates) > max_results:
            answer["NextToken"] = _encode_token(page[-1].seq)
        return answer


def _matches(event: TrailEvent, match: tuple[str, str]) -> bool:
    key, value = match
    if key == "EventName":
        return event.name == value
    if key == "EventSource":
        return value == EVENT_SOURCE
    if key == "EventId":
        return event.event_id == value
    if key == "ReadOnly":
        return (value == "true") == event.read_only
    return event.principal == value  # Username


def _encode_token(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": seq}).encode()).decode()


def _decode_token(token: Any) -> int | None:
    if not token:
        return None
    try:
        return int(json.loads(base64.urlsafe_b64decode(str(token)))["before"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise LookupError_("InvalidNextTokenException", "Invalid NextToken.") from None
