"""The only code that calls ``cognito-idp``. Takes its client as an argument.

Every call goes through one path: wait for the quota category's paced budget, send, tell the
budget every answer (throttles slow it down, at most once per window), and retry throttles,
5xx and timeouts with backoff. A gateway built with ``hedge`` sends a user read that goes
unanswered past the delay once more (``mfa_policy.aws.hedge``). Responses are
normalized here (absent, ``""`` and ``[]`` all mean "none"), so nothing above this module
sees Cognito's wire shapes.
"""

from __future__ import annotations

import random
import re
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

from mfa_policy.aws.hedge import Flight, HedgedCalls, HedgeDelay
from mfa_policy.aws.ratelimit import Category, RateLimiter
from mfa_policy.core.engine import Rejection
from mfa_policy.core.model import (
    Factor,
    MfaRead,
    MfaRequest,
    MfaState,
    PoolMfaConfig,
    PoolSettings,
)
from mfa_policy.core.report import Counts
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
    "admin_get_user_auth_factors": Category.USER_READ,
    "get_user_auth_factors": Category.USER_READ,
    "admin_set_user_mfa_preference": Category.USER_RESOURCE_UPDATE,
    "set_user_mfa_preference": Category.USER_RESOURCE_UPDATE,
    "get_user_pool_mfa_config": Category.USER_POOL_READ,
    "describe_user_pool": Category.USER_POOL_READ,
}

#: The default reads, and what each falls back to. AdminGetUserAuthFactors shows registered
#: authenticators (ConfiguredUserAuthFactors) and carries no MAU sentence; AdminGetUser is
#: documented to count the user as a billable monthly active user.
READS = {"admin": "admin_get_user_auth_factors", "token": "get_user_auth_factors"}
FALLBACK_READS = {
    "admin_get_user_auth_factors": "admin_get_user",
    "get_user_auth_factors": "get_user",
}
#: Answers that mean "this caller cannot use that operation here" (an IAM policy without the
#: action, a Region or endpoint without it), not "this user is in trouble".
_UNAVAILABLE_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnknownOperationException",
        "InvalidAction",
        "OperationNotEnabledException",
        "NotImplementedError",  # moto without the operation
    }
)
#: WebAuthnConfiguration.FactorConfiguration that lets passkeys count as MFA.
PASSKEY_MFA_CONFIGURATION = "MULTI_FACTOR_WITH_USER_VERIFICATION"

#: InvalidParameterException messages that mean a factor the user cannot have yet, as the
#: service words them (research/cognito-cost-and-state.md). Anything else is an error.
_REJECTIONS: tuple[tuple[re.Pattern[str], Rejection], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), rejection)
    for pattern, rejection in (
        (
            r"^User does not have delivery config set to turn on SOFTWARE_TOKEN_MFA\.?$",
            Rejection.TOTP_NOT_VERIFIED,
        ),
        (r"^User has not verified software token mfa\.?$", Rejection.TOTP_NOT_VERIFIED),
        (r"^User has not set up software token mfa\.?$", Rejection.TOTP_NOT_VERIFIED),
        (
            r"^User does not have a phone_number set to turn on SMS MFA\.?$",
            Rejection.NO_PHONE_NUMBER,
        ),
        (
            r"^User does not have delivery config set to turn on SMS_MFA\.?$",
            Rejection.NO_PHONE_NUMBER,
        ),
        (r"^User does not have delivery config set to turn on EMAIL_OTP\.?$", Rejection.NO_EMAIL),
        (r"^User does not have an email set to turn on email MFA\.?$", Rejection.NO_EMAIL),
        (
            r"^User does not have applicable WebAuthn credentials to enable WebAuthn MFA\.?$",
            Rejection.PASSKEY_NOT_REGISTERED,
        ),
    )
)

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
        """The factor Cognito refused, when that is what this error says: matched on the
        service's own messages, never guessed from a word in an unknown one."""
        if self.code != "InvalidParameterException":
            return None
        message = self.message.strip()
        return next((r for pattern, r in _REJECTIONS if pattern.match(message)), None)

    @property
    def token_problem(self) -> str | None:
        """Why an access token was refused (``expired``, ``revoked``, ``invalid``), if it was."""
        if self.code != "NotAuthorizedException":
            return None
        text = self.message.lower()
        if "access token has expired" in text:
            return "expired"
        if "access token has been revoked" in text:
            return "revoked"
        if "invalid access token" in text:
            return "invalid"
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
    #: MFAOptions lists SMS: the legacy switch for SMS MFA (ListUsers' only MFA signal).
    sms_mfa_option: bool = False
    #: UserLastModifiedDate, as an ISO string: the ledger compares it with the observation's.
    last_modified: str | None = None


