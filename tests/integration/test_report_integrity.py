"""Reports and rollback you can trust, and one run per pool at a time, against the stand-in.

- Rollback refuses (exit 1, nothing sent, nothing written into the source folder) a report
  with missing, cut, edited or NUL-filled rows, another pool's report, a drift report, or a
  folder that is no report; `--force` never takes a factor away on the word of such rows.
- A report folder holds exactly one run; a run killed before its summary resumes; a resumed
  report equals an uninterrupted one, reasons included.
- Two runs (or a run and a rollback) on one pool never overlap, whatever their state folders;
  the second refuses naming the holder, or waits with `--wait`; a killed holder frees the pool.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mfa_policy.cli.demo import DEMO_POLICY, demo_policy
from mfa_policy.cli.main import main
from mfa_policy.core.engine import Mode
from mfa_policy.core.report import LocalReport
from mfa_policy.run.local_run import run_locally
from mfa_policy.run.state import PoolLock, PoolLocked, user_lock_dir
from mfa_policy.standin import SMS, TOTP, CognitoStandIn

ROOT = Path(__file__).resolve().parents[2]
PHONE = "+15550100123"
FAST = {"rate_limits": {"user_read": 400, "user_resource_update": 200, "user_list": 100}}
WRITE = "AdminSetUserMFAPreference"

Result = tuple[int, str, str]


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(standin: CognitoStandIn, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def invoke(*args: str) -> Result:
        argv = [*args, "--endpoint-url", standin.endpoint_url, "--region", "us-east-1"]
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({**DEMO_POLICY, **FAST}), "utf-8")
    return str(path)


def mfa(standin: CognitoStandIn, pool_id: str, username: str) -> tuple[set[str], str | None]:
    with standin.lock:
        user = standin.backend.user_pools[pool_id].users[username]
        on = {
            n
            for n, e in (("totp", user.software_token_mfa_enabled), ("sms", user.sms_mfa_enabled))
            if e
        }
        preferred = {TOTP: "totp", SMS: "sms"}.get(user.preferred_mfa_setting)
        return on, preferred


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def rows_of(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "users.jsonl").read_text("utf-8").splitlines()]


@pytest.fixture
def applied(cli, policy, pool_id, make_user, standin, tmp_path) -> tuple[str, Path]:
    """A pool of three users and the report of an apply over it (in `apply/`):
    ann {totp,sms} sms -> {totp,sms} totp (a preference moved),
    adm (admins) {totp,sms} sms -> {totp} totp (SMS taken away),
    nop {} with a phone, no verified TOTP -> {sms} (SMS added)."""
    make_user(pool_id, "ann", phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms")
    make_user(
        pool_id,
        "adm",
        phone=PHONE,
        groups=["admins"],
        totp_enabled=True,
        sms_enabled=True,
        preferred="sms",
    )
    make_user(pool_id, "nop", phone=PHONE)
    code, _, err = cli("apply", "-c", policy, "--user-pool-id", pool_id, "--report-dir", "apply")
    assert code == 2, err  # nop must still enroll TOTP
    assert mfa(standin, pool_id, "ann") == ({"totp", "sms"}, "totp")
    assert mfa(standin, pool_id, "adm") == ({"totp"}, "totp")
    assert mfa(standin, pool_id, "nop") == ({"sms"}, None)
    standin.reset_counters()
    return pool_id, tmp_path / "apply"


def edit_row(report: Path, username: str, **changes: Any) -> None:
    lines = (report / "users.jsonl").read_text("utf-8").splitlines()
    out = []
    for line in lines:
        row = json.loads(line)
        if row["username"] == username:
            row.update(changes)
            line = json.dumps(row, sort_keys=True)
        out.append(line + "\n")
    (report / "users.jsonl").write_text("".join(out), "utf-8")


NOBODY = {"enabled": [], "preferred": None}


def damage(report: Path, kind: str) -> None:
    jsonl = report / "users.jsonl"
    data = jsonl.read_bytes()
    if kind == "missing row":
        jsonl.write_bytes(b"".join(data.splitlines(keepends=True)[1:]))
    elif kind == "cut short":
        jsonl.write_bytes(data[: len(data) - 40])
    elif kind == "edited before":
        edit_row(report, "ann", before=NOBODY)
    elif kind == "NUL-filled":
        jsonl.write_bytes(b"\0" * len(data))
    elif kind == "no summary":
        (report / "summary.json").unlink()
    elif kind == "summary not JSON":
        (report / "summary.json").write_bytes(b"\0\0\0")
    else:
        raise AssertionError(kind)


# ---- rollback trusts nothing it reads -------------------------------------------------------


@pytest.mark.tampered_reports
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing row", "has 2 rows where the apply wrote 3"),
        ("cut short", "is not a report row (damaged or cut short"),
        ("edited before", "does not match the sha256 the apply recorded"),
        ("NUL-filled", "is not a report row"),
        ("no summary", "is not a finished report (no summary.json)"),
        ("summary not JSON", "summary.json is damaged"),
    ],
)
def test_rollback_of_a_damaged_report_exits_1_and_sends_nothing(
    cli, applied, standin, tmp_path, kind, message
):
    pool_id, report = applied
    damage(report, kind)
    source = folder_bytes(report)
    states = {u: mfa(standin, pool_id, u) for u in ("ann", "adm", "nop")}

    code, _, err = cli("rollback", "--user-pool-id", pool_id, "--from-report", "apply")

    assert code == 1, err
    assert message in err and "Traceback" not in err
    assert standin.calls.get(WRITE, 0) == 0
    assert {u: mfa(standin, pool_id, u) for u in states} == states
    assert folder_bytes(report) == source
    assert not (tmp_path / "apply-rollback").exists()


def test_rollback_of_another_pools_report_or_a_drift_report_exits_1(
    cli, policy, applied, make_pool, standin, tmp_path
):
    pool_id, _ = applied
    other = make_pool()
    code, _, err = cli("rollback", "--user-pool-id", other, "--from-report", "apply")
    assert code == 1 and f"is a report of {pool_id}, not of {other}" in err

    code, _, err = cli("drift", "-c", policy, "--user-pool-id", pool_id, "--report-dir", "drift")
    assert code == 2, err
    code, _, err = cli("rollback", "--user-pool-id", pool_id, "--from-report", "drift")
    assert code == 1 and "is a drift report; only an apply report can be rolled back" in err
    assert standin.calls.get(WRITE, 0) == 0


def test_rollback_from_a_folder_that_is_no_report_exits_1_and_writes_nothing(
    cli, applied, standin, tmp_path
):
    pool_id, _ = applied
    before = sorted(p.name for p in tmp_path.iterdir())

    code, _, err = cli("rollback", "--user-pool-id", pool_id, "--from-report", ".")

    assert code == 1, err
    assert "is not a finished report (no summary.json)" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert standin.calls.get(WRITE, 0) == 0


def test_rollback_from_dot_inside_the_report_writes_beside_it_never_into_it(
    cli, applied, standin, tmp_path, monkeypatch
):
    pool_id, report = applied
    source = folder_bytes(report)
    monkeypatch.chdir(report)

    code, _, err = cli("rollback", "--user-pool-id", pool_id, "--from-report", ".")
    assert code == 0, err
    assert folder_bytes(report) == source
    assert (tmp_path / "apply-rollback" / "summary.json").exists()
    assert mfa(standin, pool_id, "ann") == ({"totp", "sms"}, "sms")

    code, _, err = cli(
        "rollback", "--user-pool-id", pool_id, "--from-report", ".", "--report-dir", "rb"
    )
    assert code == 1 and "never writes into the report it reads" in err
    assert folder_bytes(report) == source


def test_rollback_into_a_non_empty_report_folder_exits_1(cli, applied, standin, tmp_path):
    pool_id, _ = applied
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine", "utf-8")

    code, _, err = cli(
        "rollback", "--user-pool-id", pool_id, "--from-report", "apply", "--report-dir", "taken"
    )

    assert code == 1 and "is not empty" in err
    assert standin.calls.get(WRITE, 0) == 0


@pytest.mark.tampered_reports
def test_forced_rollback_of_edited_rows_never_takes_a_factor_away(cli, applied, standin):
    pool_id, report = applied
    # An edited before-state would, written as it is, leave ann with no factor at all.
    damage(report, "edited before")

    code, _, err = cli("rollback", "--user-pool-id", pool_id, "--from-report", "apply", "--force")

    assert code == 0, err
    assert "does not match its digest" in err
    assert mfa(standin, pool_id, "ann") == ({"totp", "sms"}, "totp")  # not {} -
    assert mfa(standin, pool_id, "adm") == ({"totp", "sms"}, "sms")  # SMS given back
    assert mfa(standin, pool_id, "nop") == ({"sms"}, None)  # SMS not taken away
    rows = {r["username"]: r for r in rows_of(report.with_name("apply-rollback"))}
    assert rows["adm"]["outcome"] == "changed"
    for name in ("ann", "nop"):
        assert rows[name]["outcome"] == "skipped"
        assert "never remove one" in rows[name]["reason"]
    summary = json.loads((report.with_name("apply-rollback") / "summary.json").read_text())
    assert summary["digest_matched"] is False


def test_rollback_of_an_intact_report_restores_every_user_it_changed(cli, applied, standin):
    pool_id, report = applied
    summary = json.loads((report / "summary.json").read_text("utf-8"))
    data = (report / "users.jsonl").read_bytes()
    assert summary["rows"] == {"count": 3, "sha256": hashlib.sha256(data).hexdigest()}

    code, _, err = cli("rollback", "--user-pool-id", pool_id, "--from-report", "apply")

    assert code == 0, err
    assert mfa(standin, pool_id, "ann") == ({"totp", "sms"}, "sms")
    assert mfa(standin, pool_id, "adm") == ({"totp", "sms"}, "sms")
    assert mfa(standin, pool_id, "nop") == (set(), None)  # the recorded before-state


# ---- a report folder holds exactly one run --------------------------------------------------


def test_a_run_into_a_non_empty_report_folder_exits_1_and_reads_nobody(
    cli, policy, pool_id, make_user, standin, tmp_path
):
    make_user(pool_id, "ann", phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms")
    code, _, err = cli("drift", "-c", policy, "--user-pool-id", pool_id, "--report-dir", "r")
    assert code == 2, err
    standin.reset_counters()
    first = folder_bytes(tmp_path / "r")

    code, _, err = cli("apply", "-c", policy, "--user-pool-id", pool_id, "--report-dir", "r")

    assert code == 1, err
    assert "report folder r is not empty; a report folder holds exactly one run" in err
    assert folder_bytes(tmp_path / "r") == first
    assert standin.calls.get(WRITE, 0) == 0 and standin.calls.get("AdminGetUser", 0) == 0


class Crash(Exception):
    pass


def test_a_resume_into_another_report_folder_exits_1(cli, policy, demo_pool, standin):
    pool = demo_pool(130)

    def crash(rows: list[dict[str, Any]]) -> None:
        raise Crash

    with pytest.raises(Crash):
        run_locally(demo_policy(), pool.pool_id, Mode.APPLY, client=standin.client(), on_rows=crash)

    code, _, err = cli(
        "apply", "-c", policy, "--user-pool-id", pool.pool_id, "--resume", "--report-dir", "other"
    )

    assert code == 1, err
    assert "not to --report-dir other; a report folder holds exactly one run" in err


def comparable(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows by username, everything but the sub (two seeded pools differ only in subs)."""
    return {r["username"]: {k: v for k, v in r.items() if k != "sub"} for r in rows}


