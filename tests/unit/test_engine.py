"""The decision engine, rule by rule of DESIGN.md's semantics, and its worked examples."""

import pytest

from mfa_policy.core.engine import (
    Guard,
    Mode,
    PoolFacts,
    Rejection,
    after_rejection,
    apply_request,
    decide,
    decide_unread,
    in_rollout,
)
from mfa_policy.core.model import Factor, MfaState, Outcome, User
from mfa_policy.core.policy import parse_policy
from mfa_policy.core.policy_file import load_policy_file

TOTP, SMS, EMAIL = Factor.TOTP, Factor.SMS, Factor.EMAIL
EXAMPLE = load_policy_file("tests/fixtures/policy-example.yaml")
PHONE = {"phone_number": "+15550100"}


def state(*enabled, preferred=None):
    return MfaState(frozenset(enabled), preferred)


def user(mfa=None, *, groups=(), attributes=PHONE, username="alice", sub="sub-alice", **kw):
    return User(
        username=username,
        sub=sub,
        attributes=attributes,
        groups=frozenset(groups),
        mfa=mfa or state(),
        **kw,
    )


def policy(*rules, **top):
    return parse_policy({"version": 1, "rules": list(rules), **top})


def rule(factors, match="all", name="r", **kw):
    return {"name": name, "match": match, "factors": factors, **kw}


def simulate_apply(pol, u, *, totp_verified):
    """Apply as the runner does: send, and on a TOTP rejection send the follow-up."""
    d = decide(pol, u, Mode.APPLY)
    writes = 0
    if d.request is not None and d.probing and not totp_verified:
        d = after_rejection(d, Rejection.TOTP_NOT_VERIFIED)
    if d.request is not None:
        writes += 1
        return d, apply_request(u.mfa, d.request), writes
    return d, u.mfa, writes


# DESIGN.md's worked examples: (user, drift outcome, apply outcome, after apply, writes).
WORKED = [
    (
        "totp+sms, sms preferred",
        user(state(TOTP, SMS, preferred=SMS)),
        True,
        Outcome.WOULD_CHANGE,
        Outcome.CHANGED,
        state(TOTP, SMS, preferred=TOTP),
        1,
    ),
    (
        "admin, totp+sms, sms preferred",
        user(state(TOTP, SMS, preferred=SMS), groups=["admins"]),
        True,
        Outcome.WOULD_CHANGE,
        Outcome.CHANGED,
        state(TOTP, preferred=TOTP),
        1,
    ),
    (
        "admin, sms only, never verified",
        user(state(SMS, preferred=SMS), groups=["admins"]),
        False,
        Outcome.NEEDS_ENROLLMENT,
        Outcome.NEEDS_ENROLLMENT,
        state(SMS, preferred=SMS),
        0,
    ),
    (
        "no mfa, phone, never verified",
        user(),
        False,
        Outcome.NEEDS_ENROLLMENT,
        Outcome.NEEDS_ENROLLMENT,
        state(SMS),
        1,
    ),
    ("no mfa, no phone", user(attributes={}), False, Outcome.BLOCKED, Outcome.BLOCKED, state(), 0),
    (
        "verified but never enabled, sms preferred",
        user(state(SMS, preferred=SMS)),
        True,
        Outcome.NEEDS_ENROLLMENT,
        Outcome.CHANGED,
        state(TOTP, SMS, preferred=TOTP),
        1,
    ),
    (
        "service account",
        user(state(SMS, preferred=SMS), groups=["service-accounts"]),
        False,
        Outcome.EXCLUDED,
        Outcome.EXCLUDED,
        state(SMS, preferred=SMS),
        0,
    ),
]


@pytest.mark.parametrize(
    ("u", "verified", "drift", "applied", "after", "writes"),
    [w[1:] for w in WORKED],
    ids=[w[0] for w in WORKED],
)
def test_design_worked_examples(u, verified, drift, applied, after, writes):
    assert decide(EXAMPLE, u, Mode.DRIFT).outcome is drift
    d, final, made = simulate_apply(EXAMPLE, u, totp_verified=verified)
    assert d.outcome is applied
    assert final == after
    assert made == writes


def test_second_apply_after_convergence_writes_nothing():
    for _, u, verified, *_ in WORKED:
        _, after, _ = simulate_apply(EXAMPLE, u, totp_verified=verified)
        again = decide(
            EXAMPLE,
            User(u.username, u.sub, attributes=u.attributes, groups=u.groups, mfa=after),
            Mode.APPLY,
            probe_allowed=False,
        )
        assert again.request is None


