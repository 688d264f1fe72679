"""A Cognito stand-in for benchmarks: pools of 10k to 1M users that cost nothing to hold.

`BenchCognito` is an in-process fake boto3 ``cognito-idp`` client: the operations mfa-policy
calls, with the real response shapes and the real errors (``botocore.exceptions.ClientError``).
It enforces what the service enforces and moto does not:

- per-category request quotas, shared by every caller, as token buckets at the service side
  (UserRead 120/s, UserResourceUpdate 25/s, UserList 30/s, UserPoolRead 20/s by default);
  a request over the quota gets ``TooManyRequestsException: Rate exceeded``;
- a latency per request (uniform 30-80 ms by default; sleeping releases the GIL);
- the MFA preference rules: SMS needs a ``phone_number``, email needs an ``email`` (and email
  MFA configured on the pool), enabling TOTP needs a verified software token, a preferred
  factor must be enabled, at most one is preferred, ``Limit`` at most 60.

Users are never stored: user ``i`` of a pool is generated from ``i`` and the pool's seed
(username ``user-0000001``, a sub from a keyed hash, an MFA state drawn from a mix), and only
users changed by a write (or by a test) are kept in a dict, so memory grows with writes, not
with the pool. Pagination tokens are the next index. Thread-safe.

`serve()` puts the same object behind Cognito's JSON 1.1 HTTP protocol on 127.0.0.1 (for boto3
clients and the AWS CLI); ``python -m bench.standin serve`` runs that server as its own
process, with a small control API under ``/_bench/`` (create pools, read counters).
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import itertools
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

SMS = "SMS_MFA"
TOTP = "SOFTWARE_TOKEN_MFA"
EMAIL = "EMAIL_OTP"
SETTINGS_BLOCKS = {
    "SMSMfaSettings": SMS,
    "SoftwareTokenMfaSettings": TOTP,
    "EmailMfaSettings": EMAIL,
}
MAX_LIMIT = 60
ADMINS = "admins"
SERVICE_ACCOUNTS = "service-accounts"
CREATED = datetime(2024, 1, 1, tzinfo=UTC)

#: Cognito operation name -> the boto3 method that serves it.
OPERATIONS = {
    "ListUsers": "list_users",
    "ListUsersInGroup": "list_users_in_group",
    "AdminGetUser": "admin_get_user",
    "AdminGetUserAuthFactors": "admin_get_user_auth_factors",
    "AdminSetUserMFAPreference": "admin_set_user_mfa_preference",
    "GetUserPoolMfaConfig": "get_user_pool_mfa_config",
    "DescribeUserPool": "describe_user_pool",
    "GetUser": "get_user",
    "GetUserAuthFactors": "get_user_auth_factors",
    "SetUserMFAPreference": "set_user_mfa_preference",
}
CATEGORY = {
    "ListUsers": "user_list",
    "ListUsersInGroup": "user_list",
    "AdminGetUser": "user_read",
    "GetUser": "user_read",
    "AdminGetUserAuthFactors": "user_read",
    "GetUserAuthFactors": "user_read",
    "DescribeUserPool": "user_pool_read",
    "AdminSetUserMFAPreference": "user_resource_update",
    "SetUserMFAPreference": "user_resource_update",
    "GetUserPoolMfaConfig": "user_pool_read",
}


@dataclass(frozen=True)
class Quotas:
    """Requests per second per quota category; None means unlimited. Defaults: Cognito's."""

    user_read: float | None = 120
    user_resource_update: float | None = 25
    user_list: float | None = 30
    user_pool_read: float | None = 20
    #: Seconds of requests a bucket holds when full: 1 (the moto stand-in's), or 0 for a
    #: service with no burst at all (a bucket of one token), as Cognito's quotas are documented.
    burst: float = 1.0

    @classmethod
    def raised(cls, factor: float = 1000) -> Quotas:
        return cls(120 * factor, 25 * factor, 30 * factor, 20 * factor)

    def no_burst(self) -> Quotas:
        return replace(self, burst=0.0)


#: Quota category -> the name Cognito's usage metrics give it (dimension ``Resource``).
USAGE_RESOURCE = {
    "user_read": "UserRead",
    "user_resource_update": "UserResourceUpdate",
    "user_list": "UserList",
    "user_pool_read": "UserPoolRead",
}


# ---- the users ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A kind of user: contact attributes, token, MFA state, account state."""

    phone: bool = True
    email: bool = True
    totp_verified: bool = False
    factors: frozenset[str] = frozenset()
    preferred: str | None = None
    enabled: bool = True
    status: str = "CONFIRMED"


