"""The ``mfa-policy`` command line: a thin driver over the policy parser and the runner."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

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


class _ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which reads as "drift found" in a pipeline: exit 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.__name__ = f"integer of at least {minimum}"
    return parse


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
        "credentials are needed); CloudTrail is read there too",
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


#: The policy file ``-c`` defaults to when it is in the current folder.
DEFAULT_POLICY_FILE = "mfa-policy.yaml"


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    present = Path(DEFAULT_POLICY_FILE).is_file()
    parser.add_argument(
        "-c",
        "--config",
        required=not present,
        default=DEFAULT_POLICY_FILE if present else None,
        metavar="FILE",
        help=f"policy file, YAML or JSON (default: ./{DEFAULT_POLICY_FILE} when present)",
    )


def _add_pool_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user-pool-id",
        required=True,
        metavar="ID",
        help="the Cognito user pool, e.g. eu-west-1_AbCdEfGhI (its Region is the default Region)",
    )


def _help(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    *,
    summary: str,
    description: str,
    exit_codes: str,
    example: str,
) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does, its exit codes and an example."""
    return commands.add_parser(  # type: ignore[no-any-return]
        name,
        help=summary,
        description=description,
        epilog=f"exit codes:\n{exit_codes}\n\nexample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress and no summary; the exit code, errors and the report only",
    )


def _cloudwatch_client(args: argparse.Namespace) -> object:
    """CloudWatch in the command's profile and Region (never the Cognito endpoint)."""
    from mfa_policy.aws.clients import aws_client, cli_session

    session, region = cli_session(
        profile=getattr(args, "profile", None),
        region=args.region,
        user_pool_id=getattr(args, "user_pool_id", None),
    )
    return aws_client("cloudwatch", region=region, session=session)


def _add_run_options(parser: argparse.ArgumentParser, *, with_format: bool) -> None:
    _add_config_option(parser)
    _add_pool_option(parser)
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
    _add_quiet_option(parser)
    parser.add_argument(
        "--full",
        action="store_true",
        help="read every in-scope user's MFA state, not only those the state ledger and "
        "CloudTrail say can have changed",
    )
    parser.add_argument("--workers", type=_int_at_least(1), default=32, help=argparse.SUPPRESS)
    _add_wait_option(parser)
    # CloudTrail allows about 2 LookupEvents a second per account; a stand-in may allow more.
    parser.add_argument("--lookups-per-second", type=float, default=1.5, help=argparse.SUPPRESS)
    parser.add_argument(
        "--share-quota",
        type=float,
        metavar="HEADROOM_PERCENT",
        help="read the account's Cognito usage from CloudWatch before and during the run and "
        "keep this run under what the live application leaves, minus this share of each "
        "quota as headroom (needs cloudwatch:GetMetricData; off by default)",
    )
    # The usage metrics' period (seconds); benchmarks scale it down with the run length.
    parser.add_argument("--usage-period", type=int, default=60, help=argparse.SUPPRESS)
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
    from mfa_policy.run.runner import QuotaShareSettings

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
    # CloudTrail of the pool's account and Region, through the same endpoint when one is given.
    client, cloudtrail = _clients(args, "cognito-idp", "cloudtrail")
    if getattr(args, "estimate", False):
        return _estimate(args, policy, client, cloudtrail)
    total = None
    if Progress.would_show(quiet=args.quiet):
        from mfa_policy.aws.gateway import CognitoGateway

        total = CognitoGateway(client, args.user_pool_id).estimated_users()
    quota_share = None
    if args.share_quota is not None:
        if not 0 <= args.share_quota < 100:
            raise UsageError("--share-quota takes a headroom percent from 0 to under 100")
        quota_share = QuotaShareSettings(
            _cloudwatch_client(args),
            headroom=args.share_quota / 100,
            period=args.usage_period,
        )
    with Progress(f"{mode.value} {args.user_pool_id}", total=total, quiet=args.quiet) as progress:
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
            cloudtrail=cloudtrail,
            full=args.full,
            lookups_per_second=args.lookups_per_second,
            quota_share=quota_share,
        )
    summary = {**result.summary, "report_dir": str(result.report_dir)}
    if not args.quiet:
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
        with Progress(
            f"apply plan {args.user_pool_id}", total=len(plan.changes), quiet=args.quiet
        ) as progress:
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
    if not args.quiet:
        _print_summary(summary, getattr(args, "format", "text"))
    if summary["stale"]:
        print(
            f"{summary['stale']} planned user(s) changed since the plan and were skipped "
            "(stale); run drift --out again to plan them",
            file=sys.stderr,
        )
    failed = summary["counts"]["by_outcome"].get("failed", 0)
    return EXIT_DRIFT if summary["stale"] or failed else EXIT_OK


