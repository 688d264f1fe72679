"""Runs of a policy against the Cognito stand-in: drift, apply, rollback, resume, access tokens.

Every run goes through `run_locally` (the code path of the CLI and the demo) with a client of
the stand-in. Expected outcomes come from DESIGN.md's semantics for each kind of seeded user
(`standin/seed.py` DEMO_MIX) under the demo policy, not from the code's own output.
"""

from __future__ import annotations

import csv
import json
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mfa_policy.aws.gateway import CognitoGateway
from mfa_policy.cli.demo import DEMO_POLICY, demo_policy
from mfa_policy.core.engine import Mode
from mfa_policy.core.policy import parse_policy
from mfa_policy.exceptions import PreflightError
from mfa_policy.run.local_run import run_locally
from mfa_policy.run.rollback import rollback
from mfa_policy.standin import EMAIL, SMS, TOTP, CognitoStandIn, DemoPool

POOL_SIZE = 100
RESUME_POOL_SIZE = 125  # three pages of ListUsers
PHONE = "+15550100123"

State = dict[str, Any]


def state(*enabled: str, preferred: str | None = None) -> State:
    """A state as reports write it: enabled factors in report order, the preferred one."""
    return {
        "enabled": [f for f in ("totp", "sms", "email") if f in enabled],
        "preferred": preferred,
    }


@dataclass(frozen=True)
class Expect:
    drift: str
    apply: str
    after: State  # the user's state once apply has run
    writes: int  # accepted (Admin)SetUserMFAPreference calls in the apply
    probes: int  # TOTP probes Cognito rejected (software token not verified)


BOTH_TOTP = state("totp", "sms", preferred="totp")
SMS_ONLY = state("sms", preferred="sms")

#: Demo policy: admins -> {totp: preferred, sms: disabled}; everyone -> {totp: preferred,
#: sms: enabled}; break-glass users and the service-accounts group excluded; disabled skipped.
EXPECTED: dict[str, Expect] = {
    # {} -, phone, no token: TOTP probe rejected, then SMS enabled (DESIGN's worked example).
    "no_mfa_with_phone": Expect("needs_enrollment", "needs_enrollment", state("sms"), 1, 1),
    # {} -, no phone: SMS blocked; TOTP probed and rejected; nothing else to send.
    "no_mfa_without_phone": Expect("blocked", "blocked", state(), 0, 1),
    # {sms} sms, no token: probe rejected; already has everything else it can have.
    "sms_preferred": Expect("needs_enrollment", "needs_enrollment", SMS_ONLY, 0, 1),
    # {sms} sms with a verified token: AdminGetUserAuthFactors shows it (SOFTWARE_TOKEN), so
    # drift knows apply will enable it, and apply needs no probe.
    "totp_verified_sms_preferred": Expect("would_change", "changed", BOTH_TOTP, 1, 0),
    "totp_and_sms_no_preference": Expect("would_change", "changed", BOTH_TOTP, 1, 0),
    "totp_and_sms_sms_preferred": Expect("would_change", "changed", BOTH_TOTP, 1, 0),
    "totp_preferred": Expect("compliant", "compliant", BOTH_TOTP, 0, 0),
    # admin {sms} sms, no token: probe rejected; the last-factor guard keeps SMS.
    "admin_sms_only": Expect("needs_enrollment", "needs_enrollment", SMS_ONLY, 0, 1),
    "admin_totp_and_sms": Expect("would_change", "changed", state("totp", preferred="totp"), 1, 0),
    "service_account": Expect("excluded", "excluded", state(), 0, 0),
    "break_glass": Expect("excluded", "excluded", SMS_ONLY, 0, 0),
    "disabled": Expect("skipped", "skipped", SMS_ONLY, 0, 0),
    "federated": Expect("skipped", "skipped", state(), 0, 0),
    # {sms} - through MFAOptions only: TOTP probe rejected; SMS then set with the current API.
    "legacy_sms": Expect("needs_enrollment", "needs_enrollment", state("sms"), 1, 1),
    # {totp,sms} sms, TOTP re-associated and not verified: nothing can be done until the user
    # verifies it; SMS stays their factor in effect, and no write is sent.
    "stale_totp": Expect(
        "needs_enrollment", "needs_enrollment", state("totp", "sms", preferred="sms"), 0, 0
    ),
    # {} -, signs in without a password (MFA OPTIONAL): turning a factor on could lock out.
    "passwordless": Expect("guarded", "guarded", state(), 0, 0),
    "unconfirmed": Expect("skipped", "skipped", SMS_ONLY, 0, 0),
}
FIXABLE_KINDS = {kind for kind, e in EXPECTED.items() if e.apply == "changed"}
#: Users whose outcome does not depend on their MFA state: the runner need not read them.
OUT_OF_SCOPE = {kind for kind, e in EXPECTED.items() if e.apply in ("excluded", "skipped")}


