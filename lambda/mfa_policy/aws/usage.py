"""Leave the live application its share: read the account's Cognito usage from CloudWatch.

Cognito publishes, per quota category, ``CallCount`` and ``ThrottleCount`` in the ``AWS/Usage``
namespace (dimensions ``Service``, ``Type`` = ``API``, ``Resource`` = the category's name,
``Class`` = ``None``), one Sum a minute for every caller in the account and Region. Subtracting
this run's own requests leaves the application's. Before the run and then once a period, one
GetMetricData call (all categories, both metrics) sets each category's ceiling to what the
application leaves: ``quota x (1 - headroom) - the application's peak rate`` over the lookback;
a period in which the application itself was throttled lowers the ceiling further.

The client is injected (a boto3 ``cloudwatch`` client, or the bench's fake); it needs
``cloudwatch:GetMetricData``. Off unless a headroom is configured.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mfa_policy.aws.ratelimit import DECREASE, Category, RateLimiter

NAMESPACE = "AWS/Usage"
#: The ``Service`` dimension's value for Cognito user pools' usage metrics.
SERVICE = "Cognito user pool"
#: Category -> the ``Resource`` dimension (Cognito's name of the quota category).
RESOURCE = {
    Category.USER_READ: "UserRead",
    Category.USER_RESOURCE_UPDATE: "UserResourceUpdate",
    Category.USER_LIST: "UserList",
}
#: Cognito's default quotas (requests per second); an account may have raised them.
DEFAULT_QUOTAS: Mapping[Category, float] = {
    Category.USER_READ: 120,
    Category.USER_RESOURCE_UPDATE: 25,
    Category.USER_LIST: 30,
}


@dataclass(frozen=True)
class AppUsage:
    """What the application (everyone but this run) used of one category, per second."""

    peak_rate: float
    throttled_recently: bool


@dataclass
class OwnRequests:
    """This run's own requests per (category, epoch second), to subtract from the account's."""

    clock: Callable[[], float] = time.time
    _lock: threading.Lock = field(default_factory=threading.Lock)
    calls: Counter[tuple[Category, int]] = field(default_factory=Counter)
    throttles: Counter[tuple[Category, int]] = field(default_factory=Counter)

    def sent(self, category: Category, *, throttled: bool = False) -> None:
        second = int(self.clock())
        with self._lock:
            self.calls[(category, second)] += 1
            if throttled:
                self.throttles[(category, second)] += 1

    def in_period(self, category: Category, start: int, period: int) -> tuple[int, int]:
        with self._lock:
            calls = sum(self.calls[(category, s)] for s in range(start, start + period))
            throttles = sum(self.throttles[(category, s)] for s in range(start, start + period))
        return calls, throttles

    def forget_before(self, second: int) -> None:
        with self._lock:
            for counter in (self.calls, self.throttles):
                for key in [k for k in counter if k[1] < second]:
                    del counter[key]


class QuotaShare:
    """Keeps each category's ceiling under what the live application leaves."""

    def __init__(
        self,
        cloudwatch: Any,
        limiter: RateLimiter,
        *,
        headroom: float,
        quotas: Mapping[Category, float] = DEFAULT_QUOTAS,
        period: int = 60,
        lookback_periods: int = 15,
        own: OwnRequests | None = None,
        clock: Callable[[], float] = time.time,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        if not 0 <= headroom < 1:
            raise ValueError(f"headroom must be a share of the quota in [0, 1), got {headroom}")
        self.cloudwatch = cloudwatch
        self.limiter = limiter
        self.headroom = headroom
        self.quotas = {c: q for c, q in quotas.items() if c in limiter.buckets}
        self.period = period
        self.lookback_periods = lookback_periods
        self.own = own or OwnRequests(clock=clock)
        self.clock = clock
        self.requests = 0  # GetMetricData calls made
        self._on_request = on_request
        self.ceilings: dict[Category, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def app_usage(self) -> dict[Category, AppUsage]:
        """One GetMetricData call: the application's peak rate and recent throttles."""
        now = self.clock()
        end = int(now) - int(now) % self.period
        start = end - self.period * self.lookback_periods
        queries = []
        for category in self.quotas:
            for metric in ("CallCount", "ThrottleCount"):
                queries.append(
                    {
                        "Id": f"{metric.lower()}_{category.value}",
                        "MetricStat": {
                            "Metric": {
                                "Namespace": NAMESPACE,
                                "MetricName": metric,
                                "Dimensions": [
                                    {"Name": "Service", "Value": SERVICE},
                                    {"Name": "Type", "Value": "API"},
                                    {"Name": "Resource", "Value": RESOURCE[category]},
                                    {"Name": "Class", "Value": "None"},
                                ],
                            },
                            "Period": self.period,
                            "Stat": "Sum",
                        },
                        "ReturnData": True,
                    }
                )
        response = self.cloudwatch.get_metric_data(
            MetricDataQueries=queries,
            StartTime=datetime.fromtimestamp(start, UTC),
            EndTime=datetime.fromtimestamp(end, UTC),
        )
        self.requests += 1
        if self._on_request is not None:
            self._on_request()
        series = {
            r["Id"]: dict(zip(r.get("Timestamps", []), r.get("Values", []), strict=False))
            for r in response.get("MetricDataResults", [])
        }
        usage = {}
        for category in self.quotas:
            calls = series.get(f"callcount_{category.value}", {})
            throttles = series.get(f"throttlecount_{category.value}", {})
            peak, latest_throttled, latest = 0.0, False, None
            for stamp, value in calls.items():
                period_start = int(_epoch(stamp))
                own_calls, _ = self.own.in_period(category, period_start, self.period)
                peak = max(peak, max(0.0, value - own_calls) / self.period)
            for stamp, value in throttles.items():
                period_start = int(_epoch(stamp))
                _, own_throttles = self.own.in_period(category, period_start, self.period)
                if latest is None or period_start > latest:
                    latest, latest_throttled = period_start, value - own_throttles > 0
            usage[category] = AppUsage(peak, latest_throttled)
        self.own.forget_before(start)
        return usage

    def update(self) -> dict[Category, float]:
        """Read the usage once and set every category's ceiling; returns the ceilings."""
        for category, app in self.app_usage().items():
            ceiling = self.quotas[category] * (1 - self.headroom) - app.peak_rate
            if app.throttled_recently and category in self.ceilings:
                ceiling = min(ceiling, self.ceilings[category] * DECREASE)
            self.limiter.set_ceiling(category, ceiling)
            self.ceilings[category] = self.limiter.buckets[category].ceiling
        return dict(self.ceilings)

    def start(self) -> None:
        """Update now, then once a period in a daemon thread until ``stop``."""
        self.update()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="quota-share")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.update()
            except Exception:  # noqa: S112 (a metrics outage keeps the last ceilings)
                continue


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)