KINDS: dict[str, Kind] = {
    "no_mfa_with_phone": Kind(),
    "no_mfa_without_phone": Kind(phone=False),
    "sms_preferred": Kind(factors=frozenset({SMS}), preferred=SMS),
    "totp_verified_sms_preferred": Kind(
        totp_verified=True, factors=frozenset({SMS}), preferred=SMS
    ),
    "totp_and_sms_no_preference": Kind(totp_verified=True, factors=frozenset({SMS, TOTP})),
    "totp_and_sms_sms_preferred": Kind(
        totp_verified=True, factors=frozenset({SMS, TOTP}), preferred=SMS
    ),
    "totp_preferred": Kind(totp_verified=True, factors=frozenset({SMS, TOTP}), preferred=TOTP),
    "admin_sms_only": Kind(factors=frozenset({SMS}), preferred=SMS),
    "admin_totp_and_sms": Kind(totp_verified=True, factors=frozenset({SMS, TOTP}), preferred=SMS),
    "admin_totp_only": Kind(totp_verified=True, factors=frozenset({TOTP}), preferred=TOTP),
    "service_account": Kind(phone=False),
    "disabled": Kind(factors=frozenset({SMS}), preferred=SMS, enabled=False),
    "federated": Kind(phone=False, status="EXTERNAL_PROVIDER"),
}

#: Share of the non-group users of each kind. Group members are admins or service accounts.
MIXES: dict[str, dict[str, float]] = {
    # Every state mfa-policy cares about, in the proportions of `mfa-policy demo`.
    "mixed": {
        "no_mfa_with_phone": 0.18,
        "no_mfa_without_phone": 0.06,
        "sms_preferred": 0.22,
        "totp_verified_sms_preferred": 0.10,
        "totp_and_sms_no_preference": 0.07,
        "totp_and_sms_sms_preferred": 0.12,
        "totp_preferred": 0.16,
        "disabled": 0.04,
        "federated": 0.05,
    },
    # Everyone has a verified authenticator but prefers SMS: one write per user, no probe.
    "verified": {"totp_verified_sms_preferred": 0.5, "totp_and_sms_sms_preferred": 0.5},
    # Already compliant with the bench policy: a drift or an apply makes no write.
    "compliant": {"totp_preferred": 1.0},
}
#: Mix -> kinds of the members of each group (default: the `mixed` ones).
GROUP_KINDS: dict[str, dict[str, tuple[str, ...]]] = {
    "mixed": {
        ADMINS: ("admin_sms_only", "admin_totp_and_sms"),
        SERVICE_ACCOUNTS: ("service_account",),
    },
    "verified": {ADMINS: ("admin_totp_and_sms",), SERVICE_ACCOUNTS: ("service_account",)},
    "compliant": {ADMINS: ("admin_totp_only",), SERVICE_ACCOUNTS: ("service_account",)},
}


def username_of(index: int) -> str:
    return f"user-{index + 1:07d}"


def index_of(username: str) -> int | None:
    if len(username) != 12 or not username.startswith("user-") or not username[5:].isdigit():
        return None
    return int(username[5:]) - 1


@dataclass(frozen=True)
class MfaState:
    enabled: frozenset[str] = frozenset()
    preferred: str | None = None


