"""The fidelity layer: a WSGI middleware that makes moto's Cognito behave like the real service.

moto accepts requests real Cognito rejects (SMS MFA without a phone number, a preferred factor
that is not enabled, two preferred factors), ignores email MFA, never expires access tokens and
never throttles. This middleware sits in front of moto's WSGI app and closes those gaps for the
operations mfa-policy uses. Every other request (DynamoDB, S3, other Cognito operations) passes
through to moto untouched.

The service rules are small pure functions, cdk-nag style: each takes the request body and the
facts about the user or pool and returns a `CognitoError` or None. The middleware gathers the
facts, runs the rules in order (first error wins) and owns every side effect.
"""

from __future__ import annotations

import http
import io
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from moto.cognitoidp.models import (
    CognitoIdpBackend,
    CognitoIdpUser,
    CognitoIdpUserPool,
    cognitoidp_backends,
)
from moto.core.exceptions import JsonRESTError

from mfa_policy.aws.tokens import unverified_claims

from .cloudtrail import (
    ADMIN_UPDATES,
    CLOUDTRAIL_TARGET_PREFIX,
    LOOKUP_EVENTS,
    MAU_READS,
    SIGN_INS,
    LookupError_,
    Trail,
)

logger = logging.getLogger(__name__)

COGNITO_TARGET_PREFIX = "AWSCognitoIdentityProviderService."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

SMS = "SMS_MFA"
TOTP = "SOFTWARE_TOKEN_MFA"
EMAIL = "EMAIL_OTP"
#: Passkey MFA's name in UserMFASettingList, as a field report shows it (not documented).
PASSKEY = "WEB_AUTHN_MFA"
#: Request block name -> the factor name Cognito uses in UserMFASettingList.
SETTINGS_BLOCKS: dict[str, str] = {
    "SMSMfaSettings": SMS,
    "SoftwareTokenMfaSettings": TOTP,
    "EmailMfaSettings": EMAIL,
    "WebAuthnMfaSettings": PASSKEY,
}
CODE_FACTORS = frozenset({SMS, TOTP, EMAIL})
PASSKEY_MFA_CONFIGURATION = "MULTI_FACTOR_WITH_USER_VERIFICATION"
#: Operations counted against Cognito's per-user quotas (10 reads, 10 writes a second).
USER_READ_OPERATIONS = frozenset(
    {"AdminGetUser", "GetUser", "AdminGetUserAuthFactors", "GetUserAuthFactors"}
)
USER_WRITE_OPERATIONS = frozenset(
    {"AdminSetUserMFAPreference", "SetUserMFAPreference", "AdminSetUserSettings", "SetUserSettings"}
)
#: The refusals of writes to users who cannot take MFA changes yet, by UserStatus.
WRITE_REFUSED_STATUS_ERRORS = {
    "UNCONFIRMED": ("UserNotConfirmedException", "User is not confirmed."),
    "RESET_REQUIRED": ("PasswordResetRequiredException", "Password reset required for the user"),
}
MAX_LIST_LIMIT = 60
SMS_MFA_OPTION = {"DeliveryMedium": "SMS", "AttributeName": "phone_number"}
MFA_PREFERENCE_OPERATIONS = frozenset({"AdminSetUserMFAPreference", "SetUserMFAPreference"})
AUTH_OPERATIONS = frozenset(
    {"InitiateAuth", "AdminInitiateAuth", "RespondToAuthChallenge", "AdminRespondToAuthChallenge"}
)
_CREDENTIAL_REGION = re.compile(r"Credential=[^/,]+/\d{8}/([^/,]+)/")
#: Calls a client makes without IAM credentials (the rest are signed by an IAM principal).
UNSIGNED_OPERATIONS = frozenset(
    {
        "InitiateAuth",
        "RespondToAuthChallenge",
        "SignUp",
        "ConfirmSignUp",
        "ForgotPassword",
        "ConfirmForgotPassword",
        "ResendConfirmationCode",
    }
)
#: The IAM principal the stand-in's CloudTrail names for signed calls.
STANDIN_PRINCIPAL = "standin-admin"


# --------------------------------------------------------------------------------------------
# Errors, facts and state: plain values the rules work on.


@dataclass(frozen=True)
class CognitoError:
    """An error response as Cognito's JSON protocol sends it."""

    code: str
    message: str
    status: int = 400

    def body(self) -> bytes:
        return json.dumps({"__type": self.code, "message": self.message}).encode()


def invalid_parameter(message: str) -> CognitoError:
    return CognitoError("InvalidParameterException", message)


def not_authorized(message: str) -> CognitoError:
    return CognitoError("NotAuthorizedException", message)


THROTTLED = CognitoError("TooManyRequestsException", "Rate exceeded")
INTERNAL_ERROR = CognitoError("InternalErrorException", "An internal error occurred.", 500)


@dataclass(frozen=True)
class UserFacts:
    """What the MFA-preference rules need to know about one user and their pool."""

    has_phone: bool
    has_email: bool
    totp_verified: bool
    pool_mfa: str  # OFF | ON | OPTIONAL
    pool_email_mfa: bool  # the pool has an EmailMfaConfiguration
    #: TOTP is listed as enabled (with ``totp_verified`` False: re-associated, not verified).
    totp_enabled: bool = False
    status: str = "CONFIRMED"
    #: WebAuthnConfiguration.FactorConfiguration is MULTI_FACTOR_WITH_USER_VERIFICATION.
    pool_passkey_mfa: bool = False
    #: The user has registered a passkey (a WebAuthn credential).
    has_passkey: bool = False


@dataclass(frozen=True)
class MfaState:
    """A user's MFA factors: the enabled set and the one preferred factor, if any."""

    enabled: frozenset[str] = frozenset()
    preferred: str | None = None


Rule = Callable[[Mapping[str, Any], UserFacts], CognitoError | None]


