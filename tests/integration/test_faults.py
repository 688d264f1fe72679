"""Faults: the service misbehaves, users change under the run, the process dies.

After each fault the same invariants hold: every user of the pool has exactly one report row
and one outcome, no user failed (unless the fault is theirs to carry, like an expired token),
no user got two accepted writes that disagree, and no user lost a factor they had (every
factor enabled before and not disabled by the user's rule is still enabled; nobody who had a
factor ends with none). Where it applies, the end state also equals a fault-free run's on an
identical pool.

Against the moto stand-in (`mfa_policy.standin`), and the bench stand-in (`bench/standin.py`)
where the pool is large.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from botocore.config import Config

from mfa_policy.aws.gateway import CLIENT_CONFIG
from mfa_policy.cli.demo import DEMO_POLICY, demo_policy
from mfa_policy.core.engine import Mode
from mfa_policy.core.model import FactorSetting
from mfa_policy.core.policy import Policy, RateLimits
from mfa_policy.run.local_run import run_locally
from mfa_policy.standin import (
    EMAIL,
    SMS,
    TOTP,
    CognitoStandIn,
    UserFacts,
    check_mfa_preference,
)

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench.standin import BenchCognito, Quotas, index_of  # noqa: E402

NAMES = {TOTP: "totp", SMS: "sms", EMAIL: "email"}
WRITE_OPERATIONS = ("AdminSetUserMFAPreference", "SetUserMFAPreference")
Mfa = tuple[frozenset[str], str | None]  # enabled factors, preferred factor (report names)


# ---- helpers ---------------------------------------------------------------------------------


def pool_state(standin: CognitoStandIn, pool_id: str) -> dict[str, Mfa]:
    with standin.lock:
        users = list(standin.backend.user_pools[pool_id].users.values())
        return {
            user.username: (
                frozenset(
                    name
                    for name, on in (
                        ("totp", user.software_token_mfa_enabled),
                        # SMS MFA through the legacy MFAOptions only is SMS in effect.
                        (
                            "sms",
                            user.sms_mfa_enabled
                            or standin.fidelity.user_flag("legacy_sms", pool_id, user.id),
                        ),
                        ("email", standin.fidelity.email_mfa_enabled(pool_id, user.id)),
                    )
                    if on
                ),
                NAMES.get(user.preferred_mfa_setting or ""),
            )
            for user in users
        }


def rows_of(report_dir: Path) -> list[dict[str, Any]]:
    text = (report_dir / "users.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def fast_policy() -> Policy:
    return demo_policy()  # 400 reads/s, 200 writes/s, 100 lists/s: the stand-in is not Cognito


def run(
    standin: CognitoStandIn,
    pool_id: str,
    mode: Mode,
    tmp_path: Path,
    name: str,
    *,
    client: Any = None,
    policy: Policy | None = None,
    **kwargs: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = run_locally(
        policy or fast_policy(),
        pool_id,
        mode,
        client=client or standin.client(config=CLIENT_CONFIG),
        state_dir=kwargs.pop("state_dir", tmp_path / f"state-{name}"),
        report_dir=tmp_path / name,
        **kwargs,
    )
    return result.summary, rows_of(result.report_dir)


class ServerWrites:
    """Every MFA-preference request that reaches the stand-in, per user, judged by Cognito's
    rules as the request is about to be handled. Exact when no fault answers the request
    instead of the service (throttling, injected errors); stalls and kills are fine."""

    def __init__(self, standin: CognitoStandIn, pool_id: str) -> None:
        self.standin = standin
        self.pool_id = pool_id
        self.lock = threading.Lock()
        self.accepted: dict[str, list[str]] = defaultdict(list)
        self.rejected: dict[str, list[str]] = defaultdict(list)
        self.user_of_token: dict[str, str] = {}
        standin.before_request(self._hook)

    def _hook(self, operation: str, body: Mapping[str, Any]) -> None:
        if operation not in WRITE_OPERATIONS:
            return
        username = body.get("Username") or self.user_of_token.get(body.get("AccessToken", ""))
        if username is None or body.get("UserPoolId", self.pool_id) != self.pool_id:
            return
        with self.standin.lock:
            pool = self.standin.backend.user_pools[self.pool_id]
            user = pool._get_user(username)
            if user is None:
                return  # deleted: Cognito answers UserNotFoundException
            facts = UserFacts(
                has_phone=bool(user.attribute_lookup.get("phone_number")),
                has_email=bool(user.attribute_lookup.get("email")),
                totp_verified=bool(user.token_verified),
                pool_mfa=pool.mfa_config or "OFF",
                pool_email_mfa=False,
            )
        request = json.dumps(
            {k: v for k, v in body.items() if k.endswith("MfaSettings")}, sort_keys=True
        )
        verdict = check_mfa_preference(body, facts)
        with self.lock:
            (self.accepted if verdict is None else self.rejected)[username].append(request)


class ClientWrites:
    """Every MFA-preference call an in-process client sends, per user, with Cognito's answer
    (throttled and failed attempts are not accepted writes)."""

    def __init__(self, client: Any, user_of_token: Mapping[str, str] | None = None) -> None:
        self.accepted: dict[str, list[str]] = defaultdict(list)
        self.user_of_token = dict(user_of_token or {})
        events = client.meta.events
        for op in WRITE_OPERATIONS:
            events.register(f"before-parameter-build.cognito-identity-provider.{op}", self._params)
            events.register(f"after-call.cognito-identity-provider.{op}", self._answer)

    def _params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["faults_params"] = dict(params)

    def _answer(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        params = context["faults_params"]
        if http_response.status_code == 200:
            request = json.dumps(
                {k: v for k, v in params.items() if k.endswith("MfaSettings")}, sort_keys=True
            )
            user = params.get("Username") or self.user_of_token[params["AccessToken"]]
            self.accepted[user].append(request)


def disabled_by_rule(policy: Policy) -> dict[str | None, frozenset[str]]:
    out: dict[str | None, frozenset[str]] = {None: frozenset()}
    for rule in policy.rules:
        out[rule.name] = frozenset(f.value for f in rule.factors_set_to(FactorSetting.DISABLED))
    return out


def assert_invariants(
    rows: list[dict[str, Any]],
    before: Mapping[str, Mfa],
    after: Mapping[str, Mfa],
    accepted: Mapping[str, list[str]],
    policy: Policy,
    *,
    may_fail: frozenset[str] = frozenset(),
    users: set[str] | None = None,
) -> None:
    """The invariants every fault test ends with (see the module docstring)."""
    names = [r["username"] for r in rows]
    assert len(names) == len(set(names)), "a user has two report rows"
    assert set(names) == (users if users is not None else set(before)), "a user has no row"
    failed = {r["username"]: r.get("error") for r in rows if r["outcome"] == "failed"}
    assert set(failed) <= may_fail, f"users failed: {failed}"
    conflicting = {u: w for u, w in accepted.items() if len(set(w)) > 1}
    assert not conflicting, f"users written twice with different changes: {conflicting}"
    disabled = disabled_by_rule(policy)
    rule_of = {r["username"]: r.get("rule") for r in rows}
    for user, (enabled, _) in before.items():
        if user not in after:
            continue  # deleted during the run
        kept = enabled - disabled[rule_of.get(user)]
        assert kept <= after[user][0], f"{user} lost {sorted(kept - after[user][0])}"
        assert not enabled or after[user][0], f"{user} was left without a factor"


def comparable(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {
        r["username"]: (r["rule"], r["outcome"], r["before"], r["desired"], r["after"])
        for r in rows
    }


def decisions(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What a drift found for each user."""
    return {r["username"]: (r["rule"], r["outcome"], r["before"], r["desired"]) for r in rows}


