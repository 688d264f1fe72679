"""Every CLI path given bad input: one line saying what is wrong, exit 1, no request sent where
none is needed, and never a traceback or a hang. Exit codes are a contract: 0 nothing to do,
2 drift or not converged, 1 every error, usage errors included."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError

from mfa_policy.aws import clients, gateway
from mfa_policy.cli.demo import DEMO_POLICY
from mfa_policy.cli.main import main
from mfa_policy.exceptions import RunError
from mfa_policy.standin import CognitoStandIn

FAST = {"rate_limits": {"user_read": 400, "user_resource_update": 200, "user_list": 100}}

Result = tuple[int, str, str]


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "MFA_POLICY_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`run(*argv) -> (exit code, stdout, stderr)` of main(), which must return, not raise."""

    def invoke(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({**DEMO_POLICY, **FAST}), "utf-8")
    return path


@pytest.fixture
def on_pool(standin: CognitoStandIn, demo_pool, policy: Path) -> Callable[..., list[str]]:
    """`on_pool(command, *more) -> argv` for drift/apply against a small seeded pool."""
    pool = demo_pool(12)

    def argv(command: str, *more: str) -> list[str]:
        return [
            command,
            "-c",
            str(policy),
            "--user-pool-id",
            pool.pool_id,
            "--endpoint-url",
            standin.endpoint_url,
            "--region",
            "us-east-1",
            *more,
        ]

    return argv


def one_error_line(err: str) -> str:
    """The error, which must be the one line of stderr that is not a policy warning."""
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---- usage errors exit 1, not argparse's 2 (which reads as "drift found") -------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["valdate", "-c", "x.yaml"], "argument COMMAND: invalid choice: 'valdate'"),
        ([], "the following arguments are required: COMMAND"),
        (["drift", "-c", "p.yaml"], "the following arguments are required: --user-pool-id"),
        (["validate", "-c", "p.yaml", "--colour"], "unrecognized arguments: --colour"),
        (["drift", "-c", "p", "--user-pool-id", "x", "--format", "xml"], "invalid choice: 'xml'"),
        (["demo", "--users", "1"], "argument --users: must be at least 2, not 1"),
        (["demo", "--users", "many"], "argument --users: 'many' is not a whole number"),
        (
            ["apply", "-c", "p", "--user-pool-id", "x", "--workers", "0"],
            "argument --workers: must be at least 1, not 0",
        ),
    ],
)
def test_usage_errors_exit_1_with_one_line(run, argv, message):
    code, out, err = run(*argv)

    assert code == 1
    line = one_error_line(err)
    assert line.startswith("mfa-policy") and ": error: " in line
    assert message in line
    assert line.endswith("--help)")
    assert out == ""


def test_help_and_version_still_exit_0(run):
    assert run("--help")[0] == 0
    assert run("drift", "--help")[0] == 0
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("mfa-policy ")


def test_an_unexpected_exception_is_one_line_and_exit_1(run, monkeypatch, policy):
    from mfa_policy.core import policy_file

    def broken(path):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(policy_file, "load_policy_file", broken)
    code, _, err = run("validate", "-c", str(policy))

    assert code == 1
    assert one_error_line(err) == (
        "error: internal error (ZeroDivisionError: boom); please report it "
        "(MFA_POLICY_DEBUG=1 shows the traceback)"
    )


# ---- options that cannot work: refused before any request ----------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "--endpoint-url 'not a url' is not an http:// or https:// URL with a host"),
        ("http://", "--endpoint-url 'http://' is not an http:// or https:// URL with a host"),
        ("ftp://example.com", "is not an http:// or https:// URL with a host"),
        ("http://localhost:port", "--endpoint-url 'http://localhost:port' is not a URL"),
    ],
)
def test_a_bad_endpoint_url_is_one_line_and_exit_1(run, policy, url, message):
    code, _, err = run(
        "drift", "-c", str(policy), "--user-pool-id", "us-east-1_x", "--endpoint-url", url
    )
    assert code == 1
    assert one_error_line(err) == f"error: {message}" or message in one_error_line(err)


def test_a_malformed_region_is_one_line_and_exit_1(run, policy):
    code, _, err = run(
        "drift", "-c", str(policy), "--user-pool-id", "x", "--region", "us east", "--token-table"
    )
    assert code == 1  # usage: --token-table needs a value
    code, _, err = run("drift", "-c", str(policy), "--user-pool-id", "x", "--region", "us east")
    assert code == 1
    assert "cannot make a cognito-idp client: Provided region_name 'us east'" in (
        one_error_line(err)
    )


