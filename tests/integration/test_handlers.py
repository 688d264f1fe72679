"""The Lambda handlers with real Step Functions and CloudFormation event shapes, on the stand-in."""

import hashlib
import json
import random
import threading
import uuid
from types import SimpleNamespace

import pytest

from mfa_policy.aws.s3_lock import LockLost
from mfa_policy.cli.demo import demo_policy
from mfa_policy.core.engine import Mode
from mfa_policy.handlers.lambda_entry import (
    HandlerSettings,
    InvalidEvent,
    RunTimedOut,
    acquire_run_lock,
    deploy_is_complete,
    deploy_on_event,
    emit_run_metrics,
    release_run_lock,
    run_slice,
    settings_from_env,
    slice_handler,
)
from mfa_policy.run.local_run import run_locally
from mfa_policy.run.runner import DEFAULT_WORKERS, early_writes
from mfa_policy.standin import seed_demo_pool

USERS = 150  # three ListUsers pages: a loop of several slices


@pytest.fixture
def bucket(standin, valid_report):
    """A report bucket; every report the test leaves in it must match the report schemas."""
    s3 = standin.client("s3")
    name = f"reports-{id(s3)}"
    s3.create_bucket(Bucket=name)
    yield name
    valid_report.bucket(s3, name)


@pytest.fixture
def demo_pool(standin):
    return seed_demo_pool(standin, n=USERS, seed=11)


def settings_for(pool_id, bucket):
    return HandlerSettings(
        user_pool_id=pool_id,
        policy_json=demo_policy().to_json(),
        report_bucket=bucket,
        report_prefix="mfa-policy/",
    )


def walk_state_machine(
    standin, settings, mode, *, budget=0.0, replay_each=False, trigger="deploy", sandbox=None
):
    """What the state machine does: take the pool's lock, feed each slice's output to the next
    until done, give the lock back. ``sandbox(attempt)`` may return a DyingSandbox for a slice
    attempt; a slice killed with SliceKilled is run again from the same input, as Step
    Functions retries a slice whose Lambda timed out."""
    s3 = standin.client("s3")
    owner = f"arn:aws:states:us-east-1:123456789012:execution:MfaPolicyRuns:{uuid.uuid4().hex}"
    state = {"mode": mode, "trigger": trigger}
    lock = acquire_run_lock(
        {"action": "acquire_lock", "owner": owner, "run": state}, settings=settings, s3=s3
    )
    assert lock["acquired"], lock
    state["lock"] = lock
    outputs = []
    attempt = 0
    try:
        for _ in range(200):
            attempt += 1
            dying = sandbox(attempt) if sandbox else None
            kwargs = dict(
                settings=settings,
                cognito=dying.wrap(standin.client()) if dying else standin.client(),
                s3=dying.wrap(s3) if dying else s3,
                dynamodb=None,
                time_budget=budget,
            )
            try:
                out = run_slice(state, **kwargs)
            except SliceKilled:
                continue  # Sandbox.Timedout: the same input again
            if replay_each:  # Step Functions retried the task with the same input
                out = run_slice(state, **kwargs)
            json.dumps(out)  # the output must be JSON for Step Functions
            outputs.append(out)
            if out["done"]:
                return outputs
            state = out
        raise AssertionError("the loop did not finish in 200 slices")
    finally:
        release_run_lock({"action": "release_lock", "owner": owner}, settings=settings, s3=s3)


class SliceKilled(BaseException):
    """The Lambda sandbox died (a timeout): no code of the slice runs after it, no except."""


class DyingSandbox:
    """Clients of one slice attempt that die together after ``writes`` accepted MFA writes
    (or just before the next one is sent); every call after that raises SliceKilled."""

    WRITES = ("admin_set_user_mfa_preference", "set_user_mfa_preference")

    def __init__(self, writes: int | None, *, before_send: bool = False, error=SliceKilled):
        self.left = writes
        self.before_send = before_send
        self.error = error
        self.dead = False
        self.lock = threading.Lock()

    def wrap(self, client):
        return _Dying(client, self)

    def _check(self, name, sent):
        with self.lock:
            if self.dead:
                raise self.error("the slice was killed")
            if name not in self.WRITES or self.left is None or sent != (not self.before_send):
                return
            self.left -= 1
            if self.left <= 0:
                self.dead = True
                raise self.error(f"killed {'before' if self.before_send else 'after'} a write")


class _Dying:
    def __init__(self, client, sandbox):
        self._client, self._sandbox = client, sandbox

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("_") or name in ("meta", "exceptions"):
            return attribute

        def call(*args, **kwargs):
            self._sandbox._check(name, sent=False)
            response = attribute(*args, **kwargs)
            self._sandbox._check(name, sent=True)
            return response

        return call


def subs_of(standin, pool_id):
    """Each user's sub (moto's user id), by username: the journal keys users by sub."""
    with standin.lock:
        return {u.username: u.id for u in standin.backend.user_pools[pool_id].users.values()}


def pool_state(standin, pool_id):
    """Each user's MFA state as a report row writes it, read from the stand-in's backend."""
    with standin.lock:
        users = list(standin.backend.user_pools[pool_id].users.values())
        return {
            user.username: {
                "enabled": [
                    name
                    for name, on in (
                        ("totp", user.software_token_mfa_enabled),
                        # SMS MFA through the legacy MFAOptions only is SMS in effect.
                        (
                            "sms",
                            user.sms_mfa_enabled
                            or standin.fidelity.user_flag("legacy_sms", pool_id, user.id),
                        ),
                    )
                    if on
                ],
                "preferred": {"SOFTWARE_TOKEN_MFA": "totp", "SMS_MFA": "sms"}.get(
                    user.preferred_mfa_setting or ""
                ),
            }
            for user in users
        }