# ---- throttling, 5xx, timeouts -----------------------------------------------------------------


def test_throttling_storm_completes_with_no_user_failed_and_the_fault_free_result(
    standin, demo_pool, tmp_path
):
    clean_pool, pool = demo_pool(150, seed=21), demo_pool(150, seed=21)
    _, clean_rows = run(standin, clean_pool.pool_id, Mode.APPLY, tmp_path, "clean")
    before = pool_state(standin, pool.pool_id)
    client = standin.client(config=CLIENT_CONFIG)
    writes = ClientWrites(client)
    standin.reset_counters()

    # Once users are being read, 4 requests in 5 are throttled for 4 s, every operation. (A
    # page's writes wait until its intents are journaled, after all its reads: early in the
    # storm only reads are in flight, so it takes longer to throttle as many requests.)
    started = threading.Event()

    def storm_on_first_read(operation: str, body: Mapping[str, Any]) -> None:
        if operation == "AdminGetUserAuthFactors" and not started.is_set():
            started.set()
            standin.throttle_storm(0.8, seconds=4)

    standin.before_request(storm_on_first_read)
    summary, rows = run(standin, pool.pool_id, Mode.APPLY, tmp_path, "storm", client=client)

    assert sum(standin.throttled.values()) > 75, "the storm should have throttled plenty"
    assert sum(summary["counts"]["throttled"].values()) == sum(standin.throttled.values())
    assert summary["complete"] and summary["counts"]["by_outcome"]["failed"] == 0
    after = pool_state(standin, pool.pool_id)
    assert_invariants(rows, before, after, writes.accepted, fast_policy())
    assert all(len(w) <= 1 for w in writes.accepted.values())
    assert comparable(rows) == comparable(clean_rows)
    assert after == pool_state(standin, clean_pool.pool_id)


