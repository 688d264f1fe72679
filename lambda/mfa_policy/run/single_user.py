"""One user at a time: a safer ``set-user-mfa-preference``, and ``get-user-mfa``.

The AWS CLI's input forms (shorthand, JSON, ``file://``, ``--cli-input-json``/``--cli-input-yaml``,
``--generate-cli-skeleton``, the legacy ``--mfa-options``) are parsed here into a
``PreferenceInput``; ``plan_change`` (pure) turns it and the user's current state into what to
send, what Cognito would reject and what would hurt; ``set_preference`` and ``get_user_mfa`` do
the reads and the write through the gateway. The CLI module only wires argparse to these.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import BotoCoreError

from mfa_policy.aws.gateway import CognitoError, CognitoGateway, MfaRead, PoolMfaConfig
from mfa_policy.core.engine import (
    Mode,
    Rejection,
    apply_request,
    changed_factors,
    decide,
    describe_change,
)
from mfa_policy.core.model import (
    FACTOR_ORDER,
    FEDERATED_STATUS,
    REQUIRED_ATTRIBUTE,
    Factor,
    FactorWrite,
    MfaRequest,
    MfaState,
    User,
)
from mfa_policy.core.policy import Match, Policy
from mfa_policy.core.report import mask_email, mask_identifier, mask_phone
from mfa_policy.exceptions import MfaPolicyError, RunError

# --------------------------------------------------------------------------------------------
# Errors: each message says why, and what to do about it. The CLI prints them and exits 1.


class SingleUserError(MfaPolicyError):
    """Base of this module's errors."""


class InputError(SingleUserError):
    """The command line or input file cannot be parsed (nothing was sent)."""


class UnsafeRequestError(SingleUserError):
    """Cognito would reject the request, or it needs a --force: nothing was sent."""


class CognitoRequestError(SingleUserError):
    """Cognito refused a read or the write."""


# --------------------------------------------------------------------------------------------
# Masking: phone numbers and email addresses never appear unmasked in anything printed.


def mask_attribute(name: str, value: str) -> str:
    """An attribute's value as it may be printed."""
    if name == "email":
        return mask_email(value)
    if name == "phone_number":
        return mask_phone(value)
    return mask_identifier(value)


# --------------------------------------------------------------------------------------------
# Input: the AWS CLI's forms.

#: API parameter name -> the factor it sets.
SETTINGS_PARAMS: Mapping[str, Factor] = {f.settings_key: f for f in FACTOR_ORDER}
#: API parameter name -> the command-line option the AWS CLI uses for it.
OPTION_OF: Mapping[str, str] = {
    "SMSMfaSettings": "--sms-mfa-settings",
    "SoftwareTokenMfaSettings": "--software-token-mfa-settings",
    "EmailMfaSettings": "--email-mfa-settings",
    "MFAOptions": "--mfa-options",
    "AccessToken": "--access-token",
    "UserPoolId": "--user-pool-id",
    "Username": "--username",
}
_SETTINGS_MEMBERS = ("Enabled", "PreferredMfa")
_MFA_OPTION_MEMBERS = ("DeliveryMedium", "AttributeName")
TOKEN_KEYS = ("AccessToken",)
ADMIN_KEYS = ("UserPoolId", "Username")

LEGACY_SMS_NOTE = (
    "--mfa-options DeliveryMedium=SMS,AttributeName=phone_number is the legacy SetUserSettings "
    "switch for SMS MFA (Cognito no longer supports it); it stands for --sms-mfa-settings "
    "Enabled=true, which is what mfa-policy sends"
)
LEGACY_OFF_NOTE = (
    "--mfa-options [] is the legacy SetUserSettings way to turn SMS MFA off; it stands for "
    "--sms-mfa-settings Enabled=false, which is what mfa-policy sends"
)


