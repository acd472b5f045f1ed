"""What the gossip stage asks of its view (``membership.View``), without the stage: whom
a gossip round picks from (paper 4.8), what coordination is told of the ring, and an
operator's explicit join (paper 4.8.1)."""

from __future__ import annotations

from dataclasses import replace

from duties import N, Q, entry, planned_view, settled_view
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.membership import Entry, View
from seda_dynamo.messages import RingState
from seda_dynamo.ring import Ring


# Gossip partners -------------------------------------------------------------------------
def test_a_round_picks_members_that_are_up_never_itself_nor_one_that_left():
    view = settled_view()
    assert view.peers() == {"n2": entry(2).peer, "n3": entry(3).peer}
    assert view.gossip_partners(["seed:1"], frozenset()) == [entry(2).peer, entry(3).peer]
    assert view.gossip_partners([], frozenset({"n2"})) == [entry(3).peer]
    left = replace(view, members={**view.members, "n3": replace(entry(3), status="left")})
    assert left.peers() == {"n2": entry(2).peer}
    assert left.gossip_partners([], frozenset()) == [entry(2).peer]


def test_when_every_member_is_down_a_round_still_picks_one_of_them():
    view = settled_view()
    assert view.gossip_partners(["seed:1"], frozenset({"n2", "n3"})) == [
        entry(2).peer, entry(3).peer]


def test_without_a_ring_or_anyone_known_a_round_picks_a_seed():
    joiner = View.fresh("n5", entry(5), Q, N, founder=False)
    assert joiner.gossip_partners(["127.0.0.1:7101"], frozenset()) == ["127.0.0.1:7101"]
    assert joiner.gossip_partners([], frozenset()) == []
    # Knowing members but no ring yet: the seeds still come first, else the members up.
    knows = replace(joiner, members={**joiner.members, "n2": entry(2)})
    assert knows.gossip_partners(["s:1"], frozenset()) == ["s:1"]
    assert knows.gossip_partners([], frozenset()) == [entry(2).peer]
    assert knows.gossip_partners([], frozenset({"n2"})) == []


# What coordination is told ---------------------------------------------------------------
def test_no_ring_is_announced_before_there_is_one():
    assert View.fresh("n5", entry(5), Q, N, founder=False).announcement() is None


def test_the_announcement_is_the_effective_ring_and_fits_its_event():
    view = settled_view()
    state, others, moves_left = view.announcement()
    assert Ring.from_state(state) == view.effective_ring()
    assert others == [] and moves_left == 0
    event = RingState.wire(*view.announcement())
    assert RingState.from_wire(event) == RingState(state, others, 0)


def test_members_outside_the_ring_are_told_with_their_status():
    view = settled_view()
    members = {**view.members, "n8": entry(8), "n9": replace(entry(9), status="left")}
    _, others, _ = replace(view, members=members).announcement()
    assert others == [["n8", entry(8).client, entry(8).peer, "joining"],
                      ["n9", entry(9).client, entry(9).peer, "left"]]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_moves_left_are_the_planned_moves_not_yet_handed_over(data):
    view = planned_view()
    moves = [p for p, _ in view.transfers_out()]
    assert moves, "n1 plans to hand partitions over"
    assert view.announcement()[2] == len(view.ring.pending())
    for partition in data.draw(st.lists(st.sampled_from(moves), unique=True)):
        view = view.handed_over(partition)
    _, _, moves_left = view.announcement()
    effective = view.effective_ring().owners
    assert moves_left == sum(effective[p] != b for p, _, b in view.ring.pending())
    assert 0 <= moves_left <= len(view.ring.pending())


# An operator's join ----------------------------------------------------------------------
def test_a_join_is_refused_a_bad_seed_its_own_address_and_a_second_cluster():
    alone = View.fresh("n5", entry(5), Q, N, founder=True)
    assert "admin join" in alone.join_refusal("not an address", entry(5).peer)
    assert "own peer address" in alone.join_refusal(entry(5).peer, entry(5).peer)
    assert alone.join_refusal(entry(1).peer, entry(5).peer) is None
    assert "already in a cluster of 3" in settled_view().join_refusal(entry(7).peer,
                                                                      entry(1).peer)


@given(st.integers(1, 50))
def test_a_node_rejoins_alone_without_a_ring_in_a_newer_entry(version):
    me = Entry(entry(5).client, entry(5).peer, version=version)
    view = View("n5", Q, N, {"n5": me}, View.fresh("n5", me, Q, N, founder=True).ring)
    fresh = view.rejoined()
    assert fresh.ring is None and list(fresh.members) == ["n5"]
    assert fresh.members["n5"] == replace(me, version=version + 1)
    # Its entry wins every merge with the one it had: the cluster hears of the change.
    merged = View.fresh("n1", entry(1), Q, N, founder=True).merge_state(view.to_state())
    assert merged.merge_state(fresh.to_state()).members["n5"].version == version + 1
