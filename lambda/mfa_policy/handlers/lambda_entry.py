"""Lambda entry points: a thin driver over the runner, for Step Functions and CloudFormation.

- ``slice_handler``: one slice of a run (Step Functions loops it until ``done``).
- ``deploy_on_event`` / ``deploy_is_complete``: the custom resource that runs the policy on
  deploy (the CDK Provider framework calls them); deleting the stack changes no user.
- ``changed_user_handler``: an EventBridge rule on CloudTrail's Cognito events calls it to
  re-evaluate (``REALTIME_MODE=drift``) or fix (``apply``) just the user who changed.

Configuration comes from the environment through ``settings_from_env``; clients are built
inside the handlers, never at import.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from mfa_policy.aws.clients import aws_client
from mfa_policy.aws.cloudtrail import DEFAULT_LOOKUPS_PER_SECOND
from mfa_policy.aws.ledger_table import DynamoLedger
from mfa_policy.aws.s3_report import S3File, S3Report
from mfa_policy.aws.tokens import DynamoTokenTable
from mfa_policy.core.engine import Mode
from mfa_policy.core.model import DRIFT_OUTCOMES, Outcome
from mfa_policy.core.policy import policy_from_json
from mfa_policy.handlers.plan_run import run_plan_slice
from mfa_policy.run.changed_users import evaluate_changed, subs_of_event
from mfa_policy.run.runner import ACCESS_TOKEN, ADMIN, execute_slice, new_run_id
from mfa_policy.run.state import Checkpoint, IntentJournal

logger = Logger(service="mfa-policy")

#: The folder that holds the ``mfa_policy`` package: the asset's root in Lambda.
_ASSET_ROOT = Path(__file__).resolve().parents[2]

#: Stop taking new pages this long before the Lambda's own timeout: in-flight pages finish.
SAFETY_MARGIN_SECONDS = 90.0


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


def settings_from_env(env: Mapping[str, str]) -> HandlerSettings:
    missing = [k for k in ("USER_POOL_ID", "POLICY_FILE", "REPORT_BUCKET") if not env.get(k)]
    if missing:
        raise ValueError(f"missing environment variables: {', '.join(missing)}")
    auth = env.get("AUTH", ADMIN)
    if auth not in (ADMIN, ACCESS_TOKEN):
        raise ValueError(f"AUTH must be {ADMIN} or {ACCESS_TOKEN}, got {auth!r}")
    if auth == ACCESS_TOKEN and not env.get("TOKEN_TABLE"):
        raise ValueError("AUTH=access-token needs TOKEN_TABLE")
    return HandlerSettings(
        user_pool_id=env["USER_POOL_ID"],
        policy_json=read_policy_file(env),
        report_bucket=env["REPORT_BUCKET"],
        report_prefix=env.get("REPORT_PREFIX", "mfa-policy/"),
        auth=auth,
        token_table=env.get("TOKEN_TABLE") or None,
        metrics_namespace=env.get("POWERTOOLS_METRICS_NAMESPACE", "MfaPolicy"),
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


def run_slice(
    event: Mapping[str, Any],
    *,
    settings: HandlerSettings,
    cognito: Any,
    s3: Any,
    dynamodb: Any | None,
    time_budget: float,
    cloudtrail: Any | None = None,
) -> dict[str, Any]:
    """One slice: resume from ``event["checkpoint"]`` (or start); take no new page after
    ``time_budget`` seconds (but always at least one). With a ledger table, only users who
    can have changed are read (``event["full"]`` reads everyone)."""
    if event.get("plan_key"):  # a reviewed plan from S3, not a scan of the pool
        return run_plan_slice(
            event, settings=settings, cognito=cognito, s3=s3, time_budget=time_budget
        )
    policy = policy_from_json(settings.policy_json)
    mode = Mode(event.get("mode", Mode.DRIFT.value))
    wanted_hash = event.get("policy_hash")
    if wanted_hash and wanted_hash != policy.hash:
        # CloudFormation rolls a failed update back through the custom resource before the
        # function's own settings: never apply a policy the stack is leaving.
        logger.warning(
            "run skipped: policy changed", extra={"wanted": wanted_hash, "have": policy.hash}
        )
        return {
            "mode": mode.value,
            "trigger": event.get("trigger", "manual"),
            "run_id": "",
            "checkpoint": None,
            "done": True,
            "counts": {},
            "report_uri": "",
            "skipped": f"started for policy {wanted_hash}, but this function carries "
            f"policy {policy.hash}",
        }
    raw_checkpoint = event.get("checkpoint")
    checkpoint = Checkpoint.from_dict(raw_checkpoint) if raw_checkpoint else None
    run_id = checkpoint.run_id if checkpoint else (event.get("run_id") or new_run_id(mode.value))
    work = Path(tempfile.mkdtemp(prefix="mfa-policy-"))
    report = S3Report(
        s3,
        settings.report_bucket,
        settings.report_prefix,
        run_id,
        slice_number=(checkpoint.slices if checkpoint else 0) + 1,
    )
    probe_file = S3File(
        s3,
        settings.report_bucket,
        f"{settings.report_prefix.rstrip('/')}/probes/{settings.user_pool_id}.sqlite".lstrip("/"),
        work / "probes.sqlite",
    )
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
    stop_at = time.monotonic() + time_budget
    checkpoint = execute_slice(
        cognito,
        policy,
        settings.user_pool_id,
        mode=mode,
        report=report,
        probe_db=probe_file.local,
        journal=IntentJournal(work / "intents.jsonl"),
        checkpoint=checkpoint,
        run_id=run_id,
        keep_going=lambda: time.monotonic() < stop_at,
        save_checkpoint=lambda _: None,  # Step Functions carries the checkpoint
        auth=settings.auth,
        tokens=tokens,
        ledger=ledger,
        cloudtrail=cloudtrail if ledger is not None else None,
        full=bool(event.get("full", False)),
        lookups_per_second=settings.lookups_per_second,
    )
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
        "trigger": event.get("trigger", "manual"),
        "run_id": run_id,
        "checkpoint": checkpoint.to_dict(),
        "done": checkpoint.done,
        "counts": by_outcome,
        "report_uri": report.uri,
    }


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
    probe_file = S3File(
        s3,
        settings.report_bucket,
        f"{settings.report_prefix.rstrip('/')}/probes/{settings.user_pool_id}.sqlite".lstrip("/"),
        work / "probes.sqlite",
    )
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


def emit_run_metrics(metrics: Metrics, result: Mapping[str, Any], user_pool_id: str) -> None:
    """One data point per outcome (zeros included, so alarms see the run) when a run ends."""
    metrics.add_dimension(name="UserPoolId", value=user_pool_id)
    metrics.add_dimension(name="Mode", value=result["mode"])
    for outcome in Outcome:
        metrics.add_metric(
            name=outcome.value, unit=MetricUnit.Count, value=result["counts"].get(outcome.value, 0)
        )
    # Cognito's answers and the run's length, from the final checkpoint (a plan run has none).
    checkpoint = result.get("checkpoint") or {}
    counts = checkpoint.get("counts") or {}
    throttled = counts.get("throttled") or {}
    metrics.add_metric(name="throttled", unit=MetricUnit.Count, value=sum(throttled.values()))
    for operation, calls in sorted((counts.get("api_calls") or {}).items()):
        metrics.add_metric(name=f"api_calls_{operation}", unit=MetricUnit.Count, value=calls)
    duration = _run_seconds(checkpoint.get("started_at"), checkpoint.get("ended_at"))
    if duration is not None:
        metrics.add_metric(name="run_duration", unit=MetricUnit.Seconds, value=duration)
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


@logger.inject_lambda_context(log_event=False)
def slice_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = settings_from_env(os.environ)
    event = with_run_id(event)
    # Every log line of this slice names its run (and, with tracing on, the X-Ray trace the
    # Step Functions execution shares).
    logger.append_keys(run_id=run_id_of(event))
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
            Metrics(namespace=settings.metrics_namespace, service=""), result, settings.user_pool_id
        )
    return result


def run_id_of(event: Mapping[str, Any]) -> str | None:
    """The run a slice belongs to: its checkpoint's, its plan state's, or the one it was given."""
    for carrier in (event.get("checkpoint"), event.get("plan_state")):
        if isinstance(carrier, Mapping) and carrier.get("run_id"):
            return str(carrier["run_id"])
    return str(event["run_id"]) if event.get("run_id") else None


def with_run_id(event: dict[str, Any]) -> dict[str, Any]:
    """The event with a run id chosen for a run's first slice, so its logs can name it."""
    if run_id_of(event):
        return event
    run_id = new_run_id(str(event.get("mode", Mode.DRIFT.value)))
    if event.get("plan_key"):
        return {**event, "plan_state": {**(event.get("plan_state") or {}), "run_id": run_id}}
    return {**event, "run_id": run_id}


