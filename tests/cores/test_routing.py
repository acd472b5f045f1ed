"""Sloppy-quorum routing: healthy primaries, then fallbacks carrying hints; and the
clients' routing by the ``ring`` reply (paper section 6.4)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.claim import claim
from seda_dynamo.ring import Member, Ring, partition_of
from seda_dynamo.routing import (
    Route,
    Target,
    coordinator,
    first_up,
    owner_table,
    preference_list_of,
    route,
    stand_in,
    targets,
    with_me,
)

RING = Ring(8, 1, tuple(Member(x, "", "") for x in "abcde"),
            ("a", "b", "c", "d", "e", "a", "b", "c"))


def test_all_healthy_gives_the_primaries():
    assert targets(RING, 0, 3, set()) == [Target("a"), Target("b"), Target("c")]


def test_down_primaries_are_replaced_in_order_by_hinted_fallbacks():
    assert targets(RING, 0, 3, {"b", "c"}) == [Target("a"), Target("d", "b"), Target("e", "c")]


def test_too_few_healthy_nodes_gives_what_there_is():
    assert targets(RING, 0, 3, {"a", "b", "c", "d"}) == [Target("e", "a")]


def test_the_coordinator_is_this_node_when_chosen_else_the_first_chosen():
    assert coordinator(RING, 0, 3, set(), "b") == "b"
    assert coordinator(RING, 0, 3, set(), "e") == "a"
    assert coordinator(RING, 0, 3, {"a"}, "d") == "d"


def test_the_route_keeps_the_healthy_nodes_beyond_the_first_n_as_spares_in_order():
    assert route(RING, 0, 3, set()) == Route((Target("a"), Target("b"), Target("c")),
                                             ("d", "e"))
    assert route(RING, 0, 3, {"b"}) == Route((Target("a"), Target("c"), Target("d", "b")),
                                             ("e",))
    assert route(RING, 0, 3, {"a", "b", "c", "d"}) == Route((Target("e", "a"),), ())


def test_a_stand_in_holds_the_write_for_the_owner_of_the_target_it_replaces():
    assert stand_in(Target("b"), "d") == Target("d", "b")
    assert stand_in(Target("d", "b"), "e") == Target("e", "b"), "a fallback's owner stays"


def test_the_owner_itself_replacing_its_fallback_holds_the_write_with_no_hint():
    """A suspected primary is asked last, as a spare: when the fallback standing in for
    it fails, it may replace that fallback. It is the owner: a hint naming itself would
    never be delivered (hints are scanned for peers) nor forgotten (the simulator found
    one left for ever: tests/sim/test_seeds.py, 5 nodes, seed 104)."""
    assert stand_in(Target("d", "b"), "b") == Target("b")


def test_a_node_that_must_stamp_outside_its_route_takes_the_last_place_with_a_hint():
    primaries = ["a", "b", "c"]
    assert with_me(route(RING, 0, 3, set()), "e", primaries, 3) == \
        Route((Target("e", "c"), Target("a"), Target("b")), ("d",))
    assert with_me(route(RING, 0, 3, {"c"}), "e", primaries, 3) == \
        Route((Target("e", "c"), Target("a"), Target("b")), ())
    short = route(RING, 0, 3, {"a", "b", "c", "d"})  # e is all there is
    assert with_me(short, "z", primaries, 3) == \
        Route((Target("z", "b"), Target("e", "a")), ())
    assert with_me(route(RING, 0, 3, set()), "b", primaries, 3) == route(RING, 0, 3, set())


def test_suspected_nodes_are_asked_last_never_dropped():
    """A node that just failed a request is routed around while others can serve, but a
    loaded cluster whose nodes all answered late stays available: suspected primaries
    still count as themselves, suspected others as hinted fallbacks, the rest as spares."""
    r = RING
    walk = r.preference_list(0, r.partitions)
    p1, p2, p3, b1, b2 = walk
    # One suspected primary: the first healthy node beyond takes it, with a hint.
    found = route(r, 0, 3, (), {p2})
    assert found.chosen == (Target(p1), Target(p3), Target(b1, p2))
    assert found.spare == (b2, p2)
    # Every other node suspected: the suspected primaries still serve as themselves.
    found = route(r, 0, 3, (), {p2, p3, b1, b2})
    assert found.chosen == (Target(p1), Target(p2), Target(p3))
    assert found.spare == (b1, b2)
    # A primary down and the rest suspected: a suspected node beyond holds its hint.
    found = route(r, 0, 3, {p1}, {p2, p3, b1, b2})
    assert found.chosen == (Target(p2), Target(p3), Target(b1, p1))
    assert found.spare == (b2,)
    # Down nodes are never asked.
    assert all(t.node != p1 for t in found.chosen) and p1 not in found.spare


# Client-driven coordination: routing by the ring the ``ring`` request returns -------------
@st.composite
def rings(draw):
    """A ring of 1..8 members (some not up) whose owners come from the claim, at any Q."""
    names = draw(st.lists(st.text("abcdxyz019", min_size=1, max_size=4), min_size=1,
                          max_size=8, unique=True))
    q = draw(st.sampled_from([1, 2, 8, 64, 256]))
    statuses = draw(st.lists(st.sampled_from(["valid", "up", "down", "joining", "leaving"]),
                             min_size=len(names), max_size=len(names)))
    members = tuple(Member(x, f"127.0.0.1:{7000 + i}", f"127.0.0.1:{7100 + i}", s)
                    for i, (x, s) in enumerate(zip(names, statuses, strict=True)))
    owners = claim(None, {x: 1 for x in names}, q, 3)
    return Ring(q, 1, members, tuple(owners))


@settings(max_examples=150, deadline=None)
@given(rings(), st.integers(1, 5), st.lists(st.binary(max_size=24), min_size=1, max_size=40))
def test_routing_by_the_ring_reply_agrees_with_the_rings_preference_lists(ring, n, keys):
    """Whatever the ring, N and key, the client's helpers find in the wire form (through
    msgpack, as a client receives it) the preference list ``Ring.preference_list`` gives
    the key's partition, and route to its first member that is up."""
    described = msgpack.unpackb(msgpack.packb(ring.to_wire(n, 1, 1)), raw=False)
    addresses, table = owner_table(described, "seed:1")
    up = {m.id: m.client for m in ring.members if m.status in ("valid", "up")}
    for key in keys:
        expected = ring.preference_list(partition_of(key, ring.partitions), n)
        assert preference_list_of(key, described) == expected
        first = next((up[x] for x in expected if x in up), None)
        assert first_up(key, described) == first
        assert addresses[table[partition_of(key, len(table))]] == (first or "seed:1")


def test_a_ring_reply_that_cannot_be_routed_by_is_refused():
    described = RING.to_wire(3, 2, 2)
    for bad in ({**described, "partitions": 9}, {**described, "owners": None},
                {**described, "partitions": 0}):
        with pytest.raises(ValueError, match="malformed"):
            owner_table(bad, "seed:1")
        with pytest.raises(ValueError, match="malformed"):
            preference_list_of(b"k", bad)
