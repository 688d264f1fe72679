"""The ``mfa-policy`` command line: a thin driver over the policy parser and the runner."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from mfa_policy import __version__
from mfa_policy.exceptions import MfaPolicyError
from mfa_policy.run.local_run import DEFAULT_STATE_DIR
from mfa_policy.run.state import PoolLocked

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_DRIFT = 2


class UsageError(MfaPolicyError):
    """Options that do not fit together."""


def _cmd_validate(args: argparse.Namespace) -> int:
    from mfa_policy.core.policy_file import load_policy_file

    policy = load_policy_file(args.config)
    rollouts = sum(1 for r in policy.rules if r.rollout_percent is not None)
    print(
        f"{args.config}: valid (policy {policy.hash}): {len(policy.rules)} rule(s)"
        f"{f', {rollouts} with rollout' if rollouts else ''}; manages "
        f"{', '.join(sorted(f.value for f in policy.factors_enabled)) or 'no factor'}"
    )
    for warning in policy.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _add_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=math.inf,
        default=0.0,
        metavar="SECONDS",
        help="when another run holds the pool, wait for it to end (at most SECONDS) "
        "instead of refusing",
    )


def _waiting(locked: PoolLocked) -> None:
    who = locked.holder.describe() if locked.holder else "another run"
    print(f"waiting: user pool {locked.user_pool_id} is in use by {who}", file=sys.stderr)


def _add_aws_options(parser: argparse.ArgumentParser) -> None:
    aws = parser.add_argument_group("AWS")
    aws.add_argument(
        "--region",
        help="AWS Region of the pool (default: the Region in the pool id, else AWS_REGION or "
        "your profile's)",
    )
    aws.add_argument(
        "--profile", help="AWS profile from your AWS config (default: AWS_PROFILE, else default)"
    )
    aws.add_argument(
        "--endpoint-url",
        help="Cognito endpoint (a local stand-in, for example; on 127.0.0.1 no AWS "
        "credentials are needed)",
    )


def _clients(args: argparse.Namespace, *services: str) -> list[object]:
    """Clients for ``services`` with the command's profile, Region and endpoint."""
    from mfa_policy.aws.clients import aws_client, cli_session

    session, region = cli_session(
        profile=getattr(args, "profile", None),
        region=args.region,
        user_pool_id=getattr(args, "user_pool_id", None),
        endpoint_url=args.endpoint_url,
    )
    return [
        aws_client(service, region=region, endpoint_url=args.endpoint_url, session=session)
        for service in services
    ]


def _add_run_options(parser: argparse.ArgumentParser, *, with_format: bool) -> None:
    parser.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="policy file (YAML or JSON)"
    )
    parser.add_argument("--user-pool-id", required=True, metavar="ID")
    parser.add_argument(
        "--report-dir",
        metavar="DIR",
        help="where to write the report (default: STATE_DIR/reports/RUN_ID)",
    )
    parser.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help="checkpoints and enrollment-probe memory (default: %(default)s)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_ID",
        help="continue the last unfinished run of this pool and mode "
        "(or the given run) from its checkpoint",
    )
    parser.add_argument(
        "--auth",
        choices=["admin", "access-token"],
        default="admin",
        help="admin: IAM and Admin* calls; access-token: users' stored tokens "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--token-table",
        metavar="NAME",
        help="DynamoDB table of access tokens keyed by username "
        "(attribute access_token), for --auth access-token",
    )
    parser.add_argument("--workers", type=int, default=32, help=argparse.SUPPRESS)
    _add_wait_option(parser)
    if with_format:
        parser.add_argument(
            "--output",
            "--format",
            dest="format",
            choices=["text", "json", "md"],
            default="text",
            help="summary printed to stdout (default: %(default)s)",
        )
    _add_aws_options(parser)


