"""Lambda entry points: a thin driver over the runner, for Step Functions and CloudFormation.

- ``slice_handler``: one slice of a run (Step Functions loops it until ``done``); with
  ``{"action": "acquire_lock" | "release_lock"}`` it takes or gives back the pool's run lock,
  which the state machine holds around the slices so that one run per pool goes at a time.
- ``deploy_on_event`` / ``deploy_is_complete``: the custom resource that runs the policy on
  deploy (the CDK Provider framework calls them); deleting the stack changes no user.
- ``changed_user_handler``: an EventBridge rule on CloudTrail's Cognito events calls it to
  re-evaluate (``REALTIME_MODE=drift``) or fix (``apply``) just the user who changed.

Every event is checked before anything is read or written: a malformed one raises
``InvalidEvent`` (its message lists every problem) and changes no user. Configuration comes
from the environment through ``settings_from_env``; clients are built inside the handlers,
never at import.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from mfa_policy.aws.clients import aws_client
from mfa_policy.aws.cloudtrail import DEFAULT_LOOKUPS_PER_SECOND
from mfa_policy.aws.ledger_table import DynamoLedger
from mfa_policy.aws.s3_lock import S3Lock
from mfa_policy.aws.s3_report import S3File, S3JournalPages, S3Object, S3Report
from mfa_policy.aws.tokens import DynamoTokenTable
from mfa_policy.core.engine import Mode
from mfa_policy.core.model import DRIFT_OUTCOMES, RULE_METRIC_OUTCOMES, Outcome
from mfa_policy.core.policy import Policy, policy_from_json
from mfa_policy.exceptions import MfaPolicyError, RunError
from mfa_policy.handlers.plan_run import run_plan_slice
from mfa_policy.run.changed_users import evaluate_changed, subs_of_event
from mfa_policy.run.runner import ACCESS_TOKEN, ADMIN, execute_slice, new_run_id
from mfa_policy.run.state import Checkpoint, IntentJournal, Journal, StoredIntentJournal

logger = Logger(service="mfa-policy")

#: The folder that holds the ``mfa_policy`` package: the asset's root in Lambda.
_ASSET_ROOT = Path(__file__).resolve().parents[2]

#: Stop taking new pages this long before the Lambda's own timeout: in-flight pages finish.
SAFETY_MARGIN_SECONDS = 90.0
#: Triggers whose run waits for a busy pool instead of being refused: a deploy's policy must
#: land, while a scheduled or manual run can come again later.
WAITING_TRIGGERS = frozenset({"deploy"})

MODES = tuple(m.value for m in Mode)
#: Run ids and triggers end up in S3 keys and execution names: letters, digits, ``._-``.
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class InvalidEvent(MfaPolicyError, ValueError):
    """An event this function cannot act on; nothing was read or written."""


class RunTimedOut(RunError):
    """The run reached its ``run_timeout``; it stopped at a slice boundary."""


@dataclass(frozen=True)
class HandlerSettings:
    user_pool_id: str
    policy_json: str
    report_bucket: str
    report_prefix: str = "mfa-policy/"
    auth: str = ADMIN
    token_table: str | None = None
    metrics_namespace: str = "MfaPolicy"
    #: The state ledger's DynamoDB table; None reads every user on every run.
    ledger_table: str | None = None
    #: CloudTrail allows about 2 LookupEvents a second per account and Region.
    lookups_per_second: float = DEFAULT_LOOKUPS_PER_SECOND
    #: How long a run may take, from taking the lock; None: no limit but the state machine's.
    run_timeout_seconds: float | None = None

    def state_key(self, name: str) -> str:
        """The bucket key of a state object, next to the reports."""
        return f"{self.report_prefix.rstrip('/')}/{name}".lstrip("/")

    def lock(self, s3: Any, **kwargs: Any) -> S3Lock:
        """The pool's run lock: one object per pool."""
        return S3Lock(
            s3, self.report_bucket, self.state_key(f"locks/{self.user_pool_id}.json"), **kwargs
        )

    def probe_file(self, s3: Any, work: Path) -> S3File:
        """The pool's probe memory, kept in the bucket and used from ``work``."""
        return S3File(
            s3,
            self.report_bucket,
            self.state_key(f"probes/{self.user_pool_id}.sqlite"),
            work / "probes.sqlite",
        )


