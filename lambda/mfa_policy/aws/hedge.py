"""Hedged reads ("The Tail at Scale", Dean & Barroso): a read that has had no answer a while
after it was sent is sent once more, and the first good answer wins.

On a service with a latency tail a run's last page waits for its slowest read; a second
request sent at about the p98 of recent latencies costs ~2% more reads and cuts that wait to
about the delay plus one ordinary answer. The delay has a floor, so a fast service is in
practice never hedged, and there is none until enough latencies are known.

Only the gateway's user reads come here: a write sent twice is not harmless, and the list
and pool reads are few.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")

#: Threads for reads in flight and their hedges: as many as the client's connection pool.
MAX_WORKERS = 64


class HedgeDelay:
    """How long a sent read may go unanswered before it is hedged: a high ``quantile`` of the
    last ``window`` send-to-answer latencies of good reads, never under ``floor`` seconds, and
    no hedging (None) until ``min_samples`` are known. Thread-safe."""

    def __init__(
        self,
        *,
        quantile: float = 0.98,
        floor: float = 0.25,
        window: int = 256,
        min_samples: int = 50,
    ) -> None:
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        if window < 1 or not 1 <= min_samples <= window:
            raise ValueError(f"need 1 <= min_samples <= window, got {min_samples}, {window}")
        self.quantile = quantile
        self.floor = floor
        self.min_samples = min_samples
        self._latencies: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, latency: float) -> None:
        with self._lock:
            self._latencies.append(latency)

    def delay(self) -> float | None:
        with self._lock:
            if len(self._latencies) < self.min_samples:
                return None
            ordered = sorted(self._latencies)
        # Nearest rank: the smallest latency at least ``quantile`` of the window do not exceed.
        rank = max(1, math.ceil(self.quantile * len(ordered)))
        return max(self.floor, ordered[rank - 1])


class Flight:
    """One request's sends and answers (retries included), told by the thread sending it, so
    the caller can wait for "no answer ``delay`` seconds after the last send": pacing waits
    and retry backoffs before a send do not count."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._changed = threading.Condition()
        self._sent_at: float | None = None
        self._over = False
        #: Seconds from the last send to its answer.
        self.latency: float | None = None

    def sent(self) -> None:
        with self._changed:
            self._sent_at = self._clock()
            self._changed.notify_all()

    def answered(self) -> None:
        with self._changed:
            if self._sent_at is not None:
                self.latency = self._clock() - self._sent_at
                self._sent_at = None
            self._changed.notify_all()

    def end(self) -> None:
        with self._changed:
            self._over = True
            self._changed.notify_all()

    def wait_for_answer(self, delay: float) -> bool:
        """True once the request is over; False when a send has gone ``delay`` seconds
        unanswered."""
        with self._changed:
            while not self._over:
                if self._sent_at is None:
                    self._changed.wait()
                    continue
                remaining = self._sent_at + delay - self._clock()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True


class HedgedCalls:
    """Runs a read and, when it goes unanswered past the delay, one hedge of it, each on a
    thread of a small executor, so the caller can return with either answer while the other
    is still stuck (it is left to finish; its answer is ignored, its latency recorded).

    ``attempt(flight)`` makes the request and tells ``flight`` of each send and answer. Until
    the delay is known the read runs on the caller's thread, as it would unhedged.
    """

    def __init__(self, delay: HedgeDelay, *, max_workers: int = MAX_WORKERS) -> None:
        self.delay = delay
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._lock = threading.Lock()

    def call(self, attempt: Callable[[Flight], T], on_hedge: Callable[[], None]) -> T:
        delay = self.delay.delay()
        executor = self._executor_or_none() if delay is not None else None
        if delay is None or executor is None:
            return self._timed(attempt, Flight())
        primary, primary_flight = self._submit(executor, attempt)
        if primary_flight.wait_for_answer(delay):
            return primary.result()
        on_hedge()
        hedge, _ = self._submit(executor, attempt)
        return _first_good_answer(primary, hedge)

    def close(self) -> None:
        """Stop taking work; a read still in flight finishes on its thread, none waits on it."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def _executor_or_none(self) -> ThreadPoolExecutor | None:
        with self._lock:
            if self._executor is None and not self._closed:
                self._executor = ThreadPoolExecutor(
                    self._max_workers, thread_name_prefix="hedged-read"
                )
            return self._executor

    def _submit(
        self, executor: ThreadPoolExecutor, attempt: Callable[[Flight], T]
    ) -> tuple[Future[T], Flight]:
        flight = Flight()
        future = executor.submit(self._timed, attempt, flight)
        # A done callback runs even for a future cancelled at shutdown, so no caller waits on
        # a flight that never started.
        future.add_done_callback(lambda _: flight.end())
        return future, flight

    def _timed(self, attempt: Callable[[Flight], T], flight: Flight) -> T:
        result = attempt(flight)
        if flight.latency is not None:
            self.delay.record(flight.latency)
        return result


def _first_good_answer(primary: Future[T], hedge: Future[T]) -> T:
    """The first of the two to succeed; when neither does, the first error."""
    done, _ = wait((primary, hedge), return_when=FIRST_COMPLETED)
    first = primary if primary in done else hedge
    other = hedge if first is primary else primary
    if first.exception() is None:
        return first.result()
    if other.exception() is None:  # waits for it
        return other.result()
    return first.result()  # raises the first error
