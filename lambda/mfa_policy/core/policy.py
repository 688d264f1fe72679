"""The policy model: parse a policy document into frozen dataclasses, or say all that is wrong.

Pure: no AWS import and no YAML import (the Lambda receives the policy as normalized JSON; reading
files lives in ``policy_file``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from mfa_policy.core.model import CODE_FACTORS, FACTOR_ORDER, Factor, FactorSetting, User
from mfa_policy.core.report import mask_attribute
from mfa_policy.core.schema import Issue, defaults, validate
from mfa_policy.exceptions import PolicyError

#: Cognito's request-rate quotas per account and Region, for the warning when a limit exceeds one.
COGNITO_QUOTAS: Mapping[str, float] = {
    "user_read": 120,
    "user_resource_update": 25,
    "user_list": 30,
}


def _attribute_verdict(name: str, wanted: str, actual: str | None) -> str:
    if actual == wanted:
        return f"{name} is {mask_attribute(name, wanted)}"
    shown = mask_attribute(name, actual) if actual else "not set"
    return f"{name} is {shown}, not {mask_attribute(name, wanted)}"


@dataclass(frozen=True)
class Match:
    """Conditions a user must meet, ANDed; ``everyone`` is the ``match: all`` form."""

    everyone: bool = False
    groups: frozenset[str] = frozenset()
    usernames: frozenset[str] = frozenset()
    attributes: Mapping[str, str] = field(default_factory=dict)
    statuses: frozenset[str] = frozenset()

    def matches(self, user: User, why: list[str] | None = None) -> bool:
        """Whether every condition holds for ``user``; when ``why`` is given, each condition's
        verdict in words is appended to it (values masked), so an explanation and the engine
        can never disagree. Without ``why`` it stops at the first condition that fails."""
        ok = True
        for holds, verdict in self._verdicts(user):
            ok = ok and holds
            if why is not None:
                why.append(verdict())
            elif not ok:
                return False
        return ok

    def _verdicts(self, user: User) -> Iterator[tuple[bool, Callable[[], str]]]:
        """Each condition: whether it holds, and (lazily, it costs) why in words."""
        if self.everyone:
            yield True, lambda: "match: all"
            return
        if self.groups:
            hits = sorted(self.groups & user.groups)
            groups = sorted(self.groups)
            yield (
                bool(hits),
                lambda: (
                    f"member of group {hits[0]}"
                    if hits
                    else f"not a member of group {groups[0]}"
                    if len(groups) == 1
                    else f"not a member of any of groups {', '.join(groups)}"
                ),
            )
        if self.usernames:
            listed = user.username in self.usernames
            yield listed, lambda: "username is listed" if listed else "username is not listed"
        for name, wanted in sorted(self.attributes.items()):
            actual = user.attributes.get(name)
            yield actual == wanted, partial(_attribute_verdict, name, wanted, actual)
        if self.statuses:
            status_ok = user.status in self.statuses
            yield (
                status_ok,
                lambda: (
                    f"status is {user.status}"
                    if status_ok
                    else f"status {user.status} is not {' or '.join(sorted(self.statuses))}"
                ),
            )

    def to_dict(self) -> str | dict[str, Any]:
        if self.everyone:
            return "all"
        out: dict[str, Any] = {}
        if self.groups:
            out["groups"] = sorted(self.groups)
        if self.usernames:
            out["usernames"] = sorted(self.usernames)
        if self.attributes:
            out["attributes"] = dict(sorted(self.attributes.items()))
        if self.statuses:
            out["status"] = sorted(self.statuses)
        return out


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match
    factors: Mapping[Factor, FactorSetting]
    rollout_percent: float | None = None

    @property
    def preferred(self) -> Factor | None:
        for factor, setting in self.factors.items():
            if setting is FactorSetting.PREFERRED:
                return factor
        return None

    def factors_set_to(self, *settings: FactorSetting) -> frozenset[Factor]:
        return frozenset(f for f, s in self.factors.items() if s in settings)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "match": self.match.to_dict(),
            "factors": {f.value: self.factors[f].value for f in FACTOR_ORDER if f in self.factors},
        }
        if self.rollout_percent is not None:
            out["rollout"] = {"percent": self.rollout_percent}
        return out


@dataclass(frozen=True)
class Enrollment:
    probe: bool = True
    reprobe_after_days: int = 7


@dataclass(frozen=True)
class RateLimits:
    """Requests per second per Cognito quota category."""

    user_read: float = 60
    user_resource_update: float = 15
    user_list: float = 15


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    exclude_usernames: frozenset[str] = frozenset()
    exclude_groups: frozenset[str] = frozenset()
    include_disabled: bool = False
    enrollment: Enrollment = Enrollment()
    rate_limits: RateLimits = RateLimits()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def groups_referenced(self) -> frozenset[str]:
        """Groups whose membership the runner must list before deciding."""
        groups = set(self.exclude_groups)
        for rule in self.rules:
            groups |= rule.match.groups
        return frozenset(groups)

    @property
    def factors_enabled(self) -> frozenset[Factor]:
        """Factors some rule enables or prefers: the pool must offer each of them."""
        out: set[Factor] = set()
        for rule in self.rules:
            out |= rule.factors_set_to(FactorSetting.ENABLED, FactorSetting.PREFERRED)
        return frozenset(out)

    def to_dict(self) -> dict[str, Any]:
        """The normalized form: defaults filled in, sets sorted; parses back to an equal Policy."""
        return {
            "version": 1,
            "exclude": {
                "usernames": sorted(self.exclude_usernames),
                "groups": sorted(self.exclude_groups),
            },
            "include_disabled": self.include_disabled,
            "rules": [rule.to_dict() for rule in self.rules],
            "enrollment": {
                "probe": self.enrollment.probe,
                "reprobe_after_days": self.enrollment.reprobe_after_days,
            },
            "rate_limits": {
                "user_read": self.rate_limits.user_read,
                "user_resource_update": self.rate_limits.user_resource_update,
                "user_list": self.rate_limits.user_list,
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """Identifies the policy's meaning: formatting and comments in the file do not change it."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def parse_policy(
    document: object,
    *,
    source: str | None = None,
    lines: dict[tuple[str | int, ...], int] | None = None,
    found: Sequence[Issue] = (),
    replaced: Collection[tuple[str | int, ...]] = (),
) -> Policy:
    """Build a Policy from a decoded YAML/JSON document, or raise PolicyError with every issue.

    ``found`` are problems the file reader already saw (a YAML date, a tag, a key that is not
    a string); ``replaced`` are the paths where it left the text of such a value, whose
    schema complaints are left out, so each problem is told once."""
    issues = validate(document)
    if isinstance(document, dict):
        issues += _semantic_issues(document)
    if found:
        kept = (i for i in issues if not any(_within(i.path, path) for path in replaced))
        issues = [*found, *kept]
    if issues:
        raise PolicyError(issues, source=source, lines=lines)
    assert isinstance(document, dict)
    return _build(document)


