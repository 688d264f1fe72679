"""One user at a time: a safer ``set-user-mfa-preference``, and ``get-user-mfa``.

``set_preference`` and ``get_user_mfa`` do the reads and the write through the gateway and
translate Cognito's answers; what to send is decided by ``core.preference_change``, the input
forms are parsed by ``cli.aws_cli_input`` and the text is rendered by ``cli.single_user_render``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError

from mfa_policy.aws.gateway import CognitoError, CognitoGateway
from mfa_policy.aws.tokens import unverified_claims
from mfa_policy.core.engine import Mode, Rejection, decide
from mfa_policy.core.model import MfaRead, MfaRequest, MfaState, User
from mfa_policy.core.policy import Policy
from mfa_policy.core.preference_change import Plan, PreferenceInput, plan_change, static_problems
from mfa_policy.core.report import mask_attribute, mask_identifier
from mfa_policy.exceptions import (
    CognitoRequestError,
    InputError,
    RunError,
    UnsafeRequestError,
)


@dataclass(frozen=True)
class Target:
    """Whose MFA to read or write: by access token, or by pool and username (admin API)."""

    access_token: str | None = None
    user_pool_id: str | None = None
    username: str | None = None

    @property
    def admin(self) -> bool:
        return self.access_token is None

    @property
    def label(self) -> str:
        if self.admin:
            return f"user {mask_identifier(self.username or '')} in user pool {self.user_pool_id}"
        claims = token_claims(self.access_token or "")
        name = claims.get("username")
        if not name:
            return "the access token's user"
        return f"user {mask_identifier(str(name))} (by access token)"

    def scrub(self, text: str) -> str:
        """A message with the token and the raw username taken out."""
        if self.access_token:
            text = text.replace(self.access_token, "<access token>")
        if self.username and self.username != mask_identifier(self.username):
            text = text.replace(self.username, mask_identifier(self.username))
        return text


def token_claims(token: str) -> dict[str, Any]:
    """The unverified claims of a Cognito access token (for display and hints only)."""
    return unverified_claims(token) or {}


def region_hint(user_pool_id: str | None, access_token: str | None) -> str | None:
    """The Region a pool id (``us-west-2_abc``) or an access token's issuer names."""
    if user_pool_id and "_" in user_pool_id:
        return user_pool_id.split("_", 1)[0]
    issuer = str(token_claims(access_token or "").get("iss", ""))
    match = re.match(r"https://cognito-idp\.([a-z0-9-]+)\.amazonaws\.com/", issuer)
    return match.group(1) if match else None


def translate_error(exc: CognitoError, target: Target) -> CognitoRequestError:
    message = target.scrub(exc.message)
    if exc.code == "NotAuthorizedException":
        if not target.admin:
            return CognitoRequestError(
                f"the access token was not accepted ({message}); sign in again for a fresh one"
            )
        return CognitoRequestError(
            f"not authorized: {message} (check your AWS credentials and their "
            "cognito-idp:AdminGetUser, AdminSetUserMFAPreference and GetUserPoolMfaConfig "
            "permissions on the pool)"
        )
    if exc.code == "UserNotFoundException":
        if target.admin:
            return CognitoRequestError(
                f"no user {mask_identifier(target.username or '')} in user pool "
                f"{target.user_pool_id} ({message})"
            )
        return CognitoRequestError(f"the access token's user no longer exists ({message})")
    if exc.code == "ResourceNotFoundException":
        return CognitoRequestError(f"user pool {target.user_pool_id or ''} not found ({message})")
    if exc.rejection is Rejection.TOTP_NOT_VERIFIED:
        return CognitoRequestError(
            f"Cognito refused to enable totp: the user has not verified an authenticator app "
            f"({message}). They must add one with their own access token "
            "(associate-software-token, then verify-software-token); an administrator cannot "
            "do it for them. Nothing was changed"
        )
    if exc.code == "InvalidParameterException":
        return CognitoRequestError(f"Cognito rejected the request: {message}. Nothing was changed")
    return CognitoRequestError(f"{exc.operation} failed: {exc.code}: {message}")


def _read(gateway: CognitoGateway, target: Target) -> MfaRead:
    try:
        if target.admin:
            return gateway.admin_read(target.username or "")
        return gateway.token_read(target.access_token or "")
    except CognitoError as exc:
        raise translate_error(exc, target) from None
    except BotoCoreError as exc:
        raise CognitoRequestError(target.scrub(f"cannot read the user: {exc}")) from None


def _write(gateway: CognitoGateway, target: Target, request: MfaRequest) -> None:
    try:
        if target.admin:
            gateway.admin_write(target.username or "", request)
        else:
            gateway.token_write(target.access_token or "", request)
    except CognitoError as exc:
        raise translate_error(exc, target) from None
    except BotoCoreError as exc:
        raise CognitoRequestError(target.scrub(f"cannot write the preference: {exc}")) from None


@dataclass(frozen=True)
class SetResult:
    target: Target
    plan: Plan
    sent: bool
    dry_run: bool
    after: MfaState  # read back after a write; predicted otherwise
    forced: bool = False
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "before": self.plan.before.to_dict(),
            "after": self.after.to_dict(),
            "request": self.plan.request.to_cognito(),
            "dry_run": self.dry_run,
        }


