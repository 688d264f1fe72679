"""`set-user-mfa-preference` and `get-user-mfa`: one user at a time (being written)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add this module's subcommands to the CLI's subparsers."""
    del commands
    _ = argparse