def report_rows(standin, uri):
    return [json.loads(line) for line in s3_text(standin, uri, "users.jsonl").splitlines()]


def without_sub(rows):
    return sorted(({k: v for k, v in r.items() if k != "sub"} for r in rows), key=json.dumps)


def s3_text(standin, uri, name):
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    body = standin.client("s3").get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
    return body.decode()


def comparable(rows):
    return sorted(
        (r["username"], r["outcome"], json.dumps(r["before"]), json.dumps(r.get("after")))
        for r in rows
    )


def test_state_machine_loop_migrates_a_pool_larger_than_one_slice(standin, demo_pool, bucket):
    outputs = walk_state_machine(standin, settings_for(demo_pool.pool_id, bucket), "apply")

    assert len(outputs) >= 3
    final = outputs[-1]
    assert final["checkpoint"]["slices"] == len(outputs)
    rows = [
        json.loads(line)
        for line in s3_text(standin, final["report_uri"], "users.jsonl").splitlines()
    ]
    assert len(rows) == USERS
    assert len({r["sub"] for r in rows}) == USERS
    csv_lines = s3_text(standin, final["report_uri"], "users.csv").splitlines()
    assert len(csv_lines) == USERS + 1
    summary = json.loads(s3_text(standin, final["report_uri"], "summary.json"))
    assert summary["complete"] is True
    assert summary["users"] == USERS
    assert "## mfa-policy apply" in s3_text(standin, final["report_uri"], "summary.md")


def test_only_the_first_slice_of_a_run_lists_group_members(standin, demo_pool, bucket):
    outputs = walk_state_machine(standin, settings_for(demo_pool.pool_id, bucket), "drift")

    assert len(outputs) >= 3
    listed = [out["checkpoint"]["counts"]["api_calls"]["list_users_in_group"] for out in outputs]
    assert listed[0] >= 2  # the demo policy names two groups
    assert listed == [listed[0]] * len(outputs)


def test_handlers_reach_the_same_final_state_and_report_as_the_cli(
    standin, demo_pool, bucket, tmp_path
):
    cli_pool = seed_demo_pool(standin, n=USERS, seed=11)  # the same users, another pool

    outputs = walk_state_machine(standin, settings_for(demo_pool.pool_id, bucket), "apply")
    local = run_locally(
        demo_policy(),
        cli_pool.pool_id,
        Mode.APPLY,
        client=standin.client(),
        state_dir=tmp_path / "state",
        report_dir=tmp_path / "report",
    )

    lambda_rows = [
        json.loads(x)
        for x in s3_text(standin, outputs[-1]["report_uri"], "users.jsonl").splitlines()
    ]
    cli_rows = [
        json.loads(x) for x in (tmp_path / "report" / "users.jsonl").read_text().splitlines()
    ]
    assert comparable(lambda_rows) == comparable(cli_rows)
    assert outputs[-1]["counts"] == {
        k: v for k, v in local.summary["counts"]["by_outcome"].items() if v
    }


def test_a_retried_slice_adds_no_duplicate_rows(standin, demo_pool, bucket):
    outputs = walk_state_machine(
        standin, settings_for(demo_pool.pool_id, bucket), "drift", replay_each=True
    )

    rows = s3_text(standin, outputs[-1]["report_uri"], "users.jsonl").splitlines()
    assert len(rows) == USERS


def test_second_apply_through_the_handlers_writes_nothing(standin, demo_pool, bucket):
    settings = settings_for(demo_pool.pool_id, bucket)
    walk_state_machine(standin, settings, "apply", budget=60)
    standin.reset_counters()

    walk_state_machine(standin, settings, "apply", budget=60)

    # Probe results were kept in the bucket between runs, so nobody is probed again.
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0


