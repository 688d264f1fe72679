"""Fixtures every test folder shares: the hypothesis profile, the Cognito stand-in, pool locks
in a test folder, and the report validator.

One stand-in per test session (per xdist worker), imported lazily so pure unit tests never
load moto. Tests isolate by working in their own pools, not by resetting the server, so they
can run in parallel.

Every report a test leaves under its tmp_path is checked against the report JSON Schemas that
ship with the package (and its rows against the digest in its summary) when the test ends;
a test that damages reports on purpose is marked ``tampered_reports``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# ---- pool locks ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _pool_locks_in_a_test_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Runs lock pools in one folder of this session, never in the real ~/.cache."""
    monkeypatch.setenv("MFA_POLICY_LOCK_DIR", str(tmp_path_factory.getbasetemp() / "locks"))


# ---- reports ---------------------------------------------------------------------------------


class ReportValidator:
    """Checks reports against report-summary.schema.json and report-row.schema.json."""

    def __init__(self) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource

        schemas = resources.files("mfa_policy.core")
        row = json.loads(schemas.joinpath("report-row.schema.json").read_text("utf-8"))
        summary = json.loads(schemas.joinpath("report-summary.schema.json").read_text("utf-8"))
        registry = Registry().with_resources(
            (s["$id"], Resource.from_contents(s)) for s in (row, summary)
        )
        self.row = Draft202012Validator(row, registry=registry)
        self.summary = Draft202012Validator(summary, registry=registry)

    def rows(self, jsonl: bytes, where: str) -> int:
        lines = jsonl.splitlines()
        for number, line in enumerate(lines, start=1):
            errors = [e.message for e in self.row.iter_errors(json.loads(line))]
            assert not errors, f"{where} line {number}: {errors}"
        return len(lines)

    def files(self, summary_json: str | None, jsonl: bytes, where: str) -> None:
        """One report: its rows, and (when it is finished) its summary and their digest."""
        count = self.rows(jsonl, where)
        if summary_json is None:
            return
        summary = json.loads(summary_json)
        errors = [e.message for e in self.summary.iter_errors(summary)]
        assert not errors, f"{where} summary.json: {errors}"
        assert summary["users"] == count, f"{where}: {count} rows for {summary['users']} users"
        assert summary["rows"] == {"count": count, "sha256": hashlib.sha256(jsonl).hexdigest()}

    def bucket(self, s3: Any, bucket: str) -> None:
        """Every report in a report bucket: slice parts, joined rows and summaries."""
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])
        ]

        def body(key: str) -> bytes:
            data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            return data

        for key in keys:
            if "/parts/" in key:
                self.rows(body(key), key)
            elif key.endswith("/users.jsonl"):
                prefix = key.removesuffix("users.jsonl")
                summary = prefix + "summary.json"
                self.files(body(summary).decode() if summary in keys else None, body(key), prefix)

    def folder(self, directory: Path) -> None:
        summary = directory / "summary.json"
        self.files(
            summary.read_text("utf-8") if summary.exists() else None,
            (directory / "users.jsonl").read_bytes(),
            str(directory),
        )


@functools.cache
def report_validator() -> ReportValidator:
    return ReportValidator()


@pytest.fixture
def valid_report() -> ReportValidator:
    """The report validator, for reports that are not in a folder under tmp_path: in S3,
    ``valid_report.bucket(s3, name)`` when the test is done with its bucket."""
    return report_validator()


@pytest.fixture(autouse=True)
def _reports_under_tmp_path_are_valid(request: pytest.FixtureRequest) -> Iterator[None]:
    checked = "tmp_path" in request.fixturenames and not request.node.get_closest_marker(
        "tampered_reports"
    )
    root: Path | None = request.getfixturevalue("tmp_path") if checked else None
    yield
    if root is not None:
        for jsonl in sorted(root.rglob("users.jsonl")):
            report_validator().folder(jsonl.parent)