@dataclass
class Pool:
    """A synthetic pool: users generated from their index; only changes are stored."""

    pool_id: str
    size: int
    mix: str = "mixed"
    seed: int = 0
    admins: int = 60
    service_accounts: int = 20
    mfa_configuration: str = "OPTIONAL"
    email_mfa: bool = False
    # Only what changed: memory proportional to writes, not to the pool.
    mfa: dict[int, MfaState] = field(default_factory=dict)
    verified: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        mix = MIXES[self.mix]
        self._kinds = list(mix)
        total = sum(mix.values())
        acc, self._cumulative = 0.0, []
        for share in mix.values():
            acc += share / total
            self._cumulative.append(acc)
        self._key = self.seed.to_bytes(8, "big")  # same seed, same users, in any pool
        self._step = max(1, self.size // max(1, self.admins + self.service_accounts))

    def group_of(self, index: int) -> str | None:
        if index % self._step:
            return None
        slot = index // self._step
        if slot < self.admins:
            return ADMINS
        if slot < self.admins + self.service_accounts:
            return SERVICE_ACCOUNTS
        return None

    def members(self, group: str) -> list[int]:
        first, count = (0, self.admins) if group == ADMINS else (self.admins, self.service_accounts)
        return [s * self._step for s in range(first, first + count) if s * self._step < self.size]

    def identity(self, index: int) -> tuple[str, str]:
        """(sub, kind) of user ``index``: deterministic per pool seed."""
        digest = hashlib.blake2b(index.to_bytes(8, "big"), digest_size=16, key=self._key).digest()
        h = digest.hex()
        sub = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[digest[8] & 3]}{h[17:20]}-{h[20:]}"
        group = self.group_of(index)
        if group is not None:
            kinds = GROUP_KINDS.get(self.mix, GROUP_KINDS["mixed"])[group]
            return sub, kinds[digest[0] % len(kinds)]
        draw = int.from_bytes(digest[8:12], "big") / 2**32
        position = min(bisect.bisect_right(self._cumulative, draw), len(self._kinds) - 1)
        return sub, self._kinds[position]

    def exists(self, index: int | None) -> bool:
        return index is not None and 0 <= index < self.size and index not in self.deleted

    def state(self, index: int, kind: Kind | None = None) -> MfaState:
        changed = self.mfa.get(index)
        if changed is not None:
            return changed
        kind = kind or KINDS[self.identity(index)[1]]
        return MfaState(kind.factors, kind.preferred)

    def seeded_state(self, index: int) -> MfaState:
        kind = KINDS[self.identity(index)[1]]
        return MfaState(kind.factors, kind.preferred)

    def attributes(self, index: int, sub: str, kind: Kind) -> list[dict[str, str]]:
        name = username_of(index)
        attributes = [{"Name": "sub", "Value": sub}]
        if kind.email:
            attributes += [
                {"Name": "email", "Value": f"{name}@example.com"},
                {"Name": "email_verified", "Value": "true"},
            ]
        if kind.phone:
            attributes += [
                {"Name": "phone_number", "Value": f"+1555{index % 10**7:07d}"},
                {"Name": "phone_number_verified", "Value": "true"},
            ]
        if kind.status == "EXTERNAL_PROVIDER":
            attributes.append({"Name": "identities", "Value": json.dumps([{"userId": name}])})
        return attributes

    def listed(self, index: int) -> dict[str, Any]:
        sub, kind_name = self.identity(index)
        kind = KINDS[kind_name]
        return {
            "Username": username_of(index),
            "Attributes": self.attributes(index, sub, kind),
            "UserCreateDate": CREATED,
            "UserLastModifiedDate": CREATED,
            "Enabled": kind.enabled,
            "UserStatus": kind.status,
        }

    def user(self, index: int, *, admin: bool = True) -> dict[str, Any]:
        """AdminGetUser's (or GetUser's, ``admin=False``) response for user ``index``."""
        sub, kind_name = self.identity(index)
        kind = KINDS[kind_name]
        state = self.state(index, kind)
        response: dict[str, Any] = {
            "Username": username_of(index),
            "UserAttributes": self.attributes(index, sub, kind),
        }
        if admin:
            response.update(
                UserCreateDate=CREATED,
                UserLastModifiedDate=CREATED,
                Enabled=kind.enabled,
                UserStatus=kind.status,
            )
        if state.enabled:  # Cognito omits empty MFA fields
            response["UserMFASettingList"] = sorted(state.enabled)
        if state.preferred:
            response["PreferredMfaSetting"] = state.preferred
        if SMS in state.enabled:
            response["MFAOptions"] = [{"DeliveryMedium": "SMS", "AttributeName": "phone_number"}]
        return response

    def auth_factors(self, index: int) -> dict[str, Any]:
        """(Admin)GetUserAuthFactors' response for user ``index``: MFA settings and sign-in
        factors (a password for everyone; a software token once verified)."""
        user = self.user(index, admin=False)
        response = {
            k: user[k]
            for k in ("Username", "UserMFASettingList", "PreferredMfaSetting")
            if k in user
        }
        configured = ["PASSWORD"]
        if self.facts(index)[2]:
            configured.append("SOFTWARE_TOKEN")
        response["ConfiguredUserAuthFactors"] = configured
        return response

    def facts(self, index: int) -> tuple[bool, bool, bool]:
        """(has phone, has email, verified a software token) for the preference rules."""
        kind = KINDS[self.identity(index)[1]]
        return kind.phone, kind.email, kind.totp_verified or index in self.verified


# ---- the service's rules -------------------------------------------------------------------


def preference_error(
    body: Mapping[str, Any],
    *,
    has_phone: bool,
    has_email: bool,
    totp_verified: bool,
    pool_mfa: str,
    pool_email_mfa: bool,
) -> tuple[str, str] | None:
    """(code, message) Cognito answers an (Admin)SetUserMFAPreference with, or None.

    The same rules, in the same order and with the same messages, as the moto stand-in's
    fidelity layer (`mfa_policy.standin.fidelity.MFA_PREFERENCE_RULES`); a test checks they
    agree on every combination.
    """
    blocks = {f: body[k] for k, f in SETTINGS_BLOCKS.items() if isinstance(body.get(k), Mapping)}
    invalid = "InvalidParameterException"
    if sum(1 for b in blocks.values() if b.get("PreferredMfa")) > 1:
        return invalid, "Only one MFA method can be set as preferred."
    for factor, block in blocks.items():
        if block.get("PreferredMfa") and not block.get("Enabled"):
            return invalid, (
                f"Cannot set {factor} as the preferred MFA method when it is not enabled."
            )
    if pool_mfa == "ON":
        for factor, block in blocks.items():
            if not block.get("Enabled"):
                return invalid, (
                    f"Cannot disable {factor} for a user when MFA is required in the user pool."
                )
    if EMAIL in blocks and not pool_email_mfa:
        return invalid, "Email MFA is not enabled for this user pool."
    if SMS in blocks and not has_phone:
        return invalid, "User does not have a phone_number set to turn on SMS MFA"
    if EMAIL in blocks and not has_email:
        return invalid, "User does not have an email set to turn on email MFA"
    if TOTP in blocks and not totp_verified:
        if blocks[TOTP].get("Enabled"):
            return invalid, "User does not have delivery config set to turn on SOFTWARE_TOKEN_MFA"
        return invalid, "User has not set up software token mfa"
    return None


