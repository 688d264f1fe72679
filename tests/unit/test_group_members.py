"""Group membership held in bounded memory: 8 bytes per member, exact for the names it holds."""

from __future__ import annotations

import sys

from mfa_policy.run.groups import GroupMembers, group_members_for_run


def test_members_are_found_and_others_are_not():
    members = GroupMembers(f"admin-{i}" for i in range(5000))
    assert all(f"admin-{i}" in members for i in range(5000))
    assert not any(f"user-{i}" in members for i in range(5000))
    assert 42 not in members
    assert len(members) == 5000


def test_a_large_group_costs_about_eight_bytes_a_member():
    members = GroupMembers(f"member-{i:07d}" for i in range(200_000))
    assert sys.getsizeof(members._hashes) < 200_000 * 8 + 1024


class MemorySnapshot:
    def __init__(self, data: bytes | None = None) -> None:
        self.data = data

    def load(self) -> bytes | None:
        return self.data

    def save(self, data: bytes) -> None:
        self.data = data


class Lister:
    def __init__(self, members: dict[str, list[str]]) -> None:
        self.members = members
        self.calls: list[str] = []

    def __call__(self, group: str) -> list[str]:
        self.calls.append(group)
        return self.members[group]


def test_the_first_slice_lists_and_later_slices_load_the_snapshot():
    snapshot = MemorySnapshot()
    lister = Lister({"admins": ["ann", "bob"], "ops": ["cy"]})
    first = group_members_for_run({"ops", "admins"}, snapshot, lister)
    second = group_members_for_run({"admins", "ops"}, snapshot, lister)
    assert lister.calls == ["admins", "ops"]
    assert "bob" in second["admins"] and "cy" in second["ops"] and "cy" not in second["admins"]
    assert {g: len(m) for g, m in first.items()} == {g: len(m) for g, m in second.items()}


def test_a_snapshot_of_other_groups_or_a_damaged_one_is_listed_again():
    lister = Lister({"admins": ["ann"], "ops": ["cy"]})
    other = MemorySnapshot()
    group_members_for_run({"ops"}, other, lister)
    assert "ann" in group_members_for_run({"admins"}, other, lister)["admins"]
    damaged = MemorySnapshot(b"{not json")
    assert "cy" in group_members_for_run({"ops"}, damaged, lister)["ops"]
    assert lister.calls == ["ops", "admins", "ops"]


def test_a_policy_without_groups_lists_nothing_and_keeps_nothing():
    snapshot = MemorySnapshot()
    assert group_members_for_run(set(), snapshot, Lister({})) == {}
    assert snapshot.data is None
