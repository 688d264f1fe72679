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
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
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
    thread of a small pool, so the caller can return with either answer while the other
    is still stuck (it is left to finish; its answer is ignored, its latency recorded).

    ``attempt(flight)`` makes the request and tells ``flight`` of each send and answer. Until
    the delay is known, and once closed, the read runs on the caller's thread, as it would
    unhedged.
    """

    def __init__(self, delay: HedgeDelay, *, max_workers: int = MAX_WORKERS) -> None:
        self.delay = delay
        self._pool = _DaemonPool(max_workers)

    def call(self, attempt: Callable[[Flight], T], on_hedge: Callable[[], None]) -> T:
        delay = self.delay.delay()
        if delay is None or self._pool.closed:
            return self._timed(attempt, Flight())
        primary, primary_flight = self._submit(attempt)
        if primary_flight.wait_for_answer(delay):
            return primary.result()
        on_hedge()
        hedge, _ = self._submit(attempt)
        return _first_good_answer(primary, hedge)

    def close(self) -> None:
        """Stop taking work; a read still in flight finishes on its thread, none waits on it."""
        self._pool.close()

    def _submit(self, attempt: Callable[[Flight], T]) -> tuple[Future[T], Flight]:
        flight = Flight()
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(self._timed(attempt, flight))
            except BaseException as exc:  # the caller gets it from the future
                future.set_exception(exc)
            finally:
                flight.end()

        if not self._pool.submit(run):  # closed meanwhile: run it here
            run()
        return future, flight

    def _timed(self, attempt: Callable[[Flight], T], flight: Flight) -> T:
        result = attempt(flight)
        if flight.latency is not None:
            self.delay.record(flight.latency)
        return result


class _DaemonPool:
    """Up to ``max_threads`` daemon threads taking work from a queue, started as needed.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so a read left to
    its hedge, stalled for seconds, would hold the CLI's exit for as long.
    """

    def __init__(self, max_threads: int) -> None:
        self._max_threads = max_threads
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = self._idle = self._queued = 0
        self.closed = False

    def submit(self, work: Callable[[], None]) -> bool:
        """Queue ``work``; False when the pool is closed."""
        with self._lock:
            if self.closed:
                return False
            self._queued += 1
            if self._queued > self._idle and self._threads < self._max_threads:
                self._threads += 1
                threading.Thread(target=self._serve, name="hedged-read", daemon=True).start()
            # Under the lock, so no work is queued behind close()'s stop signals.
            self._work.put(work)
        return True

    def close(self) -> None:
        """Each thread ends after the work it has (a warm Lambda keeps none from a slice)."""
        with self._lock:
            self.closed = True
            for _ in range(self._threads):
                self._work.put(None)

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            work = self._work.get()
            with self._lock:
                self._idle -= 1
                if work is not None:
                    self._queued -= 1
            if work is None:
                return
            work()


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