def settings_from_env(env: Mapping[str, str]) -> HandlerSettings:
    missing = [k for k in ("USER_POOL_ID", "POLICY_FILE", "REPORT_BUCKET") if not env.get(k)]
    if missing:
        raise ValueError(f"missing environment variables: {', '.join(missing)}")
    auth = env.get("AUTH", ADMIN)
    if auth not in (ADMIN, ACCESS_TOKEN):
        raise ValueError(f"AUTH must be {ADMIN} or {ACCESS_TOKEN}, got {auth!r}")
    if auth == ACCESS_TOKEN and not env.get("TOKEN_TABLE"):
        raise ValueError("AUTH=access-token needs TOKEN_TABLE")
    run_timeout: float | None = None
    if env.get("RUN_TIMEOUT_SECONDS"):
        try:
            run_timeout = float(env["RUN_TIMEOUT_SECONDS"])
        except ValueError:
            run_timeout = -1.0
        if not 0 < run_timeout < float("inf"):
            raise ValueError(
                f"RUN_TIMEOUT_SECONDS must be a positive number, got {env['RUN_TIMEOUT_SECONDS']!r}"
            )
    return HandlerSettings(
        user_pool_id=env["USER_POOL_ID"],
        policy_json=read_policy_file(env),
        report_bucket=env["REPORT_BUCKET"],
        report_prefix=env.get("REPORT_PREFIX", "mfa-policy/"),
        auth=auth,
        token_table=env.get("TOKEN_TABLE") or None,
        metrics_namespace=env.get("POWERTOOLS_METRICS_NAMESPACE", "MfaPolicy"),
        run_timeout_seconds=run_timeout,
        ledger_table=env.get("LEDGER_TABLE") or None,
        lookups_per_second=float(
            env.get("CLOUDTRAIL_LOOKUPS_PER_SECOND") or DEFAULT_LOOKUPS_PER_SECOND
        ),
    )


def read_policy_file(env: Mapping[str, str]) -> str:
    """The policy the construct put in the code asset (``POLICY_FILE``, relative to the task
    root), checked against ``POLICY_HASH`` when that is set: the template carries only the hash."""
    path = Path(env["POLICY_FILE"])
    if not path.is_absolute():
        path = Path(env.get("LAMBDA_TASK_ROOT") or _ASSET_ROOT) / path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the policy file {path}: {exc.strerror}") from exc
    expected = env.get("POLICY_HASH")
    if expected and policy_from_json(text).hash != expected:
        raise ValueError(
            f"the policy file {path} is policy {policy_from_json(text).hash}, "
            f"not {expected} (POLICY_HASH)"
        )
    return text


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunLock:
    """The lock a run's execution holds, as the state machine carries it from slice to slice."""

    owner: str
    run_id: str
    deadline: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"owner": self.owner, "run_id": self.run_id, "deadline": self.deadline}

    def seconds_left(self, now: float) -> float | None:
        return None if self.deadline is None else self.deadline - now


@dataclass(frozen=True)
class SliceEvent:
    mode: Mode
    trigger: str
    policy_hash: str | None
    run_id: str | None
    checkpoint: Checkpoint | None
    lock: RunLock | None
    #: Read every user, whatever the ledger knows.
    full: bool = False


def parse_slice_event(event: object) -> SliceEvent:
    """The fields a slice acts on, each checked; every problem is reported at once."""
    if not isinstance(event, Mapping):
        raise InvalidEvent(
            f"invalid slice event: a slice event must be a JSON object, got {_kind(event)}"
        )
    problems: list[str] = []
    mode = event.get("mode", Mode.DRIFT.value)
    if mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, got {_shown(mode)}")
    trigger = event.get("trigger", "manual")
    if not (isinstance(trigger, str) and _NAME.match(trigger)):
        problems.append(
            f"trigger must be a short name (letters, digits, ._-), got {_shown(trigger)}"
        )
    policy_hash = event.get("policy_hash")
    if policy_hash is not None and not (isinstance(policy_hash, str) and _NAME.match(policy_hash)):
        problems.append(f"policy_hash must be a policy hash, got {_shown(policy_hash)}")
    run_id = event.get("run_id") or None
    if run_id is not None and not (isinstance(run_id, str) and _NAME.match(run_id)):
        problems.append(f"run_id must be a run id (letters, digits, ._-), got {_shown(run_id)}")
    checkpoint = _checkpoint_of(event.get("checkpoint"), problems)
    lock = _lock_of(event.get("lock"), problems)
    full = event.get("full", False)
    if not isinstance(full, bool):
        problems.append(f"full must be true or false, got {_shown(full)}")
    if problems:
        raise InvalidEvent("invalid slice event: " + "; ".join(problems))
    return SliceEvent(Mode(mode), trigger, policy_hash, run_id, checkpoint, lock, full)


#: Checkpoint fields and the JSON types a checkpoint this function wrote has in them.
_CHECKPOINT_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "user_pool_id": (str,),
    "mode": (str,),
    "auth": (str,),
    "policy_hash": (str,),
    "started_at": (str,),
    "next_page": (int,),
    "next_token": (str, type(None)),
    "done": (bool,),
    "ended_at": (str, type(None)),
    "counts": (dict,),
    "warnings": (list,),
    "report_uri": (str,),
    "report": (dict,),
    "slices": (int,),
    "month": (str,),
    "ledger": (dict,),
}
_REQUIRED_CHECKPOINT = ("run_id", "user_pool_id", "mode", "auth", "policy_hash", "started_at")


