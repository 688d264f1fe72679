"""The client-side pacing: evenly spaced sends, no backlog after a pause, AIMD on throttles.

A fake clock drives every budget, so these tests assert the schedule, not timings.
"""

from __future__ import annotations

import pytest

from mfa_policy.aws.ratelimit import PacedBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def budget(rate: float, clock: FakeClock, **kwargs: float) -> PacedBudget:
    return PacedBudget(rate, clock=clock, sleep=clock.sleep, **kwargs)


def send_times(paced: PacedBudget, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        paced.acquire()
        times.append(clock.now)
    return times


def test_sends_are_evenly_spaced_at_the_rate():
    clock = FakeClock()
    paced = budget(10, clock)
    times = send_times(paced, clock, 5)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == pytest.approx([0.1] * 4)


def test_after_a_pause_at_most_one_request_goes_at_once():
    """A service with no burst throttles a backlog released after idle time; none is banked."""
    clock = FakeClock()
    paced = budget(100, clock)
    send_times(paced, clock, 3)
    clock.now += 30.0  # a long pause: an ordinary token bucket would have filled up
    start = clock.now
    times = send_times(paced, clock, 6)
    released_at_once = sum(1 for t in times if t == pytest.approx(start))
    assert released_at_once == 1
    assert [t - start for t in times] == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04, 0.05])


def test_concurrent_callers_get_distinct_slots_one_interval_apart():
    """Reservations, not sleeps, decide the schedule: callers arriving together are spread."""
    clock = FakeClock()
    paced = budget(20, clock)
    waits = []
    for _ in range(4):  # four callers at the same instant (the fake sleep is not called here)
        paced._sleep = lambda s: None
        waits.append(paced.acquire())
    assert waits == pytest.approx([0.0, 0.05, 0.10, 0.15])


def test_a_burst_of_throttles_cuts_the_rate_once_per_window():
    clock = FakeClock()
    paced = budget(100, clock, decrease=0.5, window=1.0)
    cuts = [paced.slow_down() for _ in range(32)]  # 32 workers throttled by one event
    assert cuts.count(True) == 1
    assert paced.rate == pytest.approx(50)
    clock.now += 0.5
    assert paced.slow_down() is False  # still the same window
    clock.now += 0.6
    assert paced.slow_down() is True  # a new window: a second cut
    assert paced.cuts == 2


def test_the_rate_recovers_additively_to_the_budget_and_no_further():
    clock = FakeClock()
    paced = budget(100, clock, decrease=0.5, increase_per_second=0.1)
    paced.slow_down()
    assert paced.rate == pytest.approx(50)
    clock.now += 2.0
    paced.acquire()
    assert paced.rate == pytest.approx(70)  # 2 s x 10% of the budget
    clock.now += 60.0
    paced.acquire()
    assert paced.rate == pytest.approx(100)


def test_a_cut_applies_to_the_next_send_at_once():
    clock = FakeClock()
    paced = budget(10, clock, decrease=0.5)
    paced._sleep = lambda s: None
    paced.acquire()  # slot at t0; next slot t0 + 0.1
    paced.slow_down()  # rate 5: the next send is 0.2 after the last reserved one
    assert paced.acquire() == pytest.approx(0.2)


def test_the_rate_never_falls_below_the_floor():
    clock = FakeClock()
    paced = budget(100, clock, decrease=0.5, window=1.0)
    for _ in range(50):
        paced.slow_down()
        clock.now += 1.0
    assert paced.rate == pytest.approx(paced.floor)
    assert paced.floor == pytest.approx(5)


def test_a_ceiling_below_the_budget_caps_recovery_and_the_current_rate():
    clock = FakeClock()
    paced = budget(100, clock)
    paced.set_ceiling(40)
    assert paced.rate == pytest.approx(40)
    clock.now += 120
    paced.acquire()
    assert paced.rate == pytest.approx(40)
    paced.set_ceiling(500)  # never above the configured budget
    clock.now += 120
    paced.acquire()
    assert paced.rate == pytest.approx(100)


def test_a_non_positive_rate_is_refused():
    with pytest.raises(ValueError, match="rate must be positive, got 0"):
        PacedBudget(0)