def _estimate(args: argparse.Namespace, policy: object, client: object, cloudtrail: object) -> int:
    import json

    from mfa_policy.run.estimate import estimate_drift, render_estimate

    estimate = estimate_drift(
        client,
        policy,  # type: ignore[arg-type]
        args.user_pool_id,
        state_dir=args.state_dir,
        cloudtrail=cloudtrail,
        full=args.full,
        lookups_per_second=args.lookups_per_second,
    )
    if args.format == "json":
        print(json.dumps(estimate, indent=2, sort_keys=True))
    else:
        print(render_estimate(estimate), end="")
    return EXIT_OK


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
    if not args.quiet:
        _print_summary({**summary, "report_dir": str(out_dir)}, "text")
    failed = Counts.from_dict(summary["counts"]).by_outcome.get("failed", 0)
    return EXIT_DRIFT if failed else EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from mfa_policy.cli.demo import run_demo
    from mfa_policy.cli.standin_cmd import load_standin

    load_standin()  # one line naming the demo extra when moto is missing
    return run_demo(users=args.users, report_root=args.report_dir, quiet=args.quiet)


def _cmd_standin(args: argparse.Namespace) -> int:
    from mfa_policy.cli.standin_cmd import serve_standin

    return serve_standin(users=args.users, port=args.port, policy_path=args.policy_file)


