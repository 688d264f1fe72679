"""The `MfaPolicy` construct: keep a Cognito user pool's per-user MFA preferences under a policy.

What it creates:

* a Python Lambda function that runs one *slice* of a run (drift or apply) and returns a
  checkpoint; a Step Functions state machine loops it until the run is done, so a pool of any
  size finishes across many invocations, holding the pool's run lock (a lease in the report
  bucket) so that one run per pool goes at a time;
* a custom resource that starts a run on every deploy whose policy (or mode, or pool) changed,
  waits for it up to a bound, and exposes the run's counts and report location as attributes;
* an EventBridge rule that starts a drift run on a schedule;
* an S3 bucket for reports (unless one is given), CloudWatch alarms on drift and on failures.

The policy file is validated at synth with the parser the runtime uses: a bad file fails
`cdk synth` with every problem listed, and nothing is deployed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import jsii
from aws_cdk import Annotations, CustomResource, Duration, RemovalPolicy, Token
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from aws_cdk import custom_resources as cr

from constructs import Construct, IValidation
from mfa_policy.aws.cloudtrail import STATE_CHANGING_EVENTS
from mfa_policy.core.model import RULE_METRIC_OUTCOMES, Factor, Outcome
from mfa_policy.core.policy import Policy
from mfa_policy.core.policy_file import load_policy_file
from mfa_policy_cdk import _assets, _nag

#: The default ``drift_schedule``: one drift run a day. ``None`` turns scheduled drift off.
DAILY: Final[events.Schedule] = events.Schedule.rate(Duration.days(1))
#: The default ``wait_for_completion``.
DEFAULT_WAIT_FOR_COMPLETION: Final = Duration.minutes(10)
#: The slice function's memory, from the CPU a slice needs at the full quota (see below).
SLICE_MEMORY_MB = 1024

#: The default ``run_timeout``.
DEFAULT_RUN_TIMEOUT: Final = Duration.hours(24)
#: The default ``report_retention``.
DEFAULT_REPORT_RETENTION: Final = Duration.days(365)

#: CloudWatch namespace the runtime emits its per-run outcome counts to.
METRIC_NAMESPACE: Final = "MfaPolicy"
#: Every outcome a user can get in a run; each is a metric name.
OUTCOMES: Final[tuple[str, ...]] = tuple(outcome.value for outcome in Outcome)
RUN_MODES: Final[tuple[str, ...]] = ("drift", "apply")
#: The dashboard draws a line per rule for this many of the policy's rules (CloudWatch allows
#: 500 metrics a graph and 2,500 a dashboard; beyond 100 lines a graph is unreadable anyway).
DASHBOARD_RULES: Final = 100

#: The Provider framework gives up after 1 hour; keep 5 minutes for the last poll and the reply.
MAX_WAIT_FOR_COMPLETION: Final = Duration.minutes(50)
#: Step Functions Standard workflows run for at most one year.
MAX_RUN_TIMEOUT: Final = Duration.days(365)
MIN_RUN_TIMEOUT: Final = Duration.minutes(1)

_S3_ACCESS_LOGS_USE_BUCKET_POLICY = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"
_PROVIDER_MARGIN = Duration.minutes(5)
_QUERY_INTERVAL = Duration.seconds(30)
_ALARM_PERIOD = Duration.hours(1)

# Users are read with AdminGetUserAuthFactors (no MAU); AdminGetUser stays granted as the
# fallback where the newer operation is not available.
_ADMIN_ACTIONS = (
    "cognito-idp:ListUsers",
    "cognito-idp:ListUsersInGroup",
    "cognito-idp:GetUserPoolMfaConfig",
    "cognito-idp:DescribeUserPool",
    "cognito-idp:AdminGetUserAuthFactors",
    "cognito-idp:AdminGetUser",
    "cognito-idp:AdminSetUserMFAPreference",
)
# Access-token mode reads and writes each user with that user's own token (GetUserAuthFactors,
# SetUserMFAPreference), which IAM does not govern; only the pool-level calls need IAM.
_ACCESS_TOKEN_ACTIONS = (
    "cognito-idp:ListUsers",
    "cognito-idp:ListUsersInGroup",
    "cognito-idp:GetUserPoolMfaConfig",
    "cognito-idp:DescribeUserPool",
)
_TOKEN_TABLE_ACTIONS = ("dynamodb:BatchGetItem",)
#: A run is stopped at its first slice boundary past ``run_timeout`` (and gives its lock back);
#: the state machine's own timeout, this much later, only backs that up.
_RUN_TIMEOUT_BACKSTOP = Duration.minutes(20)
#: How often a deploy's run that found the pool busy tries the lock again.
_LOCK_POLL = Duration.minutes(1)


class MfaPolicy(Construct):
    """Apply an MFA policy file to every user of a Cognito user pool, and report drift.

    :param scope: the parent construct.
    :param id: the construct id.
    :param user_pool: the user pool the policy governs. IAM permissions are scoped to this pool.
        When it is a ``UserPool`` defined in this app, the second factors it offers are checked
        against the policy at synth.
    :param policy_file: the policy file (YAML or JSON), read and validated at synth. A file that
        does not validate raises ``mfa_policy.exceptions.PolicyError`` listing every problem with
        its path and line.
    :param apply_on_deploy: whether a deploy that changes the policy applies it (``True``) or
        only reports drift (``False``). Either way a run starts only when the policy's meaning or
        this mode changed; deleting the stack changes no user. Default: ``True``
    :param drift_schedule: when to run a scheduled drift report; ``None`` turns it off.
        Default: ``DAILY`` (``Schedule.rate(Duration.days(1))``)
    :param report_bucket: the bucket runs write their reports (and enrollment probe memory) to.
        Default: - a new encrypted, versioned, TLS-only bucket with public access blocked, a
        lifecycle rule and server access logging to a second bucket; both are retained when the
        stack is deleted
    :param report_prefix: the key prefix under which reports are written; empty or ending in
        ``/``. The functions can read and write only under it. Default: ``"mfa-policy/"``
    :param report_retention: how long reports stay in the bucket this construct creates (not
        used with ``report_bucket``); ``None`` keeps them forever. Default: ``Duration.days(365)``
    :param token_table: a DynamoDB table of users' access tokens (partition key ``username``,
        attribute ``access_token``). When given, runs use access-token auth: users are read and
        written with their own tokens and the function gets no ``Admin*`` permission, only
        ``dynamodb:BatchGetItem`` on this table (no Scan or Query, which would read every
        token). Default: - admin auth (IAM and ``Admin*`` calls)
    :param ledger: whether runs keep the state ledger (each user's last observed MFA state,
        kept current from CloudTrail's Event history) and read only users who can have changed.
        ``AdminGetUser`` makes every user it reads a billable MAU, so without the ledger a daily
        drift bills the whole pool every month. Event history needs no trail; the function
        gets ``cloudtrail:LookupEvents``, which has no resource-level permissions (``*``).
        Default: ``True``
    :param ledger_table: the ledger's DynamoDB table (partition key ``pool``, sort key ``sub``,
        both strings). Default: - a new on-demand table, encrypted, with point-in-time
        recovery, retained when the stack is deleted
    :param realtime: ``"drift"`` re-evaluates, and ``"apply"`` fixes, just the user a
        CloudTrail event says changed, within about a minute of the change, through an
        EventBridge rule on Cognito's CloudTrail events. It needs a CloudTrail trail with
        logging enabled in the account and Region (EventBridge receives "AWS API Call via
        CloudTrail" events only from a trail; the Event history the ledger reads needs none),
        the ledger, and admin auth. Default: ``None`` (the scheduled drift only)
    :param wait_for_completion: how long a deploy waits for its run before it finishes; the run
        goes on in the background past this bound and the attributes then describe it as still
        running. ``None`` or zero does not wait. At most 50 minutes (the custom resource
        framework gives up after 1 hour). Default: ``Duration.minutes(10)``
    :param run_timeout: how long one run (all its slices) may take, from taking the pool's
        lock: past it the run stops between two slices, gives the lock back and fails with
        ``RunTimedOut`` (the state machine's own timeout, 20 minutes later, backs this up).
        Between 1 minute and 365 days. Default: ``Duration.hours(24)``
    :param alarm_on_drift: whether to create ``drift_alarm``: users ``would_change`` in a drift
        run, the drift apply can fix (users who must enrol have the enrollment backlog alarm).
        Default: ``True``
    :param alarm_on_failures: whether to create ``failure_alarm``: users ``failed`` in any run,
        or a run that failed or timed out. Default: ``True``
    :param alarm_on_enrollment_backlog: whether to create ``enrollment_backlog_alarm``: more
        than ``enrollment_backlog_threshold`` users of a drift run ``needs_enrollment`` (users who
        must verify an authenticator themselves; apply cannot fix them). Default: ``False``
    :param enrollment_backlog_threshold: users allowed to wait for enrollment before
        ``enrollment_backlog_alarm`` fires. Default: ``0``
    :param alarm_actions: actions every alarm takes when it goes into ALARM. Default: - none
    :param notification_topic: an SNS topic every alarm notifies (ALARM and OK), and that
        receives an event when a run finishes (succeeded, failed, timed out or aborted).
        Default: - none
    :param dashboard: whether to create ``dashboard``, a CloudWatch dashboard of the runs:
        outcomes of drift and apply runs over time, the enrollment backlog, Cognito throttles,
        run duration, failed runs. Default: ``False``
    :param removal_policy: what happens to the buckets this construct creates when the stack
        is deleted or they leave it. Default: ``RemovalPolicy.RETAIN`` (reports are audit
        evidence)
    :param log_retention: how long the functions', state machines' and framework's logs are
        kept. Default: ``RetentionDays.ONE_YEAR``
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        user_pool: cognito.IUserPool,
        policy_file: str | Path,
        apply_on_deploy: bool = True,
        drift_schedule: events.Schedule | None = DAILY,
        report_bucket: s3.IBucket | None = None,
        report_prefix: str = "mfa-policy/",
        report_retention: Duration | None = DEFAULT_REPORT_RETENTION,
        token_table: dynamodb.ITable | None = None,
        ledger: bool = True,
        ledger_table: dynamodb.ITable | None = None,
        realtime: str | None = None,
        wait_for_completion: Duration | None = DEFAULT_WAIT_FOR_COMPLETION,
        run_timeout: Duration = DEFAULT_RUN_TIMEOUT,
        alarm_on_drift: bool = True,
        alarm_on_failures: bool = True,
        alarm_on_enrollment_backlog: bool = False,
        enrollment_backlog_threshold: int = 0,
        alarm_actions: Sequence[cloudwatch.IAlarmAction] = (),
        notification_topic: sns.ITopic | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        dashboard: bool = False,
    ) -> None:
        super().__init__(scope, id)
        # Log delivery to the access-logs bucket through a bucket policy, not ACLs, whatever the
        # app's feature flags say (ACLs clash with BUCKET_OWNER_ENFORCED).
        self.node.set_context(_S3_ACCESS_LOGS_USE_BUCKET_POLICY, True)

        # All validation precedes all resource creation: a rejected configuration adds nothing.
        policy = load_policy_file(policy_file)
        wait_seconds = _validate_props(
            wait_for_completion=wait_for_completion,
            run_timeout=run_timeout,
            report_prefix=report_prefix,
        )
        _check_pool_offers_factors(user_pool, policy)
        if realtime is not None:
            if realtime not in ("drift", "apply"):
                raise ValueError(f"realtime must be 'drift', 'apply' or None, not {realtime!r}")
            if not ledger:
                raise ValueError("realtime needs the ledger (ledger=True)")
            if token_table is not None:
                raise ValueError("realtime works with admin auth only; drop token_table")
        mode = "apply" if apply_on_deploy else "drift"
        slice_env = _slice_environment(
            policy=policy,
            user_pool=user_pool,
            report_prefix=report_prefix,
            token_table=token_table,
            run_timeout=run_timeout,
        )

        self._user_pool = user_pool
        self._policy = policy
        self._report_prefix = report_prefix
        self._log_retention = log_retention
        # cdk-nag findings this construct accepts, acknowledged together at the end.
        self._nag_findings: list[_nag.Finding] = []

        self._removal_policy = removal_policy
        self._report_bucket = report_bucket or self._create_report_bucket(report_retention)
        slice_env["REPORT_BUCKET"] = self._report_bucket.bucket_name
        self._layer = _assets.powertools_layer(self, "PowertoolsLayer")
        # The policy travels inside the code asset (policy.json), never in the template or the
        # functions' environment: no 4 KB cap, and no usernames or attribute values in clear
        # text in CloudFormation or the Lambda configuration.
        self._code = _assets.code(policy)

        self._function = self._new_function(
            "Function",
            handler=_assets.SLICE_HANDLER,
            description="mfa-policy: runs one slice of a drift or apply run",
            environment=slice_env,
            # Measured (README, Benchmarks): about 3.3 ms of CPU per user in drift, 7 in apply,
            # nearly all in botocore, so a slice at Cognito's full read quota (120/s) needs
            # about 0.4 vCPU. Lambda gives 1 vCPU per 1,769 MB: 1,024 MB is 0.58 vCPU (512 MB,
            # 0.29 vCPU, would make a slice CPU-bound at full quota).
            memory_size=SLICE_MEMORY_MB,
            timeout=Duration.minutes(15),
        )
        self._grant_pool_access(token_table)
        self._nag_findings += self._grant_reports(self._function, write=True)
        self._ledger_table = (ledger_table or self._create_ledger_table()) if ledger else None
        if self._ledger_table is not None:
            self._use_ledger(self._ledger_table)
        self._changed_user_function = (
            self._create_realtime(realtime, slice_env) if realtime is not None else None
        )

        self._state_machine = self._create_state_machine(run_timeout)
        self._run = self._create_deploy_run(mode=mode, wait_seconds=wait_seconds)

        if drift_schedule is not None:
            events.Rule(
                self,
                "DriftSchedule",
                description="mfa-policy: scheduled drift report",
                schedule=drift_schedule,
                targets=[
                    targets.SfnStateMachine(
                        self._state_machine,
                        input=events.RuleTargetInput.from_object(
                            {"mode": "drift", "trigger": "schedule"}
                        ),
                    )
                ],
            )

        actions: list[cloudwatch.IAlarmAction] = list(alarm_actions)
        if notification_topic is not None:
            actions.append(cw_actions.SnsAction(notification_topic))
        self._drift_alarm = self._create_drift_alarm(actions) if alarm_on_drift else None
        self._failure_alarm = self._create_failure_alarm(actions) if alarm_on_failures else None
        self._backlog_alarm = (
            self._create_backlog_alarm(actions, enrollment_backlog_threshold)
            if alarm_on_enrollment_backlog
            else None
        )
        if notification_topic is not None:
            for alarm in (self._drift_alarm, self._failure_alarm, self._backlog_alarm):
                if alarm is not None:
                    alarm.add_ok_action(cw_actions.SnsAction(notification_topic))
            self._notify_run_finished(notification_topic)

        self._dashboard = self._create_dashboard() if dashboard else None

        # The pool may be changed after this construct is made (its MFA turned OFF, a factor
        # dropped): check again when the app is synthesized.
        self.node.add_validation(_PoolOffersFactors(user_pool, policy))

        for warning in policy.warnings:
            Annotations.of(self).add_warning_v2("mfa-policy:policyWarning", warning)
        _nag.acknowledge(self._nag_findings)

    # ------------------------------------------------------------------ properties

    @property
    def function(self) -> lambda_.Function:
        """The Lambda function that runs one slice of a run."""
        return self._function

    @property
    def state_machine(self) -> sfn.StateMachine:
        """The state machine that runs a whole run; start it with ``{"mode", "trigger"}``."""
        return self._state_machine

    @property
    def report_bucket(self) -> s3.IBucket:
        """The bucket reports are written to (given or created)."""
        return self._report_bucket

    @property
    def report_prefix(self) -> str:
        """The key prefix reports are written under."""
        return self._report_prefix

    @property
    def user_pool(self) -> cognito.IUserPool:
        """The user pool the policy governs."""
        return self._user_pool

    @property
    def policy(self) -> Policy:
        """The validated policy, as the runtime will read it."""
        return self._policy

    @property
    def policy_hash(self) -> str:
        """Identifies the policy's meaning; a deploy starts a run only when it changes."""
        return self._policy.hash

    @property
    def drift_alarm(self) -> cloudwatch.Alarm | None:
        """In ALARM when a drift run found users to fix; ``None`` if ``alarm_on_drift=False``."""
        return self._drift_alarm

    @property
    def dashboard(self) -> cloudwatch.Dashboard | None:
        """The runs' CloudWatch dashboard; ``None`` unless ``dashboard=True``."""
        return self._dashboard

    @property
    def enrollment_backlog_alarm(self) -> cloudwatch.Alarm | None:
        """In ALARM when a drift run found more users waiting to enrol than the threshold."""
        return self._backlog_alarm

    @property
    def failure_alarm(self) -> cloudwatch.Alarm | None:
        """In ALARM when users failed or a run failed; ``None`` if ``alarm_on_failures=False``."""
        return self._failure_alarm

    @property
    def run_report_uri(self) -> str:
        """``s3://bucket/prefix/runs/<run_id>/`` of the run the last deploy started."""
        return self._run.get_att_string("ReportUri")

    @property
    def run_status(self) -> str:
        """Status of the deploy's run when the deploy finished (e.g. SUCCEEDED, RUNNING)."""
        return self._run.get_att_string("Status")

    @property
    def run_changed(self) -> str:
        """Users the deploy's run changed (apply), as a string token."""
        return self._run.get_att_string("Changed")

    @property
    def run_drifted(self) -> str:
        """Users not compliant in the deploy's run (would_change, needs_enrollment, blocked,
        guarded)."""
        return self._run.get_att_string("Drifted")

    @property
    def run_failed(self) -> str:
        """Users that failed in the deploy's run."""
        return self._run.get_att_string("Failed")

    @property
    def run_needs_enrollment(self) -> str:
        """Users of the deploy's run who must verify a TOTP token before it can be set."""
        return self._run.get_att_string("NeedsEnrollment")

    @property
    def run_blocked(self) -> str:
        """Users of the deploy's run missing an attribute a factor needs (phone, email)."""
        return self._run.get_att_string("Blocked")

    @property
    def run_guarded(self) -> str:
        """Users of the deploy's run whose change the guard refused (it would remove their last
        factor, or otherwise lower their protection); apply cannot fix them."""
        return self._run.get_att_string("Guarded")

    # ------------------------------------------------------------------ grants

    def grant_start_run(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` start runs (``states:StartExecution`` on this state machine only).

        Start a run with input ``{"mode": "drift" | "apply", "trigger": "manual"}``.
        """
        return self._state_machine.grant_start_execution(grantee)

    def grant_read_reports(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` (auditors) read run reports: ``s3:GetObject`` under the report prefix
        and listing it; no write, no other key."""
        prefix = self._report_prefix
        grant = self._report_bucket.grant_read(grantee, f"{prefix}runs/*")
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:ListBucket"],
            resource_arns=[self._report_bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{prefix}runs/*"]}},
        )
        return grant

    @property
    def plan_prefix(self) -> str:
        """Where reviewed plans go in the report bucket; a run applies one given its key."""
        return f"{self._report_prefix}plans/"

    def grant_submit_plan(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` (a pipeline's apply step) upload a plan and start the run applying it.

        Upload ``plan.json`` (from ``mfa-policy drift --out``) to
        ``s3://<report bucket>/<plan_prefix>NAME.json``, then start the state machine with
        ``{"mode": "apply", "trigger": "pipeline", "plan_key": "<plan_prefix>NAME.json"}``. The run
        sends exactly the plan's requests, skipping users changed since, and fails on a plan for
        another pool or policy.
        """
        self._report_bucket.grant_put(grantee, f"{self.plan_prefix}*")
        return self._state_machine.grant_start_execution(grantee)

    # ------------------------------------------------------------------ metrics

    def metric(
        self, outcome: str, *, mode: str = "drift", rule: str | None = None, **props: Any
    ) -> cloudwatch.Metric:
        """Users with ``outcome`` per run of ``mode`` (the runtime emits one datapoint per run).

        :param outcome: one of ``OUTCOMES`` (``compliant``, ``would_change``, ``changed``, ...).
        :param mode: ``"drift"`` or ``"apply"``. Default: ``"drift"``
        :param rule: a rule of the policy: only its users. Counted per rule are
            ``would_change`` (drift), ``changed`` (apply), ``blocked`` and ``guarded``.
            Default: - every user of the run
        :param props: any ``cloudwatch.Metric`` option (``period``, ``statistic``, ``label``,
            ...). Default: - Sum over 5 minutes
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        if mode not in RUN_MODES:
            raise ValueError(f"mode must be one of {', '.join(RUN_MODES)}, got {mode!r}")
        dimensions = {"UserPoolId": self._user_pool.user_pool_id, "Mode": mode}
        if rule is not None:
            names = [r.name for r in self._policy.rules]
            if rule not in names:
                raise ValueError(
                    f"rule must be one of the policy's ({', '.join(names)}), got {rule!r}"
                )
            counted = [o.value for o in RULE_METRIC_OUTCOMES[mode]]
            if outcome not in counted:
                raise ValueError(
                    f"{mode} runs count {', '.join(counted)} per rule, not {outcome!r}"
                )
            dimensions["Rule"] = rule
        dimensions.update(props.pop("dimensions_map", None) or {})
        options: dict[str, Any] = {"statistic": "Sum", "unit": cloudwatch.Unit.COUNT, **props}
        return cloudwatch.Metric(
            namespace=METRIC_NAMESPACE,
            metric_name=outcome,
            dimensions_map=dimensions,
            **options,
        )

    # One helper per outcome; each takes ``mode`` (default ``"drift"``) unless only one mode
    # reports that outcome, and any ``cloudwatch.Metric`` option.

    def metric_compliant(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        return self.metric(Outcome.COMPLIANT, mode=mode, **props)

    def metric_would_change(self, **props: Any) -> cloudwatch.Metric:
        """Users a drift run found fixable by apply (only drift runs report this outcome)."""
        return self.metric(Outcome.WOULD_CHANGE, mode="drift", **props)

    def metric_changed(self, **props: Any) -> cloudwatch.Metric:
        """Users an apply run changed (only apply runs report this outcome)."""
        return self.metric(Outcome.CHANGED, mode="apply", **props)

    def metric_needs_enrollment(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        return self.metric(Outcome.NEEDS_ENROLLMENT, mode=mode, **props)

    def metric_blocked(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        return self.metric(Outcome.BLOCKED, mode=mode, **props)

    def metric_guarded(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        """Users whose change the guard refused; non-compliant, and not fixable by apply."""
        return self.metric(Outcome.GUARDED, mode=mode, **props)

    def metric_excluded(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        return self.metric(Outcome.EXCLUDED, mode=mode, **props)

    def metric_unmanaged(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        return self.metric(Outcome.UNMANAGED, mode=mode, **props)

    def metric_deferred(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        return self.metric(Outcome.DEFERRED, mode=mode, **props)

    def metric_skipped(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        return self.metric(Outcome.SKIPPED, mode=mode, **props)

    def metric_token_invalid(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        return self.metric(Outcome.TOKEN_INVALID, mode=mode, **props)

    def metric_failed(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        return self.metric(Outcome.FAILED, mode=mode, **props)

    def metric_enrollment_backlog(self, **props: Any) -> cloudwatch.Metric:
        """Users a drift run found waiting to verify an authenticator (``needs_enrollment``):
        only they can clear it, so it is watched apart from fixable drift."""
        options: dict[str, Any] = {"statistic": "Maximum", "label": "enrollment backlog", **props}
        return self.metric(Outcome.NEEDS_ENROLLMENT, mode="drift", **options)

    def metric_throttled(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        """Cognito throttles (TooManyRequestsException) a run met, retried each time."""
        return self._run_metric("throttled", mode, props)

    def metric_api_calls(
        self, operation: str, *, mode: str = "drift", **props: Any
    ) -> cloudwatch.Metric:
        """Cognito calls a run made of ``operation`` (e.g. ``admin_get_user``), retries included."""
        return self._run_metric(f"api_calls_{operation}", mode, props)

    def metric_run_duration(self, *, mode: str = "drift", **props: Any) -> cloudwatch.Metric:
        """How long runs took, in seconds (Maximum over the period)."""
        options: dict[str, Any] = {"statistic": "Maximum", "unit": cloudwatch.Unit.SECONDS, **props}
        return self._run_metric("run_duration", mode, options)

    def _run_metric(self, name: str, mode: str, props: dict[str, Any]) -> cloudwatch.Metric:
        if mode not in RUN_MODES:
            raise ValueError(f"mode must be one of {', '.join(RUN_MODES)}, got {mode!r}")
        options: dict[str, Any] = {"statistic": "Sum", "unit": cloudwatch.Unit.COUNT, **props}
        return cloudwatch.Metric(
            namespace=METRIC_NAMESPACE,
            metric_name=name,
            dimensions_map={"UserPoolId": self._user_pool.user_pool_id, "Mode": mode},
            **options,
        )

    # ------------------------------------------------------------------ building blocks

    def _new_function(
        self,
        id: str,
        *,
        handler: str,
        description: str,
        environment: Mapping[str, str],
        memory_size: int,
        timeout: Duration,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{id}Logs", retention=self._log_retention)
        function = lambda_.Function(
            self,
            id,
            runtime=_assets.RUNTIME,
            architecture=_assets.ARCHITECTURE,
            code=self._code,
            handler=handler,
            description=description,
            memory_size=memory_size,
            timeout=timeout,
            environment={
                **environment,
                "POWERTOOLS_SERVICE_NAME": "mfa-policy",
                "POWERTOOLS_METRICS_NAMESPACE": METRIC_NAMESPACE,
            },
            layers=[self._layer],
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            log_group=log_group,
            role=self._logging_role(f"{id}Role", log_group),
        )
        self._nag_findings += _nag.traced_function(function)
        return function

    def _logging_role(self, id: str, log_group: logs.LogGroup) -> iam.Role:
        """A Lambda role that may write to its own log group only.

        Used instead of AWSLambdaBasicExecutionRole, which may write to any log group.
        """
        role = iam.Role(self, id, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        log_group.grant_write(role)
        return role

    def _create_report_bucket(self, retention: Duration | None) -> s3.Bucket:
        secure: dict[str, Any] = {
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "encryption": s3.BucketEncryption.S3_MANAGED,
            "enforce_ssl": True,
            "minimum_tls_version": 1.2,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # Reports are audit evidence: by default they outlive the stack.
            "removal_policy": self._removal_policy,
        }
        access_logs = s3.Bucket(
            self,
            "AccessLogsBucket",
            **secure,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(365))
            ],
        )
        expiry: dict[str, Any] = {"expiration": retention} if retention is not None else {}
        return s3.Bucket(
            self,
            "ReportBucket",
            **secure,
            versioned=True,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="report-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-reports",
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                    **expiry,
                )
            ],
        )

    def _create_ledger_table(self) -> dynamodb.Table:
        return dynamodb.Table(
            self,
            "LedgerTable",
            partition_key=dynamodb.Attribute(name="pool", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sub", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            # The ledger is what keeps runs from reading (and billing) every user: keep it.
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _use_ledger(self, table: dynamodb.ITable) -> None:
        self._function.add_environment("LEDGER_TABLE", table.table_name)
        # Exactly the calls aws/ledger_table.py makes.
        table.grant(
            self._function,
            "dynamodb:GetItem",
            "dynamodb:BatchGetItem",
            "dynamodb:UpdateItem",
            "dynamodb:Query",
        )
        lookup = iam.PolicyStatement(actions=["cloudtrail:LookupEvents"], resources=["*"])
        self._function.add_to_role_policy(lookup)
        self._nag_findings += _nag.statement_wildcards(
            self._function.role or self._function,
            lookup,
            "cloudtrail:LookupEvents supports no resource-level permissions (the Service "
            "Authorization Reference lists no resource type for it), so its resource must be "
            "'*'; it is read-only and reads this account's and Region's Event history",
        )

    def _create_realtime(self, mode: str, slice_env: Mapping[str, str]) -> lambda_.Function:
        assert self._ledger_table is not None
        function = self._new_function(
            "ChangedUserFunction",
            handler=_assets.CHANGED_USER_HANDLER,
            description=f"mfa-policy: {mode} of the user a CloudTrail event says changed",
            environment={
                **slice_env,
                "LEDGER_TABLE": self._ledger_table.table_name,
                "REALTIME_MODE": mode,
            },
            memory_size=256,
            timeout=Duration.minutes(1),
        )
        actions = [a for a in _ADMIN_ACTIONS if mode == "apply" or "Set" not in a]
        self._user_pool.grant(function, *actions)
        self._ledger_table.grant(
            function,
            "dynamodb:GetItem",
            "dynamodb:BatchGetItem",
            "dynamodb:UpdateItem",
            "dynamodb:Query",
        )
        self._nag_findings += self._grant_reports(function, write=mode == "apply")
        events.Rule(
            self,
            "ChangedUserRule",
            description="mfa-policy: a Cognito call that can change a user's MFA state",
            event_pattern=events.EventPattern(
                source=["aws.cognito-idp"],
                # API calls, and the managed login pages (service events).
                detail_type=["AWS API Call via CloudTrail", "AWS Service Event via CloudTrail"],
                detail={"eventName": sorted(STATE_CHANGING_EVENTS)},
            ),
            targets=[targets.LambdaFunction(function, retry_attempts=2)],
        )
        return function

    @property
    def changed_user_function(self) -> lambda_.Function | None:
        """The function the ``realtime`` rule calls (None without ``realtime``)."""
        return self._changed_user_function

    @property
    def ledger_table(self) -> dynamodb.ITable | None:
        """The state ledger's table (None with ``ledger=False``)."""
        return self._ledger_table

    def _grant_pool_access(self, token_table: dynamodb.ITable | None) -> None:
        # AdminSetUserMFAPreference is granted even when apply_on_deploy=False: that prop decides
        # what a deploy does, while anyone with grant_start_run may still start an apply run;
        # the runtime, not IAM, keeps drift runs read-only.
        if token_table is None:
            self._user_pool.grant(self._function, *_ADMIN_ACTIONS)
        else:
            self._user_pool.grant(self._function, *_ACCESS_TOKEN_ACTIONS)
            # The runner fetches a page's tokens by key; Scan or Query would let the function
            # read every token in the table, GetItem is never used.
            token_table.grant(self._function, *_TOKEN_TABLE_ACTIONS)
            if token_table.encryption_key is not None:
                token_table.encryption_key.grant_decrypt(self._function)

    def _grant_reports(self, grantee: lambda_.Function, *, write: bool) -> list[_nag.Finding]:
        bucket, prefix = self._report_bucket, self._report_prefix
        actions = ["s3:GetObject"]
        if write:
            actions += ["s3:PutObject", "s3:AbortMultipartUpload"]
        objects = iam.PolicyStatement(
            actions=actions, resources=[bucket.arn_for_objects(f"{prefix}*")]
        )
        grantee.add_to_role_policy(objects)
        if write:
            # Giving the run lock back deletes it; nothing else is ever deleted.
            grantee.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:DeleteObject"],
                    resources=[
                        bucket.arn_for_objects(f"{prefix}locks/{self._user_pool.user_pool_id}.json")
                    ],
                )
            )
        # Listing lets a missing report read as NoSuchKey rather than AccessDenied.
        grantee.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            )
        )
        if bucket.encryption_key is not None:
            if write:
                bucket.encryption_key.grant_encrypt_decrypt(grantee)
            else:
                bucket.encryption_key.grant_decrypt(grantee)
        return _nag.statement_wildcards(
            grantee.role or grantee,
            objects,
            "reports are written under the report prefix with run ids chosen at run time; "
            "access is limited to that prefix",
        )

    def _create_state_machine(self, run_timeout: Duration) -> sfn.StateMachine:
        """Take the pool's run lock, loop the slices until done, give the lock back.

        Every way out gives the lock back: done, a slice that failed (after its retries), a run
        past ``run_timeout`` (the slice raises RunTimedOut between two slices). A run stopped
        by hand, or by the state machine's own timeout, which backs up ``run_timeout``, cannot;
        its lease runs out within the hour instead.
        """
        owner = sfn.JsonPath.string_at("$$.Execution.Id")
        acquire = tasks.LambdaInvoke(
            self,
            "AcquireLock",
            lambda_function=self._function,
            payload=sfn.TaskInput.from_object(
                {"action": "acquire_lock", "owner": owner, "run": sfn.JsonPath.entire_payload}
            ),
            payload_response_only=True,
            # The run's input stays as it is, and carries the lock from here on.
            result_path="$.lock",
            retry_on_service_exceptions=True,
        )
        run_slice = tasks.LambdaInvoke(
            self,
            "RunSlice",
            lambda_function=self._function,
            # The whole state in, with the execution beside it so that every log line of the
            # slice names it; the handler's return value out: {mode, trigger, run_id,
            # checkpoint, done, counts, report_uri, lock}.
            payload=sfn.TaskInput.from_object(
                {"execution": owner, "run": sfn.JsonPath.entire_payload}
            ),
            payload_response_only=True,
            retry_on_service_exceptions=True,
        )
        run_slice.add_retry(
            errors=["Lambda.TooManyRequestsException"],
            interval=Duration.seconds(5),
            max_attempts=10,
            backoff_rate=2,
            max_delay=Duration.minutes(5),
            jitter_strategy=sfn.JitterType.FULL,
        )
        # A slice that crashed or ran out of time is run again from the same checkpoint; the
        # write-intent journal in the report bucket tells it whom the lost attempt wrote.
        run_slice.add_retry(
            errors=["Sandbox.Timedout", "Lambda.Unknown"],
            interval=Duration.seconds(30),
            max_attempts=2,
            backoff_rate=2,
        )

        def release(id: str) -> tasks.LambdaInvoke:
            task = tasks.LambdaInvoke(
                self,
                id,
                lambda_function=self._function,
                # The run's state only names the run in the release's log.
                payload=sfn.TaskInput.from_object(
                    {"action": "release_lock", "owner": owner, "run": sfn.JsonPath.entire_payload}
                ),
                payload_response_only=True,
                result_path=sfn.JsonPath.DISCARD,
                retry_on_service_exceptions=True,
            )
            return task

        finished = sfn.Succeed(self, "Finished")
        release_lock = release("ReleaseLock")
        # A lock that cannot be given back runs out with its lease; the run itself is done.
        release_lock.add_catch(finished, result_path=sfn.JsonPath.DISCARD)
        run_failed = sfn.Fail(
            self, "RunFailed", error_path="$.error.Error", cause_path="$.error.Cause"
        )
        release_after_failure = release("ReleaseLockAfterFailure")
        release_after_failure.add_catch(run_failed, result_path=sfn.JsonPath.DISCARD)
        release_after_failure.next(run_failed)
        acquire.add_catch(release_after_failure, result_path="$.error")
        run_slice.add_catch(release_after_failure, result_path="$.error")

        done = (
            sfn.Choice(self, "Done")
            .when(sfn.Condition.boolean_equals("$.done", True), release_lock.next(finished))
            .otherwise(run_slice)
        )
        lock_taken = (
            sfn.Choice(self, "LockTaken")
            .when(sfn.Condition.boolean_equals("$.lock.acquired", True), run_slice.next(done))
            .when(
                sfn.Condition.boolean_equals("$.lock.wait", True),
                sfn.Wait(self, "WaitForLock", time=sfn.WaitTime.duration(_LOCK_POLL)).next(acquire),
            )
            # Another run holds the pool: end with its message as this run's output.
            .otherwise(sfn.Succeed(self, "Refused", output_path="$.lock.output"))
        )
        state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            comment="mfa-policy: one run per pool; loops the slice function until the run is done",
            definition_body=sfn.DefinitionBody.from_chainable(acquire.next(lock_taken)),
            timeout=_execution_timeout(run_timeout),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=logs.LogGroup(self, "StateMachineLogs", retention=self._log_retention),
                level=sfn.LogLevel.ALL,
            ),
        )
        self._nag_findings += _nag.state_machine_role(state_machine, self._function)
        return state_machine

    def _create_deploy_run(self, *, mode: str, wait_seconds: int) -> CustomResource:
        deploy_env = {
            "STATE_MACHINE_ARN": self._state_machine.state_machine_arn,
            "WAIT_SECONDS": str(wait_seconds),
            "REPORT_BUCKET": self._report_bucket.bucket_name,
            "REPORT_PREFIX": self._report_prefix,
        }
        on_event = self._new_function(
            "DeployOnEvent",
            handler=_assets.DEPLOY_ON_EVENT_HANDLER,
            description="mfa-policy: starts a run when a deploy changes the policy",
            environment=deploy_env,
            memory_size=256,
            timeout=Duration.minutes(1),
        )
        is_complete = self._new_function(
            "DeployIsComplete",
            handler=_assets.DEPLOY_IS_COMPLETE_HANDLER,
            description="mfa-policy: reports the deploy's run once it ends or the wait is over",
            environment=deploy_env,
            memory_size=256,
            timeout=Duration.minutes(1),
        )
        self._state_machine.grant_start_execution(on_event)
        describe = self._state_machine.grant_execution(is_complete, "states:DescribeExecution")
        for statement in describe.principal_statements:
            self._nag_findings += _nag.statement_wildcards(
                is_complete.role or is_complete,
                statement,
                "DescribeExecution is granted on executions of this state machine only; "
                "execution names are chosen when a deploy starts a run",
            )
        self._nag_findings += self._grant_reports(is_complete, write=False)

        total_timeout = Duration.seconds(wait_seconds + _PROVIDER_MARGIN.to_seconds())
        provider_logs = logs.LogGroup(self, "DeployProviderLogs", retention=self._log_retention)
        framework_roles = [
            self._logging_role("DeployProviderOnEventRole", provider_logs),
            self._logging_role("DeployProviderCompleteRole", provider_logs),
        ]
        provider = cr.Provider(
            self,
            "DeployProvider",
            on_event_handler=on_event,
            is_complete_handler=is_complete,
            query_interval=_QUERY_INTERVAL,
            total_timeout=total_timeout,
            log_group=provider_logs,
            # The framework needs two distinct roles; each may write only to the framework's logs.
            framework_on_event_role=framework_roles[0],
            framework_complete_and_timeout_role=framework_roles[1],
            disable_waiter_state_machine_logging=False,
            waiter_state_machine_log_options=cr.LogOptions(
                destination=logs.LogGroup(self, "DeployWaiterLogs", retention=self._log_retention),
                level=sfn.LogLevel.ALL,
                # The waiter's state holds CloudFormation's pre-signed response URL.
                include_execution_data=False,
            ),
        )
        framework = [
            child
            for child in provider.node.children
            if isinstance(child, lambda_.Function) and child.node.id.startswith("framework-")
        ]
        self._nag_findings += _nag.provider(
            provider, framework_roles, [on_event, is_complete, *framework]
        )
        return CustomResource(
            self,
            "DeployRun",
            service_token=provider.service_token,
            resource_type="Custom::MfaPolicyRun",
            # A run starts when one of these changes, so only what should trigger one is here.
            properties={
                "UserPoolId": self._user_pool.user_pool_id,
                "PolicyHash": self._policy.hash,
                "Mode": mode,
            },
            service_timeout=Duration.seconds(total_timeout.to_seconds() + 120),
        )

    def _create_drift_alarm(self, actions: Sequence[cloudwatch.IAlarmAction]) -> cloudwatch.Alarm:
        # Only drift apply can fix: users who must enrol (or lack a phone number) would keep it
        # red forever; the enrollment backlog has its own metric and alarm.
        using = {"m0": self.metric(Outcome.WOULD_CHANGE, mode="drift", statistic="Maximum")}
        alarm = cloudwatch.Alarm(
            self,
            "DriftAlarm",
            alarm_description=(
                "mfa-policy: a drift run found users that would_change (drift apply fixes); "
                "see the run's report"
            ),
            metric=cloudwatch.MathExpression(
                expression=" + ".join(f"FILL({name}, 0)" for name in using),
                using_metrics=using,
                label="drifted users",
                period=_ALARM_PERIOD,
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(*actions)
        return alarm

    def _create_backlog_alarm(
        self, actions: Sequence[cloudwatch.IAlarmAction], threshold: int
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            "EnrollmentBacklogAlarm",
            alarm_description=(
                f"mfa-policy: more than {threshold} users of a drift run need to verify an "
                "authenticator app before the policy can set TOTP for them"
            ),
            metric=self.metric_enrollment_backlog(period=_ALARM_PERIOD),
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(*actions)
        return alarm

    def _create_dashboard(self) -> cloudwatch.Dashboard:
        day = Duration.days(1)

        def outcomes(mode: str, names: Sequence[str]) -> list[cloudwatch.IMetric]:
            return [self.metric(name, mode=mode, statistic="Maximum", period=day) for name in names]

        board = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.days(30))
        board.add_widgets(
            cloudwatch.GraphWidget(
                title="Drift runs: users by outcome",
                left=outcomes("drift", OUTCOMES),
                stacked=True,
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Apply runs: users by outcome",
                left=outcomes("apply", OUTCOMES),
                stacked=True,
                width=12,
            ),
        )
        # Per rule: one graph per counted outcome and mode, one line per rule of the policy (a
        # graph shows at most DASHBOARD_RULES; every rule has its metrics all the same).
        rules = [rule.name for rule in self._policy.rules]
        if len(rules) > DASHBOARD_RULES:
            Annotations.of(self).add_warning_v2(
                "mfa-policy:dashboardRules",
                f"the dashboard graphs the first {DASHBOARD_RULES} of the policy's {len(rules)} "
                "rules; mfa.metric(outcome, rule=...) gives any rule's",
            )
        for mode in RUN_MODES:  # a row per mode
            board.add_widgets(
                *(
                    cloudwatch.GraphWidget(
                        title=f"{mode.capitalize()} runs by rule: {outcome.value}",
                        left=[
                            self.metric(
                                outcome,
                                mode=mode,
                                rule=rule,
                                statistic="Maximum",
                                period=day,
                                label=rule,
                            )
                            for rule in rules[:DASHBOARD_RULES]
                        ],
                        width=24 // len(RULE_METRIC_OUTCOMES[mode]),
                    )
                    for outcome in RULE_METRIC_OUTCOMES[mode]
                )
            )
        board.add_widgets(
            cloudwatch.GraphWidget(
                title="Enrollment backlog (needs_enrollment, drift)",
                left=[self.metric_enrollment_backlog(period=day)],
                width=6,
            ),
            cloudwatch.GraphWidget(
                title="Cognito throttles per run",
                left=[self.metric_throttled(mode=m, period=day) for m in RUN_MODES],
                width=6,
            ),
            cloudwatch.GraphWidget(
                title="Run duration (seconds)",
                left=[self.metric_run_duration(mode=m, period=day) for m in RUN_MODES],
                width=6,
            ),
            cloudwatch.GraphWidget(
                title="Runs failed or timed out",
                left=[
                    self._state_machine.metric_failed(period=day),
                    self._state_machine.metric_timed_out(period=day),
                ],
                width=6,
            ),
        )
        return board

    def _notify_run_finished(self, topic: sns.ITopic) -> None:
        """An event on ``topic`` whenever a run of this state machine ends."""
        events.Rule(
            self,
            "RunFinished",
            description="mfa-policy: a run finished",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "stateMachineArn": [self._state_machine.state_machine_arn],
                    "status": ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"],
                },
            ),
            targets=[targets.SnsTopic(topic)],
        )

    def _create_failure_alarm(self, actions: Sequence[cloudwatch.IAlarmAction]) -> cloudwatch.Alarm:
        using: dict[str, cloudwatch.IMetric] = {
            "faileddrift": self.metric_failed(mode="drift", statistic="Maximum"),
            "failedapply": self.metric_failed(mode="apply", statistic="Maximum"),
            # A run that dies emits no outcome counts; Step Functions still counts it.
            "runsfailed": self._state_machine.metric_failed(statistic="Sum"),
            "runstimedout": self._state_machine.metric_timed_out(statistic="Sum"),
        }
        alarm = cloudwatch.Alarm(
            self,
            "FailureAlarm",
            alarm_description=(
                "mfa-policy: users failed in a run, or a run failed or timed out; see the "
                "run's report and the state machine's executions"
            ),
            metric=cloudwatch.MathExpression(
                expression=" + ".join(f"FILL({name}, 0)" for name in using),
                using_metrics=using,
                label="failures",
                period=_ALARM_PERIOD,
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(*actions)
        return alarm


# ---------------------------------------------------------------------- validation helpers


def _validate_props(
    *, wait_for_completion: Duration | None, run_timeout: Duration, report_prefix: str
) -> int:
    """Check the props that have bounds; return the wait in whole seconds. Raise listing all."""
    errors: list[str] = []
    wait_seconds = 0
    if wait_for_completion is not None:
        wait_seconds = int(wait_for_completion.to_seconds(integral=False))
        if wait_seconds > MAX_WAIT_FOR_COMPLETION.to_seconds():
            errors.append(
                f"wait_for_completion must be at most {MAX_WAIT_FOR_COMPLETION.to_human_string()} "
                "(the custom resource framework gives up after 1 hour), or None not to wait; "
                f"got {wait_for_completion.to_human_string()}"
            )
    timeout = run_timeout.to_seconds(integral=False)
    if not MIN_RUN_TIMEOUT.to_seconds() <= timeout <= MAX_RUN_TIMEOUT.to_seconds():
        errors.append(
            f"run_timeout must be between {MIN_RUN_TIMEOUT.to_human_string()} and "
            f"{MAX_RUN_TIMEOUT.to_human_string()} (Step Functions' limit), "
            f"got {run_timeout.to_human_string()}"
        )
    if Token.is_unresolved(report_prefix):
        errors.append("report_prefix must be a literal string, got a token")
    elif report_prefix and (report_prefix.startswith("/") or not report_prefix.endswith("/")):
        errors.append(
            "report_prefix must be empty or a key prefix that ends with '/' and does not start "
            f"with '/', e.g. 'mfa-policy/'; got {report_prefix!r}"
        )
    if errors:
        raise ValueError("invalid MfaPolicy props:\n" + "\n".join(f"  {e}" for e in errors))
    return wait_seconds


@jsii.implements(IValidation)
class _PoolOffersFactors:
    """The synth-time form of ``_check_pool_offers_factors``, for changes made after."""

    def __init__(self, user_pool: cognito.IUserPool, policy: Policy) -> None:
        self._user_pool = user_pool
        self._policy = policy

    def validate(self) -> list[str]:
        try:
            _check_pool_offers_factors(self._user_pool, self._policy)
        except ValueError as exc:
            return [str(exc)]
        return []


def _check_pool_offers_factors(user_pool: cognito.IUserPool, policy: Policy) -> None:
    """A pool defined in this app must offer every factor the policy enables or prefers.

    Imported pools are checked by the runtime's preflight instead.
    """
    if not isinstance(user_pool, cognito.UserPool):
        return
    pool = user_pool.node.default_child
    if not isinstance(pool, cognito.CfnUserPool):
        return
    enabled = pool.enabled_mfas
    configuration = pool.mfa_configuration
    if Token.is_unresolved(enabled) or Token.is_unresolved(configuration):
        return
    offered = {name for name in enabled or [] if isinstance(name, str)}
    if configuration in (None, "OFF"):
        offered = set()
    # Passkey MFA is the pool's WebAuthn factor configuration, not an EnabledMfas entry: the
    # runtime's preflight checks it.
    missing = sorted(
        factor.value
        for factor in policy.factors_enabled - {Factor.PASSKEY}
        if factor.cognito_name not in offered
    )
    if missing:
        on_offer = (
            ", ".join(
                sorted(
                    f.value for f in Factor if f is not Factor.PASSKEY and f.cognito_name in offered
                )
            )
            or "none (MFA is OFF)"
        )
        raise ValueError(
            f"the policy enables {', '.join(missing)}, but user pool {user_pool.node.path} does "
            f"not offer {'it' if len(missing) == 1 else 'them'} as a second factor; factors the "
            f"pool offers: {on_offer}. Set the pool's mfa to OPTIONAL or REQUIRED and enable the "
            "factor in mfa_second_factor"
        )


def _execution_timeout(run_timeout: Duration) -> Duration:
    seconds = min(
        run_timeout.to_seconds(integral=False) + _RUN_TIMEOUT_BACKSTOP.to_seconds(),
        MAX_RUN_TIMEOUT.to_seconds(),
    )
    return Duration.seconds(int(seconds))


def _slice_environment(
    *,
    policy: Policy,
    user_pool: cognito.IUserPool,
    report_prefix: str,
    token_table: dynamodb.ITable | None,
    run_timeout: Duration,
) -> dict[str, str]:
    env = {
        "USER_POOL_ID": user_pool.user_pool_id,
        # Where the policy is in the asset, and which policy it must be (a hash is no content).
        "POLICY_FILE": _assets.POLICY_FILE,
        "POLICY_HASH": policy.hash,
        "REPORT_PREFIX": report_prefix,
        "AUTH": "admin" if token_table is None else "access-token",
        "RUN_TIMEOUT_SECONDS": str(int(run_timeout.to_seconds(integral=False))),
        "POWERTOOLS_SERVICE_NAME": "mfa-policy",
        "POWERTOOLS_METRICS_NAMESPACE": METRIC_NAMESPACE,
    }
    if token_table is not None:
        env["TOKEN_TABLE"] = token_table.table_name
    return env


__all__ = [
    "DAILY",
    "DEFAULT_REPORT_RETENTION",
    "DEFAULT_RUN_TIMEOUT",
    "DEFAULT_WAIT_FOR_COMPLETION",
    "MAX_WAIT_FOR_COMPLETION",
    "METRIC_NAMESPACE",
    "OUTCOMES",
    "RUN_MODES",
    "MfaPolicy",
]
