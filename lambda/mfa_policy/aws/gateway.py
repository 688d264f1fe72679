"""The only code that calls ``cognito-idp``. Takes its client as an argument.

Every call goes through one path: wait for the quota category's bucket, send, and on
throttling, 5xx or a timeout slow the bucket down and retry with backoff. Responses are
normalized here (absent, ``""`` and ``[]`` all mean "none"), so nothing above this module
sees Cognito's wire shapes.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from mfa_policy.aws.ratelimit import Category, RateLimiter
from mfa_policy.core.engine import Rejection
from mfa_policy.core.model import Factor, MfaRead, MfaRequest, MfaState, PoolMfaConfig
from mfa_policy.exceptions import MfaPolicyError, PreflightError, RunError

#: Cognito's maximum page size for ListUsers and ListUsersInGroup.
PAGE_SIZE = 60

#: Retries are ours, not botocore's, so that every throttle slows our bucket down. Cognito
#: answers in well under a second; an endpoint that accepts and never answers costs at most
#: RetryPolicy.transport_attempts x read_timeout (+ under a second of backoff), about 31 s.
CLIENT_CONFIG = Config(
    retries={"total_max_attempts": 1},
    connect_timeout=5,
    read_timeout=10,
    max_pool_connections=64,
)

CATEGORY_OF = {
    "list_users": Category.USER_LIST,
    "list_users_in_group": Category.USER_LIST,
    "admin_get_user": Category.USER_READ,
    "get_user": Category.USER_READ,
    "admin_set_user_mfa_preference": Category.USER_RESOURCE_UPDATE,
    "set_user_mfa_preference": Category.USER_RESOURCE_UPDATE,
    "get_user_pool_mfa_config": Category.USER_POOL_READ,
    "describe_user_pool": Category.USER_POOL_READ,
}

_THROTTLE_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
    }
)
_TRANSPORT_ERRORS = (
    ReadTimeoutError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ConnectionClosedError,
)


class CognitoError(MfaPolicyError):
    """A Cognito answer that is not retried: the runner turns it into a user's outcome, and
    one that stops a run (a failed ListUsers) reaches the user as an error."""

    def __init__(
        self, code: str, message: str, operation: str, *, unanswered: bool = False
    ) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.code = code
        self.message = message
        self.operation = operation
        #: The last attempt timed out or got a 5xx: Cognito may have done it all the same.
        self.unanswered = unanswered

    @property
    def rejection(self) -> Rejection | None:
        """The factor Cognito refused, when that is what this error says."""
        if self.code != "InvalidParameterException":
            return None
        text = self.message.lower()
        if "software token" in text or "software_token" in text:
            return Rejection.TOTP_NOT_VERIFIED
        if "phone_number" in text or "phone number" in text:
            return Rejection.NO_PHONE_NUMBER
        if "email" in text:
            return Rejection.NO_EMAIL
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Two separate budgets: throttles (Cognito is busy, wait and try again) and errors (5xx,
    timeouts). A request fails when either budget is spent, not when their sum is."""

    throttle_attempts: int = 12
    error_attempts: int = 6
    #: A request that timed out or could not connect: a silent endpoint must fail in bounded time.
    transport_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff (attempt counts from 1)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class ListedUser:
    """One row of ListUsers: everything but the MFA state."""

    username: str
    sub: str
    status: str
    enabled: bool
    attributes: Mapping[str, str]
    #: UserLastModifiedDate, as an ISO string: the ledger compares it with the observation's.
    last_modified: str | None = None


@dataclass(frozen=True)
class UsersPage:
    users: list[ListedUser]
    next_token: str | None


class CallCounters:
    """Requests sent per operation (retries included) and throttles received; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()

    def count(self, operation: str, *, throttled: bool = False) -> None:
        with self._lock:
            self.calls[operation] += 1
            if throttled:
                self.throttled[operation] += 1

    def drain_into(self, api_calls: Counter[str], throttled: Counter[str]) -> None:
        """Add the counts so far to the given counters and start again from zero."""
        with self._lock:
            api_calls.update(self.calls)
            throttled.update(self.throttled)
            self.calls.clear()
            self.throttled.clear()


def _listed(raw: Mapping[str, Any]) -> ListedUser:
    attributes = attributes_of(raw.get("Attributes"))
    return ListedUser(
        username=raw["Username"],
        sub=attributes.get("sub", raw["Username"]),
        status=raw.get("UserStatus") or "UNKNOWN",
        enabled=bool(raw.get("Enabled", True)),
        attributes=attributes,
        last_modified=_iso(raw.get("UserLastModifiedDate")),
    )


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _transport_message(exc: Exception, attempts: int, client: Any) -> str:
    config = getattr(getattr(client, "meta", None), "config", None) or CLIENT_CONFIG
    if isinstance(exc, ReadTimeoutError):
        what = (
            "the endpoint accepted the connection but did not answer within "
            f"{config.read_timeout} s"
        )
    elif isinstance(exc, ConnectTimeoutError):
        what = f"no connection within {config.connect_timeout} s"
    else:
        what = "the connection failed"
    return f"{what} ({attempts} attempts): {exc}"


def attributes_of(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {a["Name"]: a.get("Value", "") for a in items or []}


def mfa_state_of(response: Mapping[str, Any]) -> MfaState:
    """Normalize UserMFASettingList/PreferredMfaSetting; names we don't manage are ignored."""
    names = response.get("UserMFASettingList") or []
    enabled = {f for f in (Factor.from_cognito(n) for n in names) if f is not None}
    preferred = Factor.from_cognito(response.get("PreferredMfaSetting") or "")
    if preferred is not None:
        # Cognito can activate the preferred factor without listing it; it is in effect.
        enabled.add(preferred)
    return MfaState(frozenset(enabled), preferred)


