"""The change feed: CloudTrail's Event history of the Cognito calls that can change a user.

``LookupEvents`` needs no trail and keeps 90 days of management events per account and
Region, Cognito's token calls included, keyed by the user's sub ("Amazon Cognito records
UserSub but not UserName in CloudTrail logs for requests that are specific to a user",
Cognito developer guide, "Logging Amazon Cognito API calls with AWS CloudTrail"). It takes one
lookup attribute per request, answers 50 events a page, and allows about 2 requests a second
per account and Region, shared with everything else that reads it; so the feed asks once per
event name (a lookup by event source would also page through every sign-in and every read,
ours included) and paces itself below that quota.

Events reach the history minutes after the call (typically under 15). A run therefore looks
back from its previous lookup by ``overlap_seconds`` (20 minutes by default): an event that
was still in flight when the last run looked is seen by this one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mfa_policy.aws.gateway import CallCounters, RetryPolicy
from mfa_policy.core.ledger import FeedEvent
from mfa_policy.exceptions import MfaPolicyError

#: How far CloudTrail's Event history reaches back.
HISTORY_SECONDS = 90 * 86_400.0
#: Default look-back over the previous lookup, for events delivered late.
DEFAULT_OVERLAP_SECONDS = 20 * 60.0
#: Our pace; CloudTrail allows about 2 LookupEvents a second per account and Region.
DEFAULT_LOOKUPS_PER_SECOND = 1.5
#: Sign-ins only refine the MAU count, and a busy account has many: stop after this many pages
#: per event name (10,000 events, about 2 minutes) so a run's start stays short.
MAX_SIGN_IN_PAGES = 200

#: Event name -> why it means the user's MFA state (or sign-in factors) must be read again.
#: Sources: the API reference of each operation; the developer guide's CloudTrail page for
#: the managed login events.
STATE_CHANGING_EVENTS: Mapping[str, str] = {
    "AdminSetUserMFAPreference": "sets the user's MFA factors and preference (admin)",
    "SetUserMFAPreference": "sets the user's MFA factors and preference (the user's token)",
    "AdminSetUserSettings": "legacy MFAOptions (SMS) set by an admin",
    "SetUserSettings": "legacy MFAOptions (SMS) set by the user",
    "AssociateSoftwareToken": "a new TOTP secret: TOTP is listed but not in effect until verified",
    "VerifySoftwareToken": "verifies a TOTP authenticator (the user can now enable TOTP)",
    "AdminUpdateUserAttributes": "phone_number or email changed (SMS and email MFA need them)",
    "UpdateUserAttributes": "the user changed phone_number or email",
    "AdminDeleteUserAttributes": "phone_number or email removed",
    "DeleteUserAttributes": "the user removed phone_number or email",
    "VerifyUserAttribute": "the user verified phone_number or email",
    "CompleteWebAuthnRegistration": "a passkey registered (passkey MFA, sign-in factors)",
    "DeleteWebAuthnCredential": "a passkey removed",
    "AdminSetUserPassword": "a password set: the user is no longer passwordless",
    "AdminResetUserPassword": "password reset required (status and sign-in factors)",
    "mfa_totp_POST": "managed login page: TOTP set up",
    "mfa_phone_register_POST": "managed login page: SMS MFA set up",
    "passkeys_add_POST": "managed login page: passkey added",
}

#: Sign-ins: the user is an MAU of that month already, so reading them adds none.
SIGN_IN_EVENTS = ("InitiateAuth", "RespondToAuthChallenge", "AdminInitiateAuth",
                  "AdminRespondToAuthChallenge")  # fmt: skip

#: Looked at and deliberately not looked up (each name costs one request a run):
#: every run decides from a fresh listing, so these need no MFA read.
NOT_LOOKED_UP: Mapping[str, str] = {
    "AdminCreateUser / SignUp": "a new user has a new sub, never observed, so it is read",
    "AdminDeleteUser / DeleteUser": "a deleted user is no longer listed",
    "AdminAddUserToGroup / AdminRemoveUserFromGroup": "groups are listed afresh every run",
    "AdminEnableUser / AdminDisableUser": "Enabled is in the listing; MFA state is unchanged",
    "StartWebAuthnRegistration": "nothing changes until CompleteWebAuthnRegistration",
}

#: Admin calls among the state-changing events that make the user an MAU (pricing page:
#: "an administrative create or update"; unconfirmed by a second source).
_ADMIN_UPDATES = frozenset(
    {
        "AdminSetUserMFAPreference",
        "AdminSetUserSettings",
        "AdminUpdateUserAttributes",
        "AdminDeleteUserAttributes",
        "AdminSetUserPassword",
        "AdminResetUserPassword",
    }
)
_TOKEN_CALLS_IMPLY_SIGN_IN = frozenset(
    {
        "SetUserMFAPreference",
        "SetUserSettings",
        "AssociateSoftwareToken",
        "VerifySoftwareToken",
        "UpdateUserAttributes",
        "DeleteUserAttributes",
        "VerifyUserAttribute",
        "CompleteWebAuthnRegistration",
        "DeleteWebAuthnCredential",
    }
)
_THROTTLE_CODES = frozenset({"ThrottlingException", "TooManyRequestsException"})


class FeedUnavailable(MfaPolicyError):
    """CloudTrail cannot say who changed: the run reads everyone instead."""


@dataclass(frozen=True)
class Window:
    start: float
    end: float


class CloudTrailFeed:
    """Cognito events of one pool from CloudTrail's Event history, paced under its quota."""

    def __init__(
        self,
        client: Any,
        user_pool_id: str,
        *,
        lookups_per_second: float = DEFAULT_LOOKUPS_PER_SECOND,
        retry: RetryPolicy | None = None,
        counters: CallCounters | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.user_pool_id = user_pool_id
        self.interval = 1.0 / lookups_per_second
        self.retry = retry or RetryPolicy()
        self.counters = counters or CallCounters()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_at = 0.0
        self.lookups = 0
        #: Sign-in event names whose pages were cut at MAX_SIGN_IN_PAGES.
        self.sign_ins_cut: list[str] = []

    def events(self, changes: Window | None, sign_ins: Window | None) -> Iterator[FeedEvent]:
        """State-changing events in ``changes`` and sign-ins in ``sign_ins``, for this pool.

        Raises FeedUnavailable when CloudTrail refuses (no permission, bad Region, ...).
        """
        if changes is not None:
            for name in STATE_CHANGING_EVENTS:
                yield from self._events_named(name, changes)
        if sign_ins is not None:
            for name in SIGN_IN_EVENTS:
                yield from self._events_named(name, sign_ins, max_pages=MAX_SIGN_IN_PAGES)

    def _events_named(
        self, name: str, window: Window, *, max_pages: int | None = None
    ) -> Iterator[FeedEvent]:
        token: str | None = None
        pages = 0
        while True:
            if max_pages is not None and pages >= max_pages:
                self.sign_ins_cut.append(name)
                return
            pages += 1
            kwargs: dict[str, Any] = {
                "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": name}],
                "StartTime": window.start,
                "EndTime": window.end,
                "MaxResults": 50,
            }
            if token:
                kwargs["NextToken"] = token
            response = self._lookup(kwargs)
            for raw in response.get("Events") or []:
                event = self._parse(raw)
                if event is not None:
                    yield event
            token = response.get("NextToken") or None
            if token is None:
                return

    def _lookup(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        while True:
            attempt += 1
            self._pace()
            try:
                response: dict[str, Any] = self.client.lookup_events(**kwargs)
                self.counters.count("lookup_events")
                self.lookups += 1
                return response
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", "Unknown"))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                throttled = code in _THROTTLE_CODES or status == 429
                self.counters.count("lookup_events", throttled=throttled)
                retryable = throttled or status >= 500
                if not retryable or attempt >= self.retry.throttle_attempts:
                    raise FeedUnavailable(
                        f"CloudTrail LookupEvents: {code}: {error.get('Message', '')}"
                    ) from None
                with self._lock:  # a throttle: everyone waits a little longer
                    self.interval = min(self.interval * 1.5, 10.0)
            except BotoCoreError as exc:
                self.counters.count("lookup_events")
                if attempt >= self.retry.error_attempts:
                    raise FeedUnavailable(f"CloudTrail LookupEvents: {exc}") from None
            self._sleep(self.retry.delay(attempt))

    def _pace(self) -> None:
        with self._lock:
            now = self._clock()
            wait = self._next_at - now
            self._next_at = max(now, self._next_at) + self.interval
        if wait > 0:
            self._sleep(wait)

    def _parse(self, raw: Mapping[str, Any]) -> FeedEvent | None:
        try:
            detail = json.loads(raw.get("CloudTrailEvent") or "{}")
        except ValueError:
            return None
        if detail.get("errorCode"):
            return None  # a refused call changed nothing
        additional = detail.get("additionalEventData") or {}
        request = detail.get("requestParameters") or {}
        pool = additional.get("userPoolId") or request.get("userPoolId")
        if pool and pool != self.user_pool_id:
            return None
        sub = additional.get("sub") or additional.get("userSub")
        if not isinstance(sub, str) or not sub:
            return None
        name = str(raw.get("EventName") or detail.get("eventName") or "")
        when: Any = raw.get("EventTime")
        epoch = float(when.timestamp()) if hasattr(when, "timestamp") else float(when or 0)
        return FeedEvent(
            name=name,
            time=epoch,
            sub=sub,
            changes_state=name in STATE_CHANGING_EVENTS,
            makes_active=name in SIGN_IN_EVENTS
            or name in _ADMIN_UPDATES
            or name in _TOKEN_CALLS_IMPLY_SIGN_IN,
        )
