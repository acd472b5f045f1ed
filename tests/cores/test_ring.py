"""The ring core: partitions of the hash space and preference lists."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo.ring import Member, Ring, partition_of, partition_range, preference_lists


@given(st.binary(max_size=64), st.sampled_from([1, 2, 64, 256, 1024]))
def test_a_key_lies_in_its_partitions_hash_range(key, q):
    p = partition_of(key, q)
    lo, hi = partition_range(p, q)
    assert 0 <= p < q
    assert lo <= int.from_bytes(hashlib.md5(key).digest(), "big") < hi


def test_the_documented_formula():
    key = b"some key"
    h = int.from_bytes(hashlib.md5(key).digest(), "big")
    assert partition_of(key, 256) == h * 256 >> 128


def test_single_node_ring_and_its_wire_form():
    ring = Ring.single(Member("a", "127.0.0.1:1", "127.0.0.1:2"), 8)
    assert ring.preference_list(3, 3) == ["a"]
    wire = ring.to_wire(3, 2, 2)
    assert wire["owners"] == [["a"]] * 8 and wire["partitions"] == 8
    assert Ring.from_state(ring.to_state()) == ring


def test_preference_lists_hold_distinct_nodes_clockwise():
    members = tuple(Member(x, "", "") for x in "abc")
    ring = Ring(8, 2, members, ("a", "a", "b", "a", "c", "c", "b", "a"))
    assert ring.preference_list(0, 3) == ["a", "b", "c"]
    assert ring.preference_list(6, 2) == ["b", "a"]
    assert ring.preference_list(4, 5) == ["c", "b", "a"]


def test_with_owners_makes_the_next_ring():
    a, b = Member("a", "1", "2"), Member("b", "3", "4")
    ring = Ring.single(a, 4)
    two = ring.with_owners(("a", "b", "a", "b"), (a, b))
    assert two.epoch == 2 and two.members == (a, b) and two.preference_list(1, 3) == ["b", "a"]
    assert ring.with_owners(("a",) * 4, epoch=9).epoch == 9
    with pytest.raises(ValueError):
        ring.with_owners(("a", "b", "a", "b"))  # b is not a member
    with pytest.raises(ValueError):
        two.with_owners(("a", "b"))


@given(st.lists(st.sampled_from("abcde"), min_size=1, max_size=40), st.integers(1, 4))
def test_all_preference_lists_at_once_match_one_by_one(owners, n):
    ring = Ring(len(owners), 1, tuple(Member(x, "", "") for x in set(owners)), tuple(owners))
    assert preference_lists(owners, n) == [ring.preference_list(p, n)
                                           for p in range(len(owners))]
