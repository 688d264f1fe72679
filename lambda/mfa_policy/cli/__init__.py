"""The drivers a person runs: the `mfa-policy` command line, the demo, the progress display."""

from mfa_policy.cli.main import main

__all__ = ["main"]
