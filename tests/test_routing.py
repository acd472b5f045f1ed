"""Sloppy-quorum routing: healthy primaries, then fallbacks carrying hints."""

from __future__ import annotations

from seda_dynamo.ring import Member, Ring
from seda_dynamo.routing import Target, coordinator, targets

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
