"""A reviewed plan applied by the state machine: a pipeline's approval step between drift and
apply uploads the plan under the report prefix and starts a run with
``{"mode": "apply", "plan_key": "<prefix>plans/....json"}``.

The plan is applied in slices like any run (the state machine loops until ``done``); the
position in the plan and the counts travel in ``plan_state``. A retried slice re-reads its users:
one it already changed is ``compliant`` ("already as planned"), so nothing is sent twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mfa_policy.aws.gateway import CognitoGateway
from mfa_policy.aws.s3_report import S3Report
from mfa_policy.core.plan import PlanError, plan_from_json
from mfa_policy.core.policy import policy_from_json
from mfa_policy.core.report import Counts
from mfa_policy.run.plan_apply import PAGE, apply_changes, is_stale, plan_summary
from mfa_policy.run.runner import new_run_id, now_iso, rate_limiter_for

if TYPE_CHECKING:
    from mfa_policy.handlers.lambda_entry import HandlerSettings


def run_plan_slice(
    event: Mapping[str, Any],
    *,
    settings: HandlerSettings,
    cognito: Any,
    s3: Any,
    time_budget: float,
) -> dict[str, Any]:
    """Apply the next pages of the plan at ``event["plan_key"]``; at least one page a slice."""
    key = str(event["plan_key"])
    if event.get("mode", "apply") != "apply":
        raise PlanError(f"a plan is applied by an apply run, not a {event.get('mode')} run")
    if not key.startswith(settings.report_prefix):
        raise PlanError(
            f"plan_key {key!r} is outside the report prefix {settings.report_prefix!r}; "
            f"upload plans under it (e.g. {settings.report_prefix}plans/)"
        )
    source = f"s3://{settings.report_bucket}/{key}"
    body = s3.get_object(Bucket=settings.report_bucket, Key=key)["Body"].read()
    plan = plan_from_json(body.decode("utf-8"), source=source)
    policy = policy_from_json(settings.policy_json)
    plan.check_fits(settings.user_pool_id, policy.hash)

    state = dict(event.get("plan_state") or {})
    run_id = str(state.get("run_id") or new_run_id("apply"))
    offset = int(state.get("offset", 0))
    slices = int(state.get("slices", 0)) + 1
    counts = Counts.from_dict(state.get("counts") or {})
    stale = int(state.get("stale", 0))
    started_at = str(state.get("started_at") or now_iso())
    report = S3Report(
        s3, settings.report_bucket, settings.report_prefix, run_id, slice_number=slices
    )
    gateway = CognitoGateway(cognito, settings.user_pool_id, limiter=rate_limiter_for(policy))
    stop_at = time.monotonic() + time_budget
    first = True
    while offset < len(plan.changes) and (first or time.monotonic() < stop_at):
        rows = apply_changes(gateway, plan.changes[offset : offset + PAGE])
        report.append(rows)
        for row in rows:
            counts.add_row(row)
        stale += sum(1 for row in rows if is_stale(row))
        offset += len(rows)
        first = False
    gateway.counters.drain_into(counts)
    done = offset >= len(plan.changes)
    if done:
        report.finish(
            plan_summary(
                plan,
                source,
                run_id=run_id,
                policy_hash=policy.hash,
                started_at=started_at,
                counts=counts,
                report_uri=report.uri,
                stale=stale,
                slices=slices,
            )
        )
    else:
        report.flush_part()
    return {
        "mode": "apply",
        "trigger": event.get("trigger", "manual"),
        "plan_key": key,
        "run_id": run_id,
        "plan_state": {
            "run_id": run_id,
            "offset": offset,
            "slices": slices,
            "counts": counts.to_dict(),
            "stale": stale,
            "started_at": started_at,
        },
        "done": done,
        "counts": {k: v for k, v in counts.by_outcome.items() if v},
        "report_uri": report.uri,
    }