def test_an_apply_killed_before_its_summary_resumes_to_the_uninterrupted_report(
    standin, demo_pool, tmp_path, monkeypatch
):
    whole_pool, split_pool = demo_pool(125, 17), demo_pool(125, 17)
    whole = run_locally(
        demo_policy(),
        whole_pool.pool_id,
        Mode.APPLY,
        client=standin.client(),
        state_dir=tmp_path / "s1",
        report_dir=tmp_path / "whole",
    )
    finish = LocalReport.finish

    def killed(self: LocalReport, summary: Any) -> None:
        raise Crash  # the last page is committed; the process dies before summary.json

    monkeypatch.setattr(LocalReport, "finish", killed)
    with pytest.raises(Crash):
        run_locally(
            demo_policy(),
            split_pool.pool_id,
            Mode.APPLY,
            client=standin.client(),
            state_dir=tmp_path / "s2",
            report_dir=tmp_path / "split",
        )
    assert not (tmp_path / "split" / "summary.json").exists()
    monkeypatch.setattr(LocalReport, "finish", finish)
    standin.reset_counters()

    resumed = run_locally(
        demo_policy(),
        split_pool.pool_id,
        Mode.APPLY,
        client=standin.client(),
        state_dir=tmp_path / "s2",
        resume=True,
    )

    assert resumed.summary["complete"] and resumed.report_dir == tmp_path / "split"
    assert standin.calls.get(WRITE, 0) == 0  # nothing redone
    rows = rows_of(tmp_path / "split")
    assert len(rows) == resumed.summary["users"] == split_pool.total
    assert comparable(rows) == comparable(rows_of(whole.report_dir))
    for key in ("by_outcome", "by_rule"):
        assert resumed.summary["counts"][key] == whole.summary["counts"][key]