@pytest.mark.parametrize("option", ["--report-dir", "--state-dir"])
def test_a_folder_that_is_a_file_is_refused_before_any_request(
    run, on_pool, standin, tmp_path, option
):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    standin.reset_counters()

    code, _, err = run(*on_pool("drift", option, str(blocker)))

    assert code == 1
    expected = (
        f"error: report folder {blocker} is a file, not a folder"
        if option == "--report-dir"
        else f"error: cannot write the state folder {blocker}: a file is in the way"
    )
    assert one_error_line(err) == expected
    assert sum(standin.calls.values()) == 0


@pytest.mark.parametrize("option", ["--report-dir", "--state-dir"])
def test_an_unwritable_folder_is_refused_before_any_request(
    run, on_pool, standin, tmp_path, option
):
    if os.geteuid() == 0:
        target = Path("/proc/mfa-policy-test")  # not even root can make a folder here
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "sub"
    standin.reset_counters()

    code, _, err = run(*on_pool("drift", option, str(target)))

    assert code == 1
    assert one_error_line(err).startswith("error: cannot write the ")
    assert str(target) in err
    assert sum(standin.calls.values()) == 0


# ---- state the tool wrote, damaged or swapped ----------------------------------------------


@pytest.fixture
def stopped_run(run, on_pool, tmp_path) -> Callable[[str], Path]:
    """`stopped_run(mode) -> run folder` of a finished run, marked unfinished so it resumes."""

    def make(mode: str) -> Path:
        code, _, err = run(*on_pool(mode, "--state-dir", "state"))
        assert code in (0, 2), err
        (folder,) = (tmp_path / "state" / "runs").iterdir()
        checkpoint = json.loads((folder / "checkpoint.json").read_text())
        checkpoint.update(done=False, next_page=0, next_token=None)
        (folder / "checkpoint.json").write_text(json.dumps(checkpoint))
        return folder

    return make


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "Expecting property name"),
        ("", "Expecting value"),
        ("[1, 2]", "not a JSON object"),
        ('{"run_id": 7}', "run_id is missing or not a string"),
        (None, "next_page is not an integer"),
    ],
)
@pytest.mark.parametrize("resume", ["latest", "by id"])
def test_a_corrupt_checkpoint_is_one_line_and_exit_1(
    run, on_pool, stopped_run, content, reason, resume
):
    folder = stopped_run("drift")
    path = folder / "checkpoint.json"
    if content is None:
        content = json.dumps({**json.loads(path.read_text()), "next_page": "3"})
    path.write_text(content)

    more = ["--resume"] if resume == "latest" else ["--resume", folder.name]
    code, _, err = run(*on_pool("drift", "--state-dir", "state", *more))

    assert code == 1
    line = one_error_line(err)
    assert line.startswith(f"error: checkpoint {Path('state') / 'runs' / folder.name}")
    assert reason in line
    assert f"delete {Path('state') / 'runs' / folder.name} to forget that run" in line


def test_another_runs_checkpoint_in_a_run_folder_is_refused(run, on_pool, stopped_run, tmp_path):
    folder = stopped_run("drift")
    impostor = folder.with_name("20260101T000000Z-drift-aaaaaa")
    folder.rename(impostor)

    code, _, err = run(*on_pool("drift", "--state-dir", "state", "--resume", impostor.name))

    assert code == 1
    assert f"belongs to run {folder.name}, not {impostor.name}" in one_error_line(err)


def test_a_run_id_that_is_a_path_is_refused(run, on_pool):
    code, _, err = run(*on_pool("drift", "--state-dir", "state", "--resume", "../../etc"))
    assert code == 1
    assert one_error_line(err) == (
        "error: '../../etc' is not a run id (like 20261206T210523Z-drift-b530a0)"
    )


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (['{"page": 0, "sub": "s"}', "{}"], "line 1 (not an intent: KeyError 'before')"),
        (["[1]", "{}"], "line 1 (not an intent: TypeError"),
        (["garbage", "{}"], "line 1 (not JSON)"),
        (
            [
                '{"page": 0, "sub": "u", "before": {"enabled": ["webauthn"]}, '
                '"target": {"enabled": []}}'
            ],
            "line 1 (not an intent: ValueError",
        ),
        (
            [
                '{"page": 0, "sub": "u", "before": {"enabled": []}, "target": {"enabled": []}'
                ', "run": "20260101T000000Z-apply-bbbbbb"}'
            ],
            "line 1 (a line of run 20260101T000000Z-apply-bbbbbb, not of ",
        ),
    ],
)
def test_a_corrupt_or_foreign_intent_journal_is_one_line_and_exit_1(
    run, on_pool, stopped_run, lines, reason
):
    folder = stopped_run("apply")
    (folder / "intents.jsonl").write_text("\n".join(lines) + "\n")

    code, _, err = run(*on_pool("apply", "--state-dir", "state", "--resume"))

    assert code == 1
    line = one_error_line(err)
    assert line.startswith("error: write-intent journal ")
    assert reason in line