def _cmd_run(args: argparse.Namespace) -> int:
    from mfa_policy.aws.tokens import DynamoTokenTable
    from mfa_policy.cli.progress import Progress
    from mfa_policy.core.engine import Mode
    from mfa_policy.core.policy_file import load_policy_file
    from mfa_policy.core.report import Counts, is_drifted, is_unconverged
    from mfa_policy.run.local_run import run_locally

    mode = Mode(args.command)
    policy = load_policy_file(args.config)
    for warning in policy.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if getattr(args, "plan", None):
        return _cmd_apply_plan(args, policy)
    tokens = None
    if args.auth == "access-token":
        if not args.token_table:
            raise UsageError("--auth access-token needs --token-table NAME")
        (dynamodb,) = _clients(args, "dynamodb")
        tokens = DynamoTokenTable(dynamodb, args.token_table)
    (client,) = _clients(args, "cognito-idp")
    with Progress(f"{mode.value} {args.user_pool_id}") as progress:
        result = run_locally(
            policy,
            args.user_pool_id,
            mode,
            client=client,
            state_dir=args.state_dir,
            report_dir=args.report_dir,
            auth=args.auth,
            tokens=tokens,
            resume=args.resume,
            workers=args.workers,
            keep_going=progress.keep_going,
            on_rows=progress.advance,
            wait=args.wait,
            on_wait=_waiting,
        )
    summary = {**result.summary, "report_dir": str(result.report_dir)}
    _print_summary(summary, getattr(args, "format", "text"))
    if mode is Mode.DRIFT and getattr(args, "out", None) and summary["complete"]:
        _write_plan(summary, result.report_dir, args.out)
    if not summary["complete"]:
        print(
            f"stopped before the end; continue with: mfa-policy {mode.value} --resume "
            f"{summary['run_id']} (and the same options)",
            file=sys.stderr,
        )
        return EXIT_DRIFT
    counts = Counts.from_dict(summary["counts"])
    drifted = is_drifted(counts) if mode is Mode.DRIFT else is_unconverged(counts)
    return EXIT_DRIFT if drifted else EXIT_OK


def _write_plan(summary: dict[str, object], report_dir: object, out: str) -> None:
    """The drift's plan as JSON at ``out`` and its Markdown summary beside it (``.md``)."""
    from pathlib import Path

    from mfa_policy.core.plan import plan_from_drift, render_plan_markdown
    from mfa_policy.core.report import LocalReport

    plan = plan_from_drift(summary, LocalReport(Path(str(report_dir))).rows())
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan.to_json(), "utf-8")
    review = path.with_suffix(".md")
    review.write_text(render_plan_markdown(plan), "utf-8")
    print(
        f"plan: {len(plan.changes)} user(s) to change, written to {path} "
        f"(review: {review}); apply it with: mfa-policy apply --plan {path} "
        f"-c POLICY --user-pool-id {plan.user_pool_id}",
        file=sys.stderr,
    )


def _cmd_apply_plan(args: argparse.Namespace, policy: object) -> int:
    from pathlib import Path

    from mfa_policy.cli.progress import Progress
    from mfa_policy.core.plan import PlanError, plan_from_json
    from mfa_policy.core.policy import Policy
    from mfa_policy.core.report import LocalReport
    from mfa_policy.run.local_run import pool_lock, require_fresh_report_folder
    from mfa_policy.run.plan_apply import apply_plan
    from mfa_policy.run.runner import new_run_id

    assert isinstance(policy, Policy)
    if args.resume:
        raise UsageError("--plan and --resume do not go together: a plan is applied whole")
    if args.auth != "admin":
        raise UsageError("a plan is applied with the admin API; drop --auth access-token")
    path = Path(args.plan)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror}") from exc
    plan = plan_from_json(text, source=str(path))
    plan.check_fits(args.user_pool_id, policy.hash)
    run_id = new_run_id("apply")
    report_dir = Path(args.report_dir or Path(args.state_dir) / "reports" / run_id)
    (client,) = _clients(args, "cognito-idp")
    lock = pool_lock(args.user_pool_id, run_id, "apply", args.state_dir)
    lock.acquire(args.wait, _waiting)  # a plan is a run: one per pool at a time
    try:
        require_fresh_report_folder(report_dir)
        report = LocalReport(report_dir)
        with Progress(f"apply plan {args.user_pool_id}") as progress:
            summary = apply_plan(
                client,
                policy,
                plan,
                args.user_pool_id,
                report=report,
                plan_source=str(path),
                run_id=run_id,
                on_rows=progress.advance,
            )
    finally:
        lock.release()
    summary = {**summary, "report_dir": str(report.directory)}
    _print_summary(summary, getattr(args, "format", "text"))
    if summary["stale"]:
        print(
            f"{summary['stale']} planned user(s) changed since the plan and were skipped "
            "(stale); run drift --out again to plan them",
            file=sys.stderr,
        )
    failed = summary["counts"]["by_outcome"].get("failed", 0)
    return EXIT_DRIFT if summary["stale"] or failed else EXIT_OK