def check_input(inp: PreferenceInput) -> None:
    """Reject, before any request, an input that asks for nothing or that Cognito never takes."""
    if not inp.settings:
        raise InputError(
            "nothing to set: pass --sms-mfa-settings, --software-token-mfa-settings or "
            "--email-mfa-settings (or the legacy --mfa-options)"
        )
    problems = static_problems(inp.settings)
    if problems:
        raise UnsafeRequestError(_problem_text(problems))


def set_preference(
    gateway: CognitoGateway, inp: PreferenceInput, *, dry_run: bool = False, force: bool = False
) -> SetResult:
    """Read the user, check the request, and (unless ``dry_run``) send it and read back."""
    check_input(inp)
    target = Target(inp.access_token, inp.user_pool_id, inp.username)
    warnings: list[str] = []
    pool = None
    if target.admin:
        try:
            pool = gateway.pool_mfa_config()  # an unknown pool raises PreflightError
        except RunError as exc:  # e.g. no GetUserPoolMfaConfig permission: Cognito still checks
            warnings.append(f"{exc}; skipping the checks against the pool's MFA configuration")
    plan = plan_change(inp.settings, _read(gateway, target), pool, inp.user_pool_id or "")
    if plan.problems:
        raise UnsafeRequestError(_problem_text(plan.problems))
    if plan.refusal and not force:
        raise UnsafeRequestError(f"refused: {plan.refusal}. Nothing was sent")
    if dry_run or not plan.changes:
        return SetResult(
            target, plan, sent=False, dry_run=dry_run, after=plan.after, warnings=tuple(warnings)
        )
    _write(gateway, target, plan.request)
    try:
        after = _read(gateway, target).mfa
    except CognitoRequestError as exc:
        after = plan.after
        warnings.append(f"the change was sent, but reading the user back failed: {exc}")
    else:
        if after != plan.after:
            warnings.append(f"Cognito left the user at {after}, not the expected {plan.after}")
    return SetResult(
        target,
        plan,
        sent=True,
        dry_run=False,
        after=after,
        forced=bool(plan.refusal),
        warnings=tuple(warnings),
    )


def _problem_text(problems: Sequence[str]) -> str:
    if len(problems) == 1:
        return f"{problems[0]}. Nothing was sent"
    lines = "\n".join(f"  {p}" for p in problems)
    return f"Cognito would reject this request:\n{lines}\nNothing was sent"


# --------------------------------------------------------------------------------------------
# get-user-mfa: one user's factors, and which rule of a policy matches them and why.


@dataclass(frozen=True)
class UserMfaView:
    target: Target
    read: MfaRead
    user: User
    explanation: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "username": mask_identifier(self.user.username),
            "status": self.read.status,
            "user_enabled": self.read.enabled,
            **self.read.mfa.to_dict(),
            "attributes": {
                name: mask_attribute(name, self.read.attributes[name])
                for name in ("phone_number", "email")
                if self.read.attributes.get(name)
            },
        }
        if self.explanation is not None:
            out["policy"] = self.explanation
        return out


def explain(policy: Policy, user: User) -> dict[str, Any]:
    """Which rule matches ``user``, why, why the rules above it do not, and what it wants.

    ``applied`` is false when the user is excluded or skipped before rules are looked at.
    """
    decision = decide(policy, user, Mode.DRIFT)
    not_matched = []
    found: dict[str, Any] = {"rule": None, "rule_index": None, "why": []}
    for index, rule in enumerate(policy.rules):
        reasons: list[str] = []
        if rule.match.matches(user, reasons):
            found = {"rule": rule.name, "rule_index": index, "why": reasons}
            break
        not_matched.append({"rule": rule.name, "why": reasons})
    return {
        **found,
        "applied": decision.rule is not None,
        "not_matched": not_matched,
        "outcome": decision.outcome.value,
        "reason": decision.reason,
        "desired": decision.desired.to_dict() if decision.desired else None,
    }


def get_user_mfa(
    gateway: CognitoGateway, target: Target, policy: Policy | None = None
) -> UserMfaView:
    read = _read(gateway, target)
    claims = token_claims(target.access_token or "")
    username = target.username or str(claims.get("username") or "")
    groups: frozenset[str] = frozenset()
    if policy is not None:
        if target.admin:
            groups = frozenset(
                g for g in sorted(policy.groups_referenced) if _is_member(gateway, target, g)
            )
        else:
            # The token lists the groups the user was in when it was issued.
            groups = frozenset(str(g) for g in claims.get("cognito:groups") or [])
    user = User(
        username=username,
        sub=read.attributes.get("sub", username),
        status=read.status or "CONFIRMED",
        enabled=read.enabled if read.enabled is not None else True,
        attributes=dict(read.attributes),
        groups=groups,
        mfa=read.mfa,
    )
    return UserMfaView(target, read, user, explain(policy, user) if policy else None)


def _is_member(gateway: CognitoGateway, target: Target, group: str) -> bool:
    try:
        return any(name == target.username for name in gateway.group_members(group))
    except CognitoError as exc:
        raise translate_error(exc, target) from None
