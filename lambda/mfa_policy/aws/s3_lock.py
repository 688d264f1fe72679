"""One run per user pool at a time in AWS: a lease object in the report bucket.

The state machine takes the lock before a run's first slice and gives it back on every way
out (done, failed, timed out); each slice renews it. It is one object per pool, written with
S3's conditional writes: ``If-None-Match: *`` takes a free lock, ``If-Match: <ETag>`` renews
it, takes over an expired one and deletes it on release, so two executions can never both
believe they hold it. The lease bounds how long a run that vanished without giving it back
(an execution stopped by hand, or past the state machine's own timeout) keeps others out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from mfa_policy.exceptions import RunError

#: A slice renews the lease when it starts and when it ends, and one slice lasts at most
#: 15 minutes; an hour leaves room for Step Functions' retries and Lambda throttling between.
LEASE_SECONDS = 3600.0

_LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
_MISSING = ("NoSuchKey", "404")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class LockHolder:
    """Who holds a pool's lock: the Step Functions execution, and the run it started."""

    owner: str
    run_id: str
    mode: str
    trigger: str
    acquired_at: float
    expires_at: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LockHolder:
        return cls(
            owner=str(data["owner"]),
            run_id=str(data["run_id"]),
            mode=str(data["mode"]),
            trigger=str(data["trigger"]),
            acquired_at=float(data["acquired_at"]),
            expires_at=float(data["expires_at"]),
        )

    def describe(self) -> str:
        execution = self.owner.rsplit(":", 1)[-1]
        return (
            f"run {self.run_id} ({self.mode}, started by {self.trigger} at "
            f"{iso(self.acquired_at)}, execution {execution}) holds the pool's lock until "
            f"{iso(self.expires_at)} unless it ends first"
        )


class LockLost(RunError):
    """This run's lease expired and another run took the pool: stop before any more writes."""


class S3Lock:
    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.lease_seconds = lease_seconds
        self._clock = clock

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def acquire(
        self, owner: str, *, run_id: str, mode: str, trigger: str
    ) -> tuple[bool, LockHolder]:
        """Take the lock for ``owner``; ``(False, holder)`` when another run holds it.

        Taking it again for the same owner (a retried state) renews it.
        """
        for _ in range(5):  # each pass loses a race to another writer at most once
            now = self._clock()
            mine = LockHolder(owner, run_id, mode, trigger, now, now + self.lease_seconds)
            if self._put(mine, if_none_match=True):
                return True, mine
            current = self._read()
            if current is None:
                continue  # released in between: try the free lock again
            holder, etag = current
            if holder.owner == owner:
                renewed = LockHolder(
                    owner,
                    holder.run_id,
                    holder.mode,
                    holder.trigger,
                    holder.acquired_at,
                    now + self.lease_seconds,
                )
                if self._put(renewed, if_match=etag):
                    return True, renewed
                continue
            if holder.expires_at > now:
                return False, holder
            if self._put(mine, if_match=etag):  # the holder vanished: take over its lease
                return True, mine
        current = self._read()
        if current is None:
            raise RunError(f"the run lock {self.uri} keeps changing; try again")
        return False, current[0]

    def renew(self, owner: str, run_id: str | None = None) -> LockHolder:
        """Extend ``owner``'s lease; raise LockLost if the lock is no longer its."""
        current = self._read()
        if current is not None and current[0].owner == owner:
            holder, etag = current
            now = self._clock()
            renewed = LockHolder(
                owner,
                run_id or holder.run_id,
                holder.mode,
                holder.trigger,
                holder.acquired_at,
                now + self.lease_seconds,
            )
            if self._put(renewed, if_match=etag):
                return renewed
            current = self._read()
        taken_by = f"; {current[0].describe()}" if current is not None else "; nobody holds it now"
        raise LockLost(
            f"this run lost its lock {self.uri} (its lease ran out){taken_by}. It stopped "
            "before writing anything more; start a new run"
        )

    def release(self, owner: str) -> bool:
        """Give the lock back if ``owner`` holds it; False when it was not (or no longer) its."""
        current = self._read()
        if current is None or current[0].owner != owner:
            return False
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=current[1])
        except ClientError as exc:
            if _code(exc) in _LOST_RACE + _MISSING:
                return False
            raise
        return True

    # -- the object ---------------------------------------------------------------------------

    def _read(self) -> tuple[LockHolder, str] | None:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        etag = str(response["ETag"])
        try:
            holder = LockHolder.from_dict(json.loads(response["Body"].read()))
        except (ValueError, KeyError, TypeError):
            # Not a lock this tool wrote: treat it as expired, so it can be taken over (with
            # If-Match, so only by one run) instead of keeping every run out forever.
            holder = LockHolder("unreadable", "unknown", "unknown", "unknown", 0.0, 0.0)
        return holder, etag

    def _put(
        self, holder: LockHolder, *, if_none_match: bool = False, if_match: str | None = None
    ) -> bool:
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        body = {**asdict(holder), "expires": iso(holder.expires_at)}
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=json.dumps(body, sort_keys=True).encode("utf-8"),
                ContentType="application/json",
                **conditions,
            )
        except ClientError as exc:
            if _code(exc) in _LOST_RACE + (_MISSING if if_match else ()):
                return False
            raise
        return True


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