class CognitoGateway:
    def __init__(
        self,
        client: Any,
        user_pool_id: str,
        *,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        counters: CallCounters | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.user_pool_id = user_pool_id
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self.counters = counters or CallCounters()
        self._sleep = sleep

    # -- the one path every request takes --------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        category = CATEGORY_OF[operation]
        throttles = errors = transports = 0
        while True:
            if self.limiter is not None:
                self.limiter.acquire(category)
            try:
                response: dict[str, Any] = getattr(self.client, operation)(**kwargs)
                self.counters.count(operation)
                return response
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", "Unknown"))
                message = str(error.get("Message", ""))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                throttled = code in _THROTTLE_CODES or status == 429
                self.counters.count(operation, throttled=throttled)
                if throttled:
                    throttles += 1
                    if throttles >= self.retry.throttle_attempts:
                        raise CognitoError(code, message, operation) from None
                    if self.limiter is not None:
                        self.limiter.slow_down(category)
                    attempt = throttles
                elif status >= 500 or code == "InternalErrorException":
                    errors += 1
                    if errors >= self.retry.error_attempts:
                        raise CognitoError(code, message, operation, unanswered=True) from None
                    attempt = errors
                else:
                    raise CognitoError(code, message, operation) from None
            except _TRANSPORT_ERRORS as exc:
                self.counters.count(operation)
                errors += 1
                transports += 1
                if (
                    errors >= self.retry.error_attempts
                    or transports >= self.retry.transport_attempts
                ):
                    raise CognitoError(
                        type(exc).__name__,
                        _transport_message(exc, transports, self.client),
                        operation,
                        unanswered=True,
                    ) from None
                attempt = errors
            self._sleep(self.retry.delay(attempt))

    # -- pool -----------------------------------------------------------------------------

    def pool_mfa_config(self) -> PoolMfaConfig:
        try:
            response = self._call("get_user_pool_mfa_config", UserPoolId=self.user_pool_id)
        except CognitoError as exc:
            if exc.code == "ResourceNotFoundException":
                raise PreflightError(
                    f"user pool {self.user_pool_id} not found ({exc.message})"
                ) from None
            raise RunError(
                f"cannot read the MFA configuration of {self.user_pool_id}: "
                f"{exc.code}: {exc.message}"
            ) from None
        factors = set()
        if (response.get("SoftwareTokenMfaConfiguration") or {}).get("Enabled"):
            factors.add(Factor.TOTP)
        if response.get("SmsMfaConfiguration"):
            factors.add(Factor.SMS)
        if response.get("EmailMfaConfiguration"):
            factors.add(Factor.EMAIL)
        return PoolMfaConfig(response.get("MfaConfiguration") or "OFF", frozenset(factors))

    def estimated_users(self) -> int | None:
        """DescribeUserPool's EstimatedNumberOfUsers, for a progress bar; None if not allowed."""
        try:
            response = self._call("describe_user_pool", UserPoolId=self.user_pool_id)
        except CognitoError:
            return None
        estimate = (response.get("UserPool") or {}).get("EstimatedNumberOfUsers")
        return int(estimate) if isinstance(estimate, int) else None

    # -- enumeration ----------------------------------------------------------------------

    def list_users_page(self, token: str | None = None) -> UsersPage:
        kwargs: dict[str, Any] = {"UserPoolId": self.user_pool_id, "Limit": PAGE_SIZE}
        if token:
            kwargs["PaginationToken"] = token
        response = self._call("list_users", **kwargs)
        users = [_listed(raw) for raw in response.get("Users") or []]
        return UsersPage(users, response.get("PaginationToken") or None)

    def find_by_sub(self, sub: str) -> ListedUser | None:
        """The one user with this sub, as ListUsers lists it (not MAU-billed); None if gone."""
        if '"' in sub or "\\" in sub:
            return None  # not a sub; and it would break the filter's quoting
        response = self._call(
            "list_users", UserPoolId=self.user_pool_id, Filter=f'sub = "{sub}"', Limit=1
        )
        users = [_listed(raw) for raw in response.get("Users") or []]
        return users[0] if users else None

    def group_members(self, group: str) -> Iterator[str]:
        """Usernames in ``group``; a group that does not exist has none."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "UserPoolId": self.user_pool_id,
                "GroupName": group,
                "Limit": PAGE_SIZE,
            }
            if token:
                kwargs["NextToken"] = token
            try:
                response = self._call("list_users_in_group", **kwargs)
            except CognitoError as exc:
                if exc.code == "ResourceNotFoundException":
                    return
                raise
            for raw in response.get("Users") or []:
                yield raw["Username"]
            token = response.get("NextToken") or None
            if token is None:
                return

    # -- one user -------------------------------------------------------------------------

    def admin_read(self, username: str) -> MfaRead:
        response = self._call("admin_get_user", UserPoolId=self.user_pool_id, Username=username)
        return MfaRead(
            mfa_state_of(response),
            attributes_of(response.get("UserAttributes")),
            enabled=response.get("Enabled"),
            status=response.get("UserStatus"),
        )

    def token_read(self, access_token: str) -> MfaRead:
        response = self._call("get_user", AccessToken=access_token)
        return MfaRead(mfa_state_of(response), attributes_of(response.get("UserAttributes")))

    def admin_write(self, username: str, request: MfaRequest) -> None:
        self._call(
            "admin_set_user_mfa_preference",
            UserPoolId=self.user_pool_id,
            Username=username,
            **request.to_cognito(),
        )

    def token_write(self, access_token: str, request: MfaRequest) -> None:
        self._call("set_user_mfa_preference", AccessToken=access_token, **request.to_cognito())