@dataclass(frozen=True)
class FactorInput:
    """One ``*MfaSettings`` block as given; ``None`` is a member left out."""

    enabled: bool | None = None
    preferred: bool | None = None

    def to_cognito(self) -> dict[str, bool]:
        out = {}
        if self.enabled is not None:
            out["Enabled"] = self.enabled
        if self.preferred is not None:
            out["PreferredMfa"] = self.preferred
        return out


@dataclass(frozen=True)
class PreferenceInput:
    """Everything a set-user-mfa-preference invocation asks for, from every input form."""

    settings: Mapping[Factor, FactorInput]
    access_token: str | None = None
    user_pool_id: str | None = None
    username: str | None = None
    notes: tuple[str, ...] = ()

    def settings_to_cognito(self) -> dict[str, dict[str, bool]]:
        return {
            f.settings_key: self.settings[f].to_cognito()
            for f in FACTOR_ORDER
            if f in self.settings
        }


def read_value(value: str, *, what: str) -> str:
    """A parameter value, or the contents of the file a ``file://``/``fileb://`` value names."""
    for prefix in ("file://", "fileb://"):
        if value.startswith(prefix):
            path = Path(os.path.expanduser(value[len(prefix) :]))
            try:
                return path.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise InputError(f"{what}: cannot read {path}: {reason}") from None
    return value


def parse_shorthand(text: str, *, what: str) -> dict[str, str]:
    """The AWS CLI shorthand ``Key=value,Key="value"`` as a dict of strings."""
    out: dict[str, str] = {}
    position = 0
    text = text.strip()
    while position < len(text):
        equals = text.find("=", position)
        if equals < 0:
            raise InputError(
                f"{what}: expected Key=value in {text!r} at {text[position:]!r} "
                "(shorthand is Key=value,Key=value; JSON starts with '{')"
            )
        key = text[position:equals].strip()
        if not key or "," in key:
            raise InputError(f"{what}: expected Key=value in {text!r}, found {key!r}")
        position = equals + 1
        while position < len(text) and text[position] == " ":
            position += 1
        if position < len(text) and text[position] in "\"'":
            quote = text[position]
            end = text.find(quote, position + 1)
            if end < 0:
                raise InputError(f"{what}: unterminated {quote} quote in {text!r}")
            value = text[position + 1 : end]
            position = end + 1
            rest = text[position:].lstrip(" ")
            if rest and not rest.startswith(","):
                raise InputError(f"{what}: expected ',' after the quoted value in {text!r}")
            position = len(text) - len(rest) + (1 if rest else 0)
        else:
            comma = text.find(",", position)
            end = len(text) if comma < 0 else comma
            value = text[position:end].strip()
            position = end + 1
        if key in out:
            raise InputError(f"{what}: {key} is given twice in {text!r}")
        out[key] = value
    return out


