"""The hedge delay: a high quantile of recent read latencies, with a floor, once enough are known.

Latencies are recorded directly, so these tests need no clock.
"""

from __future__ import annotations

import pytest

from mfa_policy.aws.hedge import HedgeDelay


def delay_after(latencies: list[float], **settings: float) -> float | None:
    hedge = HedgeDelay(**settings)
    for latency in latencies:
        hedge.record(latency)
    return hedge.delay()


def test_no_delay_until_enough_latencies_are_known():
    assert delay_after([0.5] * 49, min_samples=50) is None
    assert delay_after([0.5] * 50, min_samples=50) == 0.5


def test_the_delay_is_the_p98_of_the_latencies():
    # 1..100 ms: 98% of them take at most 98 ms.
    latencies = [n / 1000 for n in range(100, 0, -1)]
    assert delay_after(latencies, floor=0) == pytest.approx(0.098)


def test_a_fast_service_gets_the_floor():
    assert delay_after([0.05] * 100, floor=0.25) == 0.25


def test_a_tail_of_two_percent_does_not_lift_the_delay_to_the_tail():
    latencies = [0.06] * 98 + [1.5] * 2
    assert delay_after(latencies, floor=0) == 0.06


def test_only_the_latest_window_counts():
    latencies = [2.0] * 300 + [0.4] * 256
    assert delay_after(latencies, window=256, floor=0) == 0.4


def test_settings_that_could_never_hedge_are_refused():
    with pytest.raises(ValueError, match="min_samples"):
        HedgeDelay(window=10, min_samples=20)
    with pytest.raises(ValueError, match="quantile"):
        HedgeDelay(quantile=0)