def test_an_apply_crashed_with_writes_in_flight_resumes_to_the_same_rows_reasons_included(
    standin, demo_pool, tmp_path
):
    whole_pool, split_pool = demo_pool(125, 13), demo_pool(125, 13)
    whole = run_locally(
        demo_policy(),
        whole_pool.pool_id,
        Mode.APPLY,
        client=standin.client(),
        state_dir=tmp_path / "s1",
        report_dir=tmp_path / "whole",
    )

    def crash(rows: list[dict[str, Any]]) -> None:
        raise Crash  # page 0 committed, page 1's writes landed, never committed

    with pytest.raises(Crash):
        run_locally(
            demo_policy(),
            split_pool.pool_id,
            Mode.APPLY,
            client=standin.client(),
            state_dir=tmp_path / "s2",
            report_dir=tmp_path / "split",
            on_rows=crash,
        )
    resumed = run_locally(
        demo_policy(),
        split_pool.pool_id,
        Mode.APPLY,
        client=standin.client(),
        state_dir=tmp_path / "s2",
        resume=True,
    )

    assert comparable(rows_of(resumed.report_dir)) == comparable(rows_of(whole.report_dir))


# ---- one run per pool at a time -------------------------------------------------------------


class HeldRun:
    """A real apply in a thread, paused after its first page while it holds the pool."""

    def __init__(self, standin: CognitoStandIn, pool_id: str, state_dir: Path) -> None:
        self.paused, self.go_on = threading.Event(), threading.Event()
        self.result: Any = None

        def on_rows(rows: list[dict[str, Any]]) -> None:
            self.paused.set()
            assert self.go_on.wait(60)

        def run() -> None:
            self.result = run_locally(
                demo_policy(),
                pool_id,
                Mode.APPLY,
                client=standin.client(),
                state_dir=state_dir,
                on_rows=on_rows,
            )

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.paused.wait(60), "the held run never committed a page"

    def release(self) -> None:
        self.go_on.set()
        self.thread.join(60)