def test_slice_handler_reads_its_settings_from_the_environment(
    standin, demo_pool, bucket, monkeypatch, tmp_path
):
    settings = settings_for(demo_pool.pool_id, bucket)
    # As the construct deploys it: the policy is a file in the code asset, the environment
    # names the file and the policy's hash only.
    (tmp_path / "policy.json").write_text(settings.policy_json)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    monkeypatch.setenv("AWS_ENDPOINT_URL", standin.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("USER_POOL_ID", settings.user_pool_id)
    monkeypatch.setenv("POLICY_FILE", "policy.json")
    monkeypatch.setenv("POLICY_HASH", demo_policy().hash)
    monkeypatch.setenv("REPORT_BUCKET", bucket)
    context = SimpleNamespace(
        get_remaining_time_in_millis=lambda: 900_000,
        function_name="slice",
        memory_limit_in_mb=512,
        invoked_function_arn="arn:aws:lambda:us-east-1:1:function:slice",
        aws_request_id="req-1",
    )

    out = slice_handler({"mode": "drift", "trigger": "schedule"}, context)

    assert out["done"] is True
    assert out["trigger"] == "schedule"
    assert sum(out["counts"].values()) == USERS


def test_run_metrics_are_one_embedded_metric_per_outcome(capsys):
    from aws_lambda_powertools import Metrics

    emit_run_metrics(
        Metrics(namespace="MfaPolicy", service=""),
        {"mode": "drift", "counts": {"would_change": 3, "blocked": 1}},
        "us-east-1_pool",
    )

    emf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "MfaPolicy"
    assert directive["Dimensions"] == [["UserPoolId", "Mode"]]
    assert (emf["would_change"], emf["blocked"], emf["failed"]) == ([3.0], [1.0], [0.0])
    assert emf["UserPoolId"] == "us-east-1_pool"


def test_settings_from_env_names_what_is_missing():
    with pytest.raises(
        ValueError, match="missing environment variables: POLICY_FILE, REPORT_BUCKET"
    ):
        settings_from_env({"USER_POOL_ID": "p"})


def test_settings_read_the_policy_from_the_asset_and_check_its_hash(tmp_path):
    policy = demo_policy()
    (tmp_path / "policy.json").write_text(policy.to_json())
    env = {
        "USER_POOL_ID": "p",
        "POLICY_FILE": "policy.json",
        "POLICY_HASH": policy.hash,
        "REPORT_BUCKET": "b",
        "LAMBDA_TASK_ROOT": str(tmp_path),
    }
    assert settings_from_env(env).policy_json == policy.to_json()

    with pytest.raises(ValueError, match=rf"is policy {policy.hash}, not 0000 \(POLICY_HASH\)"):
        settings_from_env({**env, "POLICY_HASH": "0000"})
    with pytest.raises(ValueError, match=r"cannot read the policy file .*nope\.json"):
        settings_from_env({**env, "POLICY_FILE": "nope.json"})


def test_settings_from_env_requires_a_table_for_access_tokens():
    env = {
        "USER_POOL_ID": "p",
        "POLICY_FILE": "p.json",
        "REPORT_BUCKET": "b",
        "AUTH": "access-token",
    }
    with pytest.raises(ValueError, match="AUTH=access-token needs TOKEN_TABLE"):
        settings_from_env(env)


# -- the custom resource ----------------------------------------------------------------------

STACK = "arn:aws:cloudformation:us-east-1:123456789012:stack/MfaPolicyExample/3f1c"


def cfn_event(request_type, **props):
    event = {
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider-onEvent",
        "ResponseURL": "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x",
        "StackId": STACK,
        "RequestId": "8f1c2d3e-0000-4000-8000-000000000001",
        "LogicalResourceId": "MfaPolicyRunOnDeploy",
        "ResourceType": "Custom::MfaPolicyRun",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:...",
            "UserPoolId": "us-east-1_x",
            "PolicyHash": "0123456789abcdef",
            "Mode": "apply",
            **props,
        },
    }
    if request_type != "Create":
        event["PhysicalResourceId"] = "mfa-policy-us-east-1_x"
    return event


class FakeStepFunctions:
    """Answers like Step Functions' StartExecution and DescribeExecution."""

    def __init__(self, status="RUNNING", output=None, cause=None):
        self.started = []
        self.status, self.output, self.cause = status, output, cause

    def start_execution(self, stateMachineArn, name, input):
        self.started.append(json.loads(input))
        return {
            "executionArn": f"{stateMachineArn.replace(':stateMachine:', ':execution:')}:{name}",
            "startDate": "2026-11-22T00:00:00Z",
        }

    def describe_execution(self, executionArn):
        out = {"executionArn": executionArn, "status": self.status}
        if self.output is not None:
            out["output"] = json.dumps(self.output)
        if self.cause is not None:
            out["error"], out["cause"] = "PreflightError", self.cause
        return out


@pytest.fixture
def machine_env(monkeypatch):
    monkeypatch.setenv(
        "STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:MfaPolicyRuns"
    )
    monkeypatch.setenv("WAIT_SECONDS", "600")


def test_create_starts_a_run_in_the_mode_the_stack_asks(machine_env):
    sfn = FakeStepFunctions()

    response = deploy_on_event(cfn_event("Create", Mode="drift"), None, sfn=sfn)

    assert sfn.started == [
        {"mode": "drift", "trigger": "deploy", "policy_hash": "0123456789abcdef"}
    ]
    assert response["PhysicalResourceId"] == "mfa-policy-us-east-1_x"
    assert response["Data"]["ExecutionArn"].startswith(
        "arn:aws:states:us-east-1:123456789012:execution:MfaPolicyRuns:deploy-"
    )


def test_update_keeps_the_physical_id_and_starts_a_run(machine_env):
    sfn = FakeStepFunctions()

    response = deploy_on_event(cfn_event("Update"), None, sfn=sfn)

    assert response["PhysicalResourceId"] == "mfa-policy-us-east-1_x"
    assert sfn.started == [
        {"mode": "apply", "trigger": "deploy", "policy_hash": "0123456789abcdef"}
    ]


def test_delete_changes_no_user(machine_env):
    sfn = FakeStepFunctions()

    assert deploy_on_event(cfn_event("Delete"), None, sfn=sfn) == {
        "PhysicalResourceId": "mfa-policy-us-east-1_x"
    }
    assert deploy_is_complete(cfn_event("Delete"), None, sfn=sfn) == {"IsComplete": True}
    assert sfn.started == []


def started_event(started_at):
    return {
        **cfn_event("Create"),
        "PhysicalResourceId": "mfa-policy-us-east-1_x",
        "Data": {
            "ExecutionArn": "arn:aws:states:us-east-1:1:execution:M:deploy-1",
            "StartedAt": str(started_at),
        },
    }


