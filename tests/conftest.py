"""Fixtures every test folder shares: the hypothesis profile, and the Cognito stand-in.

One stand-in per test session (per xdist worker), imported lazily so pure unit tests never
load moto. Tests isolate by working in their own pools, not by resetting the server, so they
can run in parallel.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from mfa_policy.standin import CognitoStandIn, DemoPool

# CI machines are small and shared: judge properties by examples, not by wall time.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def standin() -> Iterator[CognitoStandIn]:
    from mfa_policy.standin import CognitoStandIn

    with CognitoStandIn() as server:
        yield server


@pytest.fixture(autouse=True)
def _standin_per_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Zeroed counters before, default settings and no faults after each test that uses it."""
    if "standin" not in request.fixturenames:
        yield
        return
    server: CognitoStandIn = request.getfixturevalue("standin")
    server.reset_counters()
    yield
    server.clear_faults()
    server.restore_settings()


@pytest.fixture
def demo_pool(standin: CognitoStandIn) -> Iterator[Callable[..., DemoPool]]:
    """`demo_pool(n=100, seed=7) -> DemoPool`: same n and seed, same users; deleted after."""
    from mfa_policy.standin import seed_demo_pool

    created: list[str] = []

    def make(n: int = 100, seed: int = 7) -> DemoPool:
        pool = seed_demo_pool(standin, n=n, seed=seed, name=f"demo-{uuid.uuid4().hex[:6]}")
        created.append(pool.pool_id)
        return pool

    yield make
    with standin.lock:
        for pool_id in created:
            standin.backend.user_pools.pop(pool_id, None)
