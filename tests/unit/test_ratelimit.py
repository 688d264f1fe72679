"""The client-side pacing: evenly spaced sends, no backlog after a pause, AIMD on throttles.

A fake clock drives every budget, so these tests assert the schedule, not timings.
"""

from __future__ import annotations

import itertools

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


def throttle(paced: PacedBudget) -> bool:
    return paced.answered(throttled=True)


def test_sends_are_evenly_spaced_at_the_rate():
    clock = FakeClock()
    paced = budget(10, clock)
    times = send_times(paced, clock, 5)
    gaps = [b - a for a, b in itertools.pairwise(times)]
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


def test_a_caller_that_wakes_late_pushes_the_next_send_a_full_interval_on():
    """A late wake-up (CPU load, the GIL) must not land two sends closer than one interval."""
    clock = FakeClock()
    late = [0.08]  # the first sleep oversleeps by 80 ms

    def sleep(seconds: float) -> None:
        clock.now += seconds + (late.pop() if late else 0.0)

    paced = PacedBudget(10, clock=clock, sleep=sleep)
    paced.acquire()  # t0, at once
    times = []
    for _ in range(3):
        paced.acquire()
        times.append(clock.now)
    start = times[0] - 0.18
    assert [t - start for t in times] == pytest.approx([0.18, 0.28, 0.38])


def test_a_burst_of_throttles_cuts_the_rate_once_per_window():
    clock = FakeClock()
    paced = budget(100, clock, decrease=0.5, window=1.0)
    cuts = [throttle(paced) for _ in range(32)]  # 32 workers throttled by one event
    assert cuts.count(True) == 1
    assert paced.rate == pytest.approx(50)
    clock.now += 0.5
    assert throttle(paced) is False  # still the same window
    clock.now += 0.6
    assert [throttle(paced), throttle(paced)] == [False, True]  # a new window: a second cut
    assert paced.cuts == 2


def test_a_lone_throttle_among_many_answers_is_not_a_cut():
    """Arrival jitter on a service with no burst throttles one request now and then; only a
    throttled share above the tolerance means the quota is taken by someone else."""
    clock = FakeClock()
    paced = budget(100, clock, window=1.0, tolerance=0.01)
    for _ in range(300):
        paced.answered(throttled=False)
    assert [throttle(paced), throttle(paced), throttle(paced)] == [False, False, False]
    assert paced.rate == pytest.approx(100)
    assert throttle(paced) is True  # 4 of 304 > 1%
    assert paced.cuts == 1


def test_two_stray_throttles_among_a_seconds_answers_cut_the_rate_by_their_share_only():
    """Sending at r with a share s throttled leaves about r(1 - s) for us (as DCTCP cuts by its
    marked share): two throttles among some 150 answers cost 1.3% of the rate, not 15%."""
    clock = FakeClock()
    paced = budget(100, clock, decrease=0.85, window=1.0)
    for _ in range(100):
        paced.answered(throttled=False)
    clock.now += 1.0  # a new window; the last one's 100 answers still count toward the share
    for _ in range(50):
        paced.answered(throttled=False)
    assert [throttle(paced), throttle(paced)] == [False, True]
    assert paced.rate == pytest.approx(100 * (1 - 2 / 152))


def test_a_storm_after_a_calm_second_deepens_its_windows_one_cut_to_the_full_decrease():
    clock = FakeClock()
    paced = budget(100, clock, decrease=0.85, window=1.0)
    for _ in range(100):
        paced.answered(throttled=False)
    clock.now += 1.0
    cuts = [throttle(paced) for _ in range(40)]  # 32 workers throttled, and their retries
    assert cuts.count(True) == 1 and paced.cuts == 1
    assert paced.rate == pytest.approx(85)  # 40 of 140 answers: deeper than 15%, so 15%


def test_the_rate_recovers_additively_to_the_budget_and_no_further():
    clock = FakeClock()
    paced = budget(100, clock, decrease=0.5, increase_per_second=0.1)
    throttle(paced), throttle(paced)
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
    paced.acquire()  # sent at t0; next slot t0 + 0.1
    throttle(paced), throttle(paced)  # rate 5: the next send is 0.2 after the last one
    assert paced.acquire() == pytest.approx(0.2)


def test_the_rate_never_falls_below_the_floor():
    clock = FakeClock()
    paced = budget(100, clock, decrease=0.5, window=1.0)
    for _ in range(50):
        throttle(paced), throttle(paced)
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
