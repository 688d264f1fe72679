"""The state ledger's vocabulary: what was last observed of each user, and when to read again.

Pure. ``AdminGetUser`` makes the user it reads a billable monthly active user (MAU), so a run
reads a user's MFA state only when it can have changed since it was last observed; the
ledger (SQLite locally, DynamoDB in AWS) keeps the observation, and CloudTrail's record of the
calls that change MFA state (the change feed) says who changed. ``needs_read`` is the one
place that decides; the runner and the estimate both ask it.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from mfa_policy.core.model import MfaState

#: CloudTrail records event times to the second; an event in the same second as an
#: observation may have come after it.
EVENT_TIME_RESOLUTION = 1.0

#: Calls whose observation makes the user an MAU of that month anyway: AdminGetUser (the only
#: read documented to count), a token read (a token exists only after a sign-in), and an admin
#: write (an administrative update counts as activity). AdminGetUserAuthFactors carries no such
#: sentence: counting it here would report later AdminGetUser reads as adding no MAU.
ACTIVE_BY = frozenset({"AdminGetUser", "GetUser", "GetUserAuthFactors", "admin-write"})


class ReadReason(StrEnum):
    """Why a run reads a user's MFA state instead of taking it from the ledger."""

    FULL = "full"  # --full, no ledger, or the change feed could not be read
    NEVER_OBSERVED = "never_observed"
    EVENT = "event"  # a CloudTrail event that can change MFA state, since the observation
    LISTING_CHANGED = "listing_changed"  # UserLastModifiedDate differs from the observation's
    CHANGED = "changed"  # named by the caller (an EventBridge event for this user)
    BEFORE_WRITE = "before_write"  # apply never writes on the strength of the ledger


@dataclass(frozen=True)
class LedgerEntry:
    """One user of one pool, by sub. ``mfa`` None: never observed (only events are known)."""

    sub: str
    mfa: MfaState | None = None
    auth_factors: tuple[str, ...] | None = None
    observed_at: float | None = None  # epoch seconds, taken before the read was sent
    observed_by: str | None = None  # the call: AdminGetUser, GetUser, or admin-write
    listed_modified: str | None = None  # UserLastModifiedDate in the listing of that run
    last_event_at: float | None = None  # latest state-changing CloudTrail event seen
    active_month: str | None = None  # "YYYY-MM": the latest month the user was an MAU
    #: ``mfa``'s SMS was on through the legacy MFAOptions only.
    legacy_sms: bool = False

    @property
    def observed(self) -> bool:
        return self.mfa is not None and self.observed_at is not None


@dataclass(frozen=True)
class Observation:
    """A user's MFA state as a run saw it (read, or set by an accepted write)."""

    sub: str
    mfa: MfaState
    observed_at: float
    observed_by: str
    listed_modified: str | None = None
    auth_factors: tuple[str, ...] | None = None
    legacy_sms: bool = False


def state_json(mfa: MfaState, legacy_sms: bool) -> str:
    """How a ledger stores an observed state: the state, and legacy SMS beside it (the
    decision for a legacy SMS user differs, so the ledger must not forget it)."""
    data: dict[str, object] = dict(mfa.to_dict())
    if legacy_sms:
        data["legacy_sms"] = True
    return json.dumps(data)


def state_from_json(text: str) -> tuple[MfaState, bool]:
    data = json.loads(text)
    legacy_sms = bool(data.pop("legacy_sms", False))
    return MfaState.from_dict(data), legacy_sms


@dataclass(frozen=True)
class FeedEvent:
    """One CloudTrail event about one user, as the change feed passes it on."""

    name: str
    time: float
    sub: str
    #: The call can change MFA state or sign-in factors: the user is read again.
    changes_state: bool
    #: The call makes the user an MAU of its month (a sign-in, an admin update).
    makes_active: bool


class Listed(Protocol):
    """What ``needs_read`` needs of a ListUsers row."""

    @property
    def sub(self) -> str: ...

    @property
    def last_modified(self) -> str | None: ...


class Ledger(Protocol):
    """Where observations are kept: SQLite in the state folder, or a DynamoDB table."""

    user_pool_id: str

    def get_many(self, subs: Iterable[str]) -> dict[str, LedgerEntry]: ...
    def record(self, observations: Iterable[Observation]) -> None: ...
    def note_events(self, events: Iterable[FeedEvent]) -> int: ...
    def meta(self) -> Mapping[str, str]: ...
    def set_meta(self, **values: str) -> None: ...
    def forget_observations(self) -> None: ...
    def has_observations(self) -> bool: ...
    def close(self) -> None: ...


def month_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m")


def month_start(epoch: float) -> float:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def needs_read(
    listed: Listed,
    entry: LedgerEntry | None,
    changed_subs: Container[str] = frozenset(),
    *,
    full: bool = False,
    skew_seconds: float = 0.0,
) -> ReadReason | None:
    """Why this user's MFA state must be read now, or None when the ledger's is current.

    Current means: observed, no state-changing event since (allowing for CloudTrail's
    one-second resolution and ``skew_seconds`` between our clock and CloudTrail's), and the
    listing's ``UserLastModifiedDate`` is the one recorded with the observation.
    """
    if full:
        return ReadReason.FULL
    if listed.sub in changed_subs:
        return ReadReason.CHANGED
    if entry is None or not entry.observed:
        return ReadReason.NEVER_OBSERVED
    assert entry.observed_at is not None
    if (
        entry.last_event_at is not None
        and entry.last_event_at + EVENT_TIME_RESOLUTION + skew_seconds > entry.observed_at
    ):
        return ReadReason.EVENT
    if listed.last_modified != entry.listed_modified:
        return ReadReason.LISTING_CHANGED
    return None


def active_in(entry: LedgerEntry | None, month: str) -> bool:
    """Whether the user is already an MAU of ``month`` as far as the ledger knows."""
    return entry is not None and entry.active_month is not None and entry.active_month >= month