def first_time_per(key: str) -> Callable[[Mapping[str, Any]], bool]:
    """A fault `match` that fires on the first request for each value of `key` only."""
    seen: set[Any] = set()
    lock = threading.Lock()

    def match(body: Mapping[str, Any]) -> bool:
        with lock:
            value = body.get(key)
            if value in seen:
                return False
            seen.add(value)
            return True

    return match


def test_server_errors_on_every_first_request_are_retried_and_no_user_fails(
    standin, demo_pool, tmp_path
):
    clean_pool, pool = demo_pool(130, seed=22), demo_pool(130, seed=22)
    _, clean_rows = run(standin, clean_pool.pool_id, Mode.APPLY, tmp_path, "clean")
    before = pool_state(standin, pool.pool_id)
    client = standin.client(config=CLIENT_CONFIG)
    writes = ClientWrites(client)
    # HTTP 500 for the first request of every page, every read and every user's first write,
    # and for the preflight's first try.
    for operation, key in (
        ("ListUsers", "PaginationToken"),
        ("ListUsersInGroup", "GroupName"),
        ("AdminGetUserAuthFactors", "Username"),
        ("AdminSetUserMFAPreference", "Username"),
        ("GetUserPoolMfaConfig", "UserPoolId"),
    ):
        standin.inject(
            operation,
            "InternalErrorException",
            "An internal error occurred.",
            status=500,
            times=None,
            match=first_time_per(key),
        )
    standin.reset_counters()

    summary, rows = run(standin, pool.pool_id, Mode.APPLY, tmp_path, "5xx", client=client)

    assert summary["complete"] and summary["counts"]["by_outcome"]["failed"] == 0
    calls = summary["counts"]["api_calls"]
    in_scope_reads = sum(1 for r in clean_rows if r["before"] is not None)
    hedged = summary["counts"]["hedged_reads"]  # a read stalled on a loaded machine
    # Each read: a 500, then the answer.
    assert calls["admin_get_user_auth_factors"] - hedged == 2 * in_scope_reads
    assert calls["get_user_pool_mfa_config"] == 2
    after = pool_state(standin, pool.pool_id)
    assert_invariants(rows, before, after, writes.accepted, fast_policy())
    assert comparable(rows) == comparable(clean_rows)
    assert after == pool_state(standin, clean_pool.pool_id)


def test_timeouts_are_retried_and_a_write_that_landed_late_is_not_a_second_change(
    standin, demo_pool, tmp_path
):
    clean_pool, pool = demo_pool(70, seed=23), demo_pool(70, seed=23)
    _, clean_rows = run(standin, clean_pool.pool_id, Mode.APPLY, tmp_path, "clean")
    before = pool_state(standin, pool.pool_id)
    writes = ServerWrites(standin, pool.pool_id)
    client = standin.client(config=CLIENT_CONFIG.merge(Config(read_timeout=0.4)))
    # The first read and the first write of 12 users each stall past the client's read
    # timeout; a stalled write still takes effect, after the client gave up on it.
    victims = sorted(u for u, r in comparable(clean_rows).items() if r[4] != r[2])[:12]
    victims += sorted(u for u, r in comparable(clean_rows).items() if r[2] is not None)[:12]

    def first_for_victims() -> Callable[[Mapping[str, Any]], bool]:
        first = first_time_per("Username")
        return lambda body: body.get("Username") in victims and first(body)

    standin.stall("AdminGetUserAuthFactors", 1.0, times=None, match=first_for_victims())
    standin.stall("AdminSetUserMFAPreference", 1.0, times=None, match=first_for_victims())

    summary, rows = run(standin, pool.pool_id, Mode.APPLY, tmp_path, "timeouts", client=client)

    assert summary["complete"] and summary["counts"]["by_outcome"]["failed"] == 0
    retried_writes = [u for u, w in writes.accepted.items() if len(w) > 1]
    assert retried_writes, "some timed-out writes should have landed and been retried"
    after = pool_state(standin, pool.pool_id)
    assert_invariants(rows, before, after, writes.accepted, fast_policy())
    assert comparable(rows) == comparable(clean_rows)
    assert after == pool_state(standin, clean_pool.pool_id)