def test_is_complete_returns_counts_and_report_uri_when_the_run_succeeds(machine_env):
    sfn = FakeStepFunctions(
        "SUCCEEDED",
        output={
            "done": True,
            "report_uri": "s3://b/mfa-policy/runs/r1/",
            "counts": {
                "changed": 5,
                "would_change": 0,
                "needs_enrollment": 2,
                "blocked": 1,
                "guarded": 4,
                "failed": 0,
            },
        },
    )

    response = deploy_is_complete(started_event(1000.0), None, sfn=sfn, now=1010.0)

    assert response == {
        "IsComplete": True,
        "Data": {
            "Status": "SUCCEEDED",
            "ReportUri": "s3://b/mfa-policy/runs/r1/",
            "Changed": "5",
            "Drifted": "7",
            "NeedsEnrollment": "2",
            "Blocked": "1",
            "Guarded": "4",
            "Failed": "0",
        },
    }


def test_is_complete_waits_while_the_run_is_within_the_bound(machine_env):
    assert deploy_is_complete(started_event(1000.0), None, sfn=FakeStepFunctions(), now=1300.0) == {
        "IsComplete": False
    }


def test_deploy_stops_waiting_at_the_bound_and_the_run_goes_on(machine_env):
    response = deploy_is_complete(started_event(1000.0), None, sfn=FakeStepFunctions(), now=1600.0)

    assert response["IsComplete"] is True
    assert response["Data"]["Status"] == "RUNNING"


def test_a_failed_run_fails_the_deploy_with_its_message(machine_env):
    cause = json.dumps(
        {
            "errorMessage": "user pool us-east-1_x does not offer totp MFA",
            "errorType": "PreflightError",
        }
    )
    sfn = FakeStepFunctions("FAILED", cause=cause)

    with pytest.raises(
        RuntimeError, match="mfa-policy run failed: user pool us-east-1_x does not offer totp MFA"
    ):
        deploy_is_complete(started_event(1000.0), None, sfn=sfn, now=1010.0)


def test_a_run_for_another_policy_changes_nobody(standin, demo_pool, bucket):
    # CloudFormation rolling back: the run was started for the old policy's hash.
    settings = settings_for(demo_pool.pool_id, bucket)

    out = run_slice(
        {"mode": "apply", "trigger": "deploy", "policy_hash": "0ld0ld0ld0ld0ld0"},
        settings=settings,
        cognito=standin.client(),
        s3=standin.client("s3"),
        dynamodb=None,
        time_budget=60,
    )

    assert out["done"] is True
    assert "started for policy 0ld0ld0ld0ld0ld0" in out["skipped"]
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0
    assert standin.calls.get("ListUsers", 0) == 0


# -- a slice killed or failing after some writes, and retried ---------------------------------


def kill_at_random(rng, kills, chance=0.6):
    """Most slice attempts die after a random number of writes (some just before sending one)."""

    def sandbox(attempt):
        if rng.random() >= chance:
            return None
        sandbox = DyingSandbox(rng.randint(1, 25), before_send=rng.random() < 0.3)
        kills.append(sandbox)
        return sandbox

    return sandbox


@pytest.mark.parametrize("seed", [11, 12])
def test_slices_killed_at_random_points_and_retried_report_what_an_uninterrupted_run_reports(
    standin, bucket, seed
):
    # Given two identical pools, one migrated without a fault
    clean = seed_demo_pool(standin, n=300, seed=26, name=f"clean-{seed}")
    pool = seed_demo_pool(standin, n=300, seed=26, name=f"killed-{seed}")
    clean_rows = report_rows(
        standin,
        walk_state_machine(standin, settings_for(clean.pool_id, bucket), "apply")[-1]["report_uri"],
    )
    before = pool_state(standin, pool.pool_id)
    rng, kills = random.Random(seed), []

    # When its slices die at random points after some writes, and Step Functions retries them
    outputs = walk_state_machine(
        standin, settings_for(pool.pool_id, bucket), "apply", sandbox=kill_at_random(rng, kills)
    )

    # Then the report is the uninterrupted run's, and every user the run changed is in it with
    # the state it had before (what rollback restores) and the state it has now
    killed = [k for k in kills if k.dead]
    assert len(killed) >= 3, "the slices should have been killed after some writes"
    rows = report_rows(standin, outputs[-1]["report_uri"])
    assert without_sub(rows) == without_sub(clean_rows)
    after = pool_state(standin, pool.pool_id)
    assert after == pool_state(standin, clean.pool_id)
    by_user = {r["username"]: r for r in rows}
    changed = {u for u in after if after[u] != before[u]}
    assert changed, "the run should have changed users"
    for username in changed:
        row = by_user[username]
        assert row["outcome"] in ("changed", "needs_enrollment"), row
        assert (row["before"], row["after"]) == (before[username], after[username]), row
    assert all(r["outcome"] != "changed" for r in rows if r["username"] not in changed)


