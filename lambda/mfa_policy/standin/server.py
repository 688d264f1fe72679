"""`CognitoStandIn`: an in-process moto server on 127.0.0.1 behind the Cognito fidelity layer.

One port serves every AWS service moto knows (Cognito through the fidelity layer; DynamoDB, S3
and the rest untouched), from a background thread, one thread per request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import boto3
import moto.cognitoidp.models as cognito_models
from botocore.config import Config
from moto.cognitoidp.models import CognitoIdpBackend
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from .cloudtrail import TrailEvent, month_of
from .fidelity import CognitoError, Fault, FidelityMiddleware, Quotas, ThrottleStorm

logger = logging.getLogger(__name__)

DEFAULT_ACCOUNT_ID = "123456789012"
_UNSET: Any = object()


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves a host.

    moto works that out anew for every request, listing its package folders on disk each time
    (about a third of a request's server time).
    """

    def __init__(self) -> None:
        super().__init__(create_backend_app)
        self._backend_by_host: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        try:
            return self._backend_by_host[host]
        except KeyError:
            backend = self._backend_by_host[host] = super().get_backend_for_host(host)
            return backend


class _CachedKeyImport:
    """Stands in for `joserfc.jwk.RSAKey` inside moto's Cognito models.

    moto imports the same RSA signing key for every user pool it creates, which costs 0.1-0.25 s
    a pool; importing it once makes a fresh pool per test cheap. The key is only read.
    """

    def __init__(self, real: Any) -> None:
        self._real = real
        self._keys: dict[str, Any] = {}

    def import_key(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not isinstance(data, dict):
            return self._real.import_key(data, *args, **kwargs)
        cache_key = json.dumps(data, sort_keys=True)
        if cache_key not in self._keys:
            self._keys[cache_key] = self._real.import_key(data)
        return self._keys[cache_key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _JwkModule:
    def __init__(self, real: Any) -> None:
        self._real = real
        self.RSAKey = _CachedKeyImport(real.RSAKey)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _import_pool_signing_key_once() -> None:
    models: Any = cognito_models  # untyped access: moto does not export its `jwk` import
    if not isinstance(models.jwk, _JwkModule):
        models.jwk = _JwkModule(models.jwk)


class _QuietRequestHandler(MotoRequestHandler):
    """No access log on stderr (the demo CLI shares the terminal); debug logging instead."""

    def log(self, type: str, message: str, *args: Any) -> None:
        logger.debug("%s %s", type, message % args if args else message)


class CognitoStandIn:
    """A Cognito stand-in for tests, the demo and benchmarks.

    >>> with CognitoStandIn() as standin:
    ...     cognito = standin.client()

    `quotas` None turns throttling off; `latency` (low, high) adds that many seconds, uniformly
    drawn, to every Cognito request; `token_ttl_seconds` is how long access tokens stay valid.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "us-east-1",
        account_id: str = DEFAULT_ACCOUNT_ID,
        quotas: Quotas | None = None,
        latency: tuple[float, float] | None = None,
        token_ttl_seconds: float = 3600.0,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._region = region
        self._account_id = account_id
        self._stopping = threading.Event()
        _import_pool_signing_key_once()
        self.fidelity = FidelityMiddleware(
            _Dispatcher(),
            account_id=account_id,
            region=region,
            quotas=quotas,
            latency=latency,
            token_ttl_seconds=token_ttl_seconds,
            wake=self._stopping,
        )
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._session_lock = threading.Lock()
        self._session: boto3.session.Session | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = make_server(
            self._host,
            self._requested_port,
            self.fidelity,
            threaded=True,
            request_handler=_QuietRequestHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() waits for the loop to notice
            name="cognito-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes stalled and delayed requests
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in is not running; call start() first")
        return f"http://{self._host}:{self._server.server_port}"

    @property
    def region(self) -> str:
        return self._region

    @property
    def account_id(self) -> str:
        return self._account_id

    # ---- clients and state -----------------------------------------------------------------

    def client(
        self, service: str = "cognito-idp", *, config: Config | None = None, **kwargs: Any
    ) -> Any:
        """A boto3 client for `service` against the stand-in, with dummy credentials.

        The default config uses standard retries (which retry TooManyRequestsException) and a
        connection pool big enough for 32 concurrent requests; `config` is merged over it.
        """
        base = Config(retries={"mode": "standard"}, max_pool_connections=50)
        with self._session_lock:
            if self._session is None:
                self._session = boto3.session.Session()
            return self._session.client(
                service,
                endpoint_url=self.endpoint_url,
                region_name=kwargs.pop("region_name", self._region),
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
                aws_session_token="testing",  # noqa: S106
                config=base.merge(config) if config is not None else base,
                **kwargs,
            )

    @property
    def backend(self) -> CognitoIdpBackend:
        """moto's Cognito backend for the stand-in's account and region."""
        return self.fidelity.backend()

    @property
    def lock(self) -> threading.RLock:
        """Hold this while reading or changing moto's Cognito state from outside a request."""
        return self.fidelity.lock

    def reset(self) -> None:
        """Reset moto (every service) and the stand-in's own state, faults and counters.

        Settings (quotas, latency, token TTL) are kept; see `restore_settings`.
        """
        from moto.moto_api._internal.models import moto_api_backend

        with self.lock:
            moto_api_backend.reset()
            self.fidelity.reset_state()

    # ---- settings --------------------------------------------------------------------------

    @property
    def quotas(self) -> Quotas | None:
        return self.fidelity.quotas

    @quotas.setter
    def quotas(self, quotas: Quotas | None) -> None:
        self.fidelity.quotas = quotas

    @property
    def latency(self) -> tuple[float, float] | None:
        return self.fidelity.latency

    @latency.setter
    def latency(self, latency: tuple[float, float] | None) -> None:
        self.fidelity.latency = latency

    @property
    def token_ttl_seconds(self) -> float:
        return self.fidelity.token_ttl_seconds

    @token_ttl_seconds.setter
    def token_ttl_seconds(self, seconds: float) -> None:
        self.fidelity.token_ttl_seconds = seconds

    @property
    def cloudtrail_lag_seconds(self) -> float:
        """How long after a call its CloudTrail event appears in LookupEvents (default 0;
        real CloudTrail: minutes, typically under 15)."""
        return self.fidelity.cloudtrail_lag_seconds

    @cloudtrail_lag_seconds.setter
    def cloudtrail_lag_seconds(self, seconds: float) -> None:
        self.fidelity.cloudtrail_lag_seconds = seconds

    def restore_settings(self) -> None:
        """Quotas, latency, token TTL and CloudTrail lag back to the constructor's values."""
        self.fidelity.restore_settings()

    @contextlib.contextmanager
    def configured(
        self,
        *,
        quotas: Quotas | None = _UNSET,
        latency: tuple[float, float] | None = _UNSET,
        token_ttl_seconds: float = _UNSET,
        cloudtrail_lag_seconds: float = _UNSET,
    ) -> Iterator[Self]:
        """Change settings for the duration of a `with` block, then put the old ones back."""
        before = (self.quotas, self.latency, self.token_ttl_seconds, self.cloudtrail_lag_seconds)
        try:
            if quotas is not _UNSET:
                self.quotas = quotas
            if latency is not _UNSET:
                self.latency = latency
            if token_ttl_seconds is not _UNSET:
                self.token_ttl_seconds = token_ttl_seconds
            if cloudtrail_lag_seconds is not _UNSET:
                self.cloudtrail_lag_seconds = cloudtrail_lag_seconds
            yield self
        finally:
            (
                self.quotas,
                self.latency,
                self.token_ttl_seconds,
                self.cloudtrail_lag_seconds,
            ) = before

    # ---- counters --------------------------------------------------------------------------

    @property
    def calls(self) -> dict[str, int]:
        """Cognito operation -> requests that reached the stand-in (throttled ones included)."""
        return self.fidelity.calls

    @property
    def throttled(self) -> dict[str, int]:
        """Cognito operation -> requests answered with TooManyRequestsException."""
        return self.fidelity.throttled

    def reset_counters(self) -> None:
        self.fidelity.reset_counters()

    # ---- CloudTrail and billing ------------------------------------------------------------

    def cloudtrail_events(self, pool_id: str | None = None) -> list[TrailEvent]:
        """Every Cognito call recorded so far (delivered or not), oldest first."""
        return self.fidelity.trail.events(pool_id)

    def deliver_cloudtrail_events(self) -> int:
        """Deliver the events still inside the lag now; returns how many were late."""
        return self.fidelity.trail.deliver_all(time.time())

    def monthly_active_users(self, pool_id: str, month: str | None = None) -> set[str]:
        """Subs Cognito would bill as MAUs of `month` ("YYYY-MM", default this UTC month)."""
        return self.fidelity.trail.monthly_active_users(pool_id, month or month_of(time.time()))

    def record_managed_login(self, pool_id: str, username: str, event_name: str) -> None:
        """Record a managed-login page event (`mfa_totp_POST`, `passkeys_add_POST`, ...) for
        a user, as the hosted pages do; the pages have no API, so tests change the user's
        state themselves and record the event with this."""
        with self.lock:
            user = self.backend.describe_user_pool(pool_id)._get_user(username)
            if user is None:
                raise LookupError(f"no user {username!r} in pool {pool_id}")
            self.fidelity.trail.record(
                event_name,
                at=time.time(),
                account_id=self.account_id,
                region=self.region,
                pool_id=pool_id,
                sub=user.id,
                principal=None,
            )

    # ---- access tokens ---------------------------------------------------------------------

    def issue_access_token(self, pool_id: str, username: str) -> str:
        """A valid access token for `username`, without a sign-in.

        moto's GetUser accepts it only for CONFIRMED users (seeded users are, by default).
        """
        return self.fidelity.issue_access_token(pool_id, username)

    def expire_token(self, token: str) -> None:
        self.fidelity.expire_token(token)

    def expire_all_tokens(self, pool_id: str | None = None) -> None:
        """Expire the access tokens issued so far, of `pool_id` or of every pool.

        Prefer passing `pool_id`: tests share one stand-in per worker.
        """
        self.fidelity.expire_all_tokens(pool_id)

    # ---- fault injection -------------------------------------------------------------------

    def inject(
        self,
        operation: str | None,
        code: str,
        message: str = "Injected by the stand-in",
        *,
        status: int = 400,
        times: int | None = 1,
        match: Callable[[Mapping[str, Any]], bool] | None = None,
        after_handling: bool = False,
    ) -> Fault:
        """Answer the next `times` matching requests with this error (None: every time).

        `operation` None matches every Cognito operation; `match` gets the request body.
        `after_handling`: handle the request first (a write takes effect), then answer with
        the error, as when the service applied a change and its answer was lost.
        """
        return self.fidelity.add_fault(
            Fault(
                operation,
                CognitoError(code, message, status),
                times=times,
                match=match,
                after_handling=after_handling,
            )
        )

    def server_errors(
        self,
        operation: str | None,
        times: int | None = 1,
        *,
        match: Callable[[Mapping[str, Any]], bool] | None = None,
        after_handling: bool = False,
    ) -> Fault:
        """HTTP 500 InternalErrorException for the next `times` requests (see `inject`)."""
        return self.inject(
            operation,
            "InternalErrorException",
            "An internal error occurred.",
            status=500,
            times=times,
            match=match,
            after_handling=after_handling,
        )

    def stall(
        self,
        operation: str | None,
        seconds: float,
        times: int | None = 1,
        match: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> Fault:
        """Hold the next `times` requests for `seconds` before handling them normally.

        A client whose read timeout is shorter sees a timeout, while the request still takes
        effect, as a real slow write can.
        """
        return self.fidelity.add_fault(
            Fault(operation, stall_seconds=seconds, times=times, match=match)
        )

    def throttle_storm(
        self, fraction: float, seconds: float, operations: tuple[str, ...] | None = None
    ) -> ThrottleStorm:
        """Throttle `fraction` (0..1) of Cognito requests for the next `seconds`."""
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        return self.fidelity.add_storm(
            ThrottleStorm(
                fraction,
                time.monotonic() + seconds,
                frozenset(operations) if operations is not None else None,
            )
        )

    def before_request(
        self, callback: Callable[[str, Mapping[str, Any]], None]
    ) -> Callable[[str, Mapping[str, Any]], None]:
        """Call `callback(operation, body)` before each Cognito request is handled.

        It runs outside the stand-in's lock, so it may change state (delete a user, ...).
        """
        return self.fidelity.add_hook(callback)

    def clear_faults(self) -> None:
        """Drop injected faults, throttle storms and before-request hooks."""
        self.fidelity.clear_faults()
