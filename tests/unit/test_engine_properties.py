"""Invariants of the engine over random users and policies (hypothesis)."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from mfa_policy.core.engine import (
    Mode,
    PoolFacts,
    Rejection,
    after_rejection,
    apply_request,
    decide,
    in_effect,
)
from mfa_policy.core.model import CODE_FACTORS, FACTOR_ORDER, Factor, MfaState, Outcome, User
from mfa_policy.core.policy import parse_policy

SETTINGS = ["preferred", "enabled", "disabled"]
OPTIONAL = PoolFacts("OPTIONAL")
POOLS = st.sampled_from([PoolFacts("OPTIONAL"), PoolFacts("ON"), PoolFacts("OFF")])


@st.composite
def mfa_states(draw):
    enabled = frozenset(draw(st.sets(st.sampled_from(FACTOR_ORDER))))
    if not enabled & CODE_FACTORS:  # Cognito keeps passkey MFA only beside another factor
        enabled -= {Factor.PASSKEY}
    choices = sorted(enabled - {Factor.PASSKEY}, key=FACTOR_ORDER.index)
    preferred = draw(st.sampled_from([None, *choices]))
    return MfaState(enabled, preferred)


@st.composite
def rule_factors(draw):
    factors = draw(
        st.dictionaries(
            st.sampled_from(["totp", "sms", "email"]), st.sampled_from(SETTINGS), min_size=1
        )
    )
    preferred = [k for k, v in factors.items() if v == "preferred"]
    for extra in preferred[1:]:
        factors[extra] = "enabled"
    passkey = draw(st.sampled_from([None, "enabled", "disabled"]))
    if passkey and not (
        passkey == "enabled" and all(factors.get(f) == "disabled" for f in ("totp", "sms", "email"))
    ):
        factors["passkey"] = passkey
    return factors


@st.composite
def policies(draw):
    n = draw(st.integers(1, 3))
    rules = []
    for i in range(n):
        match = draw(st.sampled_from(["all", {"groups": ["admins"]}, {"status": ["CONFIRMED"]}]))
        r = {"name": f"r{i}", "match": match, "factors": draw(rule_factors())}
        if draw(st.booleans()):
            r["rollout"] = {"percent": draw(st.sampled_from([0, 30, 100]))}
        rules.append(r)
    return parse_policy(
        {
            "version": 1,
            "rules": rules,
            "include_disabled": draw(st.booleans()),
            "exclude": {"usernames": ["bg"]},
        }
    )


@st.composite
def users(draw):
    attributes = {}
    if draw(st.booleans()):
        attributes["phone_number"] = "+15550100"
    if draw(st.booleans()):
        attributes["email"] = "u@example.com"
    mfa = draw(mfa_states())
    if Factor.SMS in mfa.enabled:
        attributes["phone_number"] = "+15550100"  # Cognito has it for every SMS user
    # ConfiguredUserAuthFactors, or None when the read is AdminGetUser.
    auth_factors = draw(
        st.one_of(
            st.none(),
            st.sets(st.sampled_from(["PASSWORD", "SOFTWARE_TOKEN", "WEB_AUTHN"])).map(frozenset),
        )
    )
    if auth_factors is not None and Factor.PASSKEY in mfa.enabled:
        auth_factors |= {"WEB_AUTHN"}
    return User(
        username=draw(st.sampled_from(["alice", "bob", "bg"])),
        sub=draw(st.uuids()).hex,
        status=draw(
            st.sampled_from(
                ["CONFIRMED", "FORCE_CHANGE_PASSWORD", "EXTERNAL_PROVIDER", "UNCONFIRMED"]
            )
        ),
        enabled=draw(st.booleans()),
        attributes=attributes,
        groups=frozenset(draw(st.sets(st.sampled_from(["admins", "staff"])))),
        mfa=mfa,
        legacy_sms=Factor.SMS in mfa.enabled and mfa.preferred is None and draw(st.booleans()),
        auth_factors=auth_factors,
    )


def cognito_apply(u: User, request, *, totp_verified: bool, pool: PoolFacts = OPTIONAL):
    """Cognito's answer: a Rejection, or the new state. Mirrors the fidelity layer's rules."""
    assert u.status not in ("UNCONFIRMED", "RESET_REQUIRED"), "Cognito refuses these users"
    if pool.requires_mfa:
        assert all(w.enabled for w in request.blocks.values()), "no disable on a required pool"
    passkey = request.blocks.get(Factor.PASSKEY)
    if passkey is not None and passkey.enabled:
        assert any(w.enabled for f, w in request.blocks.items() if f in CODE_FACTORS), (
            "Cognito refuses passkey MFA turned on alone"
        )
        if not u.registered(Factor.PASSKEY) and Factor.PASSKEY not in u.mfa.enabled:
            return Rejection.PASSKEY_NOT_REGISTERED
    if Factor.TOTP in request.blocks and u.stale:
        return Rejection.TOTP_NOT_VERIFIED  # "User has not set up software token mfa"
    for factor, write in request.blocks.items():
        if factor is Factor.SMS and "phone_number" not in u.attributes:
            return Rejection.NO_PHONE_NUMBER
        if factor is Factor.EMAIL and "email" not in u.attributes:
            return Rejection.NO_EMAIL
        if (
            factor is Factor.TOTP
            and write.enabled
            and factor not in u.mfa.enabled
            and not totp_verified
        ):
            return Rejection.TOTP_NOT_VERIFIED
    assert sum(w.preferred for w in request.blocks.values()) <= 1
    assert all(w.enabled for w in request.blocks.values() if w.preferred)
    return apply_request(u.mfa, request)


def run_apply(policy, u, *, totp_verified, probe_allowed=True, pool=OPTIONAL):
    """One apply: the decision, then follow-ups until Cognito accepts or nothing is left to send."""
    d = decide(policy, u, Mode.APPLY, probe_allowed=probe_allowed, pool=pool)
    writes = 0
    for _ in range(5):  # each rejection freezes one more factor; four factors bound the loop
        if d.request is None:
            break
        answer = cognito_apply(u, d.request, totp_verified=totp_verified, pool=pool)
        if isinstance(answer, Rejection):
            d = after_rejection(d, answer)
            continue
        writes += 1
        # An SMS block moves legacy SMS to the current API.
        legacy = u.legacy_sms and Factor.SMS not in d.request.blocks
        registered = u.auth_factors
        totp_write = d.request.blocks.get(Factor.TOTP)
        # Only a TOTP write Cognito accepted shows the token verified; a listed TOTP may be stale.
        if registered is not None and totp_verified and totp_write and totp_write.enabled:
            registered = registered | {"SOFTWARE_TOKEN"}
        return d, replace(u, mfa=answer, legacy_sms=legacy, auth_factors=registered), writes
    assert d.request is None, "follow-ups must converge"
    return d, u, writes


def totp_reachable(u, verified):
    return verified or Factor.TOTP in u.mfa.enabled


@settings(max_examples=400)
@given(policies(), users(), st.booleans(), POOLS)
def test_apply_then_apply_again_writes_nothing(policy, u, verified, pool):
    _, after, _ = run_apply(policy, u, totp_verified=verified, pool=pool)
    # A second run probes again only if the first probe was accepted; its memory says so.
    d, _, writes = run_apply(
        policy, after, totp_verified=verified, probe_allowed=verified, pool=pool
    )
    assert writes == 0
    assert d.request is None


@settings(max_examples=400)
@given(policies(), users())
def test_applying_the_desired_state_yields_a_compliant_user(policy, u):
    d = decide(policy, u, Mode.APPLY)
    if d.desired is None or d.outcome is Outcome.DEFERRED:
        return
    settled = User(u.username, u.sub, u.status, u.enabled, u.attributes, u.groups, d.desired)
    assert decide(policy, settled, Mode.DRIFT).outcome is Outcome.COMPLIANT


@settings(max_examples=400)
@given(policies(), users(), st.booleans())
def test_at_most_one_preferred_and_preferred_is_enabled(policy, u, verified):
    d, after, _ = run_apply(policy, u, totp_verified=verified)
    for s in (d.desired, d.target, after.mfa):
        if s is not None:
            assert s.preferred is None or s.preferred in s.enabled
    if d.request is not None:
        blocks = d.request.blocks.values()
        assert sum(b.preferred for b in blocks) <= 1
        assert all(b.enabled for b in blocks if b.preferred)


@settings(max_examples=400)
@given(policies(), users())
def test_no_write_for_a_compliant_user(policy, u):
    for mode in Mode:
        d = decide(policy, u, mode)
        if d.outcome is Outcome.COMPLIANT:
            assert d.request is None


@settings(max_examples=400)
@given(policies(), users(), st.booleans())
def test_no_block_for_an_unchanged_factor(policy, u, verified):
    d, _, _ = run_apply(policy, u, totp_verified=verified)
    if d.request is None:
        return
    unchanged = []
    for factor, write in d.request.blocks.items():
        was = (factor in u.mfa.enabled, u.mfa.preferred == factor)
        if (write.enabled, write.preferred) == was:
            unchanged.append(factor)
    # The two exceptions: the SMS block that moves legacy SMS to the current API, and one
    # enabled factor repeated beside passkey MFA turned on.
    if Factor.SMS in unchanged and u.legacy_sms:
        unchanged.remove(Factor.SMS)
    passkey = d.request.blocks.get(Factor.PASSKEY)
    if passkey is not None and passkey.enabled and len(unchanged) == 1:
        assert unchanged[0] in CODE_FACTORS and d.request.blocks[unchanged[0]].enabled
        unchanged = []
    assert unchanged == []


@settings(max_examples=400)
@given(policies(), users(), st.booleans())
def test_a_user_with_a_factor_in_effect_is_never_left_with_none(policy, u, verified):
    # Not by an unreachable request, and not by a policy that disables them all (guarded).
    d, after, _ = run_apply(policy, u, totp_verified=verified)
    if in_effect(u.mfa.enabled, u.stale):
        assert in_effect(after.mfa.enabled, u.stale), d.reason


@settings(max_examples=400)
@given(policies(), users(), st.booleans())
def test_preference_is_kept_while_its_factor_stays_enabled_when_the_target_is_unreachable(
    policy, u, verified
):
    d, after, _ = run_apply(policy, u, totp_verified=verified)
    if d.desired is None or not (d.blocked or (d.unenrolled and not verified)):
        return
    wanted = d.desired.preferred
    if (
        wanted is not None
        and wanted not in after.mfa.enabled
        and u.mfa.preferred in after.mfa.enabled
    ):
        assert after.mfa.preferred == u.mfa.preferred


@settings(max_examples=200)
@given(policies(), users())
def test_drift_never_sends_and_apply_predicts_what_drift_reports(policy, u):
    drift = decide(policy, u, Mode.DRIFT)
    assert not drift.probing
    apply = decide(policy, u, Mode.APPLY)
    if drift.outcome is Outcome.WOULD_CHANGE:
        assert apply.outcome is Outcome.CHANGED
    if drift.outcome in (
        Outcome.COMPLIANT,
        Outcome.EXCLUDED,
        Outcome.SKIPPED,
        Outcome.UNMANAGED,
        Outcome.DEFERRED,
        Outcome.BLOCKED,
        Outcome.GUARDED,
    ):
        assert apply.outcome is drift.outcome


@settings(max_examples=400)
@given(policies(), users(), st.booleans())
def test_a_decision_that_sends_nothing_is_never_changed(policy, u, verified):
    for mode in Mode:
        d = decide(policy, u, mode)
        if d.request is None:
            assert d.outcome is not Outcome.CHANGED, d
    d, _, writes = run_apply(policy, u, totp_verified=verified)
    if writes == 0:
        assert d.outcome is not Outcome.CHANGED, d


@settings(max_examples=400)
@given(policies(), users(), st.booleans())
def test_an_apply_that_stops_short_of_the_desired_state_says_why(policy, u, verified):
    d, after, writes = run_apply(policy, u, totp_verified=verified)
    if d.desired is None or d.outcome is Outcome.DEFERRED:
        return
    if after.mfa == d.desired and not u.stale & d.desired.enabled:
        assert d.outcome in (Outcome.COMPLIANT, Outcome.CHANGED)
    elif after.mfa == d.desired:
        # Listed as the policy wants, but a TOTP that is not in effect: the user must verify it.
        assert d.outcome is Outcome.NEEDS_ENROLLMENT, d
    else:
        # Short of the policy: a factor out of reach, or the guard refused; never "changed".
        assert d.outcome in (Outcome.BLOCKED, Outcome.NEEDS_ENROLLMENT, Outcome.GUARDED), d
        if d.outcome is Outcome.GUARDED:
            assert writes == 0 and after.mfa == u.mfa


@settings(max_examples=400)
@given(policies(), users(), st.booleans())
def test_a_rule_that_removes_every_factor_a_user_has_is_guarded_in_drift_and_apply(
    policy, u, verified
):
    drift = decide(policy, u, Mode.DRIFT)
    if drift.desired is None or drift.outcome is Outcome.DEFERRED:
        return
    # Passkey MFA alone is no factor in effect: Cognito requires another beside it.
    refused = bool(u.mfa.enabled) and not in_effect(drift.desired.enabled)
    d, after, writes = run_apply(policy, u, totp_verified=verified)
    # Other guards (passwordless, passkey beside another factor) have their own reasons.
    assert (drift.outcome is Outcome.GUARDED and "last_factor: " in drift.reason) is refused
    assert (d.outcome is Outcome.GUARDED and "last_factor: " in d.reason) is refused
    if refused:
        assert drift.reason.startswith("last_factor: ") and d.reason == drift.reason
        assert (writes, after.mfa, d.request) == (0, u.mfa, None)