# ---- helpers ---------------------------------------------------------------------------------


def kinds_of(pool: DemoPool) -> dict[str, str]:
    return {user: kind for kind, users in pool.usernames.items() for user in users}


def pool_state(standin: CognitoStandIn, pool_id: str) -> dict[str, State]:
    """Every user's MFA state as the stand-in holds it (read straight from its backend)."""
    names = {TOTP: "totp", SMS: "sms", EMAIL: "email"}
    out = {}
    with standin.lock:
        for user in standin.backend.user_pools[pool_id].users.values():
            enabled = [
                name
                for name, on in (
                    ("totp", user.software_token_mfa_enabled),
                    # SMS MFA through the legacy MFAOptions only is SMS in effect.
                    (
                        "sms",
                        user.sms_mfa_enabled
                        or standin.fidelity.user_flag("legacy_sms", pool_id, user.id),
                    ),
                    ("email", standin.fidelity.email_mfa_enabled(pool_id, user.id)),
                )
                if on
            ]
            preferred = (
                names.get(user.preferred_mfa_setting) if user.preferred_mfa_setting else None
            )
            out[user.username] = {"enabled": enabled, "preferred": preferred}
    return out


def rows_of(report_dir: Path) -> list[dict[str, Any]]:
    text = (report_dir / "users.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def by_user(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {row["username"]: row for row in rows}
    assert len(out) == len(rows), "a user appears twice in the report"
    return out


def run(
    standin: CognitoStandIn,
    pool_id: str,
    mode: Mode,
    tmp_path: Path,
    name: str,
    *,
    client: Any = None,
    policy: Any = None,
    **kwargs: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = run_locally(
        policy or demo_policy(),
        pool_id,
        mode,
        client=client or standin.client(),
        state_dir=kwargs.pop("state_dir", tmp_path / "state"),
        report_dir=tmp_path / name,
        **kwargs,
    )
    return result.summary, rows_of(result.report_dir)


class WriteLog:
    """Every MFA-preference call a client sends, per user, with Cognito's answer."""

    OPERATIONS = ("AdminSetUserMFAPreference", "SetUserMFAPreference")

    def __init__(self, client: Any, user_of_token: dict[str, str] | None = None) -> None:
        self.user_of_token = user_of_token or {}
        self.calls: dict[str, list[tuple[dict[str, Any], str | None]]] = defaultdict(list)
        events = client.meta.events
        for op in self.OPERATIONS:
            events.register(f"before-parameter-build.cognito-identity-provider.{op}", self._params)
            events.register(f"after-call.cognito-identity-provider.{op}", self._answer)

    def _params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["write_log_params"] = dict(params)

    def _answer(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_):
        params = context["write_log_params"]
        user = params.get("Username") or self.user_of_token[params["AccessToken"]]
        error = None if http_response.status_code == 200 else parsed["Error"]["Message"]
        self.calls[user].append((params, error))

    def accepted(self, user: str) -> int:
        return sum(1 for _, error in self.calls[user] if error is None)

    def rejected_probes(self, user: str) -> int:
        return sum(
            1
            for params, error in self.calls[user]
            if error is not None
            and ("software token" in error or "SOFTWARE_TOKEN_MFA" in error)
            and params["SoftwareTokenMfaSettings"]["Enabled"]
        )

    @property
    def total(self) -> int:
        return sum(len(calls) for calls in self.calls.values())


def outcomes_by_kind(rows: list[dict[str, Any]], kinds: dict[str, str]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        out[kinds[row["username"]]][row["outcome"]] += 1
    return out


def comparable(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {
        r["username"]: (r["rule"], r["outcome"], r["before"], r["desired"], r["after"])
        for r in rows
    }


def report_files(report_dir: Path) -> dict[str, str]:
    return {
        name: (report_dir / name).read_text("utf-8")
        for name in ("summary.json", "summary.md", "users.jsonl", "users.csv")
    }


# ---- drift, apply, second apply, second drift -----------------------------------------------


def test_drift_reports_exactly_the_users_the_policy_says_and_writes_nothing(
    standin, demo_pool, tmp_path
):
    pool = demo_pool(POOL_SIZE)
    kinds = kinds_of(pool)
    before = pool_state(standin, pool.pool_id)

    summary, rows = run(standin, pool.pool_id, Mode.DRIFT, tmp_path, "drift")

    assert sorted(by_user(rows)) == sorted(kinds)
    wrong = {
        r["username"]: r["outcome"]
        for r in rows
        if r["outcome"] != EXPECTED[kinds[r["username"]]].drift
    }
    assert wrong == {}
    assert summary["complete"] and summary["users"] == pool.total
    expected_counts = Counter(EXPECTED[kinds[u]].drift for u in kinds)
    assert {k: v for k, v in summary["counts"]["by_outcome"].items() if v} == expected_counts
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0
    assert pool_state(standin, pool.pool_id) == before


def test_apply_converges_every_fixable_user_with_one_accepted_write_each(
    standin, demo_pool, tmp_path
):
    pool = demo_pool(POOL_SIZE)
    kinds = kinds_of(pool)
    client = standin.client()
    log = WriteLog(client)

    summary, rows = run(standin, pool.pool_id, Mode.APPLY, tmp_path, "apply", client=client)

    outcomes = {r["username"]: r["outcome"] for r in rows}
    assert outcomes == {u: EXPECTED[kinds[u]].apply for u in kinds}
    calls = {u: (log.accepted(u), log.rejected_probes(u), len(log.calls[u])) for u in kinds}
    expected_calls = {
        u: (
            EXPECTED[kinds[u]].writes,
            EXPECTED[kinds[u]].probes,
            EXPECTED[kinds[u]].writes + EXPECTED[kinds[u]].probes,
        )
        for u in kinds
    }
    assert calls == expected_calls
    assert all(log.accepted(u) == 1 for u in kinds if kinds[u] in FIXABLE_KINDS)
    assert all(not log.calls[u] for u in kinds if kinds[u] == "totp_preferred")
    # Every request sent, probes included, is counted once by the report and by Cognito.
    sent = sum(e.writes + e.probes for e in (EXPECTED[k] for k in kinds.values()))
    assert log.total == sent
    assert summary["counts"]["api_calls"]["admin_set_user_mfa_preference"] == sent
    assert standin.calls["AdminSetUserMFAPreference"] == sent


def test_apply_report_after_equals_the_state_read_back_from_cognito(standin, demo_pool, tmp_path):
    pool = demo_pool(POOL_SIZE)
    kinds = kinds_of(pool)

    _, rows = run(standin, pool.pool_id, Mode.APPLY, tmp_path, "apply")

    now = pool_state(standin, pool.pool_id)
    assert now == {u: EXPECTED[kinds[u]].after for u in kinds}
    reported = {r["username"]: r["after"] for r in rows if r["after"] is not None}
    assert reported == {u: now[u] for u in reported}
    # Excluded, federated and disabled users may go unread; every user in scope is reported.
    assert {u for u, k in kinds.items() if k not in OUT_OF_SCOPE} <= set(reported)


def test_second_apply_makes_no_write(standin, demo_pool, tmp_path):
    pool = demo_pool(POOL_SIZE)
    run(standin, pool.pool_id, Mode.APPLY, tmp_path, "apply-1")
    after_first = pool_state(standin, pool.pool_id)
    standin.reset_counters()

    summary, rows = run(standin, pool.pool_id, Mode.APPLY, tmp_path, "apply-2")

    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0
    assert "admin_set_user_mfa_preference" not in summary["counts"]["api_calls"]
    assert not any(r["request"] for r in rows)
    assert summary["counts"]["by_outcome"]["changed"] == 0
    assert pool_state(standin, pool.pool_id) == after_first


def test_second_drift_reports_only_users_needing_enrollment_or_blocked(
    standin, demo_pool, tmp_path
):
    pool = demo_pool(POOL_SIZE)
    kinds = kinds_of(pool)
    run(standin, pool.pool_id, Mode.APPLY, tmp_path, "apply")

    summary, rows = run(standin, pool.pool_id, Mode.DRIFT, tmp_path, "drift-2")

    drifted = {
        r["username"]: r["outcome"]
        for r in rows
        if r["outcome"] in ("would_change", "needs_enrollment", "blocked")
    }
    assert drifted == {
        u: EXPECTED[k].apply
        for u, k in kinds.items()
        if EXPECTED[k].apply in ("needs_enrollment", "blocked")
    }
    assert summary["counts"]["by_outcome"]["would_change"] == 0
    fixed = {r["outcome"] for r in rows if kinds[r["username"]] in FIXABLE_KINDS}
    assert fixed == {"compliant"}


# ---- rollback --------------------------------------------------------------------------------


def test_rollback_restores_changed_users_and_leaves_a_user_changed_since_alone(
    standin, demo_pool, tmp_path
):
    pool = demo_pool(POOL_SIZE)
    original = pool_state(standin, pool.pool_id)
    run(standin, pool.pool_id, Mode.APPLY, tmp_path, "apply")
    applied = pool_state(standin, pool.pool_id)
    changed = {u for u in original if applied[u] != original[u]}
    assert len(changed) > 30
    # Someone turns SMS off for a migrated user after the apply: rollback must not undo that.
    moved = pool.usernames["totp_and_sms_sms_preferred"][0]
    standin.client().admin_set_user_mfa_preference(
        UserPoolId=pool.pool_id,
        Username=moved,
        SMSMfaSettings={"Enabled": False, "PreferredMfa": False},
    )
    standin.reset_counters()

    summary = rollback(
        CognitoGateway(standin.client(), pool.pool_id), tmp_path / "apply", tmp_path / "rb"
    )

    now = pool_state(standin, pool.pool_id)
    assert now[moved] == state("totp", preferred="totp")
    assert {u: s for u, s in now.items() if u != moved} == {
        u: s for u, s in original.items() if u != moved
    }
    rows = by_user(rows_of(tmp_path / "rb"))
    assert (
        rows[moved]["outcome"] == "skipped" and "changed since the apply" in rows[moved]["reason"]
    )
    assert {u for u, r in rows.items() if r["outcome"] == "changed"} == changed - {moved}
    assert standin.calls["AdminSetUserMFAPreference"] == len(changed) - 1
    assert summary["mode"] == "rollback" and (tmp_path / "rb" / "summary.md").exists()


def test_rollback_restores_a_user_whose_username_is_an_email(standin, pool_id, make_user, tmp_path):
    make_user(
        pool_id,
        "carol@example.com",
        phone=PHONE,
        totp_enabled=True,
        sms_enabled=True,
        preferred="sms",
    )
    run(standin, pool_id, Mode.APPLY, tmp_path, "apply")
    assert pool_state(standin, pool_id)["carol@example.com"] == BOTH_TOTP

    rollback(CognitoGateway(standin.client(), pool_id), tmp_path / "apply", tmp_path / "rb")

    assert pool_state(standin, pool_id)["carol@example.com"] == state(
        "totp", "sms", preferred="sms"
    )


# ---- stop and resume -------------------------------------------------------------------------


class StopAfterPages:
    """keep_going/on_rows for a run that stops, like Ctrl-C, once `pages` pages are committed."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.committed = 0

    def on_rows(self, rows: list[dict[str, Any]]) -> None:
        self.committed += 1

    def keep_going(self) -> bool:
        return self.committed < self.pages


def test_apply_stopped_half_way_resumes_to_the_report_of_an_uninterrupted_run(
    standin, demo_pool, tmp_path
):
    whole_pool, split_pool = demo_pool(RESUME_POOL_SIZE, 11), demo_pool(RESUME_POOL_SIZE, 11)
    whole, whole_rows = run(
        standin, whole_pool.pool_id, Mode.APPLY, tmp_path, "whole", state_dir=tmp_path / "s1"
    )

    # Stopped before a second page is listed (pages are listed ahead of the reads, so a pool of
    # three pages is otherwise all in flight at once): a slice takes at least its first page.
    stop = StopAfterPages(0)
    first, first_rows = run(
        standin,
        split_pool.pool_id,
        Mode.APPLY,
        tmp_path,
        "split",
        state_dir=tmp_path / "s2",
        keep_going=stop.keep_going,
        on_rows=stop.on_rows,
    )
    assert not first["complete"]
    assert len(first_rows) == 60 < split_pool.total
    resumed = run_locally(
        demo_policy(),
        split_pool.pool_id,
        Mode.APPLY,
        client=standin.client(),
        state_dir=tmp_path / "s2",
        resume=True,
    )

    assert resumed.summary["complete"] and resumed.summary["run_id"] == first["run_id"]
    assert resumed.report_dir == tmp_path / "split"
    rows = rows_of(resumed.report_dir)
    assert len(rows) == whole_pool.total
    assert comparable(rows) == comparable(whole_rows)
    for key in ("by_outcome", "by_rule"):
        assert resumed.summary["counts"][key] == whole["counts"][key]
    assert pool_state(standin, split_pool.pool_id) == pool_state(standin, whole_pool.pool_id)


class Crash(Exception):
    pass


def test_apply_crashed_with_writes_in_flight_resumes_to_the_report_of_an_uninterrupted_run(
    standin, demo_pool, tmp_path
):
    whole_pool, split_pool = demo_pool(RESUME_POOL_SIZE, 13), demo_pool(RESUME_POOL_SIZE, 13)
    whole, whole_rows = run(
        standin, whole_pool.pool_id, Mode.APPLY, tmp_path, "whole", state_dir=tmp_path / "s1"
    )

    def crash(rows: list[dict[str, Any]]) -> None:
        # After page 0 is committed, page 1 is in flight: its writes land, it never commits.
        raise Crash

    seeded = pool_state(standin, split_pool.pool_id)
    with pytest.raises(Crash):
        run(
            standin,
            split_pool.pool_id,
            Mode.APPLY,
            tmp_path,
            "split",
            state_dir=tmp_path / "s2",
            on_rows=crash,
        )
    assert len(rows_of(tmp_path / "split")) == 60
    written = pool_state(standin, split_pool.pool_id)
    split_kinds = kinds_of(split_pool)
    committed = by_user(rows_of(tmp_path / "split"))
    uncommitted_changes = {u for u in written if u not in committed and written[u] != seeded[u]}
    assert uncommitted_changes, "the crash should leave writes of an uncommitted page behind"
    assert all(split_kinds[u] in FIXABLE_KINDS | {"no_mfa_with_phone"} for u in uncommitted_changes)

    resumed = run_locally(
        demo_policy(),
        split_pool.pool_id,
        Mode.APPLY,
        client=standin.client(),
        state_dir=tmp_path / "s2",
        resume=True,
    )

    rows = rows_of(resumed.report_dir)
    assert len(rows) == whole_pool.total
    # Users written before the crash are reported as changed, with their true before-state.
    assert comparable(rows) == comparable(whole_rows)
    for key in ("by_outcome", "by_rule"):
        assert resumed.summary["counts"][key] == whole["counts"][key]
    assert pool_state(standin, split_pool.pool_id) == pool_state(standin, whole_pool.pool_id)


# ---- preflight -------------------------------------------------------------------------------


def test_preflight_refuses_a_factor_the_pool_does_not_offer_before_any_write(
    standin, make_pool, make_user, tmp_path
):
    pool_id = make_pool(sms=True, totp=True, email=False)
    make_user(
        pool_id, "dave", phone=PHONE, email="dave@example.com", sms_enabled=True, preferred="sms"
    )
    policy = parse_policy(
        {
            "version": 1,
            "rules": [{"name": "all", "match": "all", "factors": {"email": "preferred"}}],
        }
    )

    with pytest.raises(PreflightError, match=rf"{pool_id}.*email"):
        run_locally(
            policy,
            pool_id,
            Mode.APPLY,
            client=standin.client(),
            state_dir=tmp_path / "s",
            report_dir=tmp_path / "r",
        )

    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0
    assert standin.calls.get("ListUsers", 0) == 0
    assert pool_state(standin, pool_id)["dave"] == SMS_ONLY


def test_pool_with_mfa_off_is_a_warning_in_the_summary(standin, make_pool, make_user, tmp_path):
    pool_id = make_pool(mfa="OFF")
    make_user(pool_id, "erin", phone=PHONE, sms_enabled=True, preferred="sms")
    policy = parse_policy(
        {
            "version": 1,
            "rules": [{"name": "no-sms", "match": "all", "factors": {"sms": "disabled"}}],
        }
    )

    summary, rows = run(standin, pool_id, Mode.APPLY, tmp_path, "apply", policy=policy)

    assert summary["complete"]
    assert any("MFA OFF" in w for w in summary["warnings"])
    saved = json.loads((tmp_path / "apply" / "summary.json").read_text("utf-8"))
    assert saved["warnings"] == summary["warnings"]
    # SMS is erin's only factor: the guard keeps it, and nothing is sent.
    assert by_user(rows)["erin"]["outcome"] == "guarded"
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0


# ---- users deleted mid-run -------------------------------------------------------------------


def delete_on(standin: CognitoStandIn, pool_id: str, username: str, operation: str) -> None:
    def hook(op: str, body: Any) -> None:
        if (
            op == operation
            and body.get("UserPoolId") == pool_id
            and body.get("Username") == username
        ):
            with standin.lock:
                standin.backend.admin_delete_user(pool_id, username)

    standin.before_request(hook)


def small_pool(make_pool: Callable[..., str], make_user: Callable[..., str]) -> str:
    pool_id = make_pool()
    for i in range(6):
        make_user(
            pool_id, f"u{i}", phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms"
        )
    return pool_id


def test_user_deleted_before_their_read_is_skipped_and_the_run_completes(
    standin, make_pool, make_user, tmp_path
):
    pool_id = small_pool(make_pool, make_user)
    delete_on(standin, pool_id, "u3", "AdminGetUserAuthFactors")

    summary, rows = run(standin, pool_id, Mode.APPLY, tmp_path, "apply")

    gone = by_user(rows)["u3"]
    assert gone["outcome"] == "skipped" and gone["reason"].startswith("user_not_found")
    assert summary["complete"] and summary["users"] == 6
    assert {u: r["outcome"] for u, r in by_user(rows).items() if u != "u3"} == dict.fromkeys(
        ["u0", "u1", "u2", "u4", "u5"], "changed"
    )


def test_user_deleted_before_their_write_is_skipped_and_the_run_completes(
    standin, make_pool, make_user, tmp_path
):
    pool_id = small_pool(make_pool, make_user)
    delete_on(standin, pool_id, "u2", "AdminSetUserMFAPreference")

    summary, rows = run(standin, pool_id, Mode.APPLY, tmp_path, "apply")

    gone = by_user(rows)["u2"]
    assert gone["outcome"] == "skipped" and gone["reason"].startswith("user_not_found")
    assert summary["complete"]
    assert summary["counts"]["by_outcome"]["changed"] == 5


# ---- writes start with the first decision ----------------------------------------------------


def test_writing_starts_with_the_first_decision_not_once_the_first_page_is_read(
    standin, make_pool, make_user, tmp_path
):
    """A slow read must not hold the first writes: the write budget would sit idle."""
    pool_id = small_pool(make_pool, make_user)
    slow_read_answered = threading.Event()
    writes_while_held: list[str] = []

    def hook(op: str, body: Any) -> None:
        if op == "AdminGetUserAuthFactors" and body.get("Username") == "u5":
            slow_read_answered.wait(timeout=5)
            slow_read_answered.set()
        elif op == "AdminSetUserMFAPreference" and not slow_read_answered.is_set():
            writes_while_held.append(body["Username"])
            slow_read_answered.set()  # one write before it is enough; release the read

    standin.before_request(hook)
    summary, rows = run(standin, pool_id, Mode.APPLY, tmp_path, "apply")

    assert writes_while_held, "no write was sent before the page's slowest read was answered"
    assert summary["complete"]
    assert {r["outcome"] for r in rows} == {"changed"}


# ---- report files ----------------------------------------------------------------------------


def test_report_files_hold_the_summary_rows_csv_and_markdown(standin, demo_pool, tmp_path):
    pool = demo_pool(n=61)
    policy = demo_policy()

    summary, rows = run(standin, pool.pool_id, Mode.APPLY, tmp_path, "apply", policy=policy)

    folder = tmp_path / "apply"
    saved = json.loads((folder / "summary.json").read_text("utf-8"))
    assert saved["run_id"] == summary["run_id"] and saved["run_id"]
    assert saved["user_pool_id"] == pool.pool_id
    assert saved["mode"] == "apply"
    assert saved["policy_hash"] == policy.hash
    assert saved["started_at"] <= saved["ended_at"]
    by_outcome = saved["counts"]["by_outcome"]
    assert sum(by_outcome.values()) == pool.total == len(rows)
    assert by_outcome == {**dict.fromkeys(by_outcome, 0), **Counter(r["outcome"] for r in rows)}
    by_rule = saved["counts"]["by_rule"]
    assert sum(by_rule["admins"].values()) == len(pool.usernames["admin_sms_only"]) + len(
        pool.usernames["admin_totp_and_sms"]
    )
    assert set(by_rule) == {"admins", "everyone", "(no rule)"}
    calls = saved["counts"]["api_calls"]
    in_scope = sum(n for kind, n in pool.counts.items() if kind not in OUT_OF_SCOPE)
    hedged = saved["counts"]["hedged_reads"]  # a read stalled on a loaded machine, sent twice
    assert calls["admin_get_user_auth_factors"] == standin.calls["AdminGetUserAuthFactors"]
    assert in_scope <= calls["admin_get_user_auth_factors"] - hedged <= pool.total
    assert calls["list_users"] == standin.calls["ListUsers"] == 2  # 61 users: two pages
    assert calls["get_user_pool_mfa_config"] == 1
    assert calls["admin_set_user_mfa_preference"] == standin.calls["AdminSetUserMFAPreference"]
    assert saved["warnings"] == []

    for row in rows:
        assert {
            "username",
            "sub",
            "rule",
            "outcome",
            "reason",
            "before",
            "desired",
            "request",
            "after",
        } <= set(row)
    changed = next(r for r in rows if r["outcome"] == "changed")
    assert changed["request"] and changed["desired"] == changed["after"]

    with open(folder / "users.csv", encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert [t["username"] for t in table] == [r["username"] for r in rows]
    assert [t["outcome"] for t in table] == [r["outcome"] for r in rows]

    markdown = (folder / "summary.md").read_text("utf-8")
    assert "| outcome | users |" in markdown
    assert f"| changed | {by_outcome['changed']} |" in markdown
    assert pool.pool_id in markdown and policy.hash in markdown


def test_email_username_and_contact_details_are_masked_in_every_report_file(
    standin, pool_id, make_user, tmp_path
):
    make_user(
        pool_id,
        "carol.smith@example.com",
        phone=PHONE,
        email="carol.smith@example.com",
        totp_enabled=True,
        sms_enabled=True,
        preferred="sms",
    )
    make_user(pool_id, "+15550100999", phone="+15550100999", sms_enabled=True, preferred="sms")
    make_user(pool_id, "frank", phone=PHONE, email="frank@example.com")

    for mode in (Mode.DRIFT, Mode.APPLY):
        run(standin, pool_id, mode, tmp_path, mode.value)
        files = report_files(tmp_path / mode.value)
        for name, text in files.items():
            assert "carol.smith@" not in text, name
            assert "frank@example.com" not in text, name
            assert PHONE not in text and "+15550100999" not in text, name
        assert (
            "c***@example.com" in files["users.jsonl"] and "c***@example.com" in files["users.csv"]
        )
        assert "frank" in files["users.jsonl"]


# ---- access-token mode -----------------------------------------------------------------------


def test_access_token_drift_reports_exactly_the_users_the_policy_says(
    standin, demo_pool, token_table, tmp_path
):
    pool = demo_pool(POOL_SIZE)
    kinds = kinds_of(pool)
    table, _ = token_table(pool.pool_id, list(kinds))

    summary, rows = run(
        standin, pool.pool_id, Mode.DRIFT, tmp_path, "drift", auth="access-token", tokens=table
    )

    assert {r["username"]: r["outcome"] for r in rows} == {
        u: EXPECTED[k].drift for u, k in kinds.items()
    }
    assert standin.calls.get("AdminGetUser", 0) == 0
    assert standin.calls.get("SetUserMFAPreference", 0) == 0
    assert summary["auth"] == "access-token"


def test_access_token_apply_converges_and_a_second_apply_writes_nothing(
    standin, demo_pool, token_table, tmp_path
):
    pool = demo_pool(POOL_SIZE)
    kinds = kinds_of(pool)
    table, user_of_token = token_table(pool.pool_id, list(kinds))
    client = standin.client()
    log = WriteLog(client, user_of_token)

    _, rows = run(
        standin,
        pool.pool_id,
        Mode.APPLY,
        tmp_path,
        "apply-1",
        client=client,
        auth="access-token",
        tokens=table,
    )

    assert {r["username"]: r["outcome"] for r in rows} == {
        u: EXPECTED[k].apply for u, k in kinds.items()
    }
    assert {u: (log.accepted(u), log.rejected_probes(u)) for u in kinds} == {
        u: (EXPECTED[k].writes, EXPECTED[k].probes) for u, k in kinds.items()
    }
    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0
    now = pool_state(standin, pool.pool_id)
    assert now == {u: EXPECTED[k].after for u, k in kinds.items()}
    reported = {r["username"]: r["after"] for r in rows if r["after"] is not None}
    assert reported == {u: now[u] for u in reported}
    assert {u for u, k in kinds.items() if k not in OUT_OF_SCOPE} <= set(reported)
    standin.reset_counters()

    again, rows = run(
        standin, pool.pool_id, Mode.APPLY, tmp_path, "apply-2", auth="access-token", tokens=table
    )

    assert standin.calls.get("SetUserMFAPreference", 0) == 0
    assert again["counts"]["by_outcome"]["changed"] == 0
    assert pool_state(standin, pool.pool_id) == now


def test_access_token_user_without_a_stored_token_is_skipped_as_no_token(
    standin, demo_pool, token_table, tmp_path
):
    pool = demo_pool(n=40)
    kinds = kinds_of(pool)
    tokenless = pool.usernames["totp_and_sms_sms_preferred"][0]
    table, _ = token_table(pool.pool_id, [u for u in kinds if u != tokenless])

    summary, rows = run(
        standin, pool.pool_id, Mode.APPLY, tmp_path, "apply", auth="access-token", tokens=table
    )

    row = by_user(rows)[tokenless]
    assert row["outcome"] == "skipped" and row["reason"].startswith("no_token")
    assert pool_state(standin, pool.pool_id)[tokenless] == state("totp", "sms", preferred="sms")
    assert summary["complete"]
    others = {u: r["outcome"] for u, r in by_user(rows).items() if u != tokenless}
    assert others == {u: EXPECTED[k].apply for u, k in kinds.items() if u != tokenless}


def test_access_token_expired_token_is_token_invalid_not_a_crash(
    standin, demo_pool, token_table, tmp_path
):
    pool = demo_pool(n=40)
    kinds = kinds_of(pool)
    table, user_of_token = token_table(pool.pool_id, list(kinds))
    expired = pool.usernames["totp_and_sms_sms_preferred"][0]
    standin.expire_token(next(t for t, u in user_of_token.items() if u == expired))

    summary, rows = run(
        standin, pool.pool_id, Mode.APPLY, tmp_path, "apply", auth="access-token", tokens=table
    )

    row = by_user(rows)[expired]
    assert row["outcome"] == "token_invalid" and row["error"] == "NotAuthorizedException"
    assert pool_state(standin, pool.pool_id)[expired] == state("totp", "sms", preferred="sms")
    assert summary["complete"] and summary["counts"]["by_outcome"]["token_invalid"] == 1
    assert summary["counts"]["by_outcome"]["changed"] == sum(
        1 for u, k in kinds.items() if EXPECTED[k].apply == "changed" and u != expired
    )


def test_access_tokens_never_appear_in_a_report_file(standin, demo_pool, token_table, tmp_path):
    pool = demo_pool(n=40)
    table, user_of_token = token_table(pool.pool_id, list(kinds_of(pool)))
    standin.expire_token(next(iter(user_of_token)))

    for mode in (Mode.DRIFT, Mode.APPLY):
        run(standin, pool.pool_id, mode, tmp_path, mode.value, auth="access-token", tokens=table)
        texts = report_files(tmp_path / mode.value)
        state_files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
        texts.update({str(p): p.read_bytes().decode("utf-8", "replace") for p in state_files})
        for name, text in texts.items():
            leaked = [u for t, u in user_of_token.items() if t in text or t[-40:] in text]
            assert leaked == [], f"{name} holds the access token of {leaked[:3]}"


def test_pool_with_mfa_off_refuses_a_policy_that_enables_a_factor(
    standin, make_pool, make_user, tmp_path
):
    pool_id = make_pool(mfa="OFF")
    make_user(pool_id, "fay", phone=PHONE)

    with pytest.raises(
        PreflightError,
        match="has MFA OFF, so it offers no factor, and the policy enables sms, totp",
    ):
        run_locally(
            demo_policy(),
            pool_id,
            Mode.APPLY,
            client=standin.client(),
            state_dir=tmp_path / "s",
            report_dir=tmp_path / "r",
        )

    assert standin.calls.get("AdminSetUserMFAPreference", 0) == 0


# ---- users decided from the listing alone ----------------------------------------------------


def test_unmanaged_and_deferred_users_are_not_read_and_their_rows_say_so(
    standin, demo_pool, tmp_path
):
    """Only the admins' rule, rolled out to half of them: everyone else is unmanaged, and the
    admins outside the rollout are deferred; neither costs an AdminGetUser."""
    document = {
        **DEMO_POLICY,
        "rules": [
            {
                "name": "admins",
                "match": {"groups": ["admins"]},
                "factors": {"totp": "preferred", "sms": "disabled"},
                "rollout": {"percent": 50},
            }
        ],
    }
    policy = parse_policy(document, source="test")
    pool = demo_pool(POOL_SIZE, 21)
    summary, rows = run(standin, pool.pool_id, Mode.DRIFT, tmp_path, "r", policy=policy)

    outcomes = Counter(row["outcome"] for row in rows)
    assert outcomes["unmanaged"] > POOL_SIZE // 2
    assert outcomes["deferred"] >= 1
    for row in rows:
        if row["outcome"] in ("unmanaged", "deferred", "excluded", "skipped"):
            assert row["before"] is None, row
    deferred = [row for row in rows if row["outcome"] == "deferred"]
    assert all(row["rule"] == "admins" for row in deferred)
    assert all(row["reason"] == "outside the rule's 50% rollout; not read" for row in deferred)
    read = sum(1 for row in rows if row["before"] is not None)
    calls = summary["counts"]["api_calls"]
    sent = calls.get("admin_get_user_auth_factors", 0) + calls.get("admin_get_user", 0)
    assert sent - summary["counts"]["hedged_reads"] == read
    assert read == len(rows) - sum(
        outcomes[o] for o in ("unmanaged", "deferred", "excluded", "skipped")
    )


def test_a_run_in_slices_lists_group_members_once_and_decides_as_a_whole_run(
    standin, demo_pool, tmp_path
):
    whole_pool, split_pool = demo_pool(RESUME_POOL_SIZE, 17), demo_pool(RESUME_POOL_SIZE, 17)
    whole, whole_rows = run(
        standin, whole_pool.pool_id, Mode.DRIFT, tmp_path, "whole", state_dir=tmp_path / "s1"
    )
    stop = StopAfterPages(0)
    first, _ = run(
        standin,
        split_pool.pool_id,
        Mode.DRIFT,
        tmp_path,
        "split",
        state_dir=tmp_path / "s2",
        keep_going=stop.keep_going,
        on_rows=stop.on_rows,
    )
    assert not first["complete"]
    resumed = run_locally(
        demo_policy(),
        split_pool.pool_id,
        Mode.DRIFT,
        client=standin.client(),
        state_dir=tmp_path / "s2",
        resume=True,
    )

    listed_once = whole["counts"]["api_calls"]["list_users_in_group"]
    assert listed_once >= 2  # the demo policy names two groups
    assert first["counts"]["api_calls"]["list_users_in_group"] == listed_once
    assert resumed.summary["counts"]["api_calls"]["list_users_in_group"] == listed_once

    def decided(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
        return {r["username"]: (r["rule"], r["outcome"], r["before"]) for r in rows}

    assert decided(rows_of(resumed.report_dir)) == decided(whole_rows)


def test_group_members_are_listed_beside_the_first_page_not_before_it(standin, demo_pool, tmp_path):
    """Listing the groups first would add their round trips to the wait before any read."""
    pool = demo_pool(10)
    users_listed = threading.Event()
    overlapped: list[bool] = []

    def hook(op: str, body: Any) -> None:
        if op == "ListUsers":
            users_listed.set()
        elif op == "ListUsersInGroup":
            # Held until the first page of users is asked for: only listing side by side
            # gets past this at once.
            overlapped.append(users_listed.wait(timeout=5))

    standin.before_request(hook)
    summary, _ = run(standin, pool.pool_id, Mode.DRIFT, tmp_path, "drift")

    assert summary["complete"]
    assert overlapped == [True, True]  # the demo policy names two groups