def test_compliant_user_gets_no_request():
    d = decide(EXAMPLE, user(state(TOTP, SMS, preferred=TOTP)), Mode.APPLY)
    assert (d.outcome, d.request, d.rule) == (Outcome.COMPLIANT, None, "everyone")


def test_exclusion_by_username_wins_over_rules():
    d = decide(EXAMPLE, user(username="breakglass-1"), Mode.APPLY)
    assert (d.outcome, d.reason, d.request) == (Outcome.EXCLUDED, "excluded by username", None)


def test_exclusion_wins_over_federation():
    d = decide(EXAMPLE, user(username="breakglass-1", status="EXTERNAL_PROVIDER"), Mode.DRIFT)
    assert d.outcome is Outcome.EXCLUDED


def test_federated_user_is_skipped():
    d = decide(EXAMPLE, user(status="EXTERNAL_PROVIDER"), Mode.APPLY)
    assert d.outcome is Outcome.SKIPPED
    assert "federated" in d.reason


def test_disabled_user_is_skipped_unless_included():
    assert decide(EXAMPLE, user(enabled=False), Mode.DRIFT).outcome is Outcome.SKIPPED
    included = parse_policy({**EXAMPLE.to_dict(), "include_disabled": True})
    assert decide(included, user(enabled=False), Mode.DRIFT).outcome is Outcome.NEEDS_ENROLLMENT


def test_user_no_rule_matches_is_unmanaged():
    p = policy(rule({"totp": "preferred"}, match={"groups": ["admins"]}))
    d = decide(p, user(), Mode.DRIFT)
    assert (d.outcome, d.rule, d.desired) == (Outcome.UNMANAGED, None, None)


def test_first_matching_rule_wins():
    p = policy(
        rule({"sms": "preferred"}, match={"groups": ["a"]}, name="first"),
        rule({"sms": "disabled"}, name="second"),
    )
    assert decide(p, user(groups=["a"]), Mode.DRIFT).rule == "first"
    assert decide(p, user(groups=["b"]), Mode.DRIFT).rule == "second"


@pytest.mark.parametrize(
    ("match", "u", "expected"),
    [
        ({"groups": ["a", "b"]}, user(groups=["b"]), True),
        ({"groups": ["a"]}, user(groups=["c"]), False),
        ({"usernames": ["alice", "bob"]}, user(), True),
        ({"usernames": ["bob"]}, user(), False),
        ({"attributes": {"custom:tier": "gold"}}, user(attributes={"custom:tier": "gold"}), True),
        (
            {"attributes": {"custom:tier": "gold", "locale": "fr"}},
            user(attributes={"custom:tier": "gold"}),
            False,
        ),
        ({"status": ["FORCE_CHANGE_PASSWORD"]}, user(status="FORCE_CHANGE_PASSWORD"), True),
        ({"status": ["CONFIRMED"]}, user(status="FORCE_CHANGE_PASSWORD"), False),
        ({"groups": ["a"], "usernames": ["alice"]}, user(groups=["a"]), True),
        ({"groups": ["a"], "usernames": ["bob"]}, user(groups=["a"]), False),
    ],
    ids=[
        "group-any",
        "group-none",
        "username-any",
        "username-none",
        "attribute",
        "attributes-all",
        "status",
        "status-other",
        "and-both",
        "and-one-fails",
    ],
)
def test_match_fields_are_anded(match, u, expected):
    p = policy(rule({"sms": "enabled"}, match=match))
    assert (decide(p, u, Mode.DRIFT).outcome is not Outcome.UNMANAGED) is expected


def test_unmanaged_factor_is_left_alone():
    p = policy(rule({"sms": "enabled"}))
    d = decide(p, user(state(TOTP, EMAIL, preferred=EMAIL)), Mode.APPLY)
    assert d.desired == state(TOTP, SMS, EMAIL, preferred=EMAIL)
    assert d.request.to_cognito() == {"SMSMfaSettings": {"Enabled": True, "PreferredMfa": False}}


def test_preference_is_kept_when_rule_prefers_nothing():
    p = policy(rule({"sms": "enabled"}))
    assert decide(p, user(state(TOTP, preferred=TOTP)), Mode.DRIFT).desired == state(
        TOTP, SMS, preferred=TOTP
    )


def test_preference_is_cleared_when_its_factor_is_disabled():
    p = policy(rule({"sms": "disabled"}))
    d = decide(p, user(state(TOTP, SMS, preferred=SMS)), Mode.APPLY)
    assert d.desired == state(TOTP)
    assert d.request.to_cognito() == {"SMSMfaSettings": {"Enabled": False, "PreferredMfa": False}}
    assert d.outcome is Outcome.CHANGED