def apply_preference(body: Mapping[str, Any], state: MfaState) -> MfaState:
    enabled, preferred = set(state.enabled), state.preferred
    for key, factor in SETTINGS_BLOCKS.items():
        block = body.get(key)
        if not isinstance(block, Mapping):
            continue
        if block.get("Enabled"):
            enabled.add(factor)
        else:
            enabled.discard(factor)
        if block.get("PreferredMfa"):
            preferred = factor
        elif preferred == factor:
            preferred = None
    return MfaState(frozenset(enabled), preferred)


class _Bucket:
    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * burst)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _Spacing:
    """No burst at all: admitted requests are at least one interval apart (a bucket of one
    token), judged by the time each request was sent when the client says (``X-Bench-Sent``),
    so that this process's own scheduling on a loaded machine does not bunch arrivals."""

    def __init__(self, rate: float) -> None:
        self.interval = 1 / rate
        self.times: list[float] = []  # admitted send times, sorted, the last few seconds

    def take(self, at: float) -> bool:
        slack = self.interval * 1e-6
        i = bisect.bisect_left(self.times, at)
        if i > 0 and at - self.times[i - 1] < self.interval - slack:
            return False
        if i < len(self.times) and self.times[i] - at < self.interval - slack:
            return False
        self.times.insert(i, at)
        if len(self.times) > 2048:
            del self.times[:1024]
        return True


@dataclass
class _Storm:
    fraction: float
    until: float
    carry: float = 0.0

    def throttles(self, now: float) -> bool:
        if now >= self.until:
            return False
        self.carry += self.fraction
        if self.carry >= 1:
            self.carry -= 1
            return True
        return False


Hook = Callable[[str, Mapping[str, Any]], None]


