"""Membership of the groups a policy names: listed once per run, held in 8 bytes a member.

A run lists each group's members with ListUsersInGroup before its first read and keeps the
result beside its checkpoint (a file locally, an object in the report bucket in AWS), so later
slices of the same run load it instead of listing again: a 200,000-member group is 3,334
listing calls, minutes of UserList quota a slice would otherwise spend before its first read.
The whole run decides against the membership it started with.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import os
from array import array
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from mfa_policy.exceptions import RunError


class GroupMembers:
    """A group's usernames in 8 bytes each: a sorted array of 64-bit hashes.

    A set of 200,000 usernames costs about 28 MB of Python objects; this costs 1.6 MB. Two
    usernames share a hash with a chance of about 1 in 10^19 per pair.
    """

    def __init__(self, usernames: Iterable[str] = ()) -> None:
        self._hashes = array("Q", sorted({_hash64(u) for u in usernames}))

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupMembers:
        members = cls()
        members._hashes.frombytes(data)
        return members

    def to_bytes(self) -> bytes:
        return self._hashes.tobytes()

    def __contains__(self, username: object) -> bool:
        if not isinstance(username, str):
            return False
        key = _hash64(username)
        i = bisect.bisect_left(self._hashes, key)
        return i < len(self._hashes) and self._hashes[i] == key

    def __len__(self) -> int:
        return len(self._hashes)


def _hash64(username: str) -> int:
    return int.from_bytes(hashlib.blake2b(username.encode(), digest_size=8).digest(), "big")


class GroupSnapshot(Protocol):
    """Where a run keeps its group membership between slices: bytes in, bytes out."""

    def load(self) -> bytes | None: ...
    def save(self, data: bytes) -> None: ...


class NoSnapshot:
    """Keep nothing: every slice lists (single-user commands, tests)."""

    def load(self) -> bytes | None:
        return None

    def save(self, data: bytes) -> None:
        del data


class FileGroupSnapshot:
    """The snapshot as a file in the run's state folder (the CLI)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def save(self, data: bytes) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


_VERSION = 1


def encode_groups(groups: Mapping[str, GroupMembers]) -> bytes:
    document = {
        "version": _VERSION,
        "groups": {g: base64.b64encode(m.to_bytes()).decode() for g, m in groups.items()},
    }
    return json.dumps(document, sort_keys=True).encode()


def decode_groups(data: bytes, names: Iterable[str]) -> dict[str, GroupMembers] | None:
    """The snapshot's groups, or None if it does not hold exactly ``names`` (list again)."""
    try:
        document = json.loads(data)
        if document.get("version") != _VERSION:
            return None
        stored = document["groups"]
        if set(stored) != set(names):
            return None
        return {g: GroupMembers.from_bytes(base64.b64decode(stored[g])) for g in sorted(stored)}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def group_members_for_run(
    names: Iterable[str],
    snapshot: GroupSnapshot,
    list_members: Callable[[str], Iterable[str]],
) -> dict[str, GroupMembers]:
    """The run's membership of ``names``: from its snapshot, or listed now and kept."""
    names = sorted(names)
    if not names:
        return {}
    data = snapshot.load()
    if data is not None:
        groups = decode_groups(data, names)
        if groups is not None:
            return groups
    # Side by side: the UserList budget paces them, so listing one after another only adds
    # each group's round trips to the wait before the first read.
    with ThreadPoolExecutor(len(names), thread_name_prefix="group") as listing:
        listed = listing.map(lambda g: GroupMembers(list_members(g)), names)
        groups = dict(zip(names, listed, strict=True))
    try:
        snapshot.save(encode_groups(groups))
    except OSError as exc:
        raise RunError(f"cannot keep the run's group membership: {exc}") from None
    return groups
