"""Fixtures for end-to-end tests: a Cognito stand-in served over HTTP to CLI subprocesses."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from mfa_policy.standin import CognitoStandIn, DemoPool, seed_demo_pool


@pytest.fixture(scope="session")
def standin() -> Iterator[CognitoStandIn]:
    with CognitoStandIn() as server:
        yield server


@pytest.fixture
def demo_pool(standin: CognitoStandIn) -> Iterator[Callable[..., DemoPool]]:
    """`demo_pool(n, seed=7) -> DemoPool`, seeded straight into the stand-in; deleted after."""
    created: list[str] = []

    def make(n: int, seed: int = 7) -> DemoPool:
        pool = seed_demo_pool(standin, n=n, seed=seed, name=f"e2e-{uuid.uuid4().hex[:6]}")
        created.append(pool.pool_id)
        return pool

    yield make
    standin.clear_faults()
    standin.restore_settings()
    with standin.lock:
        for pool_id in created:
            standin.backend.user_pools.pop(pool_id, None)