def test_a_page_of_intents_is_in_the_bucket_before_any_of_its_writes(standin, bucket):
    pool = seed_demo_pool(standin, n=150, seed=11, name="journal-order")
    settings = settings_for(pool.pool_id, bucket)
    journal_puts, events = [], []
    lock = threading.Lock()

    def record(operation, body):
        if operation == "AdminSetUserMFAPreference":
            with lock:
                events.append(("write", body["Username"], len(journal_puts)))

    standin.before_request(record)

    class WatchedS3:
        def __init__(self, s3):
            self._s3 = s3

        def __getattr__(self, name):
            return getattr(self._s3, name)

        def put_object(self, **kwargs):
            response = self._s3.put_object(**kwargs)
            if "/journal/" in kwargs["Key"]:
                with lock:
                    journal_puts.append((kwargs["Key"], kwargs["Body"].decode()))
            return response

    state = {"mode": "apply", "trigger": "manual"}
    while True:
        out = run_slice(
            state,
            settings=settings,
            cognito=standin.client(),
            s3=WatchedS3(standin.client("s3")),
            dynamodb=None,
            time_budget=60,
        )
        if out["done"]:
            break
        state = out

    run_id = out["run_id"]
    writes = [e for e in events if e[0] == "write"]
    assert writes, "the run should have written users"
    pages = {key for key, _ in journal_puts}
    # One PUT per page of 60 users, and one for each of the slice's first writes.
    assert len(pages) == 3
    assert 3 < len(journal_puts) <= 3 + early_writes(DEFAULT_WORKERS)
    subs = subs_of(standin, pool.pool_id)
    for _, username, puts_before in writes:
        key = hashlib.sha256(f"{run_id}\0{subs[username]}".encode()).hexdigest()
        durable = "".join(text for _, text in journal_puts[:puts_before])
        assert key in durable, f"{username} was written before its intent was in the bucket"
    everything = "".join(text for _, text in journal_puts)
    assert not any(u in everything for u in pool_state(standin, pool.pool_id)), "raw usernames"


def test_a_slice_that_raises_after_writing_leaves_its_rows_and_journal_and_a_retry_uses_them(
    standin, bucket
):
    clean = seed_demo_pool(standin, n=150, seed=11, name="raise-clean")
    pool = seed_demo_pool(standin, n=150, seed=11, name="raise")
    clean_rows = report_rows(
        standin,
        walk_state_machine(standin, settings_for(clean.pool_id, bucket), "apply", budget=60)[-1][
            "report_uri"
        ],
    )
    settings = settings_for(pool.pool_id, bucket)
    before = pool_state(standin, pool.pool_id)
    state = {"mode": "apply", "trigger": "manual", "run_id": "run-that-raises"}
    failing = DyingSandbox(45, error=RuntimeError)  # past the first page's writes

    # When a slice raises after some writes (an error, not a kill: its own code still runs)
    with pytest.raises(RuntimeError, match="killed"):
        run_slice(
            state,
            settings=settings,
            cognito=failing.wrap(standin.client()),
            s3=standin.client("s3"),
            dynamodb=None,
            time_budget=60,
        )

    # Then the rows of the pages it committed are in its part, and every user it changed is
    # in those rows or in its journal (which page was done when it died depends on timing)
    s3 = standin.client("s3")
    prefix = "mfa-policy/runs/run-that-raises/"
    part = s3.get_object(Bucket=bucket, Key=prefix + "parts/00001.jsonl")["Body"].read().decode()
    part_rows = [json.loads(line) for line in part.splitlines()]
    assert len(part_rows) % 60 == 0  # whole pages only
    now = pool_state(standin, pool.pool_id)
    changed = {u for u, state_now in now.items() if state_now != before[u]}
    assert changed
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="mfa-policy/journal/run-that-raises/")
    journal = "".join(
        s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode()
        for o in listing["Contents"]
    )
    reported = {r["username"]: r for r in part_rows}
    subs = subs_of(standin, pool.pool_id)
    for username in changed:
        key = hashlib.sha256(f"run-that-raises\0{subs[username]}".encode()).hexdigest()
        row = reported.get(username)
        assert key in journal or (row and row["before"] == before[username]), username

    # And the same slice run again (a retry or a redrive) reports them as the clean run does
    while True:
        out = run_slice(
            state,
            settings=settings,
            cognito=standin.client(),
            s3=s3,
            dynamodb=None,
            time_budget=60,
        )
        if out["done"]:
            break
        state = out
    got, want = without_sub(report_rows(standin, out["report_uri"])), without_sub(clean_rows)
    assert [r for r in got if r not in want] == [r for r in want if r not in got]


# -- one run per pool at a time ---------------------------------------------------------------

EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:MfaPolicyRuns:"


def acquire(settings, standin, name, *, now=None, **run):
    return acquire_run_lock(
        {"action": "acquire_lock", "owner": EXECUTION + name, "run": run},
        settings=settings,
        s3=standin.client("s3"),
        now=now,
    )


def release(settings, standin, name):
    return release_run_lock(
        {"action": "release_lock", "owner": EXECUTION + name},
        settings=settings,
        s3=standin.client("s3"),
    )


def run_keys(standin, bucket):
    listing = standin.client("s3").list_objects_v2(Bucket=bucket, Prefix="mfa-policy/runs/")
    return {o["Key"].split("/")[2] for o in listing.get("Contents", [])}


def test_a_scheduled_drift_beside_a_deploy_apply_is_refused_and_changes_nothing(
    standin, demo_pool, bucket
):
    settings = settings_for(demo_pool.pool_id, bucket)
    # Given a deploy's apply that holds the pool and has run its first slice
    lock = acquire(settings, standin, "deploy-1", mode="apply", trigger="deploy")
    assert lock["acquired"]
    first = run_slice(
        {"mode": "apply", "trigger": "deploy", "lock": lock},
        settings=settings,
        cognito=standin.client(),
        s3=standin.client("s3"),
        dynamodb=None,
        time_budget=0,
    )
    assert not first["done"]
    standin.reset_counters()

    # When the daily drift starts beside it
    refused = acquire(settings, standin, "schedule-1", mode="drift", trigger="schedule")

    # Then it is refused, says who holds the pool, and reads, writes and reports nothing
    assert refused["acquired"] is False and refused["wait"] is False
    assert refused["message"].startswith(
        f"user pool {demo_pool.pool_id} is busy: run {lock['run_id']} (apply, started by deploy"
    )
    assert refused["message"].endswith("This drift run (schedule) was not started")
    assert refused["output"]["done"] is True
    assert refused["output"]["skipped"] == refused["message"]
    assert standin.calls == {}
    assert run_keys(standin, bucket) == {lock["run_id"]}
    # Giving back a lock it does not hold changes nothing either
    assert release(settings, standin, "schedule-1") == {"released": False}
    assert acquire(settings, standin, "manual-1", mode="apply")["acquired"] is False

    # And once the apply gives the lock back, the next run takes it
    assert release(settings, standin, "deploy-1") == {"released": True}
    assert acquire(settings, standin, "schedule-2", mode="drift", trigger="schedule")["acquired"]


