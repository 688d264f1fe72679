"""Client-side rate limits: one adaptive token bucket per Cognito quota category.

Cognito's quotas are per account and Region and shared with the live application, so the tool
spends only the budget the policy grants it, and backs off further when Cognito says it is
throttling (someone else is using the quota too).
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


class TokenBucket:
    """A reservation-based token bucket: callers reserve a slot and sleep outside the lock.

    ``slow_down`` cuts the rate after a throttle; each granted request then wins a little of it
    back, so a shared quota under pressure converges to what is actually available.
    """

    def __init__(
        self,
        rate: float,
        *,
        min_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.target_rate = rate
        self.rate = rate
        self.min_rate = min_rate if min_rate is not None else max(rate / 20, 0.2)
        self.capacity = max(1.0, rate / 10)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a request may be sent; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            # Recover additively: about ten seconds from the floor back to the target.
            self.rate = min(self.target_rate, self.rate + self.target_rate / (10 * self.rate))
        if wait > 0:
            self._sleep(wait)
        return wait

    def slow_down(self, factor: float = 0.7) -> None:
        with self._lock:
            self.rate = max(self.min_rate, self.rate * factor)


class RateLimiter:
    """The buckets of one run, by category; unknown categories are not limited."""

    def __init__(self, rates: Mapping[Category, float]) -> None:
        self.buckets = {category: TokenBucket(rate) for category, rate in rates.items()}

    def acquire(self, category: Category) -> None:
        bucket = self.buckets.get(category)
        if bucket is not None:
            bucket.acquire()

    def slow_down(self, category: Category) -> None:
        bucket = self.buckets.get(category)
        if bucket is not None:
            bucket.slow_down()
