"""Sloppy-quorum routing: healthy primaries, then fallbacks carrying hints."""

from __future__ import annotations

from seda_dynamo.ring import Member, Ring
from seda_dynamo.routing import Route, Target, coordinator, route, stand_in, targets, with_me

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