def test_a_deploy_run_that_finds_the_pool_busy_waits_for_the_lock(standin, demo_pool, bucket):
    settings = settings_for(demo_pool.pool_id, bucket)
    assert acquire(settings, standin, "schedule-1", mode="drift", trigger="schedule")["acquired"]

    waiting = acquire(settings, standin, "deploy-1", mode="apply", trigger="deploy")

    assert waiting["acquired"] is False and waiting["wait"] is True
    assert waiting["message"].endswith(
        "This apply run (deploy) waits for it and starts when the lock is free"
    )


def test_taking_the_lock_again_for_the_same_execution_renews_it(standin, demo_pool, bucket):
    # Step Functions retried the AcquireLock state after the lock was already taken
    settings = settings_for(demo_pool.pool_id, bucket)
    first = acquire(settings, standin, "deploy-1", now=1000.0, mode="apply", trigger="deploy")
    again = acquire(settings, standin, "deploy-1", now=1060.0, mode="apply", trigger="deploy")

    assert again["acquired"] and again["run_id"] == first["run_id"]
    assert acquire(settings, standin, "other", now=1060.0, mode="drift")["acquired"] is False


def test_a_lock_left_by_a_vanished_run_lapses_and_that_run_cannot_write_again(
    standin, demo_pool, bucket
):
    settings = settings_for(demo_pool.pool_id, bucket)
    # Given a run that took the lock and then vanished (stopped by hand: no way out ran)
    gone = acquire(settings, standin, "stopped", now=1000.0, mode="apply", trigger="manual")
    assert acquire(settings, standin, "early", now=1000.0 + 3599, mode="drift")["acquired"] is False

    # When its lease has run out, another run takes the pool
    taken = acquire(settings, standin, "later", now=1000.0 + 3601, mode="drift")
    assert taken["acquired"]

    # Then a slice of the vanished run, were it to come back, stops before touching anyone
    standin.reset_counters()
    with pytest.raises(LockLost, match="this run lost its lock") as lost:
        run_slice(
            {"mode": "apply", "trigger": "manual", "lock": gone},
            settings=settings,
            cognito=standin.client(),
            s3=standin.client("s3"),
            dynamodb=None,
            time_budget=60,
        )
    assert f"run {taken['run_id']} (drift" in str(lost.value)
    assert standin.calls == {}


def test_a_run_past_its_timeout_stops_between_slices_and_keeps_its_rows(standin, demo_pool, bucket):
    settings = HandlerSettings(
        **{**settings_for(demo_pool.pool_id, bucket).__dict__, "run_timeout_seconds": 600}
    )
    lock = acquire(settings, standin, "long", now=1000.0, mode="apply", trigger="manual")
    assert lock["deadline"] == 1600.0
    first = run_slice(
        {"mode": "apply", "trigger": "manual", "lock": lock},
        settings=settings,
        cognito=standin.client(),
        s3=standin.client("s3"),
        dynamodb=None,
        time_budget=0,
        now=1100.0,
    )
    standin.reset_counters()

    with pytest.raises(RunTimedOut, match="reached its run_timeout of 600 seconds after 1 slices"):
        run_slice(
            first,
            settings=settings,
            cognito=standin.client(),
            s3=standin.client("s3"),
            dynamodb=None,
            time_budget=60,
            now=1601.0,
        )

    assert standin.calls == {}
    s3 = standin.client("s3")
    prefix = first["report_uri"].removeprefix(f"s3://{bucket}/")
    part = s3.get_object(Bucket=bucket, Key=prefix + "parts/00001.jsonl")["Body"].read()
    assert len(part.splitlines()) == 60
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert not [o for o in listing["Contents"] if o["Key"].endswith("summary.json")]


def test_lock_events_that_are_malformed_are_refused(standin, demo_pool, bucket):
    settings = settings_for(demo_pool.pool_id, bucket)
    with pytest.raises(InvalidEvent, match="owner must be the execution taking the lock"):
        acquire_run_lock(
            {"action": "acquire_lock", "run": {}}, settings=settings, s3=standin.client("s3")
        )
    with pytest.raises(InvalidEvent, match='mode must be one of drift, apply, got "wipe"'):
        acquire(settings, standin, "x", mode="wipe")
    with pytest.raises(InvalidEvent, match="owner must be the execution"):
        release_run_lock(
            {"action": "release_lock", "owner": 7}, settings=settings, s3=standin.client("s3")
        )


# -- malformed events and foreign checkpoints --------------------------------------------------


def a_checkpoint(pool_id, **changes):
    checkpoint = {
        "run_id": "20261206T000000Z-apply-abcdef",
        "user_pool_id": pool_id,
        "mode": "apply",
        "auth": "admin",
        "policy_hash": demo_policy().hash,
        "started_at": "2026-12-06T00:00:00+00:00",
        "next_page": 1,
        "next_token": "token",
        "slices": 1,
    }
    checkpoint.update(changes)
    return checkpoint


