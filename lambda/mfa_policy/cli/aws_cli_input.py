"""The AWS CLI's input forms for set-user-mfa-preference, parsed into a ``PreferenceInput``.

Shorthand (``Enabled=true,PreferredMfa=false``), JSON, ``file://``, ``--cli-input-json`` and
``--cli-input-yaml``, ``--generate-cli-skeleton``, and the legacy ``--mfa-options``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mfa_policy.core.engine import apply_request
from mfa_policy.core.model import FACTOR_ORDER, Factor, MfaState
from mfa_policy.core.preference_change import FactorInput, PreferenceInput, resolve_request
from mfa_policy.exceptions import InputError
from mfa_policy.run.single_user import Target

#: API parameter name -> the factor it sets.
SETTINGS_PARAMS: Mapping[str, Factor] = {f.settings_key: f for f in FACTOR_ORDER}
#: API parameter name -> the command-line option the AWS CLI uses for it.
OPTION_OF: Mapping[str, str] = {
    "SMSMfaSettings": "--sms-mfa-settings",
    "SoftwareTokenMfaSettings": "--software-token-mfa-settings",
    "EmailMfaSettings": "--email-mfa-settings",
    "WebAuthnMfaSettings": "--web-authn-mfa-settings",
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


def parse_settings(
    value: str | Mapping[str, object],
    *,
    what: str,
    members: Sequence[str] = _SETTINGS_MEMBERS,
) -> FactorInput:
    """One ``*MfaSettings`` value: shorthand, JSON, ``file://``, or an already decoded mapping.
    ``members``: WebAuthnMfaSettings has ``Enabled`` only."""
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
    _check_members(decoded, members, what=what)
    given = {
        key: _bool_member(decoded[key], what=f"{what} {key}", from_shorthand=from_shorthand)
        for key in members
        if key in decoded and decoded[key] is not None
    }
    return FactorInput(given.get("Enabled"), given.get("PreferredMfa"))


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


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or "cannot parse"
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


def load_cli_input(text: str, *, yaml_format: bool) -> dict[str, Any]:
    """The document of ``--cli-input-json``/``--cli-input-yaml`` (inline or ``file://``)."""
    what = "--cli-input-yaml" if yaml_format else "--cli-input-json"
    text = read_value(text, what=what)
    if yaml_format:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            # str(exc) quotes the offending line, which may hold the access token: say only
            # what is wrong and where.
            raise InputError(f"{what}: not valid YAML: {_yaml_problem(exc)}") from None
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
            settings[factor] = parse_settings(
                value,
                what=what,
                members=_SETTINGS_MEMBERS if factor.can_be_preferred else ("Enabled",),
            )
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