# -- the custom resource: run on deploy ------------------------------------------------------


def deploy_on_event(event: dict[str, Any], context: Any, *, sfn: Any = None) -> dict[str, Any]:
    """Create/Update start a run (the properties hold the policy hash, so CloudFormation only
    calls Update when the policy's meaning changed); Delete changes no user."""
    physical_id = event.get("PhysicalResourceId") or (
        f"mfa-policy-{event['ResourceProperties'].get('UserPoolId', 'pool')}"
    )
    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": physical_id}
    props = event["ResourceProperties"]
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
                {
                    "mode": props.get("Mode", Mode.APPLY.value),
                    "trigger": "deploy",
                    "policy_hash": props.get("PolicyHash"),
                }
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
    if event["RequestType"] == "Delete":
        return {"IsComplete": True}
    data = event.get("Data") or {}
    sfn = sfn or aws_client("stepfunctions")
    execution = sfn.describe_execution(executionArn=data["ExecutionArn"])
    status = execution["status"]
    if status == "SUCCEEDED":
        output = json.loads(execution.get("output") or "{}")
        status = "SKIPPED" if output.get("skipped") else status
        return {"IsComplete": True, "Data": attributes_of(output, status)}
    if status in ("FAILED", "TIMED_OUT", "ABORTED"):
        cause = execution.get("cause") or execution.get("error") or status
        raise RuntimeError(f"mfa-policy run {status.lower()}: {_short_cause(cause)}")
    waited = (now if now is not None else time.time()) - float(data.get("StartedAt", 0))
    if waited >= float(os.environ.get("WAIT_SECONDS", "0")):
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
