"""needs_read: the one rule that decides whether a run reads a user or trusts the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from mfa_policy.core.ledger import (
    EVENT_TIME_RESOLUTION,
    LedgerEntry,
    ReadReason,
    active_in,
    month_of,
    month_start,
    needs_read,
)
from mfa_policy.core.model import Factor, MfaState

SMS = MfaState(frozenset({Factor.SMS}), Factor.SMS)


@dataclass(frozen=True)
class Listed:
    sub: str = "s-1"
    last_modified: str | None = "2026-12-01T10:00:00+00:00"


def observed(**kwargs: object) -> LedgerEntry:
    base: dict[str, object] = {
        "sub": "s-1",
        "mfa": SMS,
        "observed_at": 1_000.0,
        "observed_by": "AdminGetUser",
        "listed_modified": Listed().last_modified,
    }
    return LedgerEntry(**{**base, **kwargs})  # type: ignore[arg-type]


def test_a_current_observation_needs_no_read() -> None:
    assert needs_read(Listed(), observed()) is None


def test_never_observed_users_are_read() -> None:
    assert needs_read(Listed(), None) is ReadReason.NEVER_OBSERVED
    # Only a sign-in or an event is known of this user: still never observed.
    assert needs_read(Listed(), LedgerEntry("s-1", active_month="2026-12")) is (
        ReadReason.NEVER_OBSERVED
    )


def test_an_event_after_the_observation_means_a_read() -> None:
    assert needs_read(Listed(), observed(last_event_at=1_000.5)) is ReadReason.EVENT
    # CloudTrail's whole seconds: an event stamped one second before may have come after.
    assert needs_read(Listed(), observed(last_event_at=999.5)) is ReadReason.EVENT
    assert needs_read(Listed(), observed(last_event_at=1_000.0 - EVENT_TIME_RESOLUTION)) is None
    assert needs_read(Listed(), observed(last_event_at=990.0), skew_seconds=15) is (
        ReadReason.EVENT
    )


def test_a_listing_that_changed_since_the_observation_means_a_read() -> None:
    listed = Listed(last_modified="2026-12-02T00:00:00+00:00")
    assert needs_read(listed, observed()) is ReadReason.LISTING_CHANGED


def test_full_and_named_changes_always_read() -> None:
    assert needs_read(Listed(), observed(), full=True) is ReadReason.FULL
    assert needs_read(Listed(), observed(), {"s-1"}) is ReadReason.CHANGED
    assert needs_read(Listed(), observed(), {"s-2"}) is None


@given(
    observed_at=st.floats(0, 1e9),
    event_after=st.floats(0, 1e6),
    skew=st.floats(0, 600),
)
def test_any_event_after_the_observation_is_never_missed(
    observed_at: float, event_after: float, skew: float
) -> None:
    entry = observed(observed_at=observed_at, last_event_at=observed_at + event_after)
    assert needs_read(Listed(), entry, skew_seconds=skew) is ReadReason.EVENT


def test_months_and_activity() -> None:
    assert month_of(1_764_547_200.0) == "2025-12"  # 2025-12-01T00:00:00Z
    assert month_start(1_764_547_200.0 + 86_400 * 10) == 1_764_547_200.0
    assert active_in(observed(active_month="2025-12"), "2025-12")
    assert not active_in(observed(active_month="2025-11"), "2025-12")
    assert not active_in(None, "2025-12")
