"""Client-side rate limits: one paced, AIMD-governed budget per Cognito quota category.

Cognito documents its quotas only as requests per second, so plan for no burst at all: each
category hands out evenly spaced send times at its current rate, and a pause banks nothing
(after any idle time one request may go at once, the next one a full interval later: a bucket
of one token). Cognito's quotas are per account and Region and shared with the live
application, so a throttle lowers the rate, multiplicatively but at most once per window per
category (one congestion event arrives as many throttled replies) and in proportion to the
share of recent answers that were throttled, and each second without one wins back a fixed
share of the configured budget (additive increase) up to that budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from enum import StrEnum


class Category(StrEnum):
    """Cognito's request-rate quota categories for the operations this tool calls."""

    USER_READ = "user_read"
    USER_RESOURCE_UPDATE = "user_resource_update"
    USER_LIST = "user_list"
    USER_POOL_READ = "user_pool_resource_read"


#: The deepest cut keeps this share of the rate (TCP's AIMD uses 0.5; a throttle here is one
#: quota category's sign of congestion, and a gentler cut keeps the budget busy with no burst).
#: A cut keeps 1 - (throttled share of the last one to two windows' answers), never less: as
#: DCTCP cuts by its share of marked packets, sending at r with a share s throttled means about
#: r(1 - s) is left for us, and two stray throttles among a second's answers cost 2% of the
#: rate, not 15% for the seven seconds that recovering it takes.
DECREASE = 0.85
#: At most one cut per this many seconds per category: the throttles of one congestion event
#: arrive within about one round trip plus the retry backoff.
CUT_WINDOW = 1.0
#: Additive increase: the share of the budget won back per second without a cut.
INCREASE_PER_SECOND = 0.02
#: A window cuts only when more than this share of its answers were throttled (and at least
#: two): a lone throttle among a second's requests is jitter in arrival times, not a sign that
#: someone else is using the quota, and cutting on it would lose a share of the budget for good.
TOLERANCE = 0.01
#: The rate never falls below this share of the budget (nor below MIN_RATE).
FLOOR = 0.05
MIN_RATE = 0.2


class PacedBudget:
    """Evenly spaced send times at ``rate``; AIMD on throttles; thread-safe.

    ``acquire`` reserves the next slot under the lock and sleeps outside it, so concurrent
    callers are spread one interval apart. ``ceiling`` is what the rate recovers to: the
    configured budget, or less when the live application's usage says so (``set_ceiling``).
    """

    def __init__(
        self,
        rate: float,
        *,
        decrease: float = DECREASE,
        window: float = CUT_WINDOW,
        increase_per_second: float = INCREASE_PER_SECOND,
        tolerance: float = TOLERANCE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.budget = rate
        self.ceiling = rate
        self.rate = rate
        self.decrease = decrease
        self.window = window
        self.increase_per_second = increase_per_second
        self.tolerance = tolerance
        self.cuts = 0
        self._answers = 0  # in the current window
        self._throttles = 0
        self._previous = (0, 0)  # (answers, throttles) of the window just before it
        self._rate_before_cut = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self._next_slot = now
        self._last_send = now - 1 / rate
        self._last_cut = now - window
        self._last_growth = now
        self._window_start = now

    @property
    def floor(self) -> float:
        return max(MIN_RATE, self.budget * FLOOR)

    def acquire(self) -> float:
        """Block until this caller's send time; returns the seconds waited.

        Two steps: reserve the next slot of the even schedule and sleep until it; then, since
        a thread may wake late (CPU load, the GIL) and land next to the one after it, wait
        until a full interval has passed since the last actual send. Sends are then never
        closer than one interval, which is what a service with no burst requires.
        """
        with self._lock:
            now = self._clock()
            self._grow(now)
            # max(): an idle budget banks nothing; the schedule restarts from now.
            slot = max(self._next_slot, now)
            self._next_slot = slot + 1 / self.rate
        started = now
        if slot > now:
            self._sleep(slot - now)
        while True:
            with self._lock:
                now = self._clock()
                earliest = self._last_send + 1 / self.rate
                if now >= earliest:
                    self._last_send = now
                    return now - started
            self._sleep(earliest - now)

    def answered(self, *, throttled: bool) -> bool:
        """Count an answer; on a throttle, cut the rate if this window has not had its cut and
        more than ``tolerance`` of its answers were throttled, by the throttled share of this
        window's and the last one's answers (at most to ``decrease``); later throttles in the
        cut's window deepen it as that share grows. Returns whether it made a new cut."""
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self.window:
                adjacent = now - self._window_start < 2 * self.window
                self._previous = (self._answers, self._throttles) if adjacent else (0, 0)
                self._window_start, self._answers, self._throttles = now, 0, 0
            self._answers += 1
            if not throttled:
                return False
            self._throttles += 1
            if self._throttles < max(2, self.tolerance * self._answers):
                return False
            answers, throttles = self._previous
            share = (throttles + self._throttles) / (answers + self._answers)
            keep = max(self.decrease, 1 - share)
            if now - self._last_cut < self.window:
                # This window's cut is made: it deepens as its throttled share grows.
                deeper = max(self.floor, self._rate_before_cut * keep)
                if deeper < self.rate:
                    self._set_rate(deeper, now)
                return False
            self._grow(now)
            self._last_cut = now
            self.cuts += 1
            self._rate_before_cut = self.rate
            self._set_rate(max(self.floor, self.rate * keep), now)
            return True

    def set_ceiling(self, ceiling: float) -> None:
        """Recover to at most ``ceiling`` (within the configured budget) from now on."""
        with self._lock:
            now = self._clock()
            self._grow(now)
            self.ceiling = min(self.budget, max(self.floor, ceiling))
            if self.rate > self.ceiling:
                self._set_rate(self.ceiling, now)

    def _grow(self, now: float) -> None:
        elapsed = now - self._last_growth
        self._last_growth = now
        if self.rate < self.ceiling and elapsed > 0:
            grown = self.rate + self.budget * self.increase_per_second * elapsed
            self._set_rate(min(self.ceiling, grown), now)

    def _set_rate(self, rate: float, now: float) -> None:
        # Slots already handed out keep their times; the next one is one new interval after
        # the last reserved send, so a cut takes effect at once and a rise never bunches sends.
        previous = self.rate
        self.rate = rate
        if self._next_slot > now:
            last_sent = self._next_slot - 1 / previous
            self._next_slot = max(now, last_sent + 1 / rate)


class RateLimiter:
    """The budgets of one run, by category; unknown categories are not limited."""

    def __init__(
        self,
        rates: Mapping[Category, float],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.buckets = {
            category: PacedBudget(rate, clock=clock, sleep=sleep)
            for category, rate in rates.items()
        }
        #: Told of every answer (category, throttled): how the run's own usage is measured.
        self.observer: Callable[[Category, bool], None] | None = None

    def answered(self, category: Category, *, throttled: bool) -> None:
        """Every answer Cognito gives (retries included): the AIMD feedback."""
        bucket = self.buckets.get(category)
        if bucket is not None:
            bucket.answered(throttled=throttled)
        observer = self.observer
        if observer is not None:
            observer(category, throttled)

    def acquire(self, category: Category) -> None:
        bucket = self.buckets.get(category)
        if bucket is not None:
            bucket.acquire()

    def set_ceiling(self, category: Category, ceiling: float) -> None:
        bucket = self.buckets.get(category)
        if bucket is not None:
            bucket.set_ceiling(ceiling)