MALFORMED_SLICE_EVENTS = {
    "not an object": (["apply"], "a slice event must be a JSON object, got a list"),
    "unknown mode": ({"mode": "wipe"}, 'mode must be one of drift, apply, got "wipe"'),
    "mode of the wrong type": (
        {"mode": ["apply"]},
        'mode must be one of drift, apply, got ["apply"]',
    ),
    "run id that is a path": ({"run_id": "../../other"}, "run_id must be a run id"),
    "checkpoint that is text": (
        {"checkpoint": "resume"},
        "checkpoint must be an object, got a string",
    ),
    "checkpoint without fields": ({"checkpoint": {}}, "checkpoint.run_id is missing"),
    "checkpoint page of the wrong type": (
        {"checkpoint": {"next_page": "2"}},
        "checkpoint.next_page has the wrong type (a string)",
    ),
    "lock that is not ours": ({"lock": {"owner": ""}}, "lock.owner must be the execution"),
    "trigger with spaces": ({"trigger": "rm -rf"}, "trigger must be a short name"),
}


@pytest.mark.parametrize(
    ("event", "message"), MALFORMED_SLICE_EVENTS.values(), ids=MALFORMED_SLICE_EVENTS.keys()
)
def test_a_malformed_slice_event_is_refused_before_any_call(
    standin, demo_pool, bucket, event, message
):
    standin.reset_counters()  # seeding the pool made calls
    with pytest.raises(InvalidEvent, match="invalid slice event: .*" + re_escape(message)):
        run_slice(
            event,
            settings=settings_for(demo_pool.pool_id, bucket),
            cognito=standin.client(),
            s3=standin.client("s3"),
            dynamodb=None,
            time_budget=60,
        )
    assert standin.calls == {}
    assert run_keys(standin, bucket) == set()


FOREIGN_CHECKPOINTS = {
    "a drift run resumed as an apply": (
        {"mode": "drift"},
        "it is a drift run, and the event asks for apply",
    ),
    "another policy": (
        {"policy_hash": "0123456789abcdef"},
        "it was started with policy 0123456789abcdef, and this function carries policy",
    ),
    "another pool": ({"user_pool_id": "us-east-1_other"}, "it is for user pool us-east-1_other"),
    "another auth": ({"auth": "access-token"}, "it uses access-token auth"),
}


@pytest.mark.parametrize(
    ("changes", "message"), FOREIGN_CHECKPOINTS.values(), ids=FOREIGN_CHECKPOINTS.keys()
)
def test_a_checkpoint_from_another_kind_of_run_is_refused_and_changes_no_user(
    standin, demo_pool, bucket, changes, message
):
    standin.reset_counters()  # seeding the pool made calls
    event = {"mode": "apply", "checkpoint": a_checkpoint(demo_pool.pool_id, **changes)}

    with pytest.raises(
        InvalidEvent,
        match="refusing to resume run 20261206T000000Z-apply-abcdef"
        " from this checkpoint: .*" + re_escape(message),
    ):
        run_slice(
            event,
            settings=settings_for(demo_pool.pool_id, bucket),
            cognito=standin.client(),
            s3=standin.client("s3"),
            dynamodb=None,
            time_budget=60,
        )

    assert standin.calls == {}


def re_escape(text):
    import re

    return re.escape(text)


MALFORMED_CFN_EVENTS = {
    "no request type": (
        {"ResourceProperties": {}},
        "RequestType must be one of Create, Update, Delete",
    ),
    "no properties": ({"RequestType": "Create"}, "ResourceProperties must be an object, got null"),
    "unknown mode": (
        {
            "RequestType": "Create",
            "ResourceProperties": {
                "UserPoolId": "us-east-1_x",
                "PolicyHash": "ab12",
                "Mode": "force",
            },
        },
        'ResourceProperties.Mode must be one of drift, apply, got "force"',
    ),
    "no policy hash": (
        {"RequestType": "Update", "ResourceProperties": {"UserPoolId": "us-east-1_x"}},
        "ResourceProperties.PolicyHash must be set, got null",
    ),
}


@pytest.mark.parametrize(
    ("event", "message"), MALFORMED_CFN_EVENTS.values(), ids=MALFORMED_CFN_EVENTS.keys()
)
def test_a_malformed_deploy_event_starts_no_run(machine_env, event, message):
    sfn = FakeStepFunctions()

    with pytest.raises(InvalidEvent, match=re_escape(message)):
        deploy_on_event(event, None, sfn=sfn)

    assert sfn.started == []


def test_a_delete_with_odd_properties_still_succeeds_and_runs_nothing(machine_env):
    sfn = FakeStepFunctions()
    event = {
        "RequestType": "Delete",
        "PhysicalResourceId": "mfa-policy-us-east-1_x",
        "ResourceProperties": "?",
    }

    assert deploy_on_event(event, None, sfn=sfn) == {"PhysicalResourceId": "mfa-policy-us-east-1_x"}
    assert sfn.started == []


def test_an_update_that_keeps_the_policy_hash_starts_no_run(machine_env):
    # Only the wait (ServiceTimeout) changed: CloudFormation still calls Update.
    sfn = FakeStepFunctions()
    event = cfn_event("Update", ServiceTimeout="900")
    event["OldResourceProperties"] = {**event["ResourceProperties"], "ServiceTimeout": "720"}

    response = deploy_on_event(event, None, sfn=sfn)
    complete = deploy_is_complete({**event, **response}, None, sfn=sfn)

    assert sfn.started == []
    assert response["PhysicalResourceId"] == "mfa-policy-us-east-1_x"
    assert complete["IsComplete"] is True
    assert complete["Data"]["Status"] == "UNCHANGED"
    assert complete["Data"]["Changed"] == "0"


