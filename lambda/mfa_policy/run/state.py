"""What a run remembers between slices and runs: checkpoints, write intents, probe results.

Local files here; the Lambda keeps the same files under /tmp and syncs them with the report
bucket at the start and end of each slice. None of them holds a username: users are keyed by
their ``sub``, which is an opaque id, while a username is often an email address.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


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


class IntentJournal:
    """Write-ahead log of the pages in flight, by sub. Cleared page by page as they commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._intents: dict[str, Intent] = {}
        if path.exists():
            for line in path.read_text("utf-8").splitlines():
                try:
                    raw = json.loads(line)
                except ValueError:
                    continue  # the last line of a killed process may be cut short
                if "sub" not in raw:
                    continue  # an older journal, keyed by username: nothing can match it
                self._intents[raw["sub"]] = Intent(
                    raw["page"],
                    raw["sub"],
                    MfaState.from_dict(raw["before"]),
                    MfaState.from_dict(raw["target"]),
                    tuple(raw.get("rejections", ())),
                )

    def get(self, sub: str) -> Intent | None:
        with self._lock:
            return self._intents.get(sub)

    def record(self, intent: Intent) -> None:
        line = json.dumps(_intent_dict(intent))
        with self._lock:
            self._intents[intent.sub] = intent
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

    def clear_through(self, page: int) -> None:
        with self._lock:
            self._intents = {u: i for u, i in self._intents.items() if i.page > page}
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for i in self._intents.values():
                    f.write(json.dumps(_intent_dict(i)) + "\n")
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
    return data


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS failed_probe (sub TEXT PRIMARY KEY, at REAL NOT NULL)"
        )

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
        path.mkdir(parents=True, exist_ok=True)
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
        path = self.root / "runs" / run_id / "checkpoint.json"
        if not path.exists():
            return None
        return Checkpoint.from_dict(json.loads(path.read_text("utf-8")))

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
        if not runs.exists():
            return None
        found = []
        for path in runs.glob("*/checkpoint.json"):
            cp = Checkpoint.from_dict(json.loads(path.read_text("utf-8")))
            if (
                cp.user_pool_id == user_pool_id
                and cp.mode == mode
                and (not cp.done or unreported(cp))
            ):
                found.append(cp)
        return max(found, key=lambda c: (c.started_at, c.run_id), default=None)


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