def test_preference_switch_sends_both_changed_blocks_only():
    p = policy(rule({"sms": "preferred"}))
    d = decide(
        p,
        user(
            state(TOTP, SMS, EMAIL, preferred=TOTP), attributes={**PHONE, "email": "a@example.com"}
        ),
        Mode.APPLY,
    )
    assert d.request.to_cognito() == {
        "SoftwareTokenMfaSettings": {"Enabled": True, "PreferredMfa": False},
        "SMSMfaSettings": {"Enabled": True, "PreferredMfa": True},
    }


def test_sms_without_phone_number_is_blocked():
    p = policy(rule({"sms": "preferred"}))
    d = decide(p, user(attributes={}), Mode.APPLY)
    assert (d.outcome, d.request) == (Outcome.BLOCKED, None)
    assert (
        d.reason == "sms needs a phone_number attribute; wants to enable sms; prefer sms (was none)"
    )


def test_email_without_email_attribute_is_blocked():
    p = policy(rule({"email": "enabled"}))
    assert decide(p, user(), Mode.DRIFT).outcome is Outcome.BLOCKED


def test_email_with_email_attribute_is_enabled():
    p = policy(rule({"email": "enabled"}))
    d = decide(p, user(attributes={"email": "a@example.com"}), Mode.APPLY)
    assert d.outcome is Outcome.CHANGED
    assert d.request.to_cognito() == {"EmailMfaSettings": {"Enabled": True, "PreferredMfa": False}}


def test_sms_already_enabled_without_phone_is_not_blocked():
    # The attribute is a precondition for enabling, not for keeping what the user has.
    p = policy(rule({"sms": "enabled", "totp": "disabled"}))
    d = decide(p, user(state(SMS), attributes={}), Mode.DRIFT)
    assert d.outcome is Outcome.COMPLIANT


def test_blocked_wins_over_needs_enrollment():
    d = decide(EXAMPLE, user(attributes={}), Mode.DRIFT)
    assert d.outcome is Outcome.BLOCKED
    assert d.unenrolled == {TOTP}


def test_blocked_user_still_gets_the_rest_of_the_change():
    p = policy(rule({"sms": "enabled", "email": "enabled"}))
    d = decide(p, user(attributes={"email": "a@example.com"}), Mode.APPLY)
    assert d.outcome is Outcome.BLOCKED
    assert d.request.to_cognito() == {"EmailMfaSettings": {"Enabled": True, "PreferredMfa": False}}
    assert "partial change: enable email" in d.reason


def test_blocked_user_with_verified_totp_gets_totp_through_the_probe():
    d = decide(EXAMPLE, user(attributes={}), Mode.APPLY)
    assert d.probing
    assert d.outcome is Outcome.BLOCKED
    assert apply_request(d.before, d.request) == state(TOTP, preferred=TOTP)


def test_apply_probes_unenrolled_totp_and_predicts_changed():
    d = decide(EXAMPLE, user(state(SMS, preferred=SMS)), Mode.APPLY)
    assert d.probing
    assert d.outcome is Outcome.CHANGED
    assert d.request.to_cognito() == {
        "SoftwareTokenMfaSettings": {"Enabled": True, "PreferredMfa": True},
        "SMSMfaSettings": {"Enabled": True, "PreferredMfa": False},
    }


def test_drift_reports_unenrolled_totp_without_probing():
    d = decide(EXAMPLE, user(state(SMS, preferred=SMS)), Mode.DRIFT)
    assert (d.outcome, d.probing, d.request) == (Outcome.NEEDS_ENROLLMENT, False, None)
    assert (
        d.reason == "totp needs an enrolled authenticator; wants to enable totp; "
        "prefer totp (was sms)"
    )


def test_probe_not_allowed_sends_only_the_partial_change():
    d = decide(EXAMPLE, user(), Mode.APPLY, probe_allowed=False)
    assert (d.outcome, d.probing) == (Outcome.NEEDS_ENROLLMENT, False)
    assert d.request.to_cognito() == {"SMSMfaSettings": {"Enabled": True, "PreferredMfa": False}}


def test_rejected_probe_falls_back_and_keeps_the_last_factor():
    d = decide(EXAMPLE, user(state(SMS, preferred=SMS), groups=["admins"]), Mode.APPLY)
    assert d.request.to_cognito() == {
        "SoftwareTokenMfaSettings": {"Enabled": True, "PreferredMfa": True},
        "SMSMfaSettings": {"Enabled": False, "PreferredMfa": False},
    }
    follow = after_rejection(d, Rejection.TOTP_NOT_VERIFIED)
    assert (follow.outcome, follow.request, follow.target) == (
        Outcome.NEEDS_ENROLLMENT,
        None,
        state(SMS, preferred=SMS),
    )
    assert follow.reason.startswith("probe rejected: software token not verified")