def _looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[")


def _decode_json(text: str, *, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what}: not valid JSON: {exc.msg} (line {exc.lineno})") from None


def _bool_member(value: object, *, what: str, from_shorthand: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_shorthand and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InputError(f"{what}: expected true or false, got {value!r}")


def _check_members(members: Mapping[str, object], allowed: Sequence[str], *, what: str) -> None:
    unknown = [k for k in members if k not in allowed]
    if unknown:
        raise InputError(
            f'{what}: unknown parameter "{unknown[0]}", must be one of: {", ".join(allowed)}'
        )


def parse_settings(value: str | Mapping[str, object], *, what: str) -> FactorInput:
    """One ``*MfaSettings`` value: shorthand, JSON, ``file://``, or an already decoded mapping."""
    from_shorthand = False
    if isinstance(value, str):
        text = read_value(value, what=what)
        if _looks_like_json(text):
            decoded = _decode_json(text, what=what)
        else:
            decoded = parse_shorthand(text, what=what)
            from_shorthand = True
    else:
        decoded = value
    if not isinstance(decoded, Mapping):
        raise InputError(
            f"{what}: expected a structure like Enabled=true,PreferredMfa=false or "
            f'{{"Enabled": true, "PreferredMfa": false}}, got {decoded!r}'
        )
    _check_members(decoded, _SETTINGS_MEMBERS, what=what)
    members = {
        key: _bool_member(decoded[key], what=f"{what} {key}", from_shorthand=from_shorthand)
        for key in _SETTINGS_MEMBERS
        if key in decoded and decoded[key] is not None
    }
    return FactorInput(members.get("Enabled"), members.get("PreferredMfa"))


def translate_mfa_options(values: Sequence[str] | Sequence[object]) -> tuple[FactorInput, str]:
    """The legacy ``--mfa-options`` (SetUserSettings' MFAOptions) as the SMS setting it meant.

    Returns the SMS block and the one line that explains the translation.
    """
    what = "--mfa-options"
    items: list[object] = []
    for value in values:
        if isinstance(value, str):
            text = read_value(value, what=what)
            if _looks_like_json(text):
                decoded = _decode_json(text, what=what)
                items.extend(decoded if isinstance(decoded, list) else [decoded])
            else:
                items.append(parse_shorthand(text, what=what))
        else:
            items.append(value)
    for item in items:
        if not isinstance(item, Mapping):
            raise InputError(f"{what}: expected DeliveryMedium=SMS,AttributeName=phone_number")
        _check_members(item, _MFA_OPTION_MEMBERS, what=what)
        medium = str(item.get("DeliveryMedium", "")).upper()
        attribute = item.get("AttributeName", "phone_number")
        if medium != "SMS":
            raise InputError(
                f"{what}: DeliveryMedium={item.get('DeliveryMedium')!s} is not supported: the "
                "legacy MFAOptions only ever switched SMS MFA on (Cognito answers 'Only "
                "phone_number attribute is currently supported as a MFA option'); for email "
                "MFA use --email-mfa-settings Enabled=true"
            )
        if attribute != "phone_number":
            raise InputError(
                f"{what}: AttributeName={attribute!s} is not supported: the only valid value "
                "is phone_number"
            )
    if not items:
        return FactorInput(enabled=False, preferred=None), LEGACY_OFF_NOTE
    return FactorInput(enabled=True, preferred=None), LEGACY_SMS_NOTE


def load_cli_input(text: str, *, yaml_format: bool) -> dict[str, Any]:
    """The document of ``--cli-input-json``/``--cli-input-yaml`` (inline or ``file://``)."""
    what = "--cli-input-yaml" if yaml_format else "--cli-input-json"
    text = read_value(text, what=what)
    if yaml_format:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{what}: not valid YAML: {exc}") from None
    else:
        document = _decode_json(text, what=what)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise InputError(f"{what}: expected an object with the request's parameters")
    return document


def build_input(
    *,
    command_line: Mapping[str, object | None],
    cli_input: Mapping[str, Any] | None = None,
    admin_command: bool = False,
    input_option: str = "--cli-input-json",
) -> PreferenceInput:
    """Merge the input file and the command line (the command line wins, parameter by parameter).

    ``command_line`` maps API parameter names (``SMSMfaSettings``, ``MFAOptions``,
    ``AccessToken``, ...) to the raw option values (``None`` when not given).
    """
    allowed = [*SETTINGS_PARAMS, "MFAOptions", *([] if admin_command else TOKEN_KEYS), *ADMIN_KEYS]
    document = dict(cli_input or {})
    if "WebAuthnMfaSettings" in document:
        raise InputError(
            f"{input_option}: WebAuthnMfaSettings is not supported: mfa-policy manages SMS, "
            "TOTP and email MFA"
        )
    _check_members(document, allowed, what=input_option)
    merged: dict[str, tuple[object, str]] = {
        key: (value, f"{input_option} {key}")
        for key, value in document.items()
        if value is not None and value != ""
    }
    given = {key for key, value in command_line.items() if value is not None}
    # --mfa-options is the legacy spelling of SMSMfaSettings: one on the command line
    # overrides the other in the file, as any command-line value overrides the file's.
    for key, legacy in (("SMSMfaSettings", "MFAOptions"), ("MFAOptions", "SMSMfaSettings")):
        if key in given and legacy not in given:
            merged.pop(legacy, None)
    for key in given:
        merged[key] = (command_line[key], OPTION_OF.get(key, key))

    settings: dict[Factor, FactorInput] = {}
    for key, factor in SETTINGS_PARAMS.items():
        if key in merged:
            value, what = merged[key]
            if not isinstance(value, str | Mapping):
                raise InputError(f"{what}: expected a structure, got {value!r}")
            settings[factor] = parse_settings(value, what=what)
    notes: list[str] = []
    if "MFAOptions" in merged:
        if Factor.SMS in settings:
            raise InputError(
                "--mfa-options is the legacy form of --sms-mfa-settings; pass one of them"
            )
        value, _ = merged["MFAOptions"]
        values = value if isinstance(value, list) else [value]
        settings[Factor.SMS], note = translate_mfa_options(values)
        notes.append(note)

    def text(key: str) -> str | None:
        if key not in merged:
            return None
        value, what = merged[key]
        if not isinstance(value, str):
            raise InputError(f"{what}: expected a string")
        return value

    target = build_target(
        access_token=text("AccessToken"),
        user_pool_id=text("UserPoolId"),
        username=text("Username"),
        admin_command=admin_command,
    )
    return PreferenceInput(
        settings, target.access_token, target.user_pool_id, target.username, tuple(notes)
    )


def build_target(
    *,
    access_token: str | None,
    user_pool_id: str | None,
    username: str | None,
    admin_command: bool = False,
) -> Target:
    """Whose MFA: ``--access-token``, or ``--user-pool-id`` with ``--username``; not both."""
    access_token, user_pool_id, username = (
        read_value(value, what=what).strip() or None if value else None
        for value, what in (
            (access_token, "--access-token"),
            (user_pool_id, "--user-pool-id"),
            (username, "--username"),
        )
    )
    if access_token is not None and (user_pool_id is not None or username is not None):
        raise InputError(
            "--access-token identifies the user by itself; pass either --access-token, or "
            "--user-pool-id with --username (the admin API), not both"
        )
    if access_token is None and (user_pool_id is None or username is None):
        missing = " and ".join(
            name
            for name, value in (("--user-pool-id", user_pool_id), ("--username", username))
            if value is None
        )
        if admin_command:
            raise InputError(f"missing {missing}")
        raise InputError(
            "say whose MFA this is: --access-token with the user's own access token, "
            f"or --user-pool-id with --username (missing {missing})"
        )
    return Target(access_token, user_pool_id, username)


# --------------------------------------------------------------------------------------------
# Skeletons.


def input_skeleton(*, admin: bool) -> dict[str, Any]:
    """A sample input for ``--cli-input-json``: a valid request (prefer TOTP, keep SMS on)."""
    skeleton: dict[str, Any] = {
        "SMSMfaSettings": {"Enabled": True, "PreferredMfa": False},
        "SoftwareTokenMfaSettings": {"Enabled": True, "PreferredMfa": True},
        "EmailMfaSettings": {"Enabled": False, "PreferredMfa": False},
    }
    if admin:
        skeleton.update(UserPoolId="", Username="")
    else:
        skeleton["AccessToken"] = ""
    return skeleton


def render_skeleton(skeleton: Mapping[str, Any], *, yaml_format: bool) -> str:
    if yaml_format:
        return yaml.safe_dump(dict(skeleton), sort_keys=False).rstrip("\n")
    return json.dumps(skeleton, indent=4)


def output_skeleton(inp: PreferenceInput) -> dict[str, Any]:
    """A sample of the ``--output json`` result for these inputs: as if the user had no MFA."""
    before = MfaState()
    request = resolve_request(inp.settings, before)
    return {
        "before": before.to_dict(),
        "after": apply_request(before, request).to_dict(),
        "request": inp.settings_to_cognito(),
        "dry_run": False,
    }


# --------------------------------------------------------------------------------------------
# The plan: pure checks of a request against the user's current state.


def static_problems(settings: Mapping[Factor, FactorInput]) -> list[str]:
    """What Cognito rejects whatever the user's state: checked before any request is sent.

    Only members given explicitly count; one left out is resolved against the user's state.
    """
    preferred = MfaRequest({f: FactorWrite(True, True) for f, s in settings.items() if s.preferred})
    preferred_off = MfaRequest(
        {
            f: FactorWrite(False, True)
            for f, s in settings.items()
            if s.preferred and s.enabled is False
        }
    )
    two = more_than_one_preferred(preferred)
    return [*([two] if two else []), *preferred_but_disabled(preferred_off)]


def resolve_request(settings: Mapping[Factor, FactorInput], before: MfaState) -> MfaRequest:
    """Every block complete: a member left out keeps the user's current value.

    ``Enabled`` left out: the factor stays as it is. ``PreferredMfa`` left out: the factor stays
    preferred if it is now and stays enabled, unless another block asks to be preferred.
    """
    another_preferred = any(s.preferred for s in settings.values())
    blocks = {}
    for factor, given in settings.items():
        enabled = given.enabled if given.enabled is not None else factor in before.enabled
        if given.preferred is not None:
            preferred = given.preferred
        else:
            preferred = enabled and not another_preferred and before.preferred == factor
        blocks[factor] = FactorWrite(enabled, preferred)
    return MfaRequest(blocks)


def effective_request(request: MfaRequest, before: MfaState) -> MfaRequest:
    """The request without blocks that change nothing for this user (Cognito may reject those:
    an SMS block of any kind, for a user with no phone number)."""
    after = apply_request(before, request)
    changed = changed_factors(before, after)
    return MfaRequest({f: w for f, w in request.blocks.items() if f in changed})


def more_than_one_preferred(request: MfaRequest) -> str | None:
    preferred = [f for f in FACTOR_ORDER if f in request.blocks and request.blocks[f].preferred]
    if len(preferred) > 1:
        return (
            "only one factor can be preferred, and this request prefers "
            f"{' and '.join(f.value for f in preferred)} (Cognito rejects it); set "
            "PreferredMfa=true on one of them"
        )
    return None


def preferred_but_disabled(request: MfaRequest) -> list[str]:
    return [
        f"{f.settings_key}: PreferredMfa=true needs Enabled=true (Cognito rejects a preferred "
        "factor that is off)"
        for f in FACTOR_ORDER
        if f in request.blocks and request.blocks[f].preferred and not request.blocks[f].enabled
    ]


def missing_attributes(request: MfaRequest, attributes: Mapping[str, str]) -> list[str]:
    """Cognito rejects any block, even a disabling one, for a factor whose attribute is missing."""
    out = []
    for factor in FACTOR_ORDER:
        name = REQUIRED_ATTRIBUTE.get(factor)
        if factor in request.blocks and name and not attributes.get(name):
            out.append(
                f"{factor.settings_key}: the user has no {name} attribute, and Cognito rejects "
                f"any {factor.value} MFA setting without one; add it first (admin-update-user-"
                f"attributes --user-attributes Name={name},Value=...)"
            )
    return out


def pool_problems(request: MfaRequest, pool: PoolMfaConfig, pool_id: str) -> list[str]:
    out = []
    if Factor.EMAIL in request.blocks and Factor.EMAIL not in pool.factors:
        out.append(
            f"EmailMfaSettings: user pool {pool_id} has no email MFA configured (it needs the "
            "Essentials tier and an SES email configuration), and Cognito rejects email MFA "
            "settings until it has"
        )
    if pool.mode == "ON":
        for factor in FACTOR_ORDER:
            write = request.blocks.get(factor)
            if write is not None and not write.enabled:
                out.append(
                    f"{factor.settings_key}: user pool {pool_id} requires MFA (ON), and Cognito "
                    f"refuses to turn {factor.value} off; it only lets you change which factor "
                    "is preferred"
                )
    return out


def last_factor_removed(before: MfaState, after: MfaState) -> str | None:
    if before.enabled and not after.enabled:
        names = ", ".join(f.value for f in FACTOR_ORDER if f in before.enabled)
        return (
            f"this turns off the user's last MFA factor ({names}): they would sign in with a "
            "password alone. Pass --force to do it anyway"
        )
    return None


def totp_enrollment_note(request: MfaRequest, before: MfaState) -> str | None:
    write = request.blocks.get(Factor.TOTP)
    if write is not None and write.enabled and Factor.TOTP not in before.enabled:
        return (
            "totp is not enabled for this user yet; Cognito accepts this only if they have "
            "verified an authenticator app (associate-software-token, then "
            "verify-software-token), which no API shows, so mfa-policy sends it and reports "
            "the answer"
        )
    return None


def downgrade_warning(before: MfaState, after: MfaState) -> str | None:
    if before.preferred is Factor.TOTP and after.preferred not in (Factor.TOTP, None):
        assert after.preferred is not None
        return f"the preferred factor moves from totp to {after.preferred.value}, a weaker one"
    return None


@dataclass(frozen=True)
class Plan:
    """What set-user-mfa-preference would do for one user, decided before anything is sent."""

    before: MfaState
    request: MfaRequest  # what is sent: the resolved request without blocks that change nothing
    after: MfaState  # the state Cognito leaves if it accepts ``request``
    dropped: tuple[Factor, ...] = ()  # blocks left out because they change nothing
    problems: tuple[str, ...] = ()  # Cognito would reject: never sent
    refusal: str | None = None  # would hurt: sent only with --force
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.request.blocks)


def plan_change(
    settings: Mapping[Factor, FactorInput],
    read: MfaRead,
    pool: PoolMfaConfig | None = None,
    pool_id: str = "",
) -> Plan:
    """Resolve the request against the user's state and check it; pure."""
    before = read.mfa
    resolved = resolve_request(settings, before)
    request = effective_request(resolved, before)
    after = apply_request(before, request)
    problems: list[str] = []
    two = more_than_one_preferred(resolved)
    if two:
        problems.append(two)
    problems += preferred_but_disabled(resolved)
    problems += missing_attributes(request, read.attributes)
    if pool is not None:
        problems += pool_problems(request, pool, pool_id)
    notes = [n for n in (totp_enrollment_note(request, before),) if n]
    warnings = [w for w in (downgrade_warning(before, after),) if w]
    if read.status == FEDERATED_STATUS:
        warnings.append(
            "this is a federated user: their identity provider does the sign-in, and Cognito "
            "never asks them for MFA, whatever is set here"
        )
    if read.enabled is False:
        warnings.append("this user is disabled; the setting applies once they are enabled")
    return Plan(
        before=before,
        request=request,
        after=after,
        dropped=tuple(f for f in FACTOR_ORDER if f in resolved.blocks and f not in request.blocks),
        problems=tuple(problems),
        refusal=last_factor_removed(before, after),
        notes=tuple(notes),
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------------------------
# Talking to Cognito (through the gateway) and translating its answers.


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
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


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


def match_reasons(match: Match, user: User) -> tuple[bool, list[str]]:
    """Whether ``match`` holds for ``user``, and each condition's verdict in words."""
    if match.everyone:
        return True, ["match: all"]
    ok = True
    reasons: list[str] = []
    if match.groups:
        hits = sorted(match.groups & user.groups)
        if hits:
            reasons.append(f"member of group {hits[0]}")
        else:
            ok = False
            groups = sorted(match.groups)
            reasons.append(
                f"not a member of group {groups[0]}"
                if len(groups) == 1
                else f"not a member of any of groups {', '.join(groups)}"
            )
    if match.usernames:
        if user.username in match.usernames:
            reasons.append("username is listed")
        else:
            ok = False
            reasons.append("username is not listed")
    for name, wanted in sorted(match.attributes.items()):
        actual = user.attributes.get(name)
        if actual == wanted:
            reasons.append(f"{name} is {mask_attribute(name, wanted)}")
        else:
            ok = False
            shown = mask_attribute(name, actual) if actual else "not set"
            reasons.append(f"{name} is {shown}, not {mask_attribute(name, wanted)}")
    if match.statuses:
        if user.status in match.statuses:
            reasons.append(f"status is {user.status}")
        else:
            ok = False
            reasons.append(f"status {user.status} is not {' or '.join(sorted(match.statuses))}")
    return ok, reasons


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
        ok, reasons = match_reasons(rule.match, user)
        if ok:
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


# --------------------------------------------------------------------------------------------
# Text output.


def describe_state(state: MfaState) -> str:
    enabled = ", ".join(f.value for f in FACTOR_ORDER if f in state.enabled) or "none"
    return f"enabled {enabled}; preferred {state.preferred.value if state.preferred else 'none'}"


def describe_request(request: MfaRequest) -> str:
    if not request.blocks:
        return "nothing"
    return " ".join(
        f"{key} Enabled={str(block['Enabled']).lower()},"
        f"PreferredMfa={str(block['PreferredMfa']).lower()}"
        for key, block in request.to_cognito().items()
    )


def _row(label: str, value: str) -> str:
    return f"{label + ':':<14}{value}"


def render_set_result(result: SetResult) -> list[str]:
    plan = result.plan
    lines = [result.target.label, _row("before", describe_state(plan.before))]
    if plan.dropped:
        names = ", ".join(f.settings_key for f in plan.dropped)
        lines.append(_row("not sent", f"{names} (changes nothing for this user)"))
    if not plan.changes:
        lines.append("no change: the user already has this setting; nothing sent")
        return lines
    if result.dry_run:
        return [
            *lines,
            _row("would send", describe_request(plan.request)),
            _row("after", f"{describe_state(plan.after)} (predicted)"),
            _row("change", describe_change(plan.before, plan.after)),
            "dry run: nothing sent",
        ]
    return [
        *lines,
        _row("sent", describe_request(plan.request)),
        _row("after", describe_state(result.after)),
        _row("change", describe_change(plan.before, result.after)),
    ]


def render_user_view(view: UserMfaView, policy_source: str | None = None) -> list[str]:
    state = view.read.mfa
    lines = [
        view.target.label,
        _row("enabled", ", ".join(f.value for f in FACTOR_ORDER if f in state.enabled) or "none"),
        _row("preferred", state.preferred.value if state.preferred else "none"),
    ]
    for name in ("phone_number", "email"):
        value = view.read.attributes.get(name)
        lines.append(_row(name, mask_attribute(name, value) if value else "none"))
    if view.read.status:
        disabled = " (user disabled)" if view.read.enabled is False else ""
        lines.append(_row("status", f"{view.read.status}{disabled}"))
    exp = view.explanation
    if exp is None:
        return lines
    lines.append(_row("policy", policy_source or "policy"))
    for miss in exp["not_matched"]:
        lines.append(f"  rule {miss['rule']}: does not match ({'; '.join(miss['why'])})")
    if exp["rule"] is None:
        lines.append("  no rule matches")
    else:
        lines.append(
            f"  rule {exp['rule']} (rules[{exp['rule_index']}]) matches: {'; '.join(exp['why'])}"
            + ("" if exp["applied"] else " (not applied: the user is excluded or skipped)")
        )
    reason = f": {exp['reason']}" if exp["reason"] else ""
    lines.append(_row("outcome", f"{exp['outcome']}{reason}"))
    if exp["desired"] is not None:
        lines.append(_row("desired", describe_state(MfaState.from_dict(exp["desired"]))))
    return lines
