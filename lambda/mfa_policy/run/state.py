"""What a run remembers between slices and runs: checkpoints, write intents, probe results.

Local files here; the Lambda keeps its probe memory under /tmp, synced with the report bucket
at the start and end of each slice, and its intent journal in the bucket itself
(``StoredIntentJournal``), written before the writes it covers. None of them holds a username:
users are keyed by their ``sub``, which is an opaque id, while a username is often an email.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mfa_policy.core.model import MfaState
from mfa_policy.exceptions import RunError

DAY = 86_400.0


@dataclass
class Checkpoint:
    """Where a run stands after its last committed page. Small and JSON-serializable."""

    run_id: str
    user_pool_id: str
    mode: str
    auth: str
    policy_hash: str
    started_at: str
    next_page: int = 0
    next_token: str | None = None
    done: bool = False
    ended_at: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: Where the report goes, and the sizes of its files at the last commit.
    report_uri: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    slices: int = 0
    #: The calendar month (UTC) MAUs are counted in, fixed when the run started.
    month: str = ""
    #: How the run chose whom to read (see run.ledger.sync_feed); {} for runs without one.
    ledger: dict[str, Any] = field(default_factory=dict)
    #: What preflight learnt of the pool that decisions depend on (PoolFacts).
    pool: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Raises ValueError naming the first field that is missing or of the wrong type."""
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")
        fields = cls.__dataclass_fields__
        for name in ("run_id", "user_pool_id", "mode", "auth", "policy_hash", "started_at"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"{name} is missing or not a string")
        for name, kind in _CHECKPOINT_TYPES.items():
            if name not in data:
                continue
            value = data[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{name} is not {_KIND_NAMES[kind]}")
        return cls(**{k: v for k, v in data.items() if k in fields})


_CHECKPOINT_TYPES: dict[str, type | tuple[type, ...]] = {
    "next_page": int,
    "next_token": (str, type(None)),
    "done": bool,
    "ended_at": (str, type(None)),
    "counts": dict,
    "warnings": list,
    "report_uri": str,
    "report": dict,
    "slices": int,
}
_KIND_NAMES: dict[type | tuple[type, ...], str] = {
    int: "an integer",
    (str, type(None)): "a string or null",
    bool: "true or false",
    dict: "an object",
    list: "a list",
    str: "a string",
}

#: Run ids the runner makes (``20261206T210523Z-drift-b530a0``); anything else, a path
#: included, is not looked up.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def checkpoint_from_file(path: Path, *, run_id: str | None = None) -> Checkpoint:
    """The checkpoint in ``path``, or a RunError saying what is wrong with the file (unreadable,
    cut short, edited, or copied from another run's folder)."""
    try:
        checkpoint = Checkpoint.from_dict(json.loads(path.read_text("utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RunError(
            f"checkpoint {path} is unreadable or corrupt ({reason}); "
            f"delete {path.parent} to forget that run"
        ) from None
    if run_id is not None and checkpoint.run_id != run_id:
        raise RunError(
            f"checkpoint {path} belongs to run {checkpoint.run_id}, not {run_id}; "
            f"delete {path.parent} to forget it"
        )
    return checkpoint


def write_json_atomically(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Intent:
    """A write about to be sent: enough to report it truthfully if the process dies after it."""

    page: int
    sub: str
    before: MfaState
    target: MfaState
    #: Cognito's refusals (engine ``Rejection`` values) before this request, in order: a
    #: resumed run replays them, so its row (reason included) is the one the write earned.
    rejections: tuple[str, ...] = ()
    #: The user's SMS was on through the legacy MFAOptions only (a landed write clears that).
    legacy_sms: bool = False


class Journal(Protocol):
    """What the runner needs of a write-intent journal, local file or report bucket."""

    def get(self, sub: str) -> Intent | None: ...
    def record_many(self, intents: Sequence[Intent]) -> None: ...
    def record_followup(self, intent: Intent) -> None: ...
    def clear_through(self, page: int) -> None: ...


class IntentJournal:
    """Write-ahead log of the pages in flight, by sub. Cleared page by page as they commit.

    With ``run_id``, every line carries it, and a journal holding another run's lines is
    refused: replaying them would report writes this run never made."""

    def __init__(self, path: Path, *, run_id: str | None = None) -> None:
        self.path = path
        self.run_id = run_id
        self._lock = threading.Lock()
        self._intents: dict[str, Intent] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        def corrupt(number: int, reason: str) -> RunError:
            return RunError(
                f"write-intent journal {self.path} is corrupt at line {number} ({reason}); "
                "it records writes that may have been sent, so it is not ignored: restore it, "
                f"or delete {self.path.parent} to forget that run"
            )

        try:
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                # A process killed while writing leaves its last line cut short: drop it, so
                # that this run's lines start on a line of their own.
                data = data[: data.rfind(b"\n") + 1]
                with open(self.path, "r+b") as f:
                    f.truncate(len(data))
        except OSError as exc:
            raise RunError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError:
                raise corrupt(number, "not JSON") from None
            if isinstance(raw, dict) and "sub" not in raw:
                continue  # an older journal, keyed by username: nothing can match it
            try:
                intent = Intent(
                    _int(raw["page"]),
                    _str(raw["sub"]),
                    MfaState.from_dict(raw["before"]),
                    MfaState.from_dict(raw["target"]),
                    tuple(_str(r) for r in raw.get("rejections", ())),
                    bool(raw.get("legacy_sms", False)),
                )
            except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as exc:
                raise corrupt(number, f"not an intent: {type(exc).__name__} {exc}") from None
            run = raw.get("run")
            if self.run_id is not None and run is not None and run != self.run_id:
                raise corrupt(number, f"a line of run {run}, not of {self.run_id}")
            self._intents[intent.sub] = intent

    def _line(self, intent: Intent) -> str:
        raw = _intent_dict(intent)
        if self.run_id is not None:
            raw["run"] = self.run_id
        return json.dumps(raw)

    def get(self, sub: str) -> Intent | None:
        with self._lock:
            return self._intents.get(sub)

    def record(self, intent: Intent) -> None:
        line = self._line(intent)
        with self._lock:
            self._intents[intent.sub] = intent
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

    def record_many(self, intents: Sequence[Intent]) -> None:
        """A page's intents in one write and one fsync, before any of them is sent."""
        if not intents:
            return
        text = "".join(json.dumps(_intent_dict(i)) + "\n" for i in intents)
        with self._lock:
            for intent in intents:
                self._intents[intent.sub] = intent
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())

    def record_followup(self, intent: Intent) -> None:
        """The request sent after Cognito refused a factor, with the refusals so far."""
        self.record(intent)

    def clear_through(self, page: int) -> None:
        with self._lock:
            self._intents = {u: i for u, i in self._intents.items() if i.page > page}
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for i in self._intents.values():
                    f.write(self._line(i) + "\n")
            os.replace(tmp, self.path)


def _intent_dict(intent: Intent) -> dict[str, Any]:
    data: dict[str, Any] = {
        "page": intent.page,
        "sub": intent.sub,
        "before": intent.before.to_dict(),
        "target": intent.target.to_dict(),
    }
    if intent.rejections:
        data["rejections"] = list(intent.rejections)
    if intent.legacy_sms:
        data["legacy_sms"] = True
    return data


class JournalPages(Protocol):
    """Where a journal kept outside this machine lives: one text per page (the report bucket)."""

    def put_page(self, page: int, text: str) -> None: ...
    def pages_from(self, page: int) -> Iterator[tuple[int, str]]: ...


class StoredIntentJournal:
    """The write-ahead log of a run in AWS, where every slice and its retries find it.

    A Lambda slice that is killed (a timeout, the sandbox lost) never returns its checkpoint,
    so Step Functions runs it again from where it started and may stop it earlier or later than
    the killed attempt. The journal therefore outlives slices: one object per page, keyed by
    run and page, written before any of that page's writes is sent. A slice reads the pages
    from its checkpoint on; pages it commits are dropped from memory only, since they are
    durable only once the slice's report part is uploaded. Users are stored as a hash of their
    sub salted with the run id.
    """

    def __init__(self, pages: JournalPages, *, run_id: str, first_page: int) -> None:
        self.pages = pages
        self.run_id = run_id
        self._lock = threading.Lock()
        self._put_lock = threading.Lock()
        #: user key -> intent, for the pages not yet committed by this slice.
        self._intents: dict[str, Intent] = {}
        for page, text in pages.pages_from(first_page):
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    raw = json.loads(line)
                    intent = Intent(
                        page,
                        "",
                        MfaState.from_dict(raw["before"]),
                        MfaState.from_dict(raw["target"]),
                        tuple(str(r) for r in raw.get("rejections", ())),
                        bool(raw.get("legacy_sms", False)),
                    )
                    self._intents[str(raw["user"])] = intent
                except (ValueError, KeyError, TypeError, AttributeError, AssertionError):
                    # A page is written whole in one request: a bad line is not ours, and
                    # resuming without it could report a changed user as compliant.
                    raise RunError(
                        f"the write-intent journal of run {run_id} is damaged (page {page}, "
                        f"line {number}); it cannot be resumed safely: start a new run"
                    ) from None

    def _key(self, sub: str) -> str:
        return hashlib.sha256(f"{self.run_id}\0{sub}".encode()).hexdigest()

    def get(self, sub: str) -> Intent | None:
        with self._lock:
            found = self._intents.get(self._key(sub))
        return replace(found, sub=sub) if found else None

    def record(self, intent: Intent) -> None:
        self.record_many([intent])

    def record_followup(self, intent: Intent) -> None:
        """Not uploaded: one PUT per page, not one per refused user. The page's first intent
        for the user stays in the bucket, and a resumed run infers the refusals that led from
        it to the state it finds (``Runner._resumed``)."""

    def record_many(self, intents: Sequence[Intent]) -> None:
        """One object per page, holding every intent of that page this run knows of (those of
        a killed attempt too, so that writing the page again loses none of them)."""
        if not intents:
            return
        # One writer at a time, so a page's object always holds all of it; lookups by the
        # workers deciding the next page do not wait for the upload.
        with self._put_lock:
            texts = self._page_texts(intents)
            for page, text in texts.items():
                self.pages.put_page(page, text)

    def _page_texts(self, intents: Sequence[Intent]) -> dict[int, str]:
        with self._lock:
            for intent in intents:
                self._intents[self._key(intent.sub)] = intent
            pages = sorted({i.page for i in intents})
            texts = {
                page: "".join(
                    json.dumps(
                        {
                            "user": key,
                            "before": i.before.to_dict(),
                            "target": i.target.to_dict(),
                            **({"rejections": list(i.rejections)} if i.rejections else {}),
                            **({"legacy_sms": True} if i.legacy_sms else {}),
                        },
                        sort_keys=True,
                    )
                    + "\n"
                    for key, i in sorted(self._intents.items())
                    if i.page == page
                )
                for page in pages
            }
        return texts

    def clear_through(self, page: int) -> None:
        with self._lock:
            self._intents = {k: i for k, i in self._intents.items() if i.page > page}


class ProbeMemory:
    """When each user's last TOTP probe was rejected, on disk (SQLite) so memory stays flat."""

    def __init__(
        self,
        path: Path | str,
        *,
        reprobe_after_days: float = 7,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.reprobe_after = reprobe_after_days * DAY
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise RunError(f"cannot open the probe memory {self.path}: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS failed_probe (sub TEXT PRIMARY KEY, at REAL NOT NULL)"
            )
            columns = [row[1:3] for row in self._db.execute("PRAGMA table_info(failed_probe)")]
            if columns != [("sub", "TEXT"), ("at", "REAL")]:
                raise sqlite3.DatabaseError(f"table failed_probe has columns {columns}")
            self._db.execute("SELECT sub, at FROM failed_probe LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            self._db.close()
            raise RunError(
                f"the probe memory {self.path} is not one this tool wrote ({exc}); move it "
                "away to start afresh (users whose probe failed are then probed again)"
            ) from None

    def allowed(self, sub: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT at FROM failed_probe WHERE sub = ?", (sub,)).fetchone()
        return row is None or self._clock() - row[0] >= self.reprobe_after

    def record_failure(self, sub: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO failed_probe VALUES (?, ?)", (sub, self._clock())
            )

    def forget(self, sub: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM failed_probe WHERE sub = ?", (sub,))

    def close(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


class StateFolder:
    """The CLI's state folder (``.mfa-policy/`` by default): runs and probe memory per pool."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        path = self.root / "runs" / run_id
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(
                f"cannot write the state folder {self.root}: {exc.strerror or exc}"
            ) from None
        return path

    def probe_db(self, user_pool_id: str) -> Path:
        return self.root / "probes" / f"{user_pool_id}.sqlite"

    def ledger_db(self, user_pool_id: str) -> Path:
        """The pool's state ledger: each user's last observed MFA state (run.ledger)."""
        return self.root / "ledger" / f"{user_pool_id}.sqlite"

    def save(self, checkpoint: Checkpoint) -> None:
        write_json_atomically(
            self.run_dir(checkpoint.run_id) / "checkpoint.json", checkpoint.to_dict()
        )

    def load(self, run_id: str) -> Checkpoint | None:
        check_run_id(run_id)
        path = self.root / "runs" / run_id / "checkpoint.json"
        if not path.exists():
            return None
        return checkpoint_from_file(path, run_id=run_id)

    def lock_dir(self) -> Path:
        """Pool locks of runs sharing this state folder (beside the per-user ones)."""
        return self.root / "locks"

    def latest_unfinished(
        self,
        user_pool_id: str,
        mode: str,
        unreported: Callable[[Checkpoint], bool] = lambda cp: False,
    ) -> Checkpoint | None:
        """The newest run of this pool and mode that is not done, or (``unreported``) is done
        but was killed before its summary was written."""
        runs = self.root / "runs"
        if not runs.is_dir():
            return None
        found = []
        for path in runs.glob("*/checkpoint.json"):
            cp = checkpoint_from_file(path, run_id=path.parent.name)
            if (
                cp.user_pool_id == user_pool_id
                and cp.mode == mode
                and (not cp.done or unreported(cp))
            ):
                found.append(cp)
        return max(found, key=lambda c: (c.started_at, c.run_id), default=None)

    def check_writable(self) -> None:
        """A clear error, before any request is sent, when the folder cannot be used."""
        ensure_writable_dir(self.root, "state folder")


def ensure_writable_dir(path: Path, what: str) -> None:
    """Create ``path`` if needed and prove a file can be written in it, or raise RunError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        problem = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError | NotADirectoryError):
            problem = "a file is in the way"
        raise RunError(f"cannot write the {what} {path}: {problem}") from None


def check_run_id(run_id: str) -> None:
    if not _RUN_ID.fullmatch(run_id):
        raise RunError(f"{run_id!r} is not a run id (like 20261206T210523Z-drift-b530a0)")


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


# -- one run per pool at a time, on this machine ---------------------------------------------

#: Overrides the per-user lock folder (tests, containers with a read-only home).
LOCK_DIR_ENV = "MFA_POLICY_LOCK_DIR"
_POLL_SECONDS = 0.2


def user_lock_dir() -> Path:
    """The per-user folder of pool locks, shared by every state folder of this user.

    ``~/.cache/mfa-policy/locks`` and not ``$XDG_RUNTIME_DIR``: a cron job, a systemd unit and
    an SSH session of the same user see different (or no) runtime folders, and a lock that two
    runs find in different places excludes nothing.
    """
    override = os.environ.get(LOCK_DIR_ENV)
    if override:
        return Path(override)
    return Path.home() / ".cache" / "mfa-policy" / "locks"


def _lock_name(user_pool_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in user_pool_id) + ".lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a pool's lock, as its lock file says."""

    run_id: str
    mode: str
    pid: int
    host: str
    started_at: str

    def describe(self) -> str:
        return (
            f"{self.mode} run {self.run_id} (pid {self.pid} on {self.host}, "
            f"started {self.started_at})"
        )


class PoolLocked(RunError):
    """Another run on this machine (or sharing this state folder) holds the pool."""

    def __init__(self, user_pool_id: str, holder: LockHolder | None, path: Path) -> None:
        self.user_pool_id = user_pool_id
        self.holder = holder
        self.path = path
        who = holder.describe() if holder else "another run (it has not said which yet)"
        super().__init__(
            f"user pool {user_pool_id} is in use by {who}; lock {path}. Two runs on one "
            "pool would interleave writes and reports: wait for it to end, or pass --wait"
        )


class PoolLock:
    """An exclusive, advisory ``flock`` per pool, held for a whole run (or rollback).

    Taken in every folder of ``folders`` in order (the per-user folder first, then the state
    folder, which covers runs of other users or hosts sharing it). The kernel releases a flock
    when its process dies, SIGKILL included, so a crashed run never leaves the pool locked; the
    holder's run id, pid, host and start time are written into the file for the message of
    whoever finds it locked. Lock files are never deleted (deleting one races a new holder).
    """

    def __init__(self, user_pool_id: str, run_id: str, mode: str, folders: Sequence[Path]) -> None:
        self.user_pool_id = user_pool_id
        self.paths = [Path(folder) / _lock_name(user_pool_id) for folder in folders]
        self.holder = LockHolder(
            run_id=run_id,
            mode=mode,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._fds: list[int] = []

    def acquire(
        self,
        wait: float = 0.0,
        on_wait: Callable[[PoolLocked], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Take every lock, or raise PoolLocked; with ``wait`` > 0, retry that many seconds
        (``math.inf``: until free), calling ``on_wait`` once when it starts waiting."""
        deadline = clock() + wait
        told = False
        while True:
            busy = self._try_all()
            if busy is None:
                return
            if clock() >= deadline:
                raise busy
            if not told and on_wait is not None:
                on_wait(busy)
                told = True
            time.sleep(_POLL_SECONDS)

    def rename(self, run_id: str) -> None:
        """Record the run id once it is known (a ``--resume`` finds it after locking)."""
        self.holder = replace(self.holder, run_id=run_id)
        for fd in self._fds:
            self._write_holder(fd)

    def release(self) -> None:
        while self._fds:
            fd = self._fds.pop()
            try:
                os.ftruncate(fd, 0)  # a stale holder must not be named once the lock is free
            finally:
                os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> PoolLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _try_all(self) -> PoolLocked | None:
        for path in self.paths:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self.release()
                raise RunError(
                    f"cannot create the pool lock {path}: {exc.strerror}; set "
                    f"{LOCK_DIR_ENV} to a writable folder"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                self.release()
                return PoolLocked(self.user_pool_id, holder, path)
            except BaseException:
                os.close(fd)
                self.release()
                raise
            self._fds.append(fd)
            self._write_holder(fd)
        return None

    def _write_holder(self, fd: int) -> None:
        data = json.dumps(asdict(self.holder), sort_keys=True).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> LockHolder | None:
    try:
        raw = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return LockHolder(
            run_id=str(raw["run_id"]),
            mode=str(raw["mode"]),
            pid=int(raw["pid"]),
            host=str(raw["host"]),
            started_at=str(raw["started_at"]),
        )
    except (ValueError, KeyError, TypeError, OSError):
        return None  # the holder is still writing it, or it was written by something else