def test_rejected_phone_turns_into_blocked():
    # The phone number was removed between our read and our write.
    d = decide(EXAMPLE, user(state(TOTP, preferred=TOTP)), Mode.APPLY)
    follow = after_rejection(d, Rejection.NO_PHONE_NUMBER)
    assert (follow.outcome, follow.request) == (Outcome.BLOCKED, None)


def test_guard_keeps_every_factor_when_only_unreachable_ones_remain():
    p = policy(rule({"totp": "preferred", "sms": "disabled", "email": "disabled"}))
    u = user(state(SMS, EMAIL, preferred=EMAIL), attributes={**PHONE, "email": "e@x.io"})
    d = after_rejection(decide(p, u, Mode.APPLY), Rejection.TOTP_NOT_VERIFIED)
    assert (d.target, d.request) == (state(SMS, EMAIL, preferred=EMAIL), None)


@pytest.mark.parametrize("mode", list(Mode))
def test_a_rule_disabling_a_users_only_factor_is_guarded_not_changed(mode):
    # SMS only, and the rule disables SMS: the guard keeps it, and says so.
    p = policy(rule({"sms": "disabled"}))
    d = decide(p, user(state(SMS, preferred=SMS)), mode)
    assert (d.outcome, d.request, d.target) == (
        Outcome.GUARDED,
        None,
        state(SMS, preferred=SMS),
    )
    assert d.reason == (
        "last_factor: the policy would remove the user's last factor; it was kept; "
        "wants to prefer none (was sms); disable sms"
    )


def test_guarded_wins_when_a_disabled_factor_also_lacks_its_attribute():
    # Email only, no email attribute, rule disables email and sms.
    p = policy(rule({"sms": "disabled", "email": "disabled"}))
    u = user(state(EMAIL, preferred=EMAIL), attributes={})
    d = decide(p, u, Mode.APPLY)
    assert (d.outcome, d.request) == (Outcome.GUARDED, None)


def test_rollout_defers_users_outside_and_is_stable():
    p = policy(rule({"sms": "enabled"}, rollout={"percent": 25}))
    subs = [f"sub-{i}" for i in range(2000)]
    outcomes = [decide(p, user(sub=s), Mode.APPLY).outcome for s in subs]
    inside = outcomes.count(Outcome.CHANGED)
    assert outcomes.count(Outcome.DEFERRED) + inside == len(subs)
    assert 400 < inside < 600
    assert outcomes == [decide(p, user(sub=s), Mode.APPLY).outcome for s in subs]


def test_rollout_defers_every_user_outside_it_as_a_run_does_and_a_read_says_what_would_change():
    # A run decides users outside a rollout from the listing, unread, so it cannot tell a
    # compliant one from one that would change; a single-user decision must agree with it.
    p = policy(rule({"sms": "enabled"}, rollout={"percent": 0}))
    compliant, drifted = user(state(SMS)), user()
    for u in (compliant, drifted):
        d = decide(p, u, Mode.APPLY)
        assert (d.outcome, d.request) == (Outcome.DEFERRED, None)
        unread = decide_unread(p, u)
        assert unread is not None
        assert (unread.outcome, unread.rule) == (d.outcome, d.rule)
    assert decide(p, compliant, Mode.DRIFT).reason == (
        "outside the rule's 0% rollout; already as the rule wants"
    )
    assert decide(p, drifted, Mode.DRIFT).reason == (
        "outside the rule's 0% rollout; would enable sms"
    )


def test_rollout_grows_monotonically():
    subs = [f"s{i}" for i in range(500)]
    at_10 = {s for s in subs if in_rollout(s, 10)}
    at_50 = {s for s in subs if in_rollout(s, 50)}
    assert at_10 < at_50
    assert all(in_rollout(s, 100) for s in subs)
    assert not any(in_rollout(s, 0) for s in subs)


# ---- Cognito as it really is (issue 11) ----------------------------------------------------


PASSKEY = Factor.PASSKEY
PASSWORD_AND_TOKEN = frozenset({"PASSWORD", "SOFTWARE_TOKEN"})


