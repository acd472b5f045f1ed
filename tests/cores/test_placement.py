"""A coordinator's view of where requests go (``seda_dynamo.placement``, paper 4.6):
routes always follow the ring, the down set and the suspects as they are now (the
cache never serves a stale route), suspicion is bounded and ends, and the ``ring``
answer shows who is down.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo.placement import MAX_SUSPECTS, SUSPECT_SECONDS, Placement
from seda_dynamo.ring import Member, Ring
from seda_dynamo.routing import route

NODES = "abcde"


def placement(me: str = "a") -> Placement:
    members = tuple(Member(x, f"c-{x}", f"p-{x}") for x in NODES)
    ring = Ring(8, 1, members, tuple("abcdeabc"))
    view = Placement(me, 3)
    view.learn_ring(ring.to_state(), [["f", "c-f", "p-f", "joining"]], 2)
    return view


OPS = st.lists(st.tuples(st.sampled_from(["suspect", "cleared", "down", "expire", "route"]),
                         st.sampled_from(NODES), st.floats(0, 3), st.integers(0, 7)),
               max_size=40)


@given(OPS)
def test_a_route_is_always_the_one_the_current_down_set_and_suspects_give(ops):
    view = placement()
    now = 0.0
    for op, node, dt, partition in ops:
        now += dt
        if op == "suspect":
            view.suspect(node, now)
        elif op == "cleared":
            view.cleared(node)
        elif op == "down":
            view.learn_down(sorted(set(view.down) ^ {node}))
        elif op == "expire":
            view.expire(now)
        assert view.avoid == frozenset(view.suspects)
        assert view.route(partition) == route(view.ring, partition, 3, view.down, view.avoid)
        assert "a" not in view.suspects, "a coordinator never suspects itself"


def test_a_suspicion_is_fresh_once_ends_in_time_and_is_cleared_by_an_answer():
    view = placement()
    assert view.suspect("b", 0.0) and not view.suspect("b", 0.1)
    assert not view.suspect("a", 0.0), "itself"
    view.expire(0.1 + SUSPECT_SECONDS - 0.01)
    assert "b" in view.suspects
    view.expire(0.1 + SUSPECT_SECONDS)
    assert not view.suspects and not view.avoid
    view.suspect("c", 5.0)
    view.cleared("c")
    assert not view.suspects


def test_gossip_seeing_a_node_come_back_ends_its_suspicion():
    view = placement()
    view.learn_down(["b"])
    view.suspect("b", 0.0)
    view.learn_down([])
    assert not view.suspects and not view.avoid


def test_suspects_are_bounded_the_oldest_going_first():
    view = placement()
    for i in range(MAX_SUSPECTS * 2):
        view.suspect(f"x{i}", float(i))
    assert len(view.suspects) == MAX_SUSPECTS
    assert f"x{MAX_SUSPECTS * 2 - 1}" in view.suspects and "x0" not in view.suspects


def test_nothing_is_suspected_before_a_ring_is_known():
    view = Placement("a", 3)
    assert view.n == 0 and not view.suspect("b", 0.0)


def test_the_ring_answer_lists_members_outside_the_ring_and_marks_the_down():
    view = placement()
    view.learn_down(["c"])
    wire = view.ring_reply(2, 2)
    status = {node["id"]: node["status"] for node in wire["nodes"]}
    assert status["c"] == "down" and status["f"] == "joining"
    assert wire["pending_transfers"] == 2
    assert view.peer("d") == "p-d" and view.nodes_by_peer["p-e"] == "e"


@given(st.sampled_from(NODES), st.integers(0, 7), st.sets(st.sampled_from(NODES)))
def test_a_write_goes_on_to_a_chosen_replica_exactly_when_this_node_is_none(me, partition,
                                                                             down):
    view = placement(me)
    view.learn_down(sorted(down - {me}))
    found = view.route(partition)
    onward = view.forwarding(found)
    if not found.chosen or any(t.node == me for t in found.chosen):
        assert onward is None
    else:
        assert onward.chosen == found.chosen[:1]
        assert list(onward.spare) == [t.node for t in found.chosen[1:]] + list(found.spare)
    # Stamped here, the write's route always has this node in it.
    assert any(t.node == me for t in view.stamping(partition).chosen)


def test_a_member_outside_the_ring_still_has_a_peer_address():
    """Found by the simulator (tests/sim/test_nemesis.py, seed 64): a read repair's
    target left the ring while the get waited for its last answer, and looking up its
    address raised, failing the event (the repair, and any repair after it)."""
    view = placement()
    assert view.peer("b") == "p-b"
    assert view.peer("f") == "p-f"  # joining, leaving or left: known, not in the ring
