"""The state ledger on this machine: one SQLite file per pool in the state folder.

Rows are read a page (60 users) at a time and written at each page's commit, so memory stays
flat with pool size.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mfa_policy.aws.cloudtrail import (
    DEFAULT_OVERLAP_SECONDS,
    HISTORY_SECONDS,
    CloudTrailFeed,
    FeedUnavailable,
    Window,
)
from mfa_policy.core.ledger import (
    ACTIVE_BY,
    FeedEvent,
    Ledger,
    LedgerEntry,
    Observation,
    month_of,
    month_start,
    state_from_json,
    state_json,
)

_COLUMNS = (
    "sub, mfa, auth_factors, observed_at, observed_by, listed_modified, last_event_at, active_month"
)


class SqliteLedger:
    def __init__(self, path: Path | str, user_pool_id: str) -> None:
        self.path = Path(path)
        self.user_pool_id = user_pool_id
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS entry (sub TEXT PRIMARY KEY, mfa TEXT, "
            "auth_factors TEXT, observed_at REAL, observed_by TEXT, listed_modified TEXT, "
            "last_event_at REAL, active_month TEXT)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")

    def get_many(self, subs: Iterable[str]) -> dict[str, LedgerEntry]:
        wanted = list(dict.fromkeys(subs))
        found: dict[str, LedgerEntry] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM entry WHERE sub IN ({marks})",  # noqa: S608
                    chunk,
                ).fetchall()
            for row in rows:
                found[row[0]] = _entry(row)
        return found

    def record(self, observations: Iterable[Observation]) -> None:
        rows = [
            (
                o.sub,
                state_json(o.mfa, o.legacy_sms),
                json.dumps(list(o.auth_factors)) if o.auth_factors is not None else None,
                o.observed_at,
                o.observed_by,
                o.listed_modified,
                month_of(o.observed_at) if o.observed_by in ACTIVE_BY else None,
            )
            for o in observations
        ]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO entry (sub, mfa, auth_factors, observed_at, observed_by, "
                "listed_modified, active_month) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(sub) DO UPDATE SET mfa = excluded.mfa, "
                "auth_factors = excluded.auth_factors, observed_at = excluded.observed_at, "
                "observed_by = excluded.observed_by, listed_modified = excluded.listed_modified, "
                "active_month = max(coalesce(active_month, ''), "
                "coalesce(excluded.active_month, ''))",
                rows,
            )
            self._db.execute("COMMIT")

    def note_events(self, events: Iterable[FeedEvent]) -> int:
        """Remember the latest state-changing event and the latest active month per sub."""
        count = 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                count = self._note(events)
            finally:
                # Events ingested before a failed lookup are real: keep them (the cursor
                # does not move, so the next run looks them up again anyway).
                self._db.execute("COMMIT")
        return count

    def _note(self, events: Iterable[FeedEvent]) -> int:
        count = 0
        for event in events:
            count += 1
            self._db.execute(
                "INSERT INTO entry (sub, last_event_at, active_month) VALUES (?, ?, ?) "
                "ON CONFLICT(sub) DO UPDATE SET "
                "last_event_at = max(coalesce(last_event_at, 0), "
                "coalesce(excluded.last_event_at, 0)), "
                "active_month = max(coalesce(active_month, ''), "
                "coalesce(excluded.active_month, ''))",
                (
                    event.sub,
                    event.time if event.changes_state else None,
                    month_of(event.time) if event.makes_active else None,
                ),
            )
        return count

    def meta(self) -> Mapping[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, **values: str) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def forget_observations(self) -> None:
        """Observations that nothing can vouch for any more; active months are kept."""
        with self._lock:
            self._db.execute(
                "UPDATE entry SET mfa = NULL, auth_factors = NULL, observed_at = NULL, "
                "observed_by = NULL, listed_modified = NULL, last_event_at = NULL"
            )

    def forget_all(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM entry")
            self._db.execute("DELETE FROM meta")

    def has_observations(self) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM entry WHERE observed_at IS NOT NULL LIMIT 1"
            ).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


def _entry(row: tuple[object, ...]) -> LedgerEntry:
    sub, mfa, factors, observed_at, observed_by, listed_modified, last_event, month = row
    state, legacy_sms = state_from_json(str(mfa)) if mfa is not None else (None, False)
    return LedgerEntry(
        sub=str(sub),
        mfa=state,
        legacy_sms=legacy_sms,
        auth_factors=tuple(json.loads(str(factors))) if factors is not None else None,
        observed_at=float(observed_at) if observed_at is not None else None,  # type: ignore[arg-type]
        observed_by=str(observed_by) if observed_by is not None else None,
        listed_modified=str(listed_modified) if listed_modified is not None else None,
        last_event_at=float(last_event) if last_event else None,  # type: ignore[arg-type]
        active_month=str(month) if month else None,
    )


@dataclass(frozen=True)
class FeedSync:
    """What a run's start learned from the change feed, and whether it must read everyone."""

    full: bool
    reason: str
    warnings: list[str] = field(default_factory=list)
    events: int = 0
    lookups: int = 0
    window_start: float | None = None
    window_end: float | None = None


