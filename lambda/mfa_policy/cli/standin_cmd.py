"""``mfa-policy standin``: the embedded Cognito stand-in on 127.0.0.1 with a seeded demo pool,
for trying the commands by hand. It prints the endpoint, the pool id and the exact commands,
then serves until Ctrl-C."""

from __future__ import annotations

import shlex
import sys
import threading
from pathlib import Path
from typing import TextIO

import yaml

from mfa_policy.cli.demo import DEMO_POLICY, DEMO_RATES
from mfa_policy.exceptions import MfaPolicyError

#: The one line a user without the demo extra sees.
MISSING_MOTO = (
    "the Cognito stand-in needs moto, which mfa-policy installs only with its demo extra: "
    "pip install 'mfa-policy[demo]'"
)


class MissingDemoExtra(MfaPolicyError):
    """moto, the stand-in's engine, is not installed."""


def load_standin() -> type:
    """The stand-in class, or a one-line error naming the extra that brings moto."""
    try:
        from mfa_policy.standin import CognitoStandIn
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("moto", "werkzeug", "flask"):
            raise MissingDemoExtra(MISSING_MOTO) from None
        raise
    return CognitoStandIn


def commands_for(endpoint: str, pool_id: str, policy_file: str, username: str) -> list[str]:
    """The commands to try against the stand-in, exactly as they are to be typed."""
    common = f"--user-pool-id {pool_id} --endpoint-url {endpoint}"
    policy = shlex.quote(policy_file)
    return [
        f"mfa-policy drift -c {policy} {common} --out plan.json",
        f"mfa-policy apply -c {policy} {common} --plan plan.json --report-dir applied",
        f"mfa-policy rollback {common} --from-report applied",
        f"mfa-policy get-user-mfa {common} --username {username} -c {policy}",
    ]


def serve_standin(
    *,
    users: int,
    port: int,
    policy_path: str | Path,
    out: TextIO | None = None,
    started: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Serve until Ctrl-C, or until ``stop`` is set (tests)."""
    out = out or sys.stdout
    standin_class = load_standin()
    from mfa_policy.standin import seed_demo_pool

    path = Path(policy_path)
    with standin_class(port=port) as standin:
        pool = seed_demo_pool(standin, n=users)
        document = {
            **DEMO_POLICY,
            "rate_limits": {
                "user_read": DEMO_RATES.user_read,
                "user_resource_update": DEMO_RATES.user_resource_update,
                "user_list": DEMO_RATES.user_list,
            },
        }
        path.write_text(
            "# The demo policy, written by `mfa-policy standin`.\n" + yaml.safe_dump(document),
            "utf-8",
        )
        username = next(iter(pool.usernames.get("totp_and_sms_sms_preferred") or ["user-0001"]))
        lines = [
            f"Cognito stand-in: {standin.endpoint_url} (127.0.0.1 only; no AWS account, no "
            "credentials needed)",
            f"user pool:        {pool.pool_id} ({pool.total} users)",
            f"policy:           {path}",
            "",
            "Try, from another shell in this folder:",
            *(f"  {command}" for command in commands_for(
                standin.endpoint_url, pool.pool_id, str(path), username
            )),
            "",
            "Ctrl-C stops the stand-in (its users live in memory only).",
        ]  # fmt: skip
        print("\n".join(lines), file=out, flush=True)
        if started is not None:
            started.set()
        stop = stop or threading.Event()
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            print("stand-in stopped", file=out)
    return 0
