"""The ``mfa-policy`` command line: a thin driver over the policy parser and the runner."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mfa_policy import __version__
from mfa_policy.exceptions import MfaPolicyError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_DRIFT = 2


def _cmd_validate(args: argparse.Namespace) -> int:
    from mfa_policy.policy_file import load_policy_file

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except MfaPolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
