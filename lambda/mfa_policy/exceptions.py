"""Errors a user can act on. Each carries a message fit to print as it is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mfa_policy.core.schema import Issue


class MfaPolicyError(Exception):
    """Base of every error this tool raises on purpose (the CLI prints it and exits 1)."""


class PolicyError(MfaPolicyError, ValueError):
    """A policy file that does not validate; holds every problem at once."""

    def __init__(
        self,
        issues: Sequence[Issue],
        source: str | None = None,
        lines: dict[tuple[str | int, ...], int] | None = None,
    ) -> None:
        self.issues = list(issues)
        self.source = source
        self.lines = lines or {}
        super().__init__(self.render())

    def line_of(self, issue: Issue) -> int | None:
        path = issue.path
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def render(self) -> str:
        head = f"{self.source or 'policy'}: {len(self.issues)} error" + (
            "s" if len(self.issues) != 1 else ""
        )
        rows = []
        for issue in sorted(self.issues, key=lambda i: self.line_of(i) or 0):
            line = self.line_of(issue)
            where = f"line {line}: " if line else ""
            rows.append(f"  {where}{issue}")
        return "\n".join([head, *rows])


class PreflightError(MfaPolicyError):
    """The pool cannot run this policy (a factor it needs is not configured, or no such pool)."""


class RunError(MfaPolicyError):
    """A run could not proceed (unreachable service, bad checkpoint, missing token table)."""


class SingleUserError(MfaPolicyError):
    """Base of the single-user commands' errors (set-user-mfa-preference, get-user-mfa)."""


class InputError(SingleUserError):
    """The command line or input file cannot be parsed (nothing was sent)."""


class UnsafeRequestError(SingleUserError):
    """Cognito would reject the request, or it needs a --force: nothing was sent."""


class CognitoRequestError(SingleUserError):
    """Cognito refused a read or the write."""