@pytest.mark.parametrize("changed", ["PolicyHash", "Mode", "UserPoolId"])
def test_an_update_that_changes_what_a_run_does_starts_one(machine_env, changed):
    sfn = FakeStepFunctions()
    event = cfn_event("Update")
    old = {"PolicyHash": "fedcba9876543210", "Mode": "drift", "UserPoolId": "us-east-1_old"}
    event["OldResourceProperties"] = {**event["ResourceProperties"], changed: old[changed]}

    deploy_on_event(event, None, sfn=sfn)

    assert len(sfn.started) == 1


def test_is_complete_refuses_an_event_without_its_execution(machine_env):
    with pytest.raises(InvalidEvent, match=r"Data\.ExecutionArn must be the run's execution"):
        deploy_is_complete({**cfn_event("Create"), "Data": {}}, None, sfn=FakeStepFunctions())


def test_of_runs_starting_at_once_exactly_one_takes_the_pool(standin, demo_pool, bucket):
    settings = settings_for(demo_pool.pool_id, bucket)
    results, barrier = {}, threading.Barrier(8)

    def start(name):
        barrier.wait()
        results[name] = acquire(settings, standin, name, mode="drift", trigger="schedule")

    threads = [threading.Thread(target=start, args=(f"run-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r["acquired"] for r in results.values()) == [False] * 7 + [True]


def test_a_plan_applied_under_the_lock_keeps_it_from_slice_to_slice(standin, bucket, tmp_path):
    from mfa_policy.core.plan import plan_from_drift
    from mfa_policy.core.report import LocalReport

    pool = seed_demo_pool(standin, n=200, seed=11, name="plan-lock")
    drift = run_locally(
        demo_policy(),
        pool.pool_id,
        Mode.DRIFT,
        client=standin.client(),
        state_dir=tmp_path / "state",
        report_dir=tmp_path / "drift",
    )
    plan = plan_from_drift(drift.summary, LocalReport(drift.report_dir).rows())
    key = "mfa-policy/plans/reviewed.json"
    standin.client("s3").put_object(Bucket=bucket, Key=key, Body=plan.to_json().encode())
    settings = settings_for(pool.pool_id, bucket)
    lock = acquire(settings, standin, "pipeline-1", mode="apply", trigger="pipeline")

    state = {"mode": "apply", "trigger": "pipeline", "plan_key": key, "lock": lock}
    outputs = []
    while not outputs or not outputs[-1]["done"]:
        outputs.append(
            run_slice(
                state,
                settings=settings,
                cognito=standin.client(),
                s3=standin.client("s3"),
                dynamodb=None,
                time_budget=0,
            )
        )
        state = outputs[-1]

    assert len(outputs) > 1
    assert all(out["lock"]["owner"] == EXECUTION + "pipeline-1" for out in outputs)
    assert outputs[-1]["run_id"] == lock["run_id"]  # the lock names the run whose report it is
    busy = acquire(settings, standin, "schedule-1", mode="drift", trigger="schedule")
    assert f"run {lock['run_id']} (apply, started by pipeline" in busy["message"]


def test_a_killed_slice_that_got_further_than_its_retry_is_still_reported_by_the_next_slices(
    standin, bucket
):
    # The killed attempt ran three pages; its retry stops after one (a shorter time budget),
    # so the next slices, not the retry, meet the users the killed attempt wrote on pages 2-3.
    clean = seed_demo_pool(standin, n=150, seed=11, name="further-clean")
    pool = seed_demo_pool(standin, n=150, seed=11, name="further")
    clean_rows = report_rows(
        standin,
        walk_state_machine(standin, settings_for(clean.pool_id, bucket), "apply")[-1]["report_uri"],
    )
    settings = settings_for(pool.pool_id, bucket)
    state = {"mode": "apply", "trigger": "manual", "run_id": "run-killed-far"}
    dying = DyingSandbox(40)  # past the first page's writes
    with pytest.raises(SliceKilled):
        run_slice(
            state,
            settings=settings,
            cognito=dying.wrap(standin.client()),
            s3=dying.wrap(standin.client("s3")),
            dynamodb=None,
            time_budget=60,
        )
    journal = standin.client("s3").list_objects_v2(
        Bucket=bucket, Prefix="mfa-policy/journal/run-killed-far/"
    )
    assert len(journal["Contents"]) >= 2, "the killed attempt should have journaled two pages"

    while True:
        out = run_slice(
            state,
            settings=settings,
            cognito=standin.client(),
            s3=standin.client("s3"),
            dynamodb=None,
            time_budget=0,
        )
        if out["done"]:
            break
        state = out

    assert out["checkpoint"]["slices"] == 3
    assert without_sub(report_rows(standin, out["report_uri"])) == without_sub(clean_rows)


def test_a_run_resumed_from_its_checkpoint_in_a_new_execution_keeps_its_run_id(
    standin, demo_pool, bucket
):
    settings = settings_for(demo_pool.pool_id, bucket)
    checkpoint = a_checkpoint(demo_pool.pool_id)

    lock = acquire(settings, standin, "redrive", mode="apply", checkpoint=checkpoint)

    assert lock["acquired"] and lock["run_id"] == checkpoint["run_id"]
