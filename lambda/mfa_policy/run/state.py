"""What a run remembers between slices and runs: checkpoints, write intents, probe results.

Local files here; the Lambda keeps the same files under /tmp and syncs them with the report
bucket at the start and end of each slice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mfa_policy.core.model import MfaState

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
    username: str
    before: MfaState
    target: MfaState


class IntentJournal:
    """Write-ahead log of the pages in flight. Cleared page by page as they commit."""

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
                self._intents[raw["username"]] = Intent(
                    raw["page"],
                    raw["username"],
                    MfaState.from_dict(raw["before"]),
                    MfaState.from_dict(raw["target"]),
                )

    def get(self, username: str) -> Intent | None:
        with self._lock:
            return self._intents.get(username)

    def record(self, intent: Intent) -> None:
        line = json.dumps(
            {
                "page": intent.page,
                "username": intent.username,
                "before": intent.before.to_dict(),
                "target": intent.target.to_dict(),
            }
        )
        with self._lock:
            self._intents[intent.username] = intent
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
                    f.write(
                        json.dumps(
                            {
                                "page": i.page,
                                "username": i.username,
                                "before": i.before.to_dict(),
                                "target": i.target.to_dict(),
                            }
                        )
                        + "\n"
                    )
            os.replace(tmp, self.path)


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

    def save(self, checkpoint: Checkpoint) -> None:
        write_json_atomically(
            self.run_dir(checkpoint.run_id) / "checkpoint.json", checkpoint.to_dict()
        )

    def load(self, run_id: str) -> Checkpoint | None:
        path = self.root / "runs" / run_id / "checkpoint.json"
        if not path.exists():
            return None
        return Checkpoint.from_dict(json.loads(path.read_text("utf-8")))

    def latest_unfinished(self, user_pool_id: str, mode: str) -> Checkpoint | None:
        runs = self.root / "runs"
        if not runs.exists():
            return None
        found = []
        for path in runs.glob("*/checkpoint.json"):
            cp = Checkpoint.from_dict(json.loads(path.read_text("utf-8")))
            if cp.user_pool_id == user_pool_id and cp.mode == mode and not cp.done:
                found.append(cp)
        return max(found, key=lambda c: (c.started_at, c.run_id), default=None)