@pytest.fixture
def held(standin: CognitoStandIn, tmp_path: Path) -> Iterator[Callable[[str], HeldRun]]:
    runs: list[HeldRun] = []

    def hold(pool_id: str) -> HeldRun:
        runs.append(HeldRun(standin, pool_id, tmp_path / "state-a"))
        return runs[-1]

    yield hold
    for run in runs:
        run.release()


def test_a_second_run_on_a_held_pool_from_another_state_folder_exits_1_naming_the_holder(
    cli, policy, demo_pool, held, standin, tmp_path
):
    pool = demo_pool(130)
    holder = held(pool.pool_id)
    preflights = standin.calls["GetUserPoolMfaConfig"]

    code, _, err = cli(
        "apply", "-c", policy, "--user-pool-id", pool.pool_id, "--state-dir", "state-b"
    )

    assert code == 1, err
    assert f"user pool {pool.pool_id} is in use by apply run " in err
    assert f"(pid {os.getpid()} on {socket.gethostname()}, started 20" in err
    assert "--wait" in err
    # Refused before its preflight: the held run's pages still in flight are all there is.
    assert standin.calls["GetUserPoolMfaConfig"] == preflights
    assert not (tmp_path / "state-b" / "reports").exists()
    holder.release()
    assert holder.result.summary["complete"]
    assert holder.result.summary["run_id"] in err