def settings_blocks(body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The MFA settings blocks a request carries, keyed by factor (SMS_MFA, ...)."""
    return {
        factor: body[name]
        for name, factor in SETTINGS_BLOCKS.items()
        if isinstance(body.get(name), Mapping)
    }


def _enabled(block: Mapping[str, Any]) -> bool:
    return bool(block.get("Enabled"))


def _preferred(block: Mapping[str, Any]) -> bool:
    return bool(block.get("PreferredMfa"))


# --------------------------------------------------------------------------------------------
# Rules for AdminSetUserMFAPreference / SetUserMFAPreference, in the order they are checked.


def user_can_take_changes(body: Mapping[str, Any], facts: UserFacts) -> CognitoError | None:
    refused = WRITE_REFUSED_STATUS_ERRORS.get(facts.status)
    return CognitoError(*refused) if refused else None


def one_preferred_factor(body: Mapping[str, Any], facts: UserFacts) -> CognitoError | None:
    preferred = [f for f, block in settings_blocks(body).items() if _preferred(block)]
    if len(preferred) > 1:
        return invalid_parameter("Only one MFA method can be set as preferred.")
    return None


def preferred_factor_is_enabled(body: Mapping[str, Any], facts: UserFacts) -> CognitoError | None:
    for factor, block in settings_blocks(body).items():
        if _preferred(block) and not _enabled(block):
            return invalid_parameter(
                f"Cannot set {factor} as the preferred MFA method when it is not enabled."
            )
    return None


def required_mfa_keeps_factors(body: Mapping[str, Any], facts: UserFacts) -> CognitoError | None:
    # "You can't turn off TOTP/SMS MFA for any of your users when MFA is required in your user
    # pool; you can only set the type that your user prefers." (API reference)
    if facts.pool_mfa != "ON":
        return None
    for factor, block in settings_blocks(body).items():
        if not _enabled(block):
            return invalid_parameter(
                f"Cannot disable {factor} for a user when MFA is required in the user pool."
            )
    return None


def email_mfa_configured_on_pool(body: Mapping[str, Any], facts: UserFacts) -> CognitoError | None:
    if EMAIL in settings_blocks(body) and not facts.pool_email_mfa:
        return invalid_parameter("Email MFA is not enabled for this user pool.")
    return None


def sms_needs_phone_number(body: Mapping[str, Any], facts: UserFacts) -> CognitoError | None:
    # Real Cognito rejects any SMS block without a phone number, even Enabled: false.
    if SMS in settings_blocks(body) and not facts.has_phone:
        return invalid_parameter("User does not have a phone_number set to turn on SMS MFA")
    return None


def email_needs_email_address(body: Mapping[str, Any], facts: UserFacts) -> CognitoError | None:
    if EMAIL in settings_blocks(body) and not facts.has_email:
        return invalid_parameter("User does not have an email set to turn on email MFA")
    return None


def totp_needs_verified_token(body: Mapping[str, Any], facts: UserFacts) -> CognitoError | None:
    block = settings_blocks(body).get(TOTP)
    if block is None or facts.totp_verified:
        return None
    if _enabled(block) and not facts.totp_enabled:
        # The service's current wording for a user who never verified a token.
        return invalid_parameter(
            "User does not have delivery config set to turn on SOFTWARE_TOKEN_MFA"
        )
    # Re-associated and not verified (still listed), or a block for a token never set up.
    return invalid_parameter("User has not set up software token mfa")


def passkey_mfa_configured_on_pool(
    body: Mapping[str, Any], facts: UserFacts
) -> CognitoError | None:
    block = settings_blocks(body).get(PASSKEY)
    if block is not None and _enabled(block) and not facts.pool_passkey_mfa:
        return invalid_parameter("WebAuthn MFA is not enabled for this user pool.")
    return None


def passkey_needs_another_factor_in_request(
    body: Mapping[str, Any], facts: UserFacts
) -> CognitoError | None:
    # Refused even when another factor is already on (field report, 2026): the same request
    # must turn one on.
    blocks = settings_blocks(body)
    block = blocks.get(PASSKEY)
    if block is None or not _enabled(block):
        return None
    if not any(_enabled(b) for f, b in blocks.items() if f in CODE_FACTORS):
        return invalid_parameter("WebAuthn MFA requires enabling an additional MFA setting.")
    return None


def passkey_needs_registered_credential(
    body: Mapping[str, Any], facts: UserFacts
) -> CognitoError | None:
    block = settings_blocks(body).get(PASSKEY)
    if block is not None and _enabled(block) and not facts.has_passkey:
        return invalid_parameter(
            "User does not have applicable WebAuthn credentials to enable WebAuthn MFA."
        )
    return None


MFA_PREFERENCE_RULES: tuple[Rule, ...] = (
    user_can_take_changes,
    one_preferred_factor,
    preferred_factor_is_enabled,
    required_mfa_keeps_factors,
    email_mfa_configured_on_pool,
    sms_needs_phone_number,
    email_needs_email_address,
    totp_needs_verified_token,
    passkey_mfa_configured_on_pool,
    passkey_needs_another_factor_in_request,
    passkey_needs_registered_credential,
)


def check_mfa_preference(body: Mapping[str, Any], facts: UserFacts) -> CognitoError | None:
    """The first rule the request breaks, or None when Cognito would accept it."""
    for rule in MFA_PREFERENCE_RULES:
        error = rule(body, facts)
        if error is not None:
            return error
    return None


def apply_mfa_preference(body: Mapping[str, Any], state: MfaState) -> MfaState:
    """The state after an accepted request: each block sets its factor; at most one preferred."""
    enabled = set(state.enabled)
    preferred = state.preferred
    for factor, block in settings_blocks(body).items():
        if _enabled(block):
            enabled.add(factor)
        else:
            enabled.discard(factor)
        if _preferred(block):
            preferred = factor
        elif preferred == factor:
            preferred = None
    return MfaState(frozenset(enabled), preferred)


# --------------------------------------------------------------------------------------------
# Rules for the other operations.


def list_limit_within_bounds(body: Mapping[str, Any]) -> CognitoError | None:
    limit = body.get("Limit")
    if isinstance(limit, int) and limit > MAX_LIST_LIMIT:
        return invalid_parameter(
            f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
            f"constraint: Member must have value less than or equal to {MAX_LIST_LIMIT}"
        )
    return None


def check_pool_mfa_config(body: Mapping[str, Any]) -> CognitoError | None:
    """SetUserPoolMfaConfig as the service validates it (moto rejects email-only configs)."""
    mode = body.get("MfaConfiguration", "OFF")
    if mode not in ("OFF", "ON", "OPTIONAL"):
        return invalid_parameter("[MfaConfiguration] must be one of 'ON', 'OFF', or 'OPTIONAL'.")
    sms = body.get("SmsMfaConfiguration")
    totp = body.get("SoftwareTokenMfaConfiguration")
    email = body.get("EmailMfaConfiguration")
    configures_a_factor = (
        sms is not None or (isinstance(totp, Mapping) and _enabled(totp)) or email is not None
    )
    # Both messages are the service's own, as quoted in public issue reports.
    if mode == "OFF" and configures_a_factor:
        return invalid_parameter(
            "Invalid MFA configuration given, can't turn off MFA and configure an MFA together."
        )
    if mode != "OFF" and not configures_a_factor:
        return invalid_parameter(
            "Invalid MFA configuration given, can't disable all MFAs with a required or "
            "optional configuration."
        )
    if isinstance(sms, Mapping) and "SmsConfiguration" not in sms:
        return invalid_parameter(
            "[SmsConfiguration] is a required member of [SmsMfaConfiguration]."
        )
    return None


#: The feature plan of a pool created without one.
DEFAULT_TIER = "ESSENTIALS"


def check_pool_feature_plan(body: Mapping[str, Any], tier: str) -> CognitoError | None:
    """Email MFA and passkey MFA need the Essentials plan or higher."""
    passkey = (body.get("WebAuthnConfiguration") or {}).get("FactorConfiguration")
    if tier == "LITE" and (
        body.get("EmailMfaConfiguration") is not None or passkey == PASSKEY_MFA_CONFIGURATION
    ):
        return CognitoError(
            "FeatureUnavailableInTierException",
            "This feature is not available in the current feature plan (LITE) of the user pool.",
        )
    return None


def _shape_pool(response: dict[str, Any]) -> dict[str, Any]:
    """DescribeUserPool: a pool created without a feature plan is on Essentials."""
    pool = response.get("UserPool") or {}
    pool.setdefault("UserPoolTier", DEFAULT_TIER)
    return response


def check_access_token(
    *, known: bool, looks_issued: bool, expired: bool, user_enabled: bool
) -> CognitoError | None:
    """Why Cognito would refuse an access token, or None."""
    if not known:
        # A token of ours that moto forgot was revoked (GlobalSignOut); anything else is junk.
        return not_authorized(
            "Access Token has been revoked" if looks_issued else "Invalid Access Token"
        )
    if expired:
        return not_authorized("Access Token has expired")
    if not user_enabled:
        return not_authorized("User is disabled.")
    return None


def shape_user_response(
    response: dict[str, Any],
    *,
    email_mfa_enabled: bool,
    passkey_mfa_enabled: bool = False,
    legacy_sms: bool = False,
) -> dict[str, Any]:
    """AdminGetUser/GetUser as Cognito sends it: empty MFA keys omitted, MFAOptions listing
    SMS for SMS users (and alone for legacy SMS users, whom UserMFASettingList omits)."""
    shaped = dict(response)
    factors = list(shaped.pop("UserMFASettingList", None) or [])
    if email_mfa_enabled and EMAIL not in factors:
        factors.append(EMAIL)
    if passkey_mfa_enabled and PASSKEY not in factors:
        factors.append(PASSKEY)
    if factors:
        shaped["UserMFASettingList"] = factors
    if not shaped.get("PreferredMfaSetting"):
        shaped.pop("PreferredMfaSetting", None)
    shaped.pop("MFAOptions", None)
    if SMS in factors or legacy_sms:
        shaped["MFAOptions"] = [dict(SMS_MFA_OPTION)]
    return shaped


# --------------------------------------------------------------------------------------------
# Throttling: one token bucket per Cognito quota category, shared by every caller.


@dataclass(frozen=True)
class Quotas:
    """Requests per second per Cognito quota category (defaults: the service's). None = no limit.

    Like the service, the quota is shared by every pool and caller of the stand-in. Each
    bucket holds `burst_seconds` worth of requests (at most one second's worth), so a short
    burst above the rate is absorbed and a sustained one is throttled.
    """

    user_read: float | None = 120  # AdminGetUser, GetUser, (Admin)GetUserAuthFactors
    user_resource_update: float | None = 25  # (Admin)SetUserMFAPreference, TOTP association
    user_list: float | None = 30  # ListUsers, ListUsersInGroup
    user_pool_resource_read: float | None = 20  # GetUserPoolMfaConfig, DescribeUserPool
    user_pool_resource_update: float | None = 15  # SetUserPoolMfaConfig, UpdateUserPool
    user_authentication: float | None = 120  # (Admin)InitiateAuth, (Admin)RespondToAuthChallenge
    user_update: float | None = 25  # AdminDisableUser, AdminUserGlobalSignOut, ...
    #: UserPoolResourceRead/Update operations also have 5/s per operation per pool.
    per_pool_operation: float | None = 5
    #: Each user: 10 read and 10 write operations a second.
    per_user_reads: float | None = 10
    per_user_writes: float | None = 10
    cloudtrail_lookup: float | None = 2  # CloudTrail LookupEvents, per account and Region
    burst_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.burst_seconds <= 1:
            raise ValueError("burst_seconds must be in (0, 1]")


#: Operation -> the Quotas field of its category (from the Cognito quotas page).
OPERATION_CATEGORIES: dict[str, str] = {
    **dict.fromkeys(
        ["AdminGetUser", "GetUser", "AdminGetUserAuthFactors", "GetUserAuthFactors"], "user_read"
    ),
    **dict.fromkeys(
        [
            "AdminSetUserMFAPreference",
            "SetUserMFAPreference",
            "AdminSetUserSettings",
            "SetUserSettings",
            "AssociateSoftwareToken",
            "VerifySoftwareToken",
            "AdminDeleteSoftwareToken",
        ],
        "user_resource_update",
    ),
    **dict.fromkeys(["ListUsers", "ListUsersInGroup"], "user_list"),
    **dict.fromkeys(["GetUserPoolMfaConfig", "DescribeUserPool"], "user_pool_resource_read"),
    **dict.fromkeys(["SetUserPoolMfaConfig", "UpdateUserPool"], "user_pool_resource_update"),
    **dict.fromkeys(sorted(AUTH_OPERATIONS), "user_authentication"),
    LOOKUP_EVENTS: "cloudtrail_lookup",
    **dict.fromkeys(
        [
            "AdminDisableUser",
            "AdminEnableUser",
            "AdminUserGlobalSignOut",
            "AdminUpdateUserAttributes",
            "AdminDeleteUserAttributes",
        ],
        "user_update",
    ),
}


class TokenBucket:
    """A classic token bucket; not thread-safe (the middleware holds its lock)."""

    def __init__(self, rate: float, burst_seconds: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * burst_seconds)
        self.tokens = self.capacity
        self._clock = clock
        self._updated = clock()

    def try_take(self) -> bool:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# --------------------------------------------------------------------------------------------
# Fault injection.

Match = Callable[[Mapping[str, Any]], bool]
Hook = Callable[[str, Mapping[str, Any]], None]


@dataclass
class Fault:
    """One injected fault: an error answer, or a stall before the normal answer.

    `operation` None matches every Cognito operation; `times` None fires forever. With
    `after_handling` the request is handled as usual (a write takes effect) and its answer is
    replaced by `error`: the service did it, but the caller hears a failure.
    """

    operation: str | None
    error: CognitoError | None = None
    stall_seconds: float = 0.0
    times: int | None = 1
    match: Match | None = None
    after_handling: bool = False
    fired: int = 0

    def applies(self, operation: str, body: Mapping[str, Any]) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.operation is not None and self.operation != operation:
            return False
        return self.match is None or bool(self.match(body))


@dataclass
class ThrottleStorm:
    """Throttle `fraction` of the matching requests until `until` (monotonic clock).

    Deterministic: an error-diffusion counter throttles exactly that fraction over time.
    """

    fraction: float
    until: float
    operations: frozenset[str] | None = None
    _carry: float = 0.0

    def throttles(self, operation: str, now: float) -> bool:
        if now >= self.until or (self.operations is not None and operation not in self.operations):
            return False
        self._carry += self.fraction
        if self._carry >= 1:
            self._carry -= 1
            return True
        return False


# --------------------------------------------------------------------------------------------
# The middleware.


@dataclass
class _Settings:
    quotas: Quotas | None
    latency: tuple[float, float] | None
    token_ttl_seconds: float
    cloudtrail_lag_seconds: float = 0.0


@dataclass
class _Captured:
    status: str = "500 INTERNAL SERVER ERROR"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def status_code(self) -> int:
        return int(self.status.split(" ", 1)[0])


class FidelityMiddleware:
    """WSGI middleware around moto's app that enforces real Cognito behaviour.

    Thread-safety: `lock` (re-entrant) serialises every touch of moto's Cognito state, both by
    requests and by helpers such as seeding; latency, stalls and hooks run outside it so
    concurrent clients still overlap. A second, short-held lock guards counters, buckets and
    faults.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        *,
        account_id: str = "123456789012",
        region: str = "us-east-1",
        quotas: Quotas | None = None,
        latency: tuple[float, float] | None = None,
        token_ttl_seconds: float = 3600.0,
        wake: threading.Event | None = None,
    ) -> None:
        self.app = app
        self.account_id = account_id
        self.region = region
        self.lock = threading.RLock()
        self._control = threading.Lock()
        self._wake = wake or threading.Event()  # set on shutdown: cuts stalls short
        self._random = random.Random()
        self._settings = _Settings(quotas, None, token_ttl_seconds)
        self.latency = latency  # validated
        self._initial_settings = replace(self._settings)
        self._buckets: dict[Any, TokenBucket] = {}
        self._calls: Counter[str] = Counter()
        self._throttled: Counter[str] = Counter()
        self._faults: list[Fault] = []
        self._storms: list[ThrottleStorm] = []
        self._hooks: list[Hook] = []
        # Stand-in state moto has no place for; guarded by `lock`.
        self._email_mfa_users: set[tuple[str, str]] = set()  # (pool id, sub)
        self._pool_email_config: dict[str, dict[str, Any]] = {}
        self._pool_webauthn_config: dict[str, dict[str, Any]] = {}
        self._token_issued_at: dict[str, float] = {}
        self._expired_tokens: set[str] = set()
        self._revoked_tokens: set[str] = set()
        self._token_clients: dict[str, str] = {}
        # Per user, as (pool id, sub): SMS on through MFAOptions only; no password; a passkey
        # registered; passkey MFA on.
        self._legacy_sms_users: set[tuple[str, str]] = set()
        self._passwordless_users: set[tuple[str, str]] = set()
        self._passkey_users: set[tuple[str, str]] = set()
        self._passkey_mfa_users: set[tuple[str, str]] = set()
        self.trail = Trail()

    # ---- configuration ---------------------------------------------------------------------

    @property
    def quotas(self) -> Quotas | None:
        return self._settings.quotas

    @quotas.setter
    def quotas(self, quotas: Quotas | None) -> None:
        with self._control:
            self._settings.quotas = quotas
            self._buckets.clear()

    @property
    def latency(self) -> tuple[float, float] | None:
        return self._settings.latency

    @latency.setter
    def latency(self, latency: tuple[float, float] | None) -> None:
        if latency is not None and not 0 <= latency[0] <= latency[1]:
            raise ValueError("latency must be (low, high) with 0 <= low <= high")
        self._settings.latency = latency

    @property
    def token_ttl_seconds(self) -> float:
        return self._settings.token_ttl_seconds

    @token_ttl_seconds.setter
    def token_ttl_seconds(self, seconds: float) -> None:
        self._settings.token_ttl_seconds = seconds

    @property
    def cloudtrail_lag_seconds(self) -> float:
        """How long after a call its CloudTrail event appears in LookupEvents."""
        return self.trail.lag_seconds

    @cloudtrail_lag_seconds.setter
    def cloudtrail_lag_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("cloudtrail_lag_seconds must be >= 0")
        self.trail.lag_seconds = seconds

    def restore_settings(self) -> None:
        """Quotas, latency, token TTL and CloudTrail lag back to what the middleware was
        built with."""
        self.quotas = self._initial_settings.quotas
        self.latency = self._initial_settings.latency
        self.token_ttl_seconds = self._initial_settings.token_ttl_seconds
        self.cloudtrail_lag_seconds = self._initial_settings.cloudtrail_lag_seconds

    # ---- counters --------------------------------------------------------------------------

    @property
    def calls(self) -> dict[str, int]:
        with self._control:
            return dict(self._calls)

    @property
    def throttled(self) -> dict[str, int]:
        with self._control:
            return dict(self._throttled)

    def reset_counters(self) -> None:
        with self._control:
            self._calls.clear()
            self._throttled.clear()

    # ---- faults ----------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        with self._control:
            self._faults.append(fault)
        return fault

    def add_storm(self, storm: ThrottleStorm) -> ThrottleStorm:
        with self._control:
            self._storms.append(storm)
        return storm

    def add_hook(self, hook: Hook) -> Hook:
        with self._control:
            self._hooks.append(hook)
        return hook

    def clear_faults(self) -> None:
        """Drop injected faults, throttle storms and before-request hooks."""
        with self._control:
            self._faults.clear()
            self._storms.clear()
            self._hooks.clear()

    # ---- stand-in state --------------------------------------------------------------------

    def reset_state(self) -> None:
        """Forget everything the stand-in keeps beside moto (call after a moto reset)."""
        with self.lock:
            self._email_mfa_users.clear()
            self._pool_email_config.clear()
            self._pool_webauthn_config.clear()
            self._token_issued_at.clear()
            self._expired_tokens.clear()
            self._revoked_tokens.clear()
            self._token_clients.clear()
            for users in self._user_flags().values():
                users.clear()
            self.trail.reset()
        self.clear_faults()
        self.reset_counters()
        with self._control:
            self._buckets.clear()

    def set_email_mfa_enabled(self, pool_id: str, sub: str, enabled: bool) -> None:
        with self.lock:
            if enabled:
                self._email_mfa_users.add((pool_id, sub))
            else:
                self._email_mfa_users.discard((pool_id, sub))

    def email_mfa_enabled(self, pool_id: str, sub: str) -> bool:
        with self.lock:
            return (pool_id, sub) in self._email_mfa_users

    def _user_flags(self) -> dict[str, set[tuple[str, str]]]:
        return {
            "legacy_sms": self._legacy_sms_users,
            "passwordless": self._passwordless_users,
            "passkey": self._passkey_users,
            "passkey_mfa": self._passkey_mfa_users,
        }

    def set_user_flag(self, flag: str, pool_id: str, sub: str, on: bool) -> None:
        """Seed state moto has no place for: `legacy_sms` (SMS MFA on through MFAOptions only),
        `passwordless` (no password), `passkey` (a registered passkey), `passkey_mfa`."""
        with self.lock:
            users = self._user_flags()[flag]
            if on:
                users.add((pool_id, sub))
            else:
                users.discard((pool_id, sub))

    def user_flag(self, flag: str, pool_id: str, sub: str) -> bool:
        with self.lock:
            return (pool_id, sub) in self._user_flags()[flag]

    def set_pool_webauthn_config(self, pool_id: str, config: Mapping[str, Any] | None) -> None:
        with self.lock:
            if config is None:
                self._pool_webauthn_config.pop(pool_id, None)
            else:
                self._pool_webauthn_config[pool_id] = dict(config)

    def set_pool_email_mfa_config(self, pool_id: str, config: Mapping[str, Any] | None) -> None:
        with self.lock:
            if config is None:
                self._pool_email_config.pop(pool_id, None)
            else:
                self._pool_email_config[pool_id] = dict(config)

    def backend(
        self, account_id: str | None = None, region: str | None = None
    ) -> CognitoIdpBackend:
        return cognitoidp_backends[account_id or self.account_id][region or self.region]

    def _account_backends(self, account_id: str) -> list[CognitoIdpBackend]:
        # Only regions already in use; indexing a BackendDict would create new ones.
        return [b for r, b in cognitoidp_backends[account_id].items() if r != "global"]

    # ---- access tokens ---------------------------------------------------------------------

    def record_token_issued(self, token: str, at: float | None = None) -> None:
        with self.lock:
            self._token_issued_at[token] = time.time() if at is None else at

    def expire_token(self, token: str) -> None:
        with self.lock:
            self._expired_tokens.add(token)

    def expire_all_tokens(self, pool_id: str | None = None) -> None:
        """Expire the access tokens issued so far (of one pool, or of every pool).

        Tokens issued later are valid.
        """
        with self.lock:
            for backend in self._account_backends(self.account_id):
                for pool in backend.user_pools.values():
                    if pool_id is None or pool.id == pool_id:
                        self._expired_tokens.update(pool.access_tokens)

    def issue_access_token(self, pool_id: str, username: str, *, region: str | None = None) -> str:
        """A valid access token for a user, minted straight into moto's token store."""
        with self.lock:
            backend = self.backend(region=region)
            pool = backend.describe_user_pool(pool_id)
            user = pool._get_user(username)
            if user is None:
                raise LookupError(f"no user {username!r} in pool {pool_id}")
            client_id = self._token_clients.get(pool_id)
            if client_id is None or client_id not in pool.clients:
                client = backend.create_user_pool_client(
                    pool_id, False, {"ClientName": "standin-token-issuer"}
                )
                client_id = self._token_clients[pool_id] = client.id
            token, _ = pool.create_access_token(client_id, user.username, str(uuid.uuid4()))
            self._token_issued_at[token] = time.time()
            # A token exists only after a sign-in, which CloudTrail records and which makes
            # the user an MAU of the month.
            self.trail.record(
                "InitiateAuth",
                at=time.time(),
                account_id=self.account_id,
                region=region or self.region,
                pool_id=pool_id,
                sub=user.id,
                principal=None,
                counts_as_mau=True,
            )
            return token

    def revoke_user_tokens(self, pool: CognitoIdpUserPool, username: str) -> None:
        """What AdminDisableUser does to a user's tokens: revoked for good."""
        with self.lock:
            self._revoked_tokens.update(
                token for token, (_, owner) in pool.access_tokens.items() if owner == username
            )

    def _token_expired(self, token: str) -> bool:
        if token in self._expired_tokens:
            return True
        issued_at = self._token_issued_at.get(token)
        if issued_at is None:
            claims = unverified_claims(token) or {}
            issued_at = float(claims.get("iat", time.time()))
        return time.time() - issued_at >= self._settings.token_ttl_seconds

    def _find_token(
        self, token: str, account_id: str
    ) -> tuple[CognitoIdpBackend, CognitoIdpUserPool, str] | None:
        for backend in self._account_backends(account_id):
            for pool in backend.user_pools.values():
                entry = pool.access_tokens.get(token)
                if entry is not None:
                    return backend, pool, entry[1]
        return None

    def _authorize(
        self, token: str, account_id: str
    ) -> tuple[CognitoIdpBackend, CognitoIdpUserPool, CognitoIdpUser]:
        """Resolve an access token to its user, or raise _Reject as Cognito would answer."""
        found = self._find_token(token, account_id)
        user = found[1]._get_user(found[2]) if found else None
        claims = unverified_claims(token) or {}
        if token in self._revoked_tokens:
            raise _Reject(not_authorized("Access Token has been revoked"))
        error = check_access_token(
            known=found is not None,
            looks_issued=claims.get("token_use") == "access"
            and "cognito-idp" in str(claims.get("iss", "")),
            expired=found is not None and self._token_expired(token),
            user_enabled=user is not None and user.enabled,
        )
        if error is not None or found is None or user is None:
            raise _Reject(error or CognitoError("UserNotFoundException", "User does not exist."))
        return found[0], found[1], user

    # ---- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target == CLOUDTRAIL_TARGET_PREFIX + LOOKUP_EVENTS:
            return self._lookup_events(environ, start_response)
        if not target.startswith(COGNITO_TARGET_PREFIX):
            return self.app(environ, start_response)
        operation = target[len(COGNITO_TARGET_PREFIX) :]
        raw = _read_body(environ)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self.app(environ, start_response)

        with self._control:
            self._calls[operation] += 1
            hooks = list(self._hooks)
        try:
            for hook in hooks:
                hook(operation, body)
            admitted, stall, handle_first = self._admit(operation, body)
            delay = self._latency_seconds() + stall
            if delay:
                self._wake.wait(delay)
            if admitted is not None and handle_first:
                self._handle(operation, body, environ)
            if admitted is not None:
                return _respond(start_response, admitted)
            return _respond(start_response, self._handle(operation, body, environ))
        except Exception:
            logger.exception("stand-in failed on %s", operation)
            return _respond(start_response, INTERNAL_ERROR)

    def _lookup_events(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """CloudTrail LookupEvents over the recorded Cognito calls (quota, faults, lag)."""
        try:
            body = json.loads(_read_body(environ) or b"{}")
        except ValueError:
            body = {}
        with self._control:
            self._calls[LOOKUP_EVENTS] += 1
        admitted, stall, _ = self._admit(LOOKUP_EVENTS, body)
        if stall:
            self._wake.wait(stall)
        if admitted is not None:
            if admitted.code == THROTTLED.code:
                admitted = CognitoError("ThrottlingException", "Rate exceeded", 400)
            return _respond(start_response, admitted)
        match = _CREDENTIAL_REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        try:
            answer = self.trail.lookup(
                body,
                account_id=os.environ.get("MOTO_ACCOUNT_ID")
                or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
                or self.account_id,
                region=match.group(1) if match else self.region,
                now=time.time(),
            )
        except LookupError_ as error:
            return _respond(start_response, CognitoError(error.code, error.message))
        return _respond(start_response, _json_response(answer))

    def _latency_seconds(self) -> float:
        latency = self._settings.latency
        return self._random.uniform(*latency) if latency else 0.0

    def _admit(
        self, operation: str, body: Mapping[str, Any]
    ) -> tuple[CognitoError | None, float, bool]:
        """Throttling and injected faults: (an error to answer with, seconds to stall, whether
        to handle the request before answering with that error)."""
        with self._control:
            now = time.monotonic()
            if any(storm.throttles(operation, now) for storm in self._storms) or (
                not self._bucket_allows(operation, body)
            ):
                self._throttled[operation] += 1
                return THROTTLED, 0.0, False
            stall = 0.0
            for fault in self._faults:
                if not fault.applies(operation, body):
                    continue
                fault.fired += 1
                if fault.error is None:
                    stall = max(stall, fault.stall_seconds)
                    continue
                if fault.error.code == THROTTLED.code:
                    self._throttled[operation] += 1
                return fault.error, stall, fault.after_handling
            return None, stall, False

    def _bucket_allows(self, operation: str, body: Mapping[str, Any]) -> bool:
        """Every quota the request counts against: its category's (per account), 5/s per
        operation per pool for pool resource reads and updates, 10 reads or writes a second
        per user."""
        quotas = self._settings.quotas
        category = OPERATION_CATEGORIES.get(operation)
        if quotas is None or category is None:
            return True
        user = body.get("AccessToken") or (body.get("UserPoolId"), body.get("Username"))
        buckets: list[tuple[Any, float | None]] = [(category, getattr(quotas, category))]
        if category in ("user_pool_resource_read", "user_pool_resource_update"):
            buckets.append(((operation, body.get("UserPoolId")), quotas.per_pool_operation))
        if operation in USER_READ_OPERATIONS:
            buckets.append((("user reads", user), quotas.per_user_reads))
        if operation in USER_WRITE_OPERATIONS:
            buckets.append((("user writes", user), quotas.per_user_writes))
        for key, rate in buckets:
            if rate is None:
                continue
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(
                    rate, quotas.burst_seconds, time.monotonic
                )
            if not bucket.try_take():
                return False
        return True

    def _handle(
        self, operation: str, body: dict[str, Any], environ: dict[str, Any]
    ) -> _Captured | CognitoError:
        account_id = (
            os.environ.get("MOTO_ACCOUNT_ID")
            or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
            or self.account_id
        )
        match = _CREDENTIAL_REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = match.group(1) if match else self.region
        with self.lock:
            answer: _Captured | CognitoError
            subject: tuple[str | None, str | None] = (body.get("UserPoolId"), None)
            try:
                if operation.startswith("Admin") and "Username" in body:
                    _resolve_sub_alias(cognitoidp_backends[account_id][region], body, environ)
                subject = self._subject_of(body, account_id, region)
                answer = self._dispatch(operation, body, environ, account_id, region)
            except _Reject as reject:
                answer = reject.error
            except JsonRESTError as error:
                answer = CognitoError(error.error_type, error.message, error.code)
            self._record_call(operation, subject, answer, account_id, region)
            return answer

    def _subject_of(
        self, body: Mapping[str, Any], account_id: str, region: str
    ) -> tuple[str | None, str | None]:
        """(pool id, sub) of the user a request is about, before the request changes them."""
        pool_id = body.get("UserPoolId")
        if isinstance(body.get("AccessToken"), str):
            found = self._find_token(body["AccessToken"], account_id)
            if found is None:
                return pool_id, None
            owner = found[1]._get_user(found[2])
            return found[1].id, owner.id if owner is not None else None
        name = body.get("Username")
        if isinstance(pool_id, str) and isinstance(name, str):
            pool = cognitoidp_backends[account_id][region].user_pools.get(pool_id)
            named = pool._get_user(name) if pool is not None else None
            if named is not None:
                return pool_id, named.id
        return pool_id, None

    def _record_call(
        self,
        operation: str,
        subject: tuple[str | None, str | None],
        answer: _Captured | CognitoError,
        account_id: str,
        region: str,
    ) -> None:
        """One CloudTrail event per call Cognito answered; an MAU for the calls that bill."""
        pool_id, sub = subject
        error_code: str | None = None
        signed_in = False
        if isinstance(answer, CognitoError):
            error_code = answer.code
        elif answer.status_code != 200:
            try:
                error_code = str(json.loads(answer.body).get("__type") or answer.status_code)
            except ValueError:
                error_code = str(answer.status_code)
        else:
            response = _json_or_empty(answer.body)
            if sub is None and operation == "AdminCreateUser":
                attributes = (response.get("User") or {}).get("Attributes") or []
                sub = next((a.get("Value") for a in attributes if a.get("Name") == "sub"), None)
            if sub is None and operation == "SignUp":
                sub = response.get("UserSub")
            token = (response.get("AuthenticationResult") or {}).get("AccessToken")
            if operation in SIGN_INS and isinstance(token, str):
                signed_in = True
                claims = unverified_claims(token) or {}
                sub = sub or claims.get("sub")
                found = self._find_token(token, account_id)
                pool_id = found[1].id if found else pool_id
        self.trail.record(
            operation,
            at=time.time(),
            account_id=account_id,
            region=region,
            pool_id=pool_id if isinstance(pool_id, str) else None,
            sub=sub,
            principal=None if operation in UNSIGNED_OPERATIONS else STANDIN_PRINCIPAL,
            error_code=error_code,
            counts_as_mau=signed_in or operation in MAU_READS or operation in ADMIN_UPDATES,
        )

    def _dispatch(
        self,
        operation: str,
        body: dict[str, Any],
        environ: dict[str, Any],
        account_id: str,
        region: str,
    ) -> _Captured | CognitoError:
        if operation == "AdminSetUserMFAPreference":
            backend = cognitoidp_backends[account_id][region]
            pool = backend.describe_user_pool(body.get("UserPoolId", ""))
            user = backend.admin_get_user(pool.id, body.get("Username", ""))
            return self._set_mfa_preference(pool, user, body)
        if operation == "SetUserMFAPreference":
            _, pool, user = self._authorize(str(body.get("AccessToken", "")), account_id)
            return self._set_mfa_preference(pool, user, body)
        if operation == "SetUserPoolMfaConfig":
            backend = cognitoidp_backends[account_id][region]
            return self._set_pool_mfa_config(
                backend.describe_user_pool(body.get("UserPoolId", "")), body
            )
        if operation == "GetUserPoolMfaConfig":
            backend = cognitoidp_backends[account_id][region]
            pool = backend.describe_user_pool(body.get("UserPoolId", ""))
            return _json_response(self._pool_mfa_config(pool))
        if operation == "AdminGetUserAuthFactors":
            backend = cognitoidp_backends[account_id][region]
            pool = backend.describe_user_pool(body.get("UserPoolId", ""))
            user = backend.admin_get_user(pool.id, body.get("Username", ""))
            return _json_response(self._auth_factors(pool, user))
        if operation == "GetUserAuthFactors":
            _, pool, user = self._authorize(str(body.get("AccessToken", "")), account_id)
            return _json_response(self._auth_factors(pool, user))
        if operation in ("ListUsers", "ListUsersInGroup"):
            error = list_limit_within_bounds(body)
            if error is not None:
                return error
        pool_id = body.get("UserPoolId")
        if "AccessToken" in body:
            pool_id = self._authorize(str(body["AccessToken"]), account_id)[1].id

        captured = _call(self.app, environ)
        if captured.status_code != 200:
            return captured
        if operation in ("AdminGetUser", "GetUser"):
            return _rewrite_json(captured, lambda response: self._shape_user(pool_id, response))
        if operation == "ListUsers":
            return _rewrite_json(captured, lambda response: self._shape_list(pool_id, response))
        if operation == "DescribeUserPool":
            return _rewrite_json(captured, _shape_pool)
        if operation == "AdminDisableUser":
            backend = cognitoidp_backends[account_id][region]
            pool = backend.describe_user_pool(str(pool_id))
            self.revoke_user_tokens(pool, str(body.get("Username", "")))
        if operation == "AssociateSoftwareToken" and "AccessToken" in body:
            # A new secret replaces the verified one: TOTP stays listed but is not in effect
            # until VerifySoftwareToken.
            _, pool, user = self._authorize(str(body["AccessToken"]), account_id)
            user.token_verified = False
        if operation in AUTH_OPERATIONS:
            result = json.loads(captured.body or b"{}").get("AuthenticationResult") or {}
            if result.get("AccessToken"):
                self._token_issued_at[result["AccessToken"]] = time.time()
        return captured

    def _shape_user(self, pool_id: Any, response: dict[str, Any]) -> dict[str, Any]:
        attributes = {a.get("Name"): a.get("Value") for a in response.get("UserAttributes", [])}
        key = (pool_id, attributes.get("sub"))
        return shape_user_response(
            response,
            email_mfa_enabled=key in self._email_mfa_users,
            passkey_mfa_enabled=key in self._passkey_mfa_users,
            legacy_sms=key in self._legacy_sms_users,
        )

    def _shape_list(self, pool_id: Any, response: dict[str, Any]) -> dict[str, Any]:
        """ListUsers rows: MFAOptions lists SMS for SMS users (its only MFA signal)."""
        pool = self.backend().user_pools.get(str(pool_id))
        for row in response.get("Users") or []:
            row.pop("MFAOptions", None)
            user = pool._get_user(row.get("Username", "")) if pool is not None else None
            if user is None:
                continue
            if user.sms_mfa_enabled or (pool_id, user.id) in self._legacy_sms_users:
                row["MFAOptions"] = [dict(SMS_MFA_OPTION)]
        return response

    def _auth_factors(self, pool: CognitoIdpUserPool, user: CognitoIdpUser) -> dict[str, Any]:
        """(Admin)GetUserAuthFactors, which moto lacks: the MFA settings (no MFAOptions, so
        legacy SMS does not show) and the configured sign-in factors."""
        key = (pool.id, user.id)
        state = self._mfa_state(user)
        names = [f for f in (TOTP, SMS, EMAIL) if f in state.enabled]
        if key in self._passkey_mfa_users:
            names.append(PASSKEY)
        configured = []
        if key not in self._passwordless_users:
            configured.append("PASSWORD")
        first = set(
            ((pool.extended_config.get("Policies") or {}).get("SignInPolicy") or {}).get(
                "AllowedFirstAuthFactors"
            )
            or []
        )
        if "EMAIL_OTP" in first and user.attribute_lookup.get("email"):
            configured.append("EMAIL_OTP")
        if "SMS_OTP" in first and user.attribute_lookup.get("phone_number"):
            configured.append("SMS_OTP")
        if key in self._passkey_users:
            configured.append("WEB_AUTHN")
        if user.token_verified:
            configured.append("SOFTWARE_TOKEN")
        response: dict[str, Any] = {"Username": user.username}
        if names:
            response["UserMFASettingList"] = names
        if state.preferred:
            response["PreferredMfaSetting"] = state.preferred
        if configured:
            response["ConfiguredUserAuthFactors"] = configured
        return response

    def _set_mfa_preference(
        self, pool: CognitoIdpUserPool, user: CognitoIdpUser, body: dict[str, Any]
    ) -> _Captured | CognitoError:
        key = (pool.id, user.id)
        facts = UserFacts(
            has_phone=bool(user.attribute_lookup.get("phone_number")),
            has_email=bool(user.attribute_lookup.get("email")),
            totp_verified=bool(user.token_verified),
            pool_mfa=pool.mfa_config or "OFF",
            pool_email_mfa=pool.id in self._pool_email_config,
            totp_enabled=bool(user.software_token_mfa_enabled),
            status=str(getattr(user.status, "value", user.status)),
            pool_passkey_mfa=(self._pool_webauthn_config.get(pool.id) or {}).get(
                "FactorConfiguration"
            )
            == PASSKEY_MFA_CONFIGURATION,
            has_passkey=key in self._passkey_users,
        )
        error = check_mfa_preference(body, facts)
        if error is not None:
            return error
        after = apply_mfa_preference(body, self._mfa_state(user))
        # Applied here rather than forwarded: moto would ignore email and keep two preferences.
        user.sms_mfa_enabled = SMS in after.enabled
        user.software_token_mfa_enabled = TOTP in after.enabled
        user.preferred_mfa_setting = after.preferred or ""
        self.set_email_mfa_enabled(pool.id, user.id, EMAIL in after.enabled)
        self.set_user_flag("passkey_mfa", pool.id, user.id, PASSKEY in after.enabled)
        if SMS in settings_blocks(body):
            # The current API's SMS setting replaces the legacy MFAOptions switch.
            self.set_user_flag("legacy_sms", pool.id, user.id, False)
        return _json_response({})

    def _mfa_state(self, user: CognitoIdpUser) -> MfaState:
        enabled = {
            factor
            for factor, on in (
                (SMS, user.sms_mfa_enabled),
                (TOTP, user.software_token_mfa_enabled),
                (EMAIL, (user.user_pool_id, user.id) in self._email_mfa_users),
            )
            if on
        }
        if (user.user_pool_id, user.id) in self._passkey_mfa_users:
            enabled.add(PASSKEY)
        return MfaState(frozenset(enabled), user.preferred_mfa_setting or None)

    def _set_pool_mfa_config(
        self, pool: CognitoIdpUserPool, body: dict[str, Any]
    ) -> _Captured | CognitoError:
        error = check_pool_mfa_config(body) or check_pool_feature_plan(
            body, pool.extended_config.get("UserPoolTier") or DEFAULT_TIER
        )
        if error is not None:
            return error
        pool.mfa_config = body.get("MfaConfiguration", "OFF")
        pool.sms_mfa_config = body.get("SmsMfaConfiguration")
        pool.token_mfa_config = body.get("SoftwareTokenMfaConfiguration")
        self.set_pool_email_mfa_config(pool.id, body.get("EmailMfaConfiguration"))
        if "WebAuthnConfiguration" in body:
            self.set_pool_webauthn_config(pool.id, body.get("WebAuthnConfiguration"))
        return _json_response(self._pool_mfa_config(pool))

    def _pool_mfa_config(self, pool: CognitoIdpUserPool) -> dict[str, Any]:
        config = {
            "SmsMfaConfiguration": pool.sms_mfa_config,
            "SoftwareTokenMfaConfiguration": pool.token_mfa_config,
            "EmailMfaConfiguration": self._pool_email_config.get(pool.id),
            "MfaConfiguration": pool.mfa_config or "OFF",
            "WebAuthnConfiguration": self._pool_webauthn_config.get(pool.id),
        }
        return {key: value for key, value in config.items() if value is not None}


class _Reject(Exception):
    """Control flow inside the middleware: answer with this error."""

    def __init__(self, error: CognitoError) -> None:
        super().__init__(error.message)
        self.error = error


# --------------------------------------------------------------------------------------------
# WSGI plumbing.


def _resolve_sub_alias(backend: Any, body: dict[str, Any], environ: dict[str, Any]) -> None:
    """Cognito's Admin* calls take a user's sub as Username; moto looks up usernames only."""
    pool = backend.user_pools.get(body.get("UserPoolId", ""))
    name = body.get("Username")
    if pool is None or not isinstance(name, str) or pool._get_user(name) is not None:
        return
    for user in pool.users.values():
        if any(a.get("Name") == "sub" and a.get("Value") == name for a in user.attributes):
            body["Username"] = user.username
            raw = json.dumps(body).encode()
            environ["wsgi.input"] = io.BytesIO(raw)
            environ["CONTENT_LENGTH"] = str(len(raw))
            return


def _json_or_empty(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw: bytes = stream.read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(raw)  # moto reads it again
    return raw


def _call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> _Captured:
    captured = _Captured()
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        captured.status = status
        captured.headers = list(headers)
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    captured.body = b"".join(chunks)
    return captured


def _json_response(payload: Mapping[str, Any]) -> _Captured:
    return _Captured("200 OK", [("Content-Type", JSON_CONTENT_TYPE)], json.dumps(payload).encode())


def _rewrite_json(
    captured: _Captured, rewrite: Callable[[dict[str, Any]], dict[str, Any]]
) -> _Captured:
    payload = rewrite(json.loads(captured.body or b"{}"))
    return replace(captured, body=json.dumps(payload).encode())


def _respond(
    start_response: Callable[..., Any], answer: _Captured | CognitoError
) -> Iterator[bytes]:
    if isinstance(answer, CognitoError):
        reason = http.HTTPStatus(answer.status).phrase
        answer = _Captured(
            f"{answer.status} {reason}",
            [("Content-Type", JSON_CONTENT_TYPE), ("x-amzn-ErrorType", answer.code)],
            answer.body(),
        )
    headers = [(k, v) for k, v in answer.headers if k.lower() != "content-length"]
    headers.append(("Content-Length", str(len(answer.body))))
    if not any(k.lower() == "x-amzn-requestid" for k, _ in headers):
        headers.append(("x-amzn-RequestId", str(uuid.uuid4())))
    start_response(answer.status, headers)
    return iter([answer.body])