def _gap_percentiles(times: list[float]) -> dict[str, float]:
    """Percentiles of the gaps between consecutive arrivals (ms): how even the pacing was."""
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    if not gaps:
        return {}
    return {
        f"p{q}": round(gaps[min(len(gaps) - 1, len(gaps) * q // 100)] * 1000, 2)
        for q in (1, 10, 50)
    }


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def client_error(code: str, message: str, operation: str, status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


class BenchCognito:
    """The fake service and its boto3-shaped client in one object. Thread-safe.

    >>> cognito = BenchCognito(latency=None, quotas=None)
    >>> pool_id = cognito.create_pool(10_000)
    >>> cognito.list_users(UserPoolId=pool_id, Limit=2)["Users"][0]["Username"]
    'user-0000001'
    """

    def __init__(
        self,
        *,
        latency: tuple[float, float] | None = (0.030, 0.080),
        quotas: Quotas | None = Quotas(),
        tail: tuple[float, float, float] | None = None,
    ) -> None:
        self.latency = latency
        #: (share of requests, low, high): that share takes uniform(low, high) s instead.
        self.tail = tail
        self._quotas = quotas
        self._lock = threading.Lock()  # pools and users
        self._control = threading.Lock()  # counters, buckets, faults
        self._pools: dict[str, Pool] = {}
        self._buckets: dict[str, _Bucket | _Spacing] = {}
        #: The client's send time of the request this thread serves (``X-Bench-Sent``).
        self._sent_at = threading.local()
        self._storms: list[_Storm] = []
        self._server_errors: dict[str | None, int] = {}
        self._hooks: list[Hook] = []
        self._tokens: dict[str, tuple[str, int]] = {}
        self._expired: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()  # other errors, by code
        self.writes: Counter[tuple[str, int]] = Counter()  # accepted writes per user
        #: (category, epoch second) -> [calls, throttles], every caller: CloudWatch's usage.
        self._usage: dict[tuple[str, int], list[int]] = {}
        self._admitted: dict[str, list[float]] = {}  # arrival times, for the gap statistics
        self.metrics_delay = 0.0
        self.metric_requests = 0

    # ---- setup -------------------------------------------------------------------------

    def create_pool(self, size: int, **options: Any) -> str:
        with self._lock:
            pool_id = f"us-east-1_bench{len(self._pools) + 1:04d}"
            self._pools[pool_id] = Pool(pool_id, size, **options)
            return pool_id

    def pool(self, pool_id: str) -> Pool:
        return self._pools[pool_id]

    @property
    def quotas(self) -> Quotas | None:
        return self._quotas

    @quotas.setter
    def quotas(self, quotas: Quotas | None) -> None:
        with self._control:
            self._quotas = quotas
            self._buckets.clear()

    def reset_counters(self) -> None:
        with self._control:
            self.calls.clear()
            self.throttled.clear()
            self.rejected.clear()
            self.writes.clear()
            self._admitted.clear()

    def stats(self) -> dict[str, Any]:
        with self._control:
            per_user = Counter(self.writes.values())
            return {
                "calls": dict(self.calls),
                "throttled": dict(self.throttled),
                "rejected": dict(self.rejected),
                "writes_accepted": sum(self.writes.values()),
                "users_written": len(self.writes),
                "users_by_writes": {str(k): v for k, v in sorted(per_user.items())},
                "metric_requests": self.metric_requests,
                "arrival_gaps_ms": {c: _gap_percentiles(t) for c, t in self._admitted.items()},
                # First and last request of each category: the span a run kept it busy.
                "spans": {c: [min(t), max(t)] for c, t in self._admitted.items() if t},
            }

    # ---- CloudWatch usage metrics (AWS/Usage CallCount and ThrottleCount) ---------------

    def get_metric_data(self, **request: Any) -> dict[str, Any]:
        """CloudWatch's GetMetricData over this service's usage, every caller counted.

        Only complete periods older than ``metrics_delay`` seconds are returned, as CloudWatch
        publishes usage metrics after the period ends; newest first.
        """
        start = _epoch(request["StartTime"])
        end = min(_epoch(request["EndTime"]), time.time() - self.metrics_delay)
        with self._control:
            usage = dict(self._usage)
            self.metric_requests += 1
        results = []
        for query in request["MetricDataQueries"]:
            stat = query["MetricStat"]
            metric = stat["Metric"]
            period = int(stat["Period"])
            dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            category = next(
                (c for c, name in USAGE_RESOURCE.items() if name == dimensions.get("Resource")),
                None,
            )
            column = 0 if metric["MetricName"] == "CallCount" else 1
            sums: Counter[int] = Counter()
            for (cat, second), counts in usage.items():
                if cat == category and start <= second < end:
                    sums[second - second % period] += counts[column]
            # Only periods that ended before `end`; a period with no request has no datapoint.
            points = sorted((t for t in sums if t + period <= end), reverse=True)
            results.append(
                {
                    "Id": query["Id"],
                    "Timestamps": [datetime.fromtimestamp(t, UTC) for t in points],
                    "Values": [float(sums[t]) for t in points],
                    "StatusCode": "Complete",
                }
            )
        return {"MetricDataResults": results}

    # ---- faults ------------------------------------------------------------------------

    def throttle_storm(self, fraction: float, seconds: float) -> None:
        with self._control:
            self._storms.append(_Storm(fraction, time.monotonic() + seconds))

    def server_errors(self, operation: str | None, times: int = 1) -> None:
        with self._control:
            self._server_errors[operation] = self._server_errors.get(operation, 0) + times

    def before_request(self, hook: Hook) -> Hook:
        """``hook(operation, request)`` before each request, outside the locks."""
        with self._control:
            self._hooks.append(hook)
        return hook

    def clear_faults(self) -> None:
        with self._control:
            self._storms.clear()
            self._server_errors.clear()
            self._hooks.clear()

    # ---- direct state access (tests) ---------------------------------------------------

    def delete_user(self, pool_id: str, username: str) -> None:
        index = index_of(username)
        with self._lock:
            if index is not None:
                self._pools[pool_id].deleted.add(index)

    def set_mfa(
        self, pool_id: str, username: str, enabled: set[str], preferred: str | None
    ) -> None:
        index = index_of(username)
        assert index is not None
        with self._lock:
            self._pools[pool_id].mfa[index] = MfaState(frozenset(enabled), preferred)

    def mfa_of(self, pool_id: str, username: str) -> MfaState:
        index = index_of(username)
        assert index is not None
        with self._lock:
            return self._pools[pool_id].state(index)

    def issue_access_token(self, pool_id: str, username: str) -> str:
        """A token shaped like Cognito's (a JWT whose claims name the pool and the user's sub;
        the runner checks them), unsigned: only this stand-in accepts it."""
        index = index_of(username)
        assert index is not None
        with self._lock:
            sub, _ = self._pools[pool_id].identity(index)
        region = pool_id.split("_", 1)[0]
        claims = {
            "iss": f"https://cognito-idp.{region}.amazonaws.com/{pool_id}",
            "sub": sub,
            "client_id": "bench",
            "token_use": "access",
            "username": username,
            "jti": uuid.uuid4().hex,
        }
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"eyJhbGciOiJub25lIn0.{payload}.bench"
        with self._lock:
            self._tokens[token] = (pool_id, index)
        return token

    def expire_token(self, token: str) -> None:
        with self._lock:
            self._expired.add(token)

    # ---- the request path --------------------------------------------------------------

    def _admit(self, operation: str, request: Mapping[str, Any]) -> None:
        with self._control:
            self.calls[operation] += 1
            hooks = list(self._hooks)
        for hook in hooks:
            hook(operation, request)
        error: tuple[str, str, int] | None = None
        with self._control:
            now = time.monotonic()
            if self._quotas is not None:  # gap statistics are for quota runs, not memory ones
                self._admitted.setdefault(CATEGORY[operation], []).append(
                    getattr(self._sent_at, "value", None) or now
                )
            usage = self._usage.setdefault((CATEGORY[operation], int(time.time())), [0, 0])
            usage[0] += 1
            sent = getattr(self._sent_at, "value", None)
            at = min(now, sent) if sent is not None else now
            if any(storm.throttles(now) for storm in self._storms) or not self._take(operation, at):
                self.throttled[operation] += 1
                usage[1] += 1
                error = ("TooManyRequestsException", "Rate exceeded", 400)
            else:
                for key in (operation, None):
                    if self._server_errors.get(key):
                        self._server_errors[key] -= 1
                        error = ("InternalErrorException", "An internal error occurred.", 500)
                        break
        tail = self.tail
        if tail is not None and random.random() < tail[0]:
            time.sleep(random.uniform(tail[1], tail[2]))
        elif self.latency:
            time.sleep(random.uniform(*self.latency))
        if error is not None:
            raise client_error(error[0], error[1], operation, error[2])

    def _take(self, operation: str, at: float) -> bool:
        quotas = self._quotas
        category = CATEGORY[operation]
        rate = getattr(quotas, category) if quotas is not None else None
        if rate is None:
            return True
        bucket = self._buckets.get(category)
        if bucket is None:
            bucket = self._buckets[category] = (
                _Bucket(rate, quotas.burst) if quotas.burst > 0 else _Spacing(rate)
            )
        return bucket.take() if isinstance(bucket, _Bucket) else bucket.take(at)

    def _reject(self, code: str, message: str, operation: str) -> ClientError:
        with self._control:
            self.rejected[code] += 1
        return client_error(code, message, operation)

    def _pool(self, request: Mapping[str, Any], operation: str) -> Pool:
        pool = self._pools.get(str(request.get("UserPoolId", "")))
        if pool is None:
            raise self._reject(
                "ResourceNotFoundException",
                f"User pool {request.get('UserPoolId')} does not exist.",
                operation,
            )
        return pool

    def _index(self, pool: Pool, username: Any, operation: str) -> int:
        index = index_of(str(username))
        if not pool.exists(index):
            raise self._reject("UserNotFoundException", "User does not exist.", operation)
        assert index is not None
        return index

    def _limit(self, request: Mapping[str, Any], operation: str) -> int:
        limit = int(request.get("Limit", MAX_LIMIT))
        if not 0 < limit <= MAX_LIMIT:
            raise self._reject(
                "InvalidParameterException",
                f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
                f"constraint: Member must have value less than or equal to {MAX_LIMIT}",
                operation,
            )
        return limit

    def _authorize(self, token: str, operation: str) -> tuple[Pool, int]:
        found = self._tokens.get(token)
        if found is None:
            raise self._reject("NotAuthorizedException", "Invalid Access Token", operation)
        if token in self._expired:
            raise self._reject("NotAuthorizedException", "Access Token has expired", operation)
        pool = self._pools[found[0]]
        if not pool.exists(found[1]):
            raise self._reject("UserNotFoundException", "User does not exist.", operation)
        if not KINDS[pool.identity(found[1])[1]].enabled:
            raise self._reject("NotAuthorizedException", "User is disabled.", operation)
        return pool, found[1]

    # ---- the operations (boto3's names and keyword arguments) --------------------------

    def get_user_pool_mfa_config(self, **request: Any) -> dict[str, Any]:
        operation = "GetUserPoolMfaConfig"
        self._admit(operation, request)
        pool = self._pool(request, operation)
        response: dict[str, Any] = {"MfaConfiguration": pool.mfa_configuration}
        if pool.mfa_configuration != "OFF":
            response["SoftwareTokenMfaConfiguration"] = {"Enabled": True}
            response["SmsMfaConfiguration"] = {
                "SmsAuthenticationMessage": "Your code is {####}",
                "SmsConfiguration": {"SnsCallerArn": "arn:aws:iam::123456789012:role/sns"},
            }
            if pool.email_mfa:
                response["EmailMfaConfiguration"] = {"Message": "{####}", "Subject": "code"}
        return response

    def list_users(self, **request: Any) -> dict[str, Any]:
        operation = "ListUsers"
        self._admit(operation, request)
        pool = self._pool(request, operation)
        limit = self._limit(request, operation)
        start = int(request.get("PaginationToken") or 0)
        end = min(start + limit, pool.size)
        with self._lock:
            users = [pool.listed(i) for i in range(start, end) if i not in pool.deleted]
        response: dict[str, Any] = {"Users": users}
        if end < pool.size:
            response["PaginationToken"] = str(end)
        return response

    def list_users_in_group(self, **request: Any) -> dict[str, Any]:
        operation = "ListUsersInGroup"
        self._admit(operation, request)
        pool = self._pool(request, operation)
        limit = self._limit(request, operation)
        group = request.get("GroupName")
        if group not in (ADMINS, SERVICE_ACCOUNTS):
            raise self._reject("ResourceNotFoundException", "Group not found.", operation)
        members = pool.members(str(group))
        start = int(request.get("NextToken") or 0)
        with self._lock:
            users = [pool.listed(i) for i in members[start : start + limit] if pool.exists(i)]
        response: dict[str, Any] = {"Users": users}
        if start + limit < len(members):
            response["NextToken"] = str(start + limit)
        return response

    def admin_get_user(self, **request: Any) -> dict[str, Any]:
        operation = "AdminGetUser"
        self._admit(operation, request)
        pool = self._pool(request, operation)
        with self._lock:
            return pool.user(self._index(pool, request.get("Username"), operation))

    def admin_get_user_auth_factors(self, **request: Any) -> dict[str, Any]:
        operation = "AdminGetUserAuthFactors"
        self._admit(operation, request)
        pool = self._pool(request, operation)
        with self._lock:
            return pool.auth_factors(self._index(pool, request.get("Username"), operation))

    def get_user_auth_factors(self, **request: Any) -> dict[str, Any]:
        operation = "GetUserAuthFactors"
        self._admit(operation, request)
        with self._lock:
            pool, index = self._authorize(str(request.get("AccessToken", "")), operation)
            return pool.auth_factors(index)

    def describe_user_pool(self, **request: Any) -> dict[str, Any]:
        operation = "DescribeUserPool"
        self._admit(operation, request)
        pool = self._pool(request, operation)
        return {"UserPool": {"Id": pool.pool_id, "UserPoolTier": "ESSENTIALS"}}

    def get_user(self, **request: Any) -> dict[str, Any]:
        operation = "GetUser"
        self._admit(operation, request)
        with self._lock:
            pool, index = self._authorize(str(request.get("AccessToken", "")), operation)
            return pool.user(index, admin=False)

    def admin_set_user_mfa_preference(self, **request: Any) -> dict[str, Any]:
        operation = "AdminSetUserMFAPreference"
        self._admit(operation, request)
        pool = self._pool(request, operation)
        with self._lock:
            index = self._index(pool, request.get("Username"), operation)
            return self._set_preference(pool, index, request, operation)

    def set_user_mfa_preference(self, **request: Any) -> dict[str, Any]:
        operation = "SetUserMFAPreference"
        self._admit(operation, request)
        with self._lock:
            pool, index = self._authorize(str(request.get("AccessToken", "")), operation)
            return self._set_preference(pool, index, request, operation)

    def _set_preference(
        self, pool: Pool, index: int, request: Mapping[str, Any], operation: str
    ) -> dict[str, Any]:
        has_phone, has_email, verified = pool.facts(index)
        error = preference_error(
            request,
            has_phone=has_phone,
            has_email=has_email,
            totp_verified=verified,
            pool_mfa=pool.mfa_configuration,
            pool_email_mfa=pool.email_mfa,
        )
        if error is not None:
            raise self._reject(*error, operation)
        pool.mfa[index] = apply_preference(request, pool.state(index))
        with self._control:
            self.writes[(pool.pool_id, index)] += 1
        return {}


# ---- HTTP: Cognito's JSON 1.1 protocol on 127.0.0.1 -----------------------------------------

TARGET_PREFIX = "AWSCognitoIdentityProviderService."
#: time.monotonic() (one clock for every process of the machine) when the client sent it.
SENT_HEADER = "X-Bench-Sent"


def stamp_send_times(client: Any) -> Any:
    """Make a boto3 client tell the stand-in when each request leaves (after every other
    ``before-send`` handler, mfa-policy's pacing included); returns the client."""

    def stamp(request: Any, **_: Any) -> None:
        request.headers[SENT_HEADER] = repr(time.monotonic())

    client.meta.events.register_last("before-send.cognito-identity-provider", stamp)
    return client


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"cannot encode {type(value).__name__}")


def serve(cognito: BenchCognito, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) that answers Cognito requests from ``cognito``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its connections

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                # The client stopped waiting (a hedged read's loser, left behind at its exit):
                # as on Cognito, the request was served and no one is there for the answer.
                self.close_connection = True

        def _send(self, status: int, payload: Any, error_type: str | None = None) -> None:
            body = json.dumps(payload, default=_json_default).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            if error_type:
                self.send_header("x-amzn-ErrorType", error_type)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/_bench/stats":
                self._send(200, cognito.stats())
            else:
                self._send(404, {"message": "not found"})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = json.loads(raw or b"{}")
            if self.path.startswith("/_bench/"):
                self._control(self.path[len("/_bench/") :], request)
                return
            target = self.headers.get("X-Amz-Target", "")
            method = OPERATIONS.get(target[len(TARGET_PREFIX) :])
            if not target.startswith(TARGET_PREFIX) or method is None:
                self._send(400, {"__type": "UnknownOperationException", "message": target})
                return
            sent = self.headers.get(SENT_HEADER)
            cognito._sent_at.value = float(sent) if sent else None
            try:
                self._send(200, getattr(cognito, method)(**request))
            except ClientError as exc:
                error = exc.response["Error"]
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                self._send(status, {"__type": error["Code"], "message": error["Message"]})

        def _control(self, command: str, request: dict[str, Any]) -> None:
            if command == "pool":
                self._send(200, {"pool_id": cognito.create_pool(**request)})
            elif command == "reset_counters":
                cognito.reset_counters()
                self._send(200, {})
            elif command == "get_metric_data":
                self._send(200, cognito.get_metric_data(**request))
            elif command == "settings":
                if "latency" in request:
                    latency = request["latency"]
                    cognito.latency = (float(latency[0]), float(latency[1])) if latency else None
                if "quotas" in request:
                    quotas = request["quotas"]
                    cognito.quotas = Quotas(**quotas) if quotas is not None else None
                if "tail" in request:
                    tail = request["tail"]
                    cognito.tail = (
                        (float(tail[0]), float(tail[1]), float(tail[2])) if tail else None
                    )
                if "metrics_delay" in request:
                    cognito.metrics_delay = float(request["metrics_delay"])
                self._send(200, {})
            else:
                self._send(404, {"message": f"unknown command {command}"})

    class Server(ThreadingHTTPServer):
        # Many clients open their connections at once; the default backlog of 5 resets some.
        request_queue_size = 256

    server = Server((host, port), Handler)
    server.daemon_threads = True
    return server


class RemoteStandIn:
    """A `python -m bench.standin serve` process on 127.0.0.1, and its control API."""

    def __init__(
        self,
        *,
        latency: tuple[float, float] | None,
        quotas: Quotas | None,
        priority: int = 0,
    ) -> None:
        import subprocess

        args = [sys.executable, "-m", "bench.standin", "serve", "--priority", str(priority)]
        if latency:
            args += ["--latency", str(latency[0]), str(latency[1])]
        else:
            args += ["--no-latency"]
        if quotas is None:
            args += ["--no-quotas"]
        else:
            args += ["--quotas", json.dumps(quotas.__dict__)]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("listening "):
            self.process.kill()
            raise RuntimeError(f"bench stand-in did not start: {line!r}")
        self.endpoint_url = line.split(" ", 1)[1]

    def _post(self, command: str, payload: Mapping[str, Any]) -> Any:
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 (our own http://127.0.0.1 server)
            f"{self.endpoint_url}/_bench/{command}",
            data=json.dumps(payload).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (127.0.0.1)
            return json.loads(response.read())

    def create_pool(self, size: int, **options: Any) -> str:
        return str(self._post("pool", {"size": size, **options})["pool_id"])

    def reset_counters(self) -> None:
        self._post("reset_counters", {})

    def settings(self, **settings: Any) -> None:
        self._post("settings", settings)

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint_url}/_bench/stats", timeout=30) as r:  # noqa: S310
            result: dict[str, Any] = json.loads(r.read())
            return result

    def client(self, *, config: Any = None) -> Any:
        """A boto3 cognito-idp client against this server (mfa-policy's config by default)."""
        import boto3

        from mfa_policy.aws.gateway import CLIENT_CONFIG

        return stamp_send_times(
            boto3.session.Session().client(
                "cognito-idp",
                endpoint_url=self.endpoint_url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106 (dummy)
                config=config or CLIENT_CONFIG,
            )
        )

    def cloudwatch(self) -> RemoteCloudWatch:
        """A CloudWatch client (GetMetricData only) over this stand-in's usage metrics."""
        return RemoteCloudWatch(self.endpoint_url)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()

    def __enter__(self) -> RemoteStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteCloudWatch:
    """The bench's injected CloudWatch client: GetMetricData answered by the stand-in at
    ``endpoint_url`` (a `python -m bench.standin serve`)."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url

    def get_metric_data(self, **request: Any) -> dict[str, Any]:
        import urllib.request

        payload = {
            **request,
            "StartTime": _epoch(request["StartTime"]),
            "EndTime": _epoch(request["EndTime"]),
        }
        http = urllib.request.Request(  # noqa: S310 (our own http://127.0.0.1 server)
            f"{self.endpoint_url}/_bench/get_metric_data",
            data=json.dumps(payload).encode(),
            method="POST",
        )
        with urllib.request.urlopen(http, timeout=30) as answer:  # noqa: S310 (127.0.0.1)
            response: dict[str, Any] = json.loads(answer.read())
        for result in response["MetricDataResults"]:
            result["Timestamps"] = [
                datetime.fromtimestamp(float(t), UTC) for t in result["Timestamps"]
            ]
        return response


def iter_usernames(size: int) -> Iterator[str]:
    return (username_of(i) for i in range(size))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.standin")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the bench stand-in on 127.0.0.1")
    run.add_argument("--port", type=int, default=0)
    run.add_argument("--latency", type=float, nargs=2, default=(0.030, 0.080))
    run.add_argument("--no-latency", action="store_true")
    run.add_argument("--quotas", default=None, help="JSON of Quotas fields")
    run.add_argument("--no-quotas", action="store_true")
    run.add_argument(
        "--priority",
        type=int,
        default=0,
        help="nice value for the server (negative: ahead of the clients; needs root)",
    )
    args = parser.parse_args(argv)
    if args.priority:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.priority)
        except OSError as exc:
            print(f"warning: cannot set priority {args.priority}: {exc}", file=sys.stderr)
    # Python hands the GIL over every 5 ms by default, so a request that arrives while another
    # thread runs waits up to that long to be admitted, bunching arrivals that were evenly
    # spaced on the wire; a real service's front end does not. Hand it over every 0.2 ms.
    sys.setswitchinterval(0.0002)
    quotas = None if args.no_quotas else Quotas(**json.loads(args.quotas or "{}"))
    cognito = BenchCognito(latency=None if args.no_latency else tuple(args.latency), quotas=quotas)
    server = serve(cognito, port=args.port)
    print(f"listening http://127.0.0.1:{server.server_port}", flush=True)
    # Stop when the parent closes our stdin (or dies): never outlive the benchmark.
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