@dataclass(frozen=True)
class UsersPage:
    users: list[ListedUser]
    next_token: str | None


class CallCounters:
    """Requests sent per operation (retries included), throttles received and hedged reads
    (each also counted as the requests it sent); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.hedges = 0

    def count(self, operation: str, *, throttled: bool = False) -> None:
        with self._lock:
            self.calls[operation] += 1
            if throttled:
                self.throttled[operation] += 1

    def count_hedge(self) -> None:
        with self._lock:
            self.hedges += 1

    def drain_into(self, counts: Counts) -> None:
        """Add the counts so far to ``counts`` and start again from zero."""
        with self._lock:
            counts.api_calls.update(self.calls)
            counts.throttled.update(self.throttled)
            counts.hedged_reads += self.hedges
            self.calls.clear()
            self.throttled.clear()
            self.hedges = 0


def _listed(raw: Mapping[str, Any]) -> ListedUser:
    attributes = attributes_of(raw.get("Attributes"))
    return ListedUser(
        username=raw["Username"],
        sub=attributes.get("sub", raw["Username"]),
        status=raw.get("UserStatus") or "UNKNOWN",
        enabled=bool(raw.get("Enabled", True)),
        attributes=attributes,
        sms_mfa_option=has_sms_mfa_option(raw.get("MFAOptions")),
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


def has_sms_mfa_option(options: list[Mapping[str, Any]] | None) -> bool:
    return any((o or {}).get("DeliveryMedium") == "SMS" for o in options or [])


def mfa_state_of(
    response: Mapping[str, Any], *, sms_mfa_option: bool = False
) -> tuple[MfaState, bool]:
    """Normalize UserMFASettingList/PreferredMfaSetting (names we don't manage are ignored),
    and whether SMS is on through the legacy MFAOptions only."""
    names = response.get("UserMFASettingList") or []
    enabled = {f for f in (Factor.from_cognito(n) for n in names) if f is not None}
    preferred = Factor.from_cognito(response.get("PreferredMfaSetting") or "")
    if preferred is not None and not preferred.can_be_preferred:
        preferred = None
    if preferred is not None:
        # Cognito can activate the preferred factor without listing it; it is in effect.
        enabled.add(preferred)
    legacy_sms = (
        sms_mfa_option or has_sms_mfa_option(response.get("MFAOptions"))
    ) and Factor.SMS not in enabled
    if legacy_sms:
        enabled.add(Factor.SMS)
    return MfaState(frozenset(enabled), preferred), legacy_sms


#: What the calling thread is sending through a gateway, for the before-send hook: the
#: limiter and category that pace it, and the hedged read's flight told of the send.
_sending = threading.local()


def _pace_at_send(**_: Any) -> None:
    limiter = getattr(_sending, "limiter", None)
    if limiter is not None:
        limiter.acquire(_sending.category)
    flight: Flight | None = getattr(_sending, "flight", None)
    if flight is not None:
        flight.sent()  # after the pacing wait: a hedge's delay counts from the send


def _pace_on_send(client: Any) -> bool:
    """Wait for the budget in botocore's ``before-send`` event, once the request is built and
    signed, so the CPU botocore spends on it (and the GIL waits that come with it) cannot
    bunch sends the budget spaced evenly; each retry is sent, and so paced, again. The hook is
    registered once per client and paces only calls a gateway makes, by that gateway's
    limiter. Clients without botocore's events (in-process fakes) are paced in ``_call``."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None:
        return False
    events.register(
        "before-send.cognito-identity-provider", _pace_at_send, unique_id="mfa-policy-pacing"
    )
    return True


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
        hedge: HedgeDelay | None = None,
    ) -> None:
        self.client = client
        self.user_pool_id = user_pool_id
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self.counters = counters or CallCounters()
        self._sleep = sleep
        #: Reads that turned out unavailable to this caller (fall back for the rest of the run).
        self._unavailable: set[str] = set()
        self._lock = threading.Lock()
        self.warnings: list[str] = []
        self._paced_on_send = _pace_on_send(client) if limiter is not None else False
        #: User reads unanswered past ``hedge``'s delay are sent once more (None: never).
        self._hedged = HedgedCalls(hedge) if hedge is not None else None

    def close(self) -> None:
        """Stop the hedged reads' threads (a read still in flight finishes on its own)."""
        if self._hedged is not None:
            self._hedged.close()

    # -- the one path every request takes --------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        category = CATEGORY_OF[operation]
        flight: Flight | None = getattr(_sending, "flight", None)
        throttles = errors = transports = 0
        while True:
            if self.limiter is not None and not self._paced_on_send:
                self.limiter.acquire(category)
            try:
                method = getattr(self.client, operation, None)
                if method is None:  # a botocore too old to know the operation
                    raise CognitoError(
                        "UnknownOperationException", "not in this client's service model", operation
                    )
                _sending.limiter, _sending.category = self.limiter, category
                if flight is not None and not self._paced_on_send:
                    flight.sent()  # no before-send hook: the send is the call
                try:
                    response: dict[str, Any] = method(**kwargs)
                finally:
                    _sending.limiter = None
                    if flight is not None:
                        flight.answered()
                self.counters.count(operation)
                if self.limiter is not None:
                    self.limiter.answered(category, throttled=False)
                return response
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", "Unknown"))
                message = str(error.get("Message", ""))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                throttled = code in _THROTTLE_CODES or status == 429
                self.counters.count(operation, throttled=throttled)
                if self.limiter is not None:
                    self.limiter.answered(category, throttled=throttled)
                if throttled:
                    throttles += 1
                    if throttles >= self.retry.throttle_attempts:
                        raise CognitoError(code, message, operation) from None
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
        passkey = (response.get("WebAuthnConfiguration") or {}).get("FactorConfiguration")
        if passkey == PASSKEY_MFA_CONFIGURATION:
            factors.add(Factor.PASSKEY)
        return PoolMfaConfig(
            response.get("MfaConfiguration") or "OFF", frozenset(factors), passkey or None
        )

    def pool_settings(self) -> PoolSettings | None:
        """The pool's feature plan, account recovery and sign-in options (DescribeUserPool);
        None when this caller may not describe the pool."""
        try:
            response = self._call("describe_user_pool", UserPoolId=self.user_pool_id)
        except CognitoError as exc:
            if exc.code in _UNAVAILABLE_CODES:
                return None
            raise RunError(
                f"cannot describe user pool {self.user_pool_id}: {exc.code}: {exc.message}"
            ) from None
        pool = response.get("UserPool") or {}
        mechanisms = (pool.get("AccountRecoverySetting") or {}).get("RecoveryMechanisms") or []
        recovery = tuple(
            str(m["Name"]) for m in sorted(mechanisms, key=lambda m: m.get("Priority", 0))
        )
        first = ((pool.get("Policies") or {}).get("SignInPolicy") or {}).get(
            "AllowedFirstAuthFactors"
        )
        return PoolSettings(
            tier=pool.get("UserPoolTier") or None,
            recovery=recovery or None,
            first_auth_factors=frozenset(first) if first else None,
        )

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

    def read_user(
        self,
        username: str | None = None,
        *,
        access_token: str | None = None,
        sms_mfa_option: bool = False,
        with_attributes: bool = False,
    ) -> MfaRead:
        """One user's MFA state: by ``access_token`` (GetUserAuthFactors) or as an admin by
        ``username`` (AdminGetUserAuthFactors). Where the caller may not use that operation,
        this and every later read use GetUser/AdminGetUser instead, with a warning.

        ``sms_mfa_option``: the user's ListUsers row lists SMS in MFAOptions (the auth-factors
        reads do not return MFAOptions, so legacy SMS MFA shows only there).
        ``with_attributes``: read with AdminGetUser/GetUser, which return the user's
        attributes (and, for AdminGetUser, count the user as an MAU) but no auth factors.
        """
        if access_token is not None:
            operation, kwargs = READS["token"], {"AccessToken": access_token}
        else:
            assert username is not None, "an admin read needs a username"
            operation = READS["admin"]
            kwargs = {"UserPoolId": self.user_pool_id, "Username": username}
        if with_attributes or operation in self._unavailable:
            operation = FALLBACK_READS[operation]
        try:
            response = self._read(operation, kwargs)
        except CognitoError as exc:
            if exc.code not in _UNAVAILABLE_CODES or operation not in FALLBACK_READS:
                raise
            self._fall_back(operation, exc)
            operation = FALLBACK_READS[operation]
            response = self._read(operation, kwargs)
        mfa, legacy_sms = mfa_state_of(response, sms_mfa_option=sms_mfa_option)
        configured = response.get("ConfiguredUserAuthFactors")
        return MfaRead(
            mfa,
            attributes_of(response.get("UserAttributes")),
            enabled=response.get("Enabled"),
            status=response.get("UserStatus"),
            legacy_sms=legacy_sms,
            auth_factors=(
                frozenset(configured or ())
                if operation in FALLBACK_READS  # the auth-factors reads: [] or absent = none
                else None
            ),
            operation=operation,
            username=response.get("Username"),
        )

    def _read(self, operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``_call`` for one user read, hedged when this gateway hedges: each request, the
        hedge too, is paced, retried and counted as any other."""
        if self._hedged is None:
            return self._call(operation, **kwargs)
        return self._hedged.call(
            lambda flight: self._call_in_flight(flight, operation, kwargs),
            self.counters.count_hedge,
        )

    def _call_in_flight(
        self, flight: Flight, operation: str, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        _sending.flight = flight
        try:
            return self._call(operation, **kwargs)
        finally:
            _sending.flight = None

    def _fall_back(self, operation: str, exc: CognitoError) -> None:
        with self._lock:
            if operation in self._unavailable:
                return
            self._unavailable.add(operation)
            fallback = FALLBACK_READS[operation]
            self.warnings.append(
                f"{operation_name(operation)} is not available ({exc.code}: {exc.message}); "
                f"users are read with {operation_name(fallback)}, which shows no registered "
                "authenticators or passwordless users (where the pool allows sign-in without a "
                "password, no factor is turned on for anyone: they are guarded)"
                + (
                    " and counts each user as a billable MAU"
                    if fallback == "admin_get_user"
                    else ""
                )
            )

    # The single-user commands check and show attributes, so they read them.
    def admin_read(self, username: str) -> MfaRead:
        return self.read_user(username, with_attributes=True)

    def token_read(self, access_token: str) -> MfaRead:
        return self.read_user(access_token=access_token, with_attributes=True)

    def admin_write(self, username: str, request: MfaRequest) -> None:
        self._call(
            "admin_set_user_mfa_preference",
            UserPoolId=self.user_pool_id,
            Username=username,
            **request.to_cognito(),
        )

    def token_write(self, access_token: str, request: MfaRequest) -> None:
        self._call("set_user_mfa_preference", AccessToken=access_token, **request.to_cognito())


def operation_name(operation: str) -> str:
    """``admin_get_user_auth_factors`` -> ``AdminGetUserAuthFactors``."""
    return "".join(part.capitalize() for part in operation.split("_"))