def test_wait_runs_once_the_holder_is_done(cli, policy, demo_pool, held):
    pool = demo_pool(130)
    holder = held(pool.pool_id)
    threading.Timer(1.0, holder.go_on.set).start()

    code, out, err = cli(
        "drift",
        "-c",
        policy,
        "--user-pool-id",
        pool.pool_id,
        "--state-dir",
        "state-b",
        "--wait",
        "60",
    )

    assert code in (0, 2), err
    assert "waiting: user pool" in err and f"drift of {pool.pool_id}" in out
    holder.thread.join(60)
    assert holder.result.summary["complete"]


def test_a_rollback_on_a_held_pool_exits_1_and_sends_nothing(cli, applied, held, standin):
    pool_id, _ = applied
    held(pool_id)
    writes = standin.calls.get(WRITE, 0)

    code, _, err = cli("rollback", "--user-pool-id", pool_id, "--from-report", "apply")

    assert code == 1 and f"user pool {pool_id} is in use by apply run" in err
    assert standin.calls.get(WRITE, 0) == writes


def test_an_apply_of_a_plan_on_a_held_pool_exits_1_and_sends_nothing(
    cli, policy, applied, held, standin, make_user
):
    pool_id, _ = applied
    make_user(pool_id, "eve", phone=PHONE, totp_enabled=True, sms_enabled=True, preferred="sms")
    code, _, err = cli("drift", "-c", policy, "--user-pool-id", pool_id, "--out", "plan.json")
    assert code == 2, err
    held(pool_id)
    writes = standin.calls.get(WRITE, 0)

    code, _, err = cli("apply", "-c", policy, "--user-pool-id", pool_id, "--plan", "plan.json")

    assert code == 1 and f"user pool {pool_id} is in use by apply run" in err
    assert standin.calls.get(WRITE, 0) == writes  # the held apply wrote before it paused


def test_a_run_that_raises_frees_the_pool(standin, demo_pool, tmp_path):
    pool = demo_pool(70)

    def crash(rows: list[dict[str, Any]]) -> None:
        raise Crash

    with pytest.raises(Crash):
        run_locally(
            demo_policy(),
            pool.pool_id,
            Mode.DRIFT,
            client=standin.client(),
            state_dir=tmp_path / "a",
            on_rows=crash,
        )
    again = run_locally(
        demo_policy(), pool.pool_id, Mode.DRIFT, client=standin.client(), state_dir=tmp_path / "b"
    )
    assert again.summary["complete"]


def test_a_holder_killed_with_sigkill_frees_the_pool(tmp_path):
    script = (
        "import sys, time\n"
        "from mfa_policy.run.state import PoolLock, user_lock_dir\n"
        "lock = PoolLock('us-east-1_held', 'the-run', 'apply', [user_lock_dir()])\n"
        "lock.acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lambda")}
    holder = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        lock = PoolLock("us-east-1_held", "second", "drift", [user_lock_dir()])
        with pytest.raises(PoolLocked) as refused:
            lock.acquire()
        assert refused.value.holder is not None
        assert (refused.value.holder.pid, refused.value.holder.run_id) == (holder.pid, "the-run")
        holder.kill()  # SIGKILL: no handler runs; the kernel drops the flock
        holder.wait(10)
        lock.acquire(wait=10)
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
        if holder.stdout:
            holder.stdout.close()