def _within(path: tuple[str | int, ...], prefix: tuple[str | int, ...]) -> bool:
    return bool(prefix) and path[: len(prefix)] == prefix


def _semantic_issues(doc: Mapping[str, Any]) -> list[Issue]:
    """Rules the schema cannot say: one preferred factor per rule, unique rule names."""
    issues: list[Issue] = []
    rules = doc.get("rules")
    if not isinstance(rules, list):
        return issues
    first_index_of: dict[str, int] = {}
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        name = rule.get("name")
        if isinstance(name, str) and name:
            if name in first_index_of:
                issues.append(
                    Issue(
                        ("rules", index, "name"),
                        f"duplicate rule name {name!r} (also rules[{first_index_of[name]}])",
                    )
                )
            else:
                first_index_of[name] = index
        factors = rule.get("factors")
        if isinstance(factors, dict):
            preferred = [k for k, v in factors.items() if v == FactorSetting.PREFERRED.value]
            if len(preferred) > 1:
                issues.append(
                    Issue(
                        ("rules", index, "factors"),
                        f"at most one factor may be preferred; {' and '.join(preferred)} both are",
                    )
                )
            code_factors = [f.value for f in FACTOR_ORDER if f in CODE_FACTORS]
            if factors.get(Factor.PASSKEY.value) == FactorSetting.ENABLED.value and all(
                factors.get(name) == FactorSetting.DISABLED.value for name in code_factors
            ):
                issues.append(
                    Issue(
                        ("rules", index, "factors", Factor.PASSKEY.value),
                        "passkey MFA needs another MFA factor enabled beside it, and this rule "
                        f"disables {', '.join(code_factors)}",
                    )
                )
    return issues


def _build(doc: Mapping[str, Any]) -> Policy:
    exclude = doc.get("exclude", {})
    enrollment = {**defaults(("enrollment",)), **doc.get("enrollment", {})}
    rate_limits = {**defaults(("rate_limits",)), **doc.get("rate_limits", {})}
    rules = tuple(_build_rule(r) for r in doc["rules"])
    policy = Policy(
        rules=rules,
        exclude_usernames=frozenset(exclude.get("usernames", [])),
        exclude_groups=frozenset(exclude.get("groups", [])),
        include_disabled=doc.get("include_disabled", defaults(())["include_disabled"]),
        enrollment=Enrollment(**enrollment),
        rate_limits=RateLimits(**rate_limits),
    )
    return _with_warnings(policy)


def _build_rule(raw: Mapping[str, Any]) -> Rule:
    match_raw = raw["match"]
    if match_raw == "all":
        match = Match(everyone=True)
    else:
        match = Match(
            groups=frozenset(match_raw.get("groups", [])),
            usernames=frozenset(match_raw.get("usernames", [])),
            attributes=dict(match_raw.get("attributes", {})),
            statuses=frozenset(match_raw.get("status", [])),
        )
    rollout = raw.get("rollout")
    return Rule(
        name=raw["name"],
        match=match,
        factors={Factor(k): FactorSetting(v) for k, v in raw["factors"].items()},
        rollout_percent=rollout["percent"] if rollout else None,
    )


def _with_warnings(policy: Policy) -> Policy:
    warnings: list[str] = []
    for index, rule in enumerate(policy.rules):
        if rule.match.everyone and index < len(policy.rules) - 1:
            later = ", ".join(r.name for r in policy.rules[index + 1 :])
            warnings.append(
                f"rule {rule.name!r} matches all users; later rules never match: {later}"
            )
    for name, quota in COGNITO_QUOTAS.items():
        value = getattr(policy.rate_limits, name)
        if value > quota:
            warnings.append(
                f"rate_limits.{name}: {value} exceeds Cognito's default quota of {quota}/s per "
                "account and Region; requests above it are throttled"
            )
    return replace(policy, warnings=tuple(warnings))


def policy_from_json(text: str) -> Policy:
    """The runtime's entry: the construct hands the Lambda the normalized JSON."""
    return parse_policy(json.loads(text), source="policy JSON")