def test_a_read_stalled_in_a_latency_tail_is_hedged_and_the_run_does_not_wait_for_it(
    standin, demo_pool, tmp_path
):
    pool = demo_pool(100, seed=29)  # 85 users read
    _, clean_rows = run(standin, pool.pool_id, Mode.DRIFT, tmp_path, "clean", workers=8)
    reads = itertools.count(1)
    # With 8 readers the 70th read is sent after at least 62 answers: the run knows its hedge
    # delay (from 50). The stall is far longer than the whole run, and shorter than the
    # client's 10 s read timeout, so a run that does not hedge waits it out; the bound leaves
    # a loaded machine, where the delay (the p98 of its latencies) may be seconds, 5 s.
    stall = 9.0
    standin.stall("AdminGetUserAuthFactors", stall, match=lambda _: next(reads) == 70)

    started = time.monotonic()
    summary, rows = run(standin, pool.pool_id, Mode.DRIFT, tmp_path, "tail", workers=8)
    took = time.monotonic() - started

    hedged = summary["counts"]["hedged_reads"]
    assert took < stall - 3, f"the run took {took:.1f} s, {hedged} reads hedged"
    assert hedged >= 1  # the stall; on a loaded machine maybe more
    assert decisions(rows) == decisions(clean_rows)


# ---- users changing under the run --------------------------------------------------------------


def test_users_deleted_or_changed_mid_run_get_one_recorded_outcome_each(
    standin, demo_pool, tmp_path
):
    pool = demo_pool(90, seed=24)
    kinds = {u: k for k, users in pool.usernames.items() for u in users}
    fixable = pool.usernames["totp_and_sms_sms_preferred"]
    deleted_before_read, deleted_before_write, changed_by_user, phone_removed = fixable[:4]
    before = pool_state(standin, pool.pool_id)

    def hook(operation: str, body: Mapping[str, Any]) -> None:
        username = body.get("Username")
        if body.get("UserPoolId") != pool.pool_id:
            return
        backend = standin.backend
        with standin.lock:
            if (operation, username) in (
                ("AdminGetUserAuthFactors", deleted_before_read),
                ("AdminSetUserMFAPreference", deleted_before_write),
            ):
                backend.admin_delete_user(pool.pool_id, username)
            elif operation == "AdminSetUserMFAPreference" and username == changed_by_user:
                # Between our read and our write, the user turns TOTP off and keeps SMS.
                user = backend.admin_get_user(pool.pool_id, username)
                user.software_token_mfa_enabled = False
                user.preferred_mfa_setting = SMS
            elif operation == "AdminSetUserMFAPreference" and username == phone_removed:
                # ...and an administrator removes this one's phone number.
                backend.admin_delete_user_attributes(pool.pool_id, username, ["phone_number"])

    standin.before_request(hook)
    writes = ServerWrites(standin, pool.pool_id)  # judges each write after the hook's change
    summary, rows = run(standin, pool.pool_id, Mode.APPLY, tmp_path, "apply")

    assert summary["complete"]
    by_user = {r["username"]: r for r in rows}
    for gone in (deleted_before_read, deleted_before_write):
        assert by_user[gone]["outcome"] == "skipped"
        assert by_user[gone]["reason"].startswith("user_not_found")
    # Our write re-enables TOTP (the policy's) and keeps SMS: the user ends as the policy says.
    assert by_user[changed_by_user]["outcome"] == "changed"
    after = pool_state(standin, pool.pool_id)
    assert after[changed_by_user] == (frozenset({"totp", "sms"}), "totp")
    # Cognito refuses the SMS block without a phone number: blocked, recorded, not fatal.
    assert by_user[phone_removed]["outcome"] == "blocked"
    assert "phone_number" in by_user[phone_removed]["reason"]
    assert after[phone_removed] == before[phone_removed]
    assert_invariants(rows, before, after, writes.accepted, fast_policy())
    others = {u for u in kinds if u not in fixable[:4]}
    assert {by_user[u]["outcome"] for u in others} <= {
        "compliant",
        "changed",
        "needs_enrollment",
        "blocked",
        "guarded",
        "excluded",
        "skipped",
    }