def sync_feed(
    ledger: Ledger,
    feed: CloudTrailFeed | None,
    *,
    now: float,
    full_requested: bool = False,
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
) -> FeedSync:
    """Bring the ledger up to date with CloudTrail, and say whether the run can trust it.

    The cursor is when the last successful lookup was made; this one reaches back from it by
    ``overlap_seconds`` for events that were still in flight then. It moves only after every
    event up to ``now`` is in the ledger, so a run that dies later loses nothing. Where the
    ledger cannot be vouched for (another pool's, no cursor, a gap longer than CloudTrail
    keeps) its observations are forgotten and everyone is read.
    """
    warnings: list[str] = []
    meta = ledger.meta()
    pool = meta.get("user_pool_id")
    if pool is not None and pool != ledger.user_pool_id:
        warnings.append(
            f"the state ledger is of pool {pool}, not {ledger.user_pool_id}: it is reset and "
            "every user is read"
        )
        ledger.forget_observations()
        meta = {}
    ledger.set_meta(user_pool_id=ledger.user_pool_id)
    cursor = float(meta["cursor"]) if meta.get("cursor") else None
    oldest = now - HISTORY_SECONDS + overlap_seconds
    untrusted = None
    if cursor is None and ledger.has_observations():
        untrusted = "no CloudTrail lookup covers its observations"
    elif cursor is not None and cursor < oldest:
        untrusted = (
            f"its last CloudTrail lookup was {(now - cursor) / 86_400:.0f} days ago and "
            "CloudTrail keeps 90"
        )
    if untrusted:
        warnings.append(f"the state ledger cannot be trusted ({untrusted}): every user is read")
        ledger.forget_observations()
        cursor = None
    if feed is None:
        return FeedSync(True, "no change feed", warnings)
    # Sign-ins since the month began (or since the last lookup) say who is an MAU already.
    sign_in_start = max(month_start(now), now - HISTORY_SECONDS + 60)
    if cursor is not None:
        sign_in_start = max(sign_in_start, cursor - overlap_seconds)
    changes = Window(cursor - overlap_seconds, now) if cursor is not None else None
    try:
        count = ledger.note_events(feed.events(changes, Window(sign_in_start, now)))
    except FeedUnavailable as exc:
        warnings.append(f"CloudTrail could not be read ({exc}): every user is read")
        return FeedSync(True, "change feed unavailable", warnings, lookups=feed.lookups)
    ledger.set_meta(cursor=repr(now))
    if feed.sign_ins_cut:
        warnings.append(
            f"CloudTrail holds more sign-ins than a run reads ({', '.join(feed.sign_ins_cut)}): "
            "the MAUs added may count some users who signed in this month"
        )
    first = cursor is None
    return FeedSync(
        full=full_requested,
        reason="--full" if full_requested else ("first run" if first else "incremental"),
        warnings=warnings,
        events=count,
        lookups=feed.lookups,
        window_start=changes.start if changes else sign_in_start,
        window_end=now,
    )