def test_a_journal_line_cut_short_by_a_kill_is_dropped_and_the_rest_kept(tmp_path):
    from mfa_policy.core.model import Factor, MfaState
    from mfa_policy.run.state import Intent, IntentJournal

    path = tmp_path / "intents.jsonl"
    journal = IntentJournal(path, run_id="r1")
    before, after = MfaState(frozenset({Factor.SMS}), Factor.SMS), MfaState(frozenset(), None)
    journal.record(Intent(0, "ann", before, after))
    with open(path, "a") as f:
        f.write('{"page": 0, "username": "bo')  # killed mid-line

    resumed = IntentJournal(path, run_id="r1")
    resumed.record(Intent(1, "cy", before, after))

    again = IntentJournal(path, run_id="r1")
    assert again.get("ann") == Intent(0, "ann", before, after)
    assert again.get("cy") == Intent(1, "cy", before, after)
    assert again.get("bo") is None


@pytest.mark.parametrize("kind", ["garbage", "another schema", "a folder"])
def test_a_probe_database_that_is_not_ours_is_one_line_and_exit_1(
    run, on_pool, tmp_path, kind, standin
):
    argv = on_pool("apply", "--state-dir", "state")
    pool_id = argv[argv.index("--user-pool-id") + 1]
    path = tmp_path / "state" / "probes" / f"{pool_id}.sqlite"
    path.parent.mkdir(parents=True)
    if kind == "garbage":
        path.write_bytes(b"not sqlite at all" * 100)
    elif kind == "a folder":
        path.mkdir()
    else:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE failed_probe (username TEXT, tries INTEGER)")
        db.commit()
        db.close()

    code, _, err = run(*argv)

    assert code == 1
    line = one_error_line(err)
    assert str(Path("state") / "probes" / path.name) in line
    assert line.startswith(("error: the probe memory ", "error: cannot open the probe memory "))


# ---- a silent endpoint fails in bounded time, with a message --------------------------------


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_an_endpoint_that_never_answers_fails_in_bounded_time_with_a_message(
    run, policy, silent_endpoint, monkeypatch
):
    # The shipped timeouts scaled down, so the test takes seconds; the attempts are the
    # shipped ones (test_a_silent_endpoint_is_tried_three_times_then_the_run_stops).
    monkeypatch.setattr(
        clients,
        "CLIENT_CONFIG",
        Config(retries={"total_max_attempts": 1}, connect_timeout=0.5, read_timeout=0.5),
    )
    start = time.monotonic()
    code, _, err = run(
        "drift",
        "-c",
        str(policy),
        "--user-pool-id",
        "us-east-1_silent",
        "--endpoint-url",
        silent_endpoint,
        "--region",
        "us-east-1",
    )
    elapsed = time.monotonic() - start

    assert code == 1
    line = one_error_line(err)
    assert "cannot read the MFA configuration of us-east-1_silent" in line
    assert "the endpoint accepted the connection but did not answer within 0.5 s (3 attempts)" in (
        line
    )
    assert elapsed < 20  # 3 x 0.5 s and backoff; the rest is start-up on a busy machine


def test_a_silent_endpoint_is_tried_three_times_then_the_run_stops():
    """Counted, not timed: the attempts and the backoff between them are what bound the wait."""

    class Silent:
        calls = 0

        def get_user_pool_mfa_config(self, **kwargs):
            Silent.calls += 1
            raise ReadTimeoutError(endpoint_url="https://cognito-idp.us-east-1.amazonaws.com/")

    slept: list[float] = []
    gateway_ = gateway.CognitoGateway(Silent(), "us-east-1_x", sleep=slept.append)

    with pytest.raises(RunError) as exc:
        gateway_.pool_mfa_config()

    assert Silent.calls == 3
    assert len(slept) == 2 and sum(slept) <= 0.2 + 0.4
    assert "did not answer within 10 s (3 attempts)" in str(exc.value)


def test_the_documented_timeout_bound_is_what_the_settings_give():
    """README: a silent endpoint fails a run within about 31 s. Attempts x read timeout, plus
    the largest backoff between them."""
    retry = gateway.RetryPolicy()
    attempts = retry.transport_attempts
    backoff = sum(min(retry.max_delay, retry.base_delay * 2 ** (n - 1)) for n in range(1, attempts))
    bound = attempts * gateway.CLIENT_CONFIG.read_timeout + backoff
    assert bound <= 31
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    assert "fails within 31 s" in readme