def _cmd_completion(args: argparse.Namespace) -> int:
    try:
        import shtab
    except ImportError:
        raise UsageError("shell completion needs shtab: pip install shtab") from None
    print(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK


class _Parser(_ArgumentParser):
    """argparse exiting 1 on usage errors, plus "did you mean" for a mistyped subcommand."""

    def error(self, message: str) -> NoReturn:
        import difflib
        import re

        match = re.search(r"invalid choice: '?([^'\s]*)'? \(choose from (.*)\)", message)
        if match:
            choices = [c.strip(" '") for c in match.group(2).split(",")]
            close = difflib.get_close_matches(match.group(1), choices, n=1)
            if close:
                message = f"{message}; did you mean '{close[0]}'?"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mfa-policy",
        description="Apply a declared MFA preference policy to a Cognito user pool, "
        "and report drift.",
    )
    parser.add_argument("--version", action="version", version=f"mfa-policy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = _help(
        commands,
        "validate",
        summary="check a policy file and report every error",
        description="Check a policy file against the schema and report every error at once, "
        "each with its line. Sends nothing to AWS.",
        exit_codes="  0  the policy is valid\n  1  it is not (every error is listed)",
        example="mfa-policy validate -c mfa-policy.yaml",
    )
    _add_config_option(validate)
    validate.set_defaults(handler=_cmd_validate)

    drift = _help(
        commands,
        "drift",
        summary="report drift between the policy and each user (read-only)",
        description="Read every user of the pool and report, per user, whether the policy "
        "would change them. Read-only: sends no write. With --out, also write a plan for "
        "apply --plan.",
        exit_codes="  0  every user is compliant\n  2  drift found, or the run stopped before "
        "the end\n  1  error (bad policy, preflight, unknown pool, bad options)",
        example="mfa-policy drift -c mfa-policy.yaml --user-pool-id eu-west-1_AbCdEfGhI "
        "--out plan.json",
    )
    _add_run_options(drift, with_format=True)
    drift.add_argument(
        "--out",
        metavar="PLAN",
        help="also write a plan: the exact request for each user to change, and the state "
        "drift observed (JSON at PLAN, a Markdown summary for reviewers beside it)",
    )
    drift.add_argument(
        "--estimate",
        action="store_true",
        help="predict the run's MFA reads, the MAUs they add and its duration, reading no "
        "user (lists the pool and reads CloudTrail)",
    )
    drift.set_defaults(handler=_cmd_run)

    apply = _help(
        commands,
        "apply",
        summary="change users to match the policy",
        description="Change each user whose MFA settings differ from the policy, with one "
        "minimal request per user; a compliant user gets no write. With --plan, send exactly "
        "the requests of a reviewed plan instead.",
        exit_codes="  0  every user converged (every planned user done)\n  2  some users not "
        "converged (needs_enrollment, blocked, guarded, token_invalid, failed; stale plan "
        "users), or the run stopped before the end\n  1  error (bad policy, preflight, "
        "refused plan, bad options)",
        example="mfa-policy apply -c mfa-policy.yaml --user-pool-id eu-west-1_AbCdEfGhI "
        "--plan plan.json",
    )
    _add_run_options(apply, with_format=True)
    apply.add_argument(
        "--plan",
        metavar="PLAN",
        help="send exactly the requests of this plan (from drift --out), only to users still "
        "in the state the plan observed; others are skipped as stale",
    )
    apply.set_defaults(handler=_cmd_run)

    rollback = _help(
        commands,
        "rollback",
        summary="restore the users an apply changed, where their state is still what it left",
        description="Restore the before-state an apply recorded in its report, only for users "
        "whose state is still exactly what that apply left; anyone changed since is skipped.",
        exit_codes="  0  done\n  2  some users failed\n  1  error (not an apply report, "
        "another pool, bad options)",
        example="mfa-policy rollback --user-pool-id eu-west-1_AbCdEfGhI "
        "--from-report .mfa-policy/reports/RUN_ID",
    )
    _add_pool_option(rollback)
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
    _add_quiet_option(rollback)
    _add_aws_options(rollback)
    rollback.set_defaults(handler=_cmd_rollback)

    demo = _help(
        commands,
        "demo",
        summary="drift, apply, drift on a seeded pool in an embedded Cognito stand-in "
        "(needs the demo extra: moto)",
        description="Start an embedded Cognito stand-in on 127.0.0.1, seed a pool in every "
        "interesting state, and run drift, apply and drift on it. Touches no AWS account.",
        exit_codes="  0  the demo ran\n  1  error",
        example="mfa-policy demo --users 200",
    )
    demo.add_argument(
        "--users", type=_int_at_least(2), default=1000, help="pool size (default: %(default)s)"
    )
    demo.add_argument(
        "--report-dir",
        default="mfa-policy-demo",
        metavar="DIR",
        help="where the three reports go (default: %(default)s)",
    )
    _add_quiet_option(demo)
    demo.set_defaults(handler=_cmd_demo)

    standin = _help(
        commands,
        "standin",
        summary="serve the Cognito stand-in on 127.0.0.1 with a seeded pool, to try commands "
        "by hand (needs the demo extra: moto)",
        description="Start the embedded Cognito stand-in on 127.0.0.1, seed a demo pool, write "
        "the demo policy, and print the endpoint, the pool id and the exact drift, apply, "
        "rollback and get-user-mfa commands to run against it. Serves until Ctrl-C.",
        exit_codes="  0  stopped with Ctrl-C\n  1  error (moto missing: install the demo extra)",
        example="mfa-policy standin --port 5005",
    )
    standin.add_argument("--users", type=int, default=200, help="pool size (default: %(default)s)")
    standin.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)"
    )
    standin.add_argument(
        "--policy-file",
        default="mfa-policy-standin.yaml",
        metavar="FILE",
        help="where to write the demo policy (default: %(default)s)",
    )
    standin.set_defaults(handler=_cmd_standin)

    completion = _help(
        commands,
        "completion",
        summary="print a shell completion script (bash, zsh or tcsh)",
        description="Print a completion script for mfa-policy's commands and options.",
        exit_codes="  0  printed",
        example='eval "$(mfa-policy completion bash)"',
    )
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    completion.set_defaults(handler=_cmd_completion)

    from mfa_policy.cli.single_user import register as register_single_user

    register_single_user(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 success and nothing to do; 2 drift found or not converged; 1 every error,
    usage errors included; 130 interrupted outside a run (a run stopped by Ctrl-C exits 2)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0, usage errors 1
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
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
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        # A bug, not bad input: still one line and exit 1, so a pipeline never reads it as
        # drift; MFA_POLICY_DEBUG=1 shows the traceback.
        if os.environ.get("MFA_POLICY_DEBUG"):
            raise
        print(
            f"error: internal error ({type(exc).__name__}: {exc}); please report it "
            "(MFA_POLICY_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