def _print_summary(summary: dict[str, object], fmt: str) -> None:
    import json

    from mfa_policy.core.report import render_markdown, render_text

    if fmt == "json":
        print(json.dumps(summary, indent=2, sort_keys=True))
    elif fmt == "md":
        print(render_markdown(summary), end="")
    else:
        print(render_text(summary), end="")


def _cmd_rollback(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mfa_policy.aws.gateway import CognitoGateway
    from mfa_policy.core.report import Counts
    from mfa_policy.run.rollback import default_out_dir, rollback

    source = Path(args.from_report)
    out_dir = Path(args.report_dir) if args.report_dir else default_out_dir(source)
    (client,) = _clients(args, "cognito-idp")
    summary = rollback(
        CognitoGateway(client, args.user_pool_id),
        source,
        out_dir,
        force=args.force,
        state_dir=Path(args.state_dir),
        wait=args.wait,
        on_wait=_waiting,
    )
    if not summary.get("digest_matched", True):
        print(
            f"warning: {source}/users.jsonl does not match its digest (--force): only "
            "changes that add factors were rolled back",
            file=sys.stderr,
        )
    _print_summary({**summary, "report_dir": str(out_dir)}, "text")
    failed = Counts.from_dict(summary["counts"]).by_outcome.get("failed", 0)
    return EXIT_DRIFT if failed else EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from mfa_policy.cli.demo import run_demo

    return run_demo(users=args.users, report_root=args.report_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfa-policy",
        description="Apply a declared MFA preference policy to a Cognito user pool, "
        "and report drift.",
    )
    parser.add_argument("--version", action="version", version=f"mfa-policy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a policy file and report every error")
    validate.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="policy file (YAML or JSON)"
    )
    validate.set_defaults(handler=_cmd_validate)

    drift = commands.add_parser(
        "drift", help="report drift between the policy and each user (read-only)"
    )
    _add_run_options(drift, with_format=True)
    drift.add_argument(
        "--out",
        metavar="PLAN",
        help="also write a plan: the exact request for each user to change, and the state "
        "drift observed (JSON at PLAN, a Markdown summary for reviewers beside it)",
    )
    drift.set_defaults(handler=_cmd_run)

    apply = commands.add_parser("apply", help="change users to match the policy")
    _add_run_options(apply, with_format=True)
    apply.add_argument(
        "--plan",
        metavar="PLAN",
        help="send exactly the requests of this plan (from drift --out), only to users still "
        "in the state the plan observed; others are skipped as stale",
    )
    apply.set_defaults(handler=_cmd_run)

    rollback = commands.add_parser(
        "rollback",
        help="restore the users an apply changed, where their state is still what it left",
    )
    rollback.add_argument("--user-pool-id", required=True, metavar="ID")
    rollback.add_argument(
        "--from-report", required=True, metavar="DIR", help="the report folder of the apply to undo"
    )
    rollback.add_argument(
        "--report-dir",
        metavar="DIR",
        help="where to write the rollback's report, a new folder (default: DIR-rollback)",
    )
    rollback.add_argument(
        "--force",
        action="store_true",
        help="roll back a report whose rows no longer match the digest in its summary.json; "
        "then only changes that add factors are undone",
    )
    rollback.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help="the state folder whose pool lock to share, if it exists (default: %(default)s)",
    )
    _add_wait_option(rollback)
    _add_aws_options(rollback)
    rollback.set_defaults(handler=_cmd_rollback)

    demo = commands.add_parser(
        "demo",
        help="drift, apply, drift on a seeded pool in an "
        "embedded Cognito stand-in (needs the dev extra: moto)",
    )
    demo.add_argument("--users", type=int, default=1000, help="pool size (default: %(default)s)")
    demo.add_argument(
        "--report-dir",
        default="mfa-policy-demo",
        metavar="DIR",
        help="where the three reports go (default: %(default)s)",
    )
    demo.set_defaults(handler=_cmd_demo)

    from mfa_policy.cli.single_user import register as register_single_user

    register_single_user(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except MfaPolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (BotoCoreError, ClientError) as exc:
        # Credentials, endpoints, permissions: the AWS message says what is wrong.
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