# ---- expired tokens ------------------------------------------------------------------------------


def test_tokens_expiring_mid_run_are_token_invalid_and_those_users_are_not_touched(
    standin, demo_pool, token_table, tmp_path
):
    pool = demo_pool(100, seed=25)
    kinds = {u: k for k, users in pool.usernames.items() for u in users}
    table, user_of_token = token_table(pool.pool_id, list(kinds))
    token_of = {u: t for t, u in user_of_token.items()}
    before = pool_state(standin, pool.pool_id)
    client = standin.client(config=CLIENT_CONFIG)
    writes = ClientWrites(client, user_of_token)
    expires_at_write = pool.usernames["totp_and_sms_sms_preferred"][0]
    reads = 0
    lock = threading.Lock()

    def hook(operation: str, body: Mapping[str, Any]) -> None:
        nonlocal reads
        if operation == "GetUserAuthFactors" and body.get("AccessToken") in user_of_token:
            with lock:
                reads += 1
                if reads == 60:  # the rest of the pool's tokens expire now
                    standin.expire_all_tokens(pool.pool_id)
        if operation == "SetUserMFAPreference" and body.get("AccessToken") == token_of.get(
            expires_at_write
        ):
            standin.expire_token(body["AccessToken"])

    standin.before_request(hook)
    summary, rows = run(
        standin,
        pool.pool_id,
        Mode.APPLY,
        tmp_path,
        "apply",
        client=client,
        auth="access-token",
        tokens=table,
    )

    assert summary["complete"]
    invalid = {r["username"] for r in rows if r["outcome"] == "token_invalid"}
    assert expires_at_write in invalid
    assert len(invalid) > 10, "tokens read after the 60th should have expired"
    assert all(
        r["error"] == "NotAuthorizedException" for r in rows if r["outcome"] == "token_invalid"
    )
    after = pool_state(standin, pool.pool_id)
    assert {u: after[u] for u in invalid} == {u: before[u] for u in invalid}
    assert not any(writes.accepted.get(u) for u in invalid)
    assert_invariants(rows, before, after, writes.accepted, fast_policy())


# ---- the process killed at random points, then resumed -----------------------------------------


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "lambda"), env.get("PYTHONPATH")) if p),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
    )
    return env