def _checkpoint_of(raw: object, problems: list[str]) -> Checkpoint | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append(f"checkpoint must be an object, got {_kind(raw)}")
        return None
    before = len(problems)
    for name in _REQUIRED_CHECKPOINT:
        if name not in raw:
            problems.append(f"checkpoint.{name} is missing")
    for name, types in _CHECKPOINT_TYPES.items():
        value = raw.get(name)
        if name in raw and (
            not isinstance(value, types) or (bool in types) != isinstance(value, bool)
        ):
            problems.append(f"checkpoint.{name} has the wrong type ({_kind(value)})")
        elif isinstance(value, int) and not isinstance(value, bool) and value < 0:
            problems.append(f"checkpoint.{name} must not be negative, got {value}")
    run_id = raw.get("run_id")
    if isinstance(run_id, str) and not _NAME.match(run_id):
        problems.append(f"checkpoint.run_id must be a run id, got {_shown(run_id)}")
    if len(problems) > before:
        return None
    known = {f.name for f in fields(Checkpoint)}
    return Checkpoint.from_dict({k: v for k, v in raw.items() if k in known})


def _lock_of(raw: object, problems: list[str]) -> RunLock | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append(f"lock must be an object, got {_kind(raw)}")
        return None
    owner, run_id, deadline = raw.get("owner"), raw.get("run_id"), raw.get("deadline")
    if not (isinstance(owner, str) and owner):
        problems.append(f"lock.owner must be the execution holding the lock, got {_shown(owner)}")
    if not (isinstance(run_id, str) and _NAME.match(run_id)):
        problems.append(f"lock.run_id must be a run id, got {_shown(run_id)}")
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, int | float)
    ):
        problems.append(f"lock.deadline must be a time in seconds, got {_shown(deadline)}")
    if not (isinstance(owner, str) and isinstance(run_id, str)) or problems:
        return None
    return RunLock(owner, run_id, float(deadline) if deadline is not None else None)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _shown(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse_foreign_checkpoint(
    checkpoint: Checkpoint, slice_event: SliceEvent, settings: HandlerSettings, policy: Policy
) -> None:
    """A checkpoint is resumed only by the run that made it: same pool, mode, auth, policy."""
    cp = checkpoint
    problems = []
    if cp.user_pool_id != settings.user_pool_id:
        problems.append(
            f"it is for user pool {cp.user_pool_id}, and this function governs "
            f"{settings.user_pool_id}"
        )
    if cp.mode != slice_event.mode.value:
        problems.append(f"it is a {cp.mode} run, and the event asks for {slice_event.mode.value}")
    if cp.policy_hash != policy.hash:
        problems.append(
            f"it was started with policy {cp.policy_hash}, and this function carries policy "
            f"{policy.hash}"
        )
    if cp.auth != settings.auth:
        problems.append(f"it uses {cp.auth} auth, and this function uses {settings.auth}")
    for name, other in (
        ("run_id", slice_event.run_id),
        ("lock.run_id", slice_event.lock and slice_event.lock.run_id),
    ):
        if other and other != cp.run_id:
            problems.append(f"the event's {name} is {other}")
    if problems:
        raise InvalidEvent(
            f"refusing to resume run {cp.run_id} from this checkpoint: "
            + "; ".join(problems)
            + "; nothing was read or written. Start a new run"
        )


# -- one slice ---------------------------------------------------------------------------------


def run_slice(
    event: Mapping[str, Any],
    *,
    settings: HandlerSettings,
    cognito: Any,
    s3: Any,
    dynamodb: Any | None,
    time_budget: float,
    now: float | None = None,
    cloudtrail: Any | None = None,
) -> dict[str, Any]:
    """One slice: resume from ``event["checkpoint"]`` (or start); take no new page after
    ``time_budget`` seconds (but always at least one). With a ledger table, only users who
    can have changed are read (``event["full"]`` reads everyone)."""
    slice_event = parse_slice_event(event)
    passed_on = {"lock": slice_event.lock.to_dict()} if slice_event.lock else {}
    clock = time.time() if now is None else now
    if event.get("plan_key"):  # a reviewed plan from S3, not a scan of the pool
        if slice_event.lock is not None:
            settings.lock(s3, clock=lambda: clock).renew(slice_event.lock.owner)
            left = slice_event.lock.seconds_left(clock)
            if left is not None and left <= 0:
                raise RunTimedOut(
                    f"run {slice_event.lock.run_id} reached its run_timeout and stopped between "
                    "two slices of its plan; start a new run with the plan to finish it"
                )
            time_budget = min(time_budget, left) if left is not None else time_budget
            if not event.get("plan_state"):  # the plan's report goes under the lock's run id
                event = {**event, "plan_state": {"run_id": slice_event.lock.run_id}}
        result = run_plan_slice(
            event, settings=settings, cognito=cognito, s3=s3, time_budget=time_budget
        )
        return {**result, **passed_on}
    policy = policy_from_json(settings.policy_json)
    mode = slice_event.mode
    wanted_hash = slice_event.policy_hash
    if wanted_hash and wanted_hash != policy.hash:
        # CloudFormation rolls a failed update back through the custom resource before the
        # function's own settings: never apply a policy the stack is leaving.
        logger.warning(
            "run skipped: policy changed", extra={"wanted": wanted_hash, "have": policy.hash}
        )
        return {
            "mode": mode.value,
            "trigger": slice_event.trigger,
            "run_id": "",
            "checkpoint": None,
            "done": True,
            "counts": {},
            "report_uri": "",
            "skipped": f"started for policy {wanted_hash}, but this function carries "
            f"policy {policy.hash}",
            **passed_on,
        }
    checkpoint = slice_event.checkpoint
    if checkpoint is not None:
        _refuse_foreign_checkpoint(checkpoint, slice_event, settings, policy)
    run_id = (
        checkpoint.run_id
        if checkpoint
        else slice_event.run_id
        or (slice_event.lock.run_id if slice_event.lock else None)
        or new_run_id(mode.value)
    )
    report = S3Report(
        s3,
        settings.report_bucket,
        settings.report_prefix,
        run_id,
        slice_number=(checkpoint.slices if checkpoint else 0) + 1,
    )
    if slice_event.lock is not None:
        # Renewed before anything else: a run whose lease ran out while another run took the
        # pool stops here, before it reads or writes anyone.
        settings.lock(s3, clock=lambda: clock).renew(slice_event.lock.owner, run_id)
        left = slice_event.lock.seconds_left(clock)
        if left is not None and left <= 0:
            raise _timed_out(report, checkpoint, run_id, settings)
        time_budget = min(time_budget, left) if left is not None else time_budget
    work = Path(tempfile.mkdtemp(prefix="mfa-policy-"))
    probe_file = settings.probe_file(s3, work)
    probe_file.download()
    tokens = (
        DynamoTokenTable(dynamodb, settings.token_table)
        if settings.auth == ACCESS_TOKEN and settings.token_table
        else None
    )
    ledger = (
        DynamoLedger(dynamodb, settings.ledger_table, settings.user_pool_id)
        if settings.ledger_table and dynamodb is not None
        else None
    )
    pages = S3JournalPages(s3, settings.report_bucket, settings.report_prefix, run_id)
    journal: Journal = IntentJournal(work / "intents.jsonl")  # drift writes nobody
    if mode is Mode.APPLY:
        # In the bucket, not in /tmp: a slice killed after some writes is run again from the
        # same checkpoint, and must find what it was about to write.
        journal = StoredIntentJournal(
            pages, run_id=run_id, first_page=checkpoint.next_page if checkpoint else 0
        )
    stop_at = time.monotonic() + time_budget
    try:
        checkpoint = execute_slice(
            cognito,
            policy,
            settings.user_pool_id,
            mode=mode,
            report=report,
            probe_db=probe_file.local,
            journal=journal,
            checkpoint=checkpoint,
            run_id=run_id,
            keep_going=lambda: time.monotonic() < stop_at,
            save_checkpoint=lambda _: None,  # Step Functions carries the checkpoint
            auth=settings.auth,
            tokens=tokens,
            ledger=ledger,
            cloudtrail=cloudtrail if ledger is not None else None,
            full=slice_event.full,
            lookups_per_second=settings.lookups_per_second,
            group_snapshot=S3Object(
                s3, settings.report_bucket, settings.state_key(f"groups/{run_id}.json")
            ),
        )
    except Exception:
        _leave_behind(report, pages, run_id)
        raise
    if not checkpoint.done:
        report.flush_part()
    if mode is Mode.APPLY:
        probe_file.upload()
    by_outcome = {k: v for k, v in checkpoint.counts.get("by_outcome", {}).items() if v}
    logger.info(
        "slice finished",
        extra={
            "run_id": run_id,
            "mode": mode.value,
            "slice": checkpoint.slices,
            "done": checkpoint.done,
            "counts": by_outcome,
        },
    )
    return {
        "mode": mode.value,
        "trigger": slice_event.trigger,
        "run_id": run_id,
        "checkpoint": checkpoint.to_dict(),
        "done": checkpoint.done,
        "counts": by_outcome,
        "report_uri": report.uri,
        **passed_on,
    }


def _leave_behind(report: S3Report, pages: S3JournalPages, run_id: str) -> None:
    """A slice that raised keeps what it did: the rows of its committed pages go up as its
    part (a retry of the slice overwrites it), and its journal is already in the bucket. Its
    probe results are not kept: a retry probes those users again, as after a kill, so that
    its report reads as an uninterrupted run's. A failure here must not hide the slice's own."""
    try:
        report.flush_part()
    except Exception:  # logged; the slice's own error is the one raised
        logger.exception("could not upload the failed slice's rows", extra={"run_id": run_id})
    logger.error(
        "slice failed",
        extra={"run_id": run_id, "rows": report.uri + "parts/", "intents": pages.uri},
    )


def _timed_out(
    report: S3Report, checkpoint: Checkpoint | None, run_id: str, settings: HandlerSettings
) -> RunTimedOut:
    """No summary: a summary is written only when the last user is reported. The rows of the
    slices so far stay in the report's parts."""
    slices = checkpoint.slices if checkpoint else 0
    limit = settings.run_timeout_seconds
    return RunTimedOut(
        f"run {run_id} reached its run_timeout"
        + (f" of {limit:g} seconds" if limit else "")
        + f" after {slices} slices and stopped between two slices; the rows it reported are "
        f"in {report.uri}parts/. Start a new run to finish the pool"
    )


# -- the run lock -------------------------------------------------------------------------------


def acquire_run_lock(
    event: Mapping[str, Any], *, settings: HandlerSettings, s3: Any, now: float | None = None
) -> dict[str, Any]:
    """``{"action": "acquire_lock", "owner": <execution>, "run": <the run's input>}``.

    Answers ``{"acquired": true, "owner", "run_id", "deadline"}`` (the run then carries it as
    ``lock``), or ``{"acquired": false, "wait", "message", "output"}`` when another run holds
    the pool: a deploy's run waits for it, any other run ends with ``output`` (``skipped``).
    """
    owner = event.get("owner")
    problems = []
    if not (isinstance(owner, str) and owner):
        problems.append(f"owner must be the execution taking the lock, got {_shown(owner)}")
    run = event.get("run", {})
    if not isinstance(run, Mapping):
        problems.append(f"run must be the run's input object, got {_kind(run)}")
        run = {}
    try:
        slice_event = parse_slice_event({k: v for k, v in run.items() if k != "lock"})
    except InvalidEvent as exc:
        problems.append(str(exc))
    if problems:
        raise InvalidEvent("invalid acquire_lock event: " + "; ".join(problems))
    assert isinstance(owner, str)
    clock = time.time() if now is None else now
    mode = slice_event.mode.value
    # A run resumed from its checkpoint in a new execution keeps its id.
    run_id = (
        slice_event.checkpoint.run_id
        if slice_event.checkpoint
        else slice_event.run_id or new_run_id(mode)
    )
    lock = settings.lock(s3, clock=lambda: clock)
    acquired, holder = lock.acquire(owner, run_id=run_id, mode=mode, trigger=slice_event.trigger)
    if acquired:
        timeout = settings.run_timeout_seconds
        logger.info("run lock taken", extra={"run_id": holder.run_id, "lock": lock.uri})
        return {
            "acquired": True,
            "owner": owner,
            "run_id": holder.run_id,
            "deadline": holder.acquired_at + timeout if timeout else None,
        }
    wait = slice_event.trigger in WAITING_TRIGGERS
    message = (
        f"user pool {settings.user_pool_id} is busy: {holder.describe()}. This "
        f"{mode} run ({slice_event.trigger}) "
        + ("waits for it and starts when the lock is free" if wait else "was not started")
    )
    logger.warning(message, extra={"lock": lock.uri})
    return {
        "acquired": False,
        "wait": wait,
        "message": message,
        "output": {
            "mode": mode,
            "trigger": slice_event.trigger,
            "run_id": "",
            "checkpoint": None,
            "done": True,
            "counts": {},
            "report_uri": "",
            "skipped": message,
        },
    }


def release_run_lock(
    event: Mapping[str, Any], *, settings: HandlerSettings, s3: Any
) -> dict[str, Any]:
    """``{"action": "release_lock", "owner": <execution>, "run": <the run's state>}``: give the
    lock back if ``owner`` holds it (``run`` only names the run in the log)."""
    owner = event.get("owner")
    if not (isinstance(owner, str) and owner):
        raise InvalidEvent(
            f"invalid release_lock event: owner must be the execution, got {_shown(owner)}"
        )
    released = settings.lock(s3).release(owner)
    logger.info(
        "run lock released" if released else "run lock was not held", extra={"owner": owner}
    )
    return {"released": released}


def evaluate_event(
    event: Mapping[str, Any],
    *,
    settings: HandlerSettings,
    mode: Mode,
    cognito: Any,
    s3: Any,
    dynamodb: Any,
) -> list[dict[str, Any]]:
    """The rows for the user a CloudTrail event (through EventBridge) names; [] for others."""
    if not settings.ledger_table:
        raise ValueError("changed-user evaluation needs the state ledger (LEDGER_TABLE)")
    subs = subs_of_event(event, settings.user_pool_id)
    if not subs:
        return []
    work = Path(tempfile.mkdtemp(prefix="mfa-policy-"))
    probe_file = settings.probe_file(s3, work)
    probe_file.download()
    rows = evaluate_changed(
        cognito,
        policy_from_json(settings.policy_json),
        settings.user_pool_id,
        subs,
        mode=mode,
        ledger=DynamoLedger(dynamodb, settings.ledger_table, settings.user_pool_id),
        probe_db=probe_file.local,
    )
    if mode is Mode.APPLY:
        probe_file.upload()
    return rows


@logger.inject_lambda_context(log_event=False)
def changed_user_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = settings_from_env(os.environ)
    mode = Mode(os.environ.get("REALTIME_MODE", Mode.DRIFT.value))
    rows = evaluate_event(
        event,
        settings=settings,
        mode=mode,
        cognito=aws_client("cognito-idp"),
        s3=aws_client("s3"),
        dynamodb=aws_client("dynamodb"),
    )
    for row in rows:  # usernames are masked in rows; no attribute or token is in one
        logger.info(
            "changed user evaluated",
            extra={
                "event": (event.get("detail") or {}).get("eventName"),
                "sub": row["sub"],
                "outcome": row["outcome"],
                "reason": row["reason"],
                "request": row["request"],
            },
        )
    return {"mode": mode.value, "users": len(rows), "outcomes": [r["outcome"] for r in rows]}


def emit_run_metrics(
    metrics: Metrics, result: Mapping[str, Any], user_pool_id: str, rules: Sequence[str] = ()
) -> None:
    """One data point per outcome (zeros included, so alarms see the run) when a run ends, and
    per rule of ``rules`` (the policy's) the outcomes of ``RULE_METRIC_OUTCOMES``."""
    metrics.add_dimension(name="UserPoolId", value=user_pool_id)
    metrics.add_dimension(name="Mode", value=result["mode"])
    for outcome in Outcome:
        metrics.add_metric(
            name=outcome.value, unit=MetricUnit.Count, value=result["counts"].get(outcome.value, 0)
        )
    # Cognito's answers and the run's length, from the final checkpoint (or a plan's state).
    checkpoint = result.get("checkpoint") or {}
    counts = checkpoint.get("counts") or (result.get("plan_state") or {}).get("counts") or {}
    throttled = counts.get("throttled") or {}
    metrics.add_metric(name="throttled", unit=MetricUnit.Count, value=sum(throttled.values()))
    metrics.add_metric(
        name="hedged_reads", unit=MetricUnit.Count, value=counts.get("hedged_reads", 0)
    )
    for operation, calls in sorted((counts.get("api_calls") or {}).items()):
        metrics.add_metric(name=f"api_calls_{operation}", unit=MetricUnit.Count, value=calls)
    duration = _run_seconds(checkpoint.get("started_at"), checkpoint.get("ended_at"))
    if duration is not None:
        metrics.add_metric(name="run_duration", unit=MetricUnit.Seconds, value=duration)
    metrics.flush_metrics()
    # One document per rule, flushed on its own: {UserPoolId, Mode, Rule} and three metrics
    # each, however many rules the policy has (EMF allows 100 metrics and 30 dimensions a
    # document). The {UserPoolId, Mode} metrics above, which the alarms watch, stay as they are.
    by_rule = counts.get("by_rule") or {}
    for rule in rules:
        metrics.add_dimension(name="UserPoolId", value=user_pool_id)
        metrics.add_dimension(name="Mode", value=result["mode"])
        metrics.add_dimension(name="Rule", value=rule)
        for outcome in RULE_METRIC_OUTCOMES.get(result["mode"], ()):
            metrics.add_metric(
                name=outcome.value,
                unit=MetricUnit.Count,
                value=(by_rule.get(rule) or {}).get(outcome.value, 0),
            )
        metrics.flush_metrics()


def _run_seconds(started_at: str | None, ended_at: str | None) -> float | None:
    from datetime import datetime

    if not started_at or not ended_at:
        return None
    try:
        return (
            datetime.fromisoformat(ended_at) - datetime.fromisoformat(started_at)
        ).total_seconds()
    except ValueError:
        return None


_LOCK_ACTIONS = {"acquire_lock": acquire_run_lock, "release_lock": release_run_lock}


# clear_state: a warm container must not carry the last invocation's run and execution over.
@logger.inject_lambda_context(log_event=False, clear_state=True)
def slice_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = settings_from_env(os.environ)
    action = event.get("action") if isinstance(event, Mapping) else None
    if action is not None:
        if action not in _LOCK_ACTIONS:
            raise InvalidEvent(
                f"action must be one of {', '.join(_LOCK_ACTIONS)}, got {_shown(action)}"
            )
        # The lock's owner is the execution taking or giving it back.
        logger.append_keys(**_log_keys(event.get("owner"), event.get("run")))
        return _LOCK_ACTIONS[action](event, settings=settings, s3=aws_client("s3"))
    event, execution = slice_state_of(event)
    if isinstance(event, Mapping):  # anything else is refused by run_slice, naming the problem
        event = with_run_id(event)
        # Every log line of this slice names its run and the Step Functions execution.
        logger.append_keys(**_log_keys(execution, event))
    result = run_slice(
        event,
        settings=settings,
        cognito=aws_client("cognito-idp"),
        s3=aws_client("s3"),
        dynamodb=aws_client("dynamodb") if settings.token_table or settings.ledger_table else None,
        time_budget=context.get_remaining_time_in_millis() / 1000 - SAFETY_MARGIN_SECONDS,
        cloudtrail=aws_client("cloudtrail") if settings.ledger_table else None,
    )
    if result["done"]:
        # service="" keeps Powertools from adding a service dimension: the construct's metrics
        # and alarms address exactly {UserPoolId, Mode}.
        emit_run_metrics(
            Metrics(namespace=settings.metrics_namespace, service=""),
            result,
            settings.user_pool_id,
            rules=[rule.name for rule in policy_from_json(settings.policy_json).rules],
        )
    return result


def slice_state_of(event: Any) -> tuple[Any, str | None]:
    """The state machine invokes a slice with ``{"execution": <its ARN>, "run": <the state>}``;
    invoked by hand, the event is the state itself (and no execution runs it)."""
    if isinstance(event, Mapping) and set(event) == {"execution", "run"}:
        execution = event["execution"]
        if not (isinstance(execution, str) and execution):
            raise InvalidEvent(
                f"execution must be the Step Functions execution, got {_shown(execution)}"
            )
        return event["run"], execution
    return event, None


def _log_keys(execution: object, run: object) -> dict[str, str]:
    """What every log line of an invocation names: its execution and its run, where known."""
    keys = {"execution": execution} if isinstance(execution, str) and execution else {}
    run_id = run_id_of(run) if isinstance(run, Mapping) else None
    return {**keys, **({"run_id": run_id} if run_id else {})}


def run_id_of(event: Mapping[str, Any]) -> str | None:
    """The run a slice belongs to: its checkpoint's, its plan state's, or the one it was given."""
    for carrier in (event.get("checkpoint"), event.get("plan_state")):
        if isinstance(carrier, Mapping) and carrier.get("run_id"):
            return str(carrier["run_id"])
    if event.get("run_id"):
        return str(event["run_id"])
    lock = event.get("lock")  # the first slice of a run takes the id its lock was taken for
    return str(lock["run_id"]) if isinstance(lock, Mapping) and lock.get("run_id") else None


def with_run_id(event: dict[str, Any]) -> dict[str, Any]:
    """The event with a run id chosen for a run's first slice, so its logs can name it."""
    if run_id_of(event):
        return event
    run_id = new_run_id(str(event.get("mode", Mode.DRIFT.value)))
    if event.get("plan_key"):
        return {**event, "plan_state": {**(event.get("plan_state") or {}), "run_id": run_id}}
    return {**event, "run_id": run_id}


# -- the custom resource: run on deploy ------------------------------------------------------


#: The custom resource's properties that say what a deploy's run does: an Update that changes
#: none of them (only the provider's token or the wait, say) starts no run.
RUN_PROPERTIES = ("UserPoolId", "PolicyHash", "Mode")
REQUEST_TYPES = ("Create", "Update", "Delete")


def _request_type(event: object) -> str:
    if not isinstance(event, Mapping):
        raise InvalidEvent(f"a CloudFormation event must be a JSON object, got {_kind(event)}")
    request_type = event.get("RequestType")
    if request_type not in REQUEST_TYPES:
        raise InvalidEvent(
            f"RequestType must be one of {', '.join(REQUEST_TYPES)}, got {_shown(request_type)}"
        )
    return str(request_type)


def _run_properties(event: Mapping[str, Any], key: str = "ResourceProperties") -> dict[str, str]:
    props = event.get(key)
    if not isinstance(props, Mapping):
        raise InvalidEvent(f"{key} must be an object, got {_kind(props)}; no run was started")
    problems = []
    for name in ("UserPoolId", "PolicyHash"):
        value = props.get(name)
        if not (isinstance(value, str) and _NAME.match(value)):
            problems.append(f"{key}.{name} must be set, got {_shown(value)}")
    mode = props.get("Mode", Mode.APPLY.value)
    if mode not in MODES:
        problems.append(f"{key}.Mode must be one of {', '.join(MODES)}, got {_shown(mode)}")
    if problems:
        raise InvalidEvent("; ".join(problems) + "; no run was started")
    return {"UserPoolId": props["UserPoolId"], "PolicyHash": props["PolicyHash"], "Mode": mode}


def deploy_on_event(event: dict[str, Any], context: Any, *, sfn: Any = None) -> dict[str, Any]:
    """Create/Update start a run (the properties hold the policy hash, so CloudFormation only
    calls Update when the policy's meaning changed, or the mode or pool did; an Update that
    changes none of those starts none); Delete changes no user."""
    request_type = _request_type(event)
    if request_type == "Delete":
        # Whatever else the event holds: deleting the stack must never be blocked, nor run.
        physical_id = event.get("PhysicalResourceId")
        return {"PhysicalResourceId": physical_id if isinstance(physical_id, str) else "mfa-policy"}
    props = _run_properties(event)
    physical_id = event.get("PhysicalResourceId")
    if not isinstance(physical_id, str) or not physical_id:
        physical_id = f"mfa-policy-{props['UserPoolId']}"
    if request_type == "Update":
        old = event.get("OldResourceProperties")
        if isinstance(old, Mapping) and all(
            old.get(name, Mode.APPLY.value if name == "Mode" else None) == props[name]
            for name in RUN_PROPERTIES
        ):
            logger.info("no run: the policy, mode and pool are unchanged", extra=props)
            return {"PhysicalResourceId": physical_id, "Data": {"Unchanged": "true"}}
    sfn = sfn or aws_client("stepfunctions")
    machine = os.environ["STATE_MACHINE_ARN"]
    # Named after the CloudFormation request: a retried request names the same execution, and
    # Step Functions refuses a second one, so a retry never starts a second run.
    name = deploy_execution_name(event)
    try:
        execution_arn = sfn.start_execution(
            stateMachineArn=machine,
            name=name,
            input=json.dumps(
                {"mode": props["Mode"], "trigger": "deploy", "policy_hash": props["PolicyHash"]}
            ),
        )["executionArn"]
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") != "ExecutionAlreadyExists":
            raise
        execution_arn = f"{machine.replace(':stateMachine:', ':execution:')}:{name}"
        logger.info("run already started for this request", extra={"execution": execution_arn})
    else:
        logger.info("run started on deploy", extra={"execution": execution_arn})
    return {
        "PhysicalResourceId": physical_id,
        "Data": {"ExecutionArn": execution_arn, "StartedAt": str(time.time())},
    }


def deploy_execution_name(event: Mapping[str, Any]) -> str:
    """``deploy-<CloudFormation RequestId>``: at most 80 characters, of those names allow."""
    request = "".join(c for c in str(event.get("RequestId", "")) if c.isalnum() or c in "-_")
    if not request:
        return f"deploy-{int(time.time())}"
    return f"deploy-{request}"[:80]


def deploy_is_complete(
    event: dict[str, Any], context: Any, *, sfn: Any = None, now: float | None = None
) -> dict[str, Any]:
    """Done when the run ends, or when the deploy has waited ``WAIT_SECONDS`` (the run goes on)."""
    if _request_type(event) == "Delete":
        return {"IsComplete": True}
    data = event.get("Data") or {}
    if isinstance(data, Mapping) and data.get("Unchanged") == "true":
        return {"IsComplete": True, "Data": attributes_of({}, "UNCHANGED")}
    arn = data.get("ExecutionArn") if isinstance(data, Mapping) else None
    if not (isinstance(arn, str) and arn.startswith("arn:")):
        raise InvalidEvent(f"Data.ExecutionArn must be the run's execution, got {_shown(arn)}")
    try:
        started_at = float(data.get("StartedAt", 0))
    except (TypeError, ValueError):
        raise InvalidEvent(
            f"Data.StartedAt must be a time in seconds, got {_shown(data.get('StartedAt'))}"
        ) from None
    sfn = sfn or aws_client("stepfunctions")
    execution = sfn.describe_execution(executionArn=arn)
    status = execution["status"]
    if status == "SUCCEEDED":
        output = json.loads(execution.get("output") or "{}")
        status = "SKIPPED" if output.get("skipped") else status
        attributes = attributes_of(output, status)
        logger.info(
            "the deploy's run finished",
            extra={"execution": arn, "run_id": output.get("run_id") or None, **attributes},
        )
        return {"IsComplete": True, "Data": attributes}
    if status in ("FAILED", "TIMED_OUT", "ABORTED"):
        cause = execution.get("cause") or execution.get("error") or status
        message = f"mfa-policy run {status.lower()}: {_short_cause(cause)}"
        logger.error(message, extra={"execution": arn, "status": status})
        raise RuntimeError(message)
    waited = (now if now is not None else time.time()) - started_at
    if waited >= float(os.environ.get("WAIT_SECONDS", "0")):
        logger.info(
            "the deploy stops waiting; its run goes on",
            extra={"execution": arn, "waited_seconds": round(waited)},
        )
        return {"IsComplete": True, "Data": attributes_of({}, "RUNNING")}
    return {"IsComplete": False}


def attributes_of(output: Mapping[str, Any], status: str) -> dict[str, str]:
    """The custom resource's attributes: small counts and where the report is."""
    counts = output.get("counts", {})
    drifted = sum(counts.get(o.value, 0) for o in DRIFT_OUTCOMES)
    return {
        "Status": status,
        "ReportUri": output.get("report_uri", ""),
        "Changed": str(counts.get(Outcome.CHANGED.value, 0)),
        "Drifted": str(drifted),
        "NeedsEnrollment": str(counts.get(Outcome.NEEDS_ENROLLMENT.value, 0)),
        "Blocked": str(counts.get(Outcome.BLOCKED.value, 0)),
        "Guarded": str(counts.get(Outcome.GUARDED.value, 0)),
        "Failed": str(counts.get(Outcome.FAILED.value, 0)),
    }


def _short_cause(cause: str) -> str:
    """Step Functions wraps a Lambda error as JSON; show its message."""
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause[:500]
    return str(parsed.get("errorMessage") or parsed)[:500] if isinstance(parsed, dict) else cause
