"""The `mfa-policy` command line in a process of its own, for end-to-end timings.

    python -m bench.cli_child [--cloudwatch-standin URL] drift -c FILE --user-pool-id ID ...

Runs `mfa_policy.cli.main.main` unchanged, with two swaps in the clients it builds: its
cognito-idp client stamps each request with its send time for the stand-in (as every bench
client does), and with ``--cloudwatch-standin`` its CloudWatch client (for ``--share-quota``)
is the bench stand-in's GetMetricData at URL instead of AWS's.
"""

from __future__ import annotations

import sys
from typing import Any


def main(argv: list[str]) -> int:
    import mfa_policy.aws.clients as clients
    from bench.standin import RemoteCloudWatch, stamp_send_times

    real = clients.aws_client
    cloudwatch_url = None
    if argv[:1] == ["--cloudwatch-standin"]:
        cloudwatch_url, argv = argv[1], argv[2:]

    def aws_client(service: str, **kwargs: Any) -> Any:
        if service == "cloudwatch" and cloudwatch_url:
            return RemoteCloudWatch(cloudwatch_url)
        client = real(service, **kwargs)
        return stamp_send_times(client) if service == "cognito-idp" else client

    clients.aws_client = aws_client  # type: ignore[assignment]
    from mfa_policy.cli.main import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