def test_apply_killed_at_random_points_and_resumed_changes_each_user_once_and_loses_nothing(
    standin, demo_pool, tmp_path
):
    rng = random.Random(int(os.environ.get("FAULTS_SEED", "5")))
    clean_pool, pool = demo_pool(300, seed=26), demo_pool(300, seed=26)
    policy_path = tmp_path / "policy.json"
    # Slow enough that each process is killed mid-run: 150 reads/s, 40 writes/s.
    rates = {"user_read": 150, "user_resource_update": 40, "user_list": 20}
    policy_path.write_text(json.dumps({**DEMO_POLICY, "rate_limits": rates}), "utf-8")
    policy = replace(demo_policy(), rate_limits=RateLimits(**rates))
    _, clean_rows = run(standin, clean_pool.pool_id, Mode.APPLY, tmp_path, "clean")
    before = pool_state(standin, pool.pool_id)
    writes = ServerWrites(standin, pool.pool_id)
    listed = threading.Event()

    def on_list(operation: str, body: Mapping[str, Any]) -> None:
        if operation == "ListUsers" and body.get("UserPoolId") == pool.pool_id:
            listed.set()

    standin.before_request(on_list)
    state_dir, report = tmp_path / "state", tmp_path / "report"
    command = [
        sys.executable,
        *("-m", "mfa_policy.cli.main", "apply", "-c", str(policy_path)),
        *("--user-pool-id", pool.pool_id, "--state-dir", str(state_dir)),
        *("--endpoint-url", standin.endpoint_url, "--region", "us-east-1"),
    ]
    env = cli_env(tmp_path)
    kills = []

    with standin.configured(latency=(0.005, 0.02)):
        for attempt in range(4):
            args = (
                [*command, "--report-dir", str(report)] if attempt == 0 else [*command, "--resume"]
            )
            listed.clear()
            process = subprocess.Popen(
                args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            # Once the run lists its first page, kill it after a random delay.
            deadline = time.monotonic() + 30
            while not listed.wait(0.01):
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "no ListUsers within 30 s"
            delay = rng.uniform(0.0, 1.5)
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
                kills.append((round(delay, 2), len(rows_of(report))))
            if process.stderr:
                process.stderr.close()
        finished = subprocess.run(
            [*command, "--resume", "--format", "json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert len(kills) >= 2, f"the runs should have been killed mid-way: {kills}"
    assert "Traceback" not in finished.stderr, finished.stderr
    assert finished.returncode == 2, finished.stderr  # users who must enroll remain
    summary = json.loads(finished.stdout)
    assert summary["complete"] and summary["users"] == pool.total
    rows = rows_of(report)
    after = pool_state(standin, pool.pool_id)
    assert_invariants(rows, before, after, writes.accepted, policy)
    twice = {u: w for u, w in writes.accepted.items() if len(w) > 1}
    assert not twice, f"users with two accepted writes: {twice} (kills: {kills})"
    assert after == pool_state(standin, clean_pool.pool_id)
    assert {r["username"]: r["outcome"] for r in rows} == {
        r["username"]: r["outcome"] for r in clean_rows
    }


# ---- at scale: the bench stand-in ----------------------------------------------------------------


def test_large_pool_pushed_past_the_quota_in_a_storm_completes_with_nobody_failed(tmp_path):
    size = 1000
    # What the service grants here (Cognito's quotas, scaled up to keep the test short)...
    quotas = Quotas(user_read=500, user_resource_update=250, user_list=60, user_pool_read=20)
    cognito = BenchCognito(latency=(0.002, 0.01), quotas=quotas)
    clean = BenchCognito(latency=None, quotas=None)
    pool_id, clean_id = cognito.create_pool(size), clean.create_pool(size)
    # ...and a policy asking for twice that (the live app uses the rest): throttled all along.
    rates = RateLimits(user_read=1000, user_resource_update=500, user_list=120)
    policy = replace(demo_policy(), rate_limits=rates, exclude_usernames=frozenset())
    usernames = {f"user-{i + 1:07d}" for i in range(size)}

    clean_run = run_locally(
        policy, clean_id, Mode.APPLY, client=clean, state_dir=tmp_path / "clean", workers=32
    )
    started = threading.Event()

    def storm_on_first_read(operation: str, body: Mapping[str, Any]) -> None:
        if operation == "AdminGetUserAuthFactors" and not started.is_set():
            started.set()
            cognito.throttle_storm(0.8, seconds=1.5)

    cognito.before_request(storm_on_first_read)
    result = run_locally(
        policy, pool_id, Mode.APPLY, client=cognito, state_dir=tmp_path / "storm", workers=32
    )

    stats = cognito.stats()
    assert sum(stats["throttled"].values()) > 100
    assert result.summary["complete"]
    assert result.summary["counts"]["by_outcome"]["failed"] == 0
    assert result.summary["counts"]["by_outcome"] == clean_run.summary["counts"]["by_outcome"]
    assert max(int(k) for k in stats["users_by_writes"]) == 1  # nobody written twice
    pool = cognito.pool(pool_id)

    def mfa(c: BenchCognito, p: str, u: str) -> Mfa:
        s = c.mfa_of(p, u)
        return frozenset(NAMES[f] for f in s.enabled), NAMES.get(s.preferred or "")

    after = {u: mfa(cognito, pool_id, u) for u in usernames}
    assert after == {u: mfa(clean, clean_id, u) for u in usernames}
    seeded = {}
    for u in usernames:
        index = index_of(u)
        assert index is not None
        s = pool.seeded_state(index)
        seeded[u] = (frozenset(NAMES[f] for f in s.enabled), NAMES.get(s.preferred or ""))
    assert_invariants(rows_of(result.report_dir), seeded, after, {}, policy)
