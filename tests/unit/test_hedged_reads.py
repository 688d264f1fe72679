"""Hedged user reads: a read unanswered past the delay is sent once more and the first good
answer wins; writes are never sent twice; hedges are counted apart and reach the summary.

An in-process client answers at once except for the calls a test scripts (a call that waits
on an event, or fails), so every test runs in well under a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mfa_policy.aws.gateway import CallCounters, CognitoError, CognitoGateway
from mfa_policy.aws.hedge import HedgeDelay
from mfa_policy.core.model import Factor, FactorWrite, MfaRequest
from mfa_policy.core.report import (
    Counts,
    RowsDigest,
    render_markdown,
    render_text,
    summary_document,
)
from mfa_policy.run.runner import summary_of
from mfa_policy.run.state import Checkpoint

LAMBDA_DIR = Path(__file__).resolve().parents[2] / "lambda"
READ = "admin_get_user_auth_factors"
WRITE = "admin_set_user_mfa_preference"
WARM_UP = 5
#: Tests hedge after 50 ms: well past an in-process answer, well before a test's patience.
DELAY = 0.05


def refusal(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "operation")


class ScriptedClient:
    """Answers each call with its number as the Username, except calls scripted by number."""

    def __init__(self, script: dict[int, Callable[[int], dict[str, Any]]] | None = None) -> None:
        self.script = script or {}
        self.calls = 0
        self._lock = threading.Lock()

    def _answer(self, **_: Any) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            number = self.calls
        if number in self.script:
            return self.script[number](number)
        return {"Username": f"answer {number}", "UserMFASettingList": []}

    admin_get_user_auth_factors = _answer
    admin_get_user = _answer
    admin_set_user_mfa_preference = _answer


def stuck_until(release: threading.Event, then: Callable[[int], dict[str, Any]] | None = None):
    def call(number: int) -> dict[str, Any]:
        assert release.wait(5), "never released"
        if then is not None:
            return then(number)
        return {"Username": f"answer {number}", "UserMFASettingList": []}

    return call


def fails(code: str, *, then_release: threading.Event | None = None):
    def call(_: int) -> dict[str, Any]:
        if then_release is not None:
            # Late enough that this error is surely the first answer of the two.
            threading.Timer(DELAY, then_release.set).start()
        raise refusal(code)

    return call


@pytest.fixture
def gateways() -> Iterator[Callable[..., CognitoGateway]]:
    """``gateways(client, hedge=...)``: a gateway that hedges; closed after the test."""
    made: list[CognitoGateway] = []

    def make(client: Any, hedge: HedgeDelay | None = None) -> CognitoGateway:
        gateway = CognitoGateway(
            client, "us-east-1_pool", hedge=hedge or HedgeDelay(min_samples=WARM_UP, floor=DELAY)
        )
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.close()


def warmed(gateway: CognitoGateway, reads: int = WARM_UP) -> None:
    """Fill the latency window with fast reads, then zero the counters."""
    for _ in range(reads):
        gateway.read_user("someone")
    gateway.counters.drain_into(Counts())


def eventually(condition: Callable[[], bool], seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_stuck_read_is_answered_by_its_hedge_before_the_stuck_call_returns(gateways):
    release = threading.Event()
    client = ScriptedClient({WARM_UP + 1: stuck_until(release)})
    gateway = gateways(client)
    warmed(gateway)

    started = time.monotonic()
    read = gateway.read_user("someone")
    waited = time.monotonic() - started

    assert read.username == f"answer {WARM_UP + 2}"  # the hedge's
    assert not release.is_set() and waited < 0.5
    assert gateway.counters.hedges == 1
    release.set()
    assert eventually(lambda: gateway.counters.calls[READ] == 2)
    counts = Counts()
    gateway.counters.drain_into(counts)
    assert counts.api_calls == {READ: 2} and counts.hedged_reads == 1


def test_a_slow_write_is_never_sent_twice(gateways):
    def slow(number: int) -> dict[str, Any]:
        time.sleep(4 * DELAY)
        return {}

    client = ScriptedClient({WARM_UP + 1: slow})
    gateway = gateways(client)
    warmed(gateway)

    gateway.admin_write("someone", MfaRequest({Factor.TOTP: FactorWrite(True, True)}))

    assert client.calls == WARM_UP + 1
    assert gateway.counters.calls == {WRITE: 1} and gateway.counters.hedges == 0


def test_a_fast_service_is_never_hedged():
    client = ScriptedClient()
    gateway = CognitoGateway(client, "us-east-1_pool", hedge=HedgeDelay())
    try:
        for _ in range(120):
            gateway.read_user("someone")
    finally:
        gateway.close()

    assert gateway.counters.hedges == 0 and gateway.counters.calls == {READ: 120}


def test_no_read_is_hedged_before_the_latency_window_is_warm(gateways):
    release = threading.Event()
    threading.Timer(4 * DELAY, release.set).start()
    client = ScriptedClient({1: stuck_until(release)})
    gateway = gateways(client)

    assert gateway.read_user("someone").username == "answer 1"
    assert gateway.counters.hedges == 0 and client.calls == 1


def test_a_pacing_wait_before_the_send_does_not_count_toward_the_delay(gateways):
    class SlowPacing:
        """A limiter whose every wait is longer than the hedge delay."""

        def acquire(self, category: Any) -> None:
            time.sleep(3 * DELAY)

        def answered(self, category: Any, *, throttled: bool) -> None:
            pass

    client = ScriptedClient()
    gateway = gateways(client)
    warmed(gateway)
    gateway.limiter = SlowPacing()

    gateway.read_user("someone")

    assert gateway.counters.hedges == 0 and client.calls == WARM_UP + 1


def test_when_the_hedge_fails_first_the_stuck_read_still_answers(gateways):
    release = threading.Event()
    client = ScriptedClient(
        {
            WARM_UP + 1: stuck_until(release),
            WARM_UP + 2: fails("UserNotFoundException", then_release=release),
        }
    )
    gateway = gateways(client)
    warmed(gateway)

    read = gateway.read_user("someone")

    assert read.username == f"answer {WARM_UP + 1}"  # the first request's, after the error
    assert gateway.counters.hedges == 1 and gateway.counters.calls == {READ: 2}


def test_when_both_fail_the_read_raises_the_first_error(gateways):
    release = threading.Event()

    def late_error(_: int) -> dict[str, Any]:
        raise refusal("TooLateException")

    client = ScriptedClient(
        {
            WARM_UP + 1: stuck_until(release, then=late_error),
            WARM_UP + 2: fails("UserNotFoundException", then_release=release),
        }
    )
    gateway = gateways(client)
    warmed(gateway)

    with pytest.raises(CognitoError) as raised:
        gateway.read_user("someone")

    assert raised.value.code == "UserNotFoundException"
    assert gateway.counters.calls == {READ: 2}


def test_a_hedging_gateway_still_falls_back_when_the_read_is_not_allowed(gateways):
    client = ScriptedClient({WARM_UP + 1: fails("AccessDeniedException")})
    gateway = gateways(client)
    warmed(gateway)

    read = gateway.read_user("someone")

    assert read.operation == "admin_get_user" and read.username == f"answer {WARM_UP + 2}"
    assert gateway.counters.hedges == 0 and len(gateway.warnings) == 1


def test_hedged_reads_reach_the_run_counts_and_the_summary(valid_report):
    counters = CallCounters()
    counters.count(READ)
    counters.count(READ)
    counters.count_hedge()
    counts = Counts()
    counters.drain_into(counts)
    assert counts.hedged_reads == 1 and counts.api_calls == {READ: 2}
    assert counters.hedges == 0

    checkpoint = Checkpoint(
        run_id="r1",
        user_pool_id="us-east-1_pool",
        mode="drift",
        auth="admin",
        policy_hash="abc",
        started_at="2026-01-01T00:00:00+00:00",
        ended_at="2026-01-01T00:01:00+00:00",
        done=True,
        counts=counts.to_dict(),
    )
    summary = summary_document(summary_of(checkpoint), RowsDigest())

    assert summary["counts"]["hedged_reads"] == 1
    assert not [e.message for e in valid_report.summary.iter_errors(summary)]
    assert "Hedged reads (sent twice, counted above): 1" in render_markdown(summary)
    assert "hedged reads (sent twice, counted above): 1" in render_text(summary)


def test_a_read_left_stalled_to_its_hedge_does_not_hold_the_process_exit():
    """The CLI exits once its run is done, not when the stalled read it no longer needs ends."""
    script = """
import threading
from mfa_policy.aws.hedge import HedgeDelay, HedgedCalls

delay = HedgeDelay(min_samples=1, floor=0.05)
delay.record(0.01)
hedged = HedgedCalls(delay)
calls = []

def attempt(flight):
    calls.append(1)
    flight.sent()
    if len(calls) == 1:
        threading.Event().wait(30)  # the stall
    flight.answered()
    return len(calls)

assert hedged.call(attempt, lambda: None) == 2
hedged.close()
"""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(LAMBDA_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 15


def hedging_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "hedged-read"}


def test_closing_a_gateway_ends_its_hedging_threads(gateways):
    # Another test's reads may still be stalled on their threads in this process.
    others = hedging_threads()
    release = threading.Event()
    client = ScriptedClient({WARM_UP + 1: stuck_until(release)})
    gateway = gateways(client)
    warmed(gateway)
    gateway.read_user("someone")  # answered by its hedge; the first request is still stuck
    assert hedging_threads() - others

    gateway.close()
    release.set()

    assert eventually(lambda: not hedging_threads() - others)
    assert gateway.read_user("someone").username.startswith("answer")  # on the caller's thread
