"""`set-user-mfa-preference` and `get-user-mfa`: one user at a time.

A thin driver: argparse in, ``cli.aws_cli_input`` parses, ``mfa_policy.run.single_user`` does
the work, ``cli.single_user_render`` renders; text or JSON out.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

SET_DESCRIPTION = """\
Set one user's MFA preference, like `aws cognito-idp set-user-mfa-preference` (same inputs:
shorthand, JSON, file://, --cli-input-json/--cli-input-yaml, --generate-cli-skeleton), but safer:
it reads the user first, refuses what Cognito would reject, refuses to turn off the user's last
factor unless --force, sends only the settings that change something, and prints the state
before and after. Identify the user with --access-token (their own token), or with
--user-pool-id and --username (the admin API)."""

SET_EPILOG = """\
exit codes:
  0  done (a dry run or a request that changes nothing included)
  1  error or refusal (the message says why and how to override, where you can)

example:
  mfa-policy {command} {who} \\
      --software-token-mfa-settings Enabled=true,PreferredMfa=true --dry-run"""

GET_EPILOG = """\
exit codes:
  0  printed
  1  error (unknown user or pool, not authorized, bad options)

example:
  mfa-policy get-user-mfa --user-pool-id eu-west-1_AbCdEfGhI --username ana -c mfa-policy.yaml"""

SETTINGS_HELP = "{name} MFA: Enabled=true|false,PreferredMfa=true|false, or JSON, or file://PATH"


def register(commands: Any) -> None:
    """Add this module's subcommands to the CLI's subparsers."""
    user = commands.add_parser(
        "set-user-mfa-preference",
        help="set one user's MFA preference (a safer `aws cognito-idp set-user-mfa-preference`)",
        description=SET_DESCRIPTION,
        epilog=SET_EPILOG.format(
            command="set-user-mfa-preference", who='--access-token "file://token.txt"'
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_set_arguments(user, admin=False)
    user.set_defaults(handler=_cmd_set, admin_command=False)

    admin = commands.add_parser(
        "admin-set-user-mfa-preference",
        help="the same, by --user-pool-id and --username (the admin API)",
        description=SET_DESCRIPTION,
        epilog=SET_EPILOG.format(
            command="admin-set-user-mfa-preference",
            who="--user-pool-id eu-west-1_AbCdEfGhI --username ana",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_set_arguments(admin, admin=True)
    admin.set_defaults(handler=_cmd_set, admin_command=True)

    get = commands.add_parser(
        "get-user-mfa",
        help="show one user's MFA factors and which policy rule matches them, and why",
        description="Print one user's enabled and preferred MFA factors; with -c, which rule "
        "of the policy matches them, why, and what the policy wants for them.",
        epilog=GET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_user_arguments(get, admin=False)
    get.add_argument(
        "-c", "--config", metavar="FILE", help="policy file: explain which rule matches the user"
    )
    _add_common_arguments(get)
    get.set_defaults(handler=_cmd_get)


def _add_user_arguments(parser: argparse.ArgumentParser, *, admin: bool) -> None:
    if not admin:
        parser.add_argument(
            "--access-token",
            metavar="TOKEN",
            help="the user's own access token (or file://PATH); never printed",
        )
    parser.add_argument(
        "--user-pool-id",
        metavar="ID",
        help="the Cognito user pool, e.g. eu-west-1_AbCdEfGhI (admin API; its Region is the "
        "default Region)",
    )
    parser.add_argument("--username", metavar="NAME", help="username or alias (admin API)")


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="text (default) or json",
    )
    parser.add_argument("--region", help="AWS Region (default: your AWS configuration)")
    parser.add_argument("--endpoint-url", metavar="URL", help="Cognito endpoint override")
    parser.add_argument("--profile", help="AWS profile to use")


def _add_set_arguments(parser: argparse.ArgumentParser, *, admin: bool) -> None:
    parser.add_argument(
        "--sms-mfa-settings", metavar="VALUE", help=SETTINGS_HELP.format(name="SMS")
    )
    parser.add_argument(
        "--software-token-mfa-settings",
        metavar="VALUE",
        help=SETTINGS_HELP.format(name="TOTP (authenticator app)"),
    )
    # An older AWS CLI example spells it so; accepted, not advertised.
    parser.add_argument(
        "--software-mfa-settings", dest="software_token_mfa_settings", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--email-mfa-settings", metavar="VALUE", help=SETTINGS_HELP.format(name="Email")
    )
    parser.add_argument(
        "--web-authn-mfa-settings",
        metavar="VALUE",
        help="passkey MFA: Enabled=true|false (no PreferredMfa), or JSON, or file://PATH",
    )
    parser.add_argument(
        "--mfa-options",
        nargs="+",
        metavar="VALUE",
        help='legacy set-user-settings form, e.g. DeliveryMedium="SMS",AttributeName='
        '"phone_number": translated to --sms-mfa-settings Enabled=true',
    )
    _add_user_arguments(parser, admin=admin)
    cli_input = parser.add_mutually_exclusive_group()
    cli_input.add_argument(
        "--cli-input-json",
        metavar="JSON",
        help="the request as JSON (inline or file://PATH); command-line values override it",
    )
    cli_input.add_argument(
        "--cli-input-yaml",
        metavar="YAML",
        help="the request as YAML (inline or file://PATH); command-line values override it",
    )
    parser.add_argument(
        "--generate-cli-skeleton",
        nargs="?",
        const="input",
        choices=("input", "yaml-input", "output"),
        help="input/yaml-input: print a sample input; output: check the inputs and print a "
        "sample output. Sends nothing",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="read the user and show what would be sent"
    )
    parser.add_argument(
        "--force", action="store_true", help="allow turning off the user's last MFA factor"
    )
    _add_common_arguments(parser)


def _gateway(args: argparse.Namespace, user_pool_id: str | None, access_token: str | None) -> Any:
    from botocore.exceptions import BotoCoreError

    from mfa_policy.aws.clients import aws_client, cli_session
    from mfa_policy.aws.gateway import CognitoGateway
    from mfa_policy.exceptions import InputError
    from mfa_policy.run.single_user import region_hint

    try:
        # The run commands' habits: the pool id's Region, and no credentials against a
        # loopback endpoint (the stand-in).
        session, region = cli_session(
            profile=args.profile,
            region=args.region,
            user_pool_id=user_pool_id,
            endpoint_url=args.endpoint_url,
        )
        region = region or region_hint(user_pool_id, access_token)
        if not region:
            raise InputError("no AWS Region: pass --region or set AWS_REGION")
        client = aws_client(
            "cognito-idp", region=region, endpoint_url=args.endpoint_url, session=session
        )
    except BotoCoreError as exc:
        raise InputError(str(exc)) from None
    return CognitoGateway(client, user_pool_id or "")


def _cmd_set(args: argparse.Namespace) -> int:
    from mfa_policy.cli import aws_cli_input as cli_input_forms
    from mfa_policy.cli import single_user_render as render
    from mfa_policy.run import single_user as su

    yaml_input = args.cli_input_yaml is not None
    raw_input = args.cli_input_yaml if yaml_input else args.cli_input_json
    cli_input = (
        cli_input_forms.load_cli_input(raw_input, yaml_format=yaml_input) if raw_input else None
    )

    if args.generate_cli_skeleton in ("input", "yaml-input"):
        admin = args.admin_command or bool(args.user_pool_id or args.username)
        skeleton = cli_input_forms.input_skeleton(admin=admin)
        print(
            cli_input_forms.render_skeleton(
                skeleton, yaml_format=args.generate_cli_skeleton == "yaml-input"
            )
        )
        return 0

    inp = cli_input_forms.build_input(
        command_line={
            "SMSMfaSettings": args.sms_mfa_settings,
            "SoftwareTokenMfaSettings": args.software_token_mfa_settings,
            "EmailMfaSettings": args.email_mfa_settings,
            "WebAuthnMfaSettings": args.web_authn_mfa_settings,
            "MFAOptions": args.mfa_options,
            "AccessToken": getattr(args, "access_token", None),
            "UserPoolId": args.user_pool_id,
            "Username": args.username,
        },
        cli_input=cli_input,
        admin_command=args.admin_command,
        input_option="--cli-input-yaml" if yaml_input else "--cli-input-json",
    )
    for note in inp.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.generate_cli_skeleton == "output":
        su.check_input(inp)
        print(json.dumps(cli_input_forms.output_skeleton(inp), indent=4))
        return 0

    gateway = _gateway(args, inp.user_pool_id, inp.access_token)
    result = su.set_preference(gateway, inp, dry_run=args.dry_run, force=args.force)
    for note in result.plan.notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in (*result.plan.warnings, *result.warnings):
        print(f"warning: {warning}", file=sys.stderr)
    if result.forced:
        print(f"warning: --force: {result.plan.refusal}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(result.to_json(), indent=4))
    else:
        print("\n".join(render.render_set_result(result)))
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    from mfa_policy.cli import aws_cli_input as cli_input_forms
    from mfa_policy.cli import single_user_render as render
    from mfa_policy.core.policy_file import load_policy_file
    from mfa_policy.run import single_user as su

    policy = load_policy_file(args.config) if args.config else None
    inp_target = cli_input_forms.build_target(
        access_token=args.access_token, user_pool_id=args.user_pool_id, username=args.username
    )
    gateway = _gateway(args, inp_target.user_pool_id, inp_target.access_token)
    view = su.get_user_mfa(gateway, inp_target, policy)
    if args.output == "json":
        print(json.dumps(view.to_json(), indent=4))
    else:
        print("\n".join(render.render_user_view(view, args.config)))
    return 0
