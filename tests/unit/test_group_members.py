"""Group membership held in bounded memory: 8 bytes per member, exact for the names it holds."""

from __future__ import annotations

import sys

from mfa_policy.run.runner import GroupMembers


def test_members_are_found_and_others_are_not():
    members = GroupMembers(f"admin-{i}" for i in range(5000))
    assert all(f"admin-{i}" in members for i in range(5000))
    assert not any(f"user-{i}" in members for i in range(5000))
    assert 42 not in members
    assert len(members) == 5000


def test_a_large_group_costs_about_eight_bytes_a_member():
    members = GroupMembers(f"member-{i:07d}" for i in range(200_000))
    assert sys.getsizeof(members._hashes) < 200_000 * 8 + 1024