def test_legacy_sms_is_sms_in_effect_and_is_turned_off_with_the_current_api():
    u = user(state(SMS), legacy_sms=True, auth_factors=frozenset({"PASSWORD"}))
    d = decide(policy(rule({"sms": "disabled"})), u, Mode.DRIFT)
    # SMS is the user's only factor: the guard keeps it, and says so.
    assert d.outcome is Outcome.GUARDED and d.reason.startswith("last_factor")
    d = decide(policy(rule({"sms": "disabled", "totp": "enabled"})), u, Mode.DRIFT)
    assert d.outcome is Outcome.NEEDS_ENROLLMENT and d.legacy_sms


def test_legacy_sms_kept_on_is_moved_to_the_current_api_with_one_sms_block():
    u = user(state(SMS), legacy_sms=True)
    d = decide(policy(rule({"sms": "enabled"})), u, Mode.APPLY)
    assert d.outcome is Outcome.CHANGED
    assert d.request.to_dict() == {"sms": {"enabled": True, "preferred": False}}


def test_a_stale_totp_is_not_counted_as_the_factor_the_user_keeps():
    # Listed, but the read shows no software token: re-associated and never verified.
    u = user(state(TOTP, SMS, preferred=SMS), auth_factors=frozenset({"PASSWORD"}))
    d = decide(policy(rule({"totp": "preferred", "sms": "disabled"})), u, Mode.APPLY)
    assert d.outcome is Outcome.NEEDS_ENROLLMENT and d.request is None
    assert Guard.LAST_FACTOR in d.guards


def test_a_refused_totp_write_makes_the_listed_totp_stale_and_keeps_sms():
    u = user(state(TOTP, SMS, preferred=SMS))  # AdminGetUser: no auth factors to tell
    d = decide(policy(rule({"totp": "preferred", "sms": "disabled"})), u, Mode.APPLY)
    assert set(d.request.blocks) == {TOTP, SMS}
    follow = after_rejection(d, Rejection.TOTP_NOT_VERIFIED)
    assert follow.request is None and follow.target == u.mfa
    assert follow.outcome is Outcome.NEEDS_ENROLLMENT


@pytest.mark.parametrize(("pool_mfa", "guarded"), [("OPTIONAL", True), ("ON", False)])
def test_a_passwordless_user_gets_no_factor_turned_on_in_an_optional_pool(pool_mfa, guarded):
    u = user(auth_factors=frozenset({"SMS_OTP"}))
    d = decide(policy(rule({"sms": "enabled"})), u, Mode.APPLY, pool=PoolFacts(pool_mfa))
    assert (d.outcome is Outcome.GUARDED and d.request is None) is guarded
    if guarded:
        assert d.reason.startswith("passwordless:")


def test_a_required_pool_plans_only_the_preference_change():
    u = user(state(TOTP, SMS, preferred=SMS), auth_factors=PASSWORD_AND_TOKEN)
    p = policy(rule({"totp": "preferred", "sms": "disabled"}))
    d = decide(p, u, Mode.APPLY, pool=PoolFacts("ON"))
    assert d.outcome is Outcome.GUARDED and "pool_requires_mfa: sms kept" in d.reason
    assert apply_request(u.mfa, d.request) == state(TOTP, SMS, preferred=TOTP)
    assert all(w.enabled for w in d.request.blocks.values())


def test_passkey_mfa_is_sent_beside_a_repeated_enabled_factor():
    u = user(state(TOTP, preferred=TOTP), auth_factors=PASSWORD_AND_TOKEN | {"WEB_AUTHN"})
    d = decide(policy(rule({"passkey": "enabled"})), u, Mode.APPLY)
    assert d.outcome is Outcome.CHANGED
    assert d.request.to_dict() == {
        "totp": {"enabled": True, "preferred": True},
        "passkey": {"enabled": True, "preferred": False},
    }
    assert d.request.to_cognito()["WebAuthnMfaSettings"] == {"Enabled": True}


def test_passkey_mfa_alone_is_guarded_and_nothing_is_sent():
    u = user(auth_factors=frozenset({"PASSWORD", "WEB_AUTHN"}))
    d = decide(policy(rule({"passkey": "enabled"})), u, Mode.APPLY)
    assert d.outcome is Outcome.GUARDED and d.request is None
    assert Guard.PASSKEY_NEEDS_ANOTHER_FACTOR in d.guards


@pytest.mark.parametrize("status", ["UNCONFIRMED", "RESET_REQUIRED"])
def test_users_cognito_refuses_changes_for_are_skipped_from_the_listing(status):
    d = decide(policy(rule({"sms": "enabled"})), user(status=status), Mode.APPLY)
    assert d.outcome is Outcome.SKIPPED and d.reason.startswith(status.lower())
