"""Sharing the quota with the live application: ceilings from the account's usage metrics.

A fake CloudWatch answers GetMetricData from per-minute counts, as Cognito's AWS/Usage metrics
are: every caller's requests together, this run's included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mfa_policy.aws.ratelimit import Category, RateLimiter
from mfa_policy.aws.usage import NAMESPACE, RESOURCE, SERVICE, QuotaShare

NOW = 1_800_000_000.0  # a minute boundary


class FakeCloudWatch:
    def __init__(self) -> None:
        #: (category resource, metric name) -> {period start: sum}
        self.series: dict[tuple[str, str], dict[int, float]] = {}
        self.requests: list[dict[str, Any]] = []

    def get_metric_data(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        results = []
        for query in request["MetricDataQueries"]:
            metric = query["MetricStat"]["Metric"]
            assert metric["Namespace"] == NAMESPACE
            dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            assert dims["Service"] == SERVICE and dims["Type"] == "API"
            points = self.series.get((dims["Resource"], metric["MetricName"]), {})
            start, end = request["StartTime"].timestamp(), request["EndTime"].timestamp()
            kept = sorted((t for t in points if start <= t < end), reverse=True)
            results.append(
                {
                    "Id": query["Id"],
                    "Timestamps": [datetime.fromtimestamp(t, UTC) for t in kept],
                    "Values": [points[t] for t in kept],
                }
            )
        return {"MetricDataResults": results}


def share_for(cloudwatch: FakeCloudWatch, headroom: float = 0.1) -> QuotaShare:
    limiter = RateLimiter({Category.USER_READ: 120, Category.USER_RESOURCE_UPDATE: 25})
    return QuotaShare(cloudwatch, limiter, headroom=headroom, clock=lambda: NOW)


def test_the_ceiling_leaves_the_application_its_peak_minute_and_the_headroom():
    cloudwatch = FakeCloudWatch()
    minute = int(NOW) - 60
    # The app read 50/s on average two minutes ago, 80/s in the last minute.
    cloudwatch.series[(RESOURCE[Category.USER_READ], "CallCount")] = {
        minute - 60: 50 * 60,
        minute: 80 * 60,
    }
    share = share_for(cloudwatch)
    ceilings = share.update()
    assert ceilings[Category.USER_READ] == pytest.approx(120 * 0.9 - 80)
    assert share.limiter.buckets[Category.USER_READ].rate == pytest.approx(28)
    # No write traffic: the whole budget (25) is under 25 x 0.9, so the budget stays the cap.
    assert ceilings[Category.USER_RESOURCE_UPDATE] == pytest.approx(22.5)
    assert share.requests == len(cloudwatch.requests) == 1
    assert len(cloudwatch.requests[0]["MetricDataQueries"]) == 4  # 2 categories x 2 metrics


def test_the_runs_own_requests_are_not_counted_as_the_applications():
    cloudwatch = FakeCloudWatch()
    minute = int(NOW) - 60
    cloudwatch.series[(RESOURCE[Category.USER_READ], "CallCount")] = {minute: 90 * 60}
    share = share_for(cloudwatch, headroom=0.0)
    # This run sent 60/s during that minute: the app used 30/s.
    share.own.clock = iter(float(minute + i // 60) for i in range(60 * 60)).__next__
    for _ in range(60 * 60):
        share.own.sent(Category.USER_READ)
    assert share.update()[Category.USER_READ] == pytest.approx(120 - 30)


def test_an_application_throttled_in_the_last_minute_lowers_the_ceiling_again():
    cloudwatch = FakeCloudWatch()
    minute = int(NOW) - 60
    cloudwatch.series[(RESOURCE[Category.USER_READ], "CallCount")] = {minute: 60 * 60}
    share = share_for(cloudwatch, headroom=0.0)
    assert share.update()[Category.USER_READ] == pytest.approx(60)
    cloudwatch.series[(RESOURCE[Category.USER_READ], "ThrottleCount")] = {minute: 12}
    assert share.update()[Category.USER_READ] == pytest.approx(60 * 0.85)


def test_an_application_using_everything_leaves_the_floor_not_zero():
    cloudwatch = FakeCloudWatch()
    minute = int(NOW) - 60
    cloudwatch.series[(RESOURCE[Category.USER_READ], "CallCount")] = {minute: 130 * 60}
    share = share_for(cloudwatch)
    floor = share.limiter.buckets[Category.USER_READ].floor
    assert share.update()[Category.USER_READ] == pytest.approx(floor) == pytest.approx(6)


def test_a_headroom_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match=r"headroom must be a share of the quota in \[0, 1\)"):
        share_for(FakeCloudWatch(), headroom=1.5)
