"""Membership views merged by gossip, without sockets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo import address
from seda_dynamo.membership import Entry, View

Q, N = 64, 3


def entry(i: int) -> Entry:
    return Entry(f"127.0.0.1:{7000 + i}", f"127.0.0.1:{7100 + i}")


def founder() -> View:
    return View.fresh("n0", entry(0), Q, N, founder=True)


def joiner(i: int) -> View:
    return View.fresh(f"n{i}", entry(i), Q, N, founder=False)


def test_a_founder_owns_every_partition_and_a_joiner_waits_for_a_ring():
    assert founder().ring.owners == ("n0",) * Q and founder().ring.epoch == 1
    assert joiner(1).ring is None


def hand_over_everything(views: list[View]) -> list[View]:
    """What the gossip stages do: stream each planned move, say so, gossip until still."""
    for _ in range(20):
        before = [v.to_state() for v in views]
        for i, v in enumerate(views):
            for partition, _to in v.transfers_out():
                v = v.handed_over(partition)
            views[i] = v
        for i in range(len(views)):
            for j in range(len(views)):
                if i != j:
                    views[j] = views[j].merge_state(views[i].to_state())
        if [v.to_state() for v in views] == before:
            return views
    raise AssertionError("hand-over did not settle")


def test_a_join_plans_moves_that_happen_only_once_handed_over():
    a, b = founder(), joiner(1)
    a = a.merge_state(b.to_state())
    b = b.merge_state(a.to_state())
    assert a.ring == b.ring and a.ring.epoch == 2
    assert set(a.ring.owners) == {"n0"} and set(a.ring.next_owners) == {"n0", "n1"}
    assert a.effective_ring().owners == a.ring.owners, "nothing moved yet"
    moves = a.transfers_out()
    assert moves and all(to == "n1" for _, to in moves) and not b.transfers_out()
    a = a.handed_over(moves[0][0])
    assert a.effective_ring().owners[moves[0][0]] == "n1"
    assert a.effective_ring().epoch > b.effective_ring().epoch
    a, b = hand_over_everything([a, b])
    assert a.ring == b.ring and not a.ring.pending() and not a.ring.next_owners
    assert set(a.ring.owners) == {"n0", "n1"}


def test_a_leaving_node_gives_everything_away_then_has_left():
    views = hand_over_everything([founder().merge_state(joiner(1).to_state()), joiner(1)])
    views = hand_over_everything([views[0].merge_state(views[1].to_state()), views[1]])
    views[1] = views[1].leave()
    assert views[1].members["n1"].status == "leaving"
    views = hand_over_everything(views)
    assert set(views[0].ring.owners) == {"n0"}
    # Out of the ring, it departs once its store is empty (tests/cores/test_departure.py).
    assert views[1].members["n1"].status == "leaving" and views[1].may_depart()
    views[1] = views[1].depart()
    views = hand_over_everything(views)
    assert views[1].members["n1"].status == "left"
    assert views[0].members["n1"].status == "left"
    assert [m.id for m in views[0].ring.members] == ["n0"]


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.randoms(use_true_random=False))
def test_random_gossip_converges_on_one_ring_with_every_member(size, rnd: random.Random):
    views = [founder()] + [joiner(i) for i in range(1, size)]
    # Each joiner first talks to the founder (its seed), then gossip is random.
    for i in range(1, size):
        views[0] = views[0].merge_state(views[i].to_state())
        views[i] = views[i].merge_state(views[0].to_state())
    for _ in range(size * size * 3):
        i, j = rnd.sample(range(size), 2)
        views[j] = views[j].merge_state(views[i].to_state())
        views[i] = views[i].merge_state(views[j].to_state())
    # Whatever the random rounds did, hand-overs and full sweeps of gossip settle it.
    views = hand_over_everything(views)
    rings = {v.ring for v in views}
    assert len(rings) == 1
    (ring,) = rings
    assert {m.id for m in ring.members} == {f"n{i}" for i in range(size)}
    assert set(ring.owners) == {f"n{i}" for i in range(size)}


def test_an_address_change_is_a_newer_entry_and_a_new_ring():
    a = founder()
    moved = a.with_self(Entry("127.0.0.1:9000", "127.0.0.1:9100"))
    assert moved.members["n0"].version == 2
    assert moved.reclaim().ring.member("n0").peer == "127.0.0.1:9100"
    assert a.with_self(entry(0)) is a


def test_views_round_trip_through_bytes_and_reject_junk():
    a = founder().merge_state(joiner(1).to_state())
    assert View.decode("n0", N, a.encode()) == a
    for junk in (b"", b"\x93\x01\x02\x03", b"\x81\xa1x\x01"):
        try:
            View.decode("n0", N, junk)
        except ValueError:
            continue
        raise AssertionError(f"accepted {junk!r}")


def test_status_counts_partitions_and_the_moves_still_to_do():
    a = founder().merge_state(joiner(1).to_state())
    status = a.status(frozenset({"n1"}))
    by_id = {n["id"]: n for n in status["nodes"]}
    assert by_id["n0"]["partitions"] == Q and by_id["n1"]["partitions"] == 0
    assert by_id["n1"]["planned"] > 0 and not by_id["n1"]["up"]
    assert status["pending_transfers"] == by_id["n0"]["transfers_out"] == \
        by_id["n1"]["transfers_in"] > 0
    for partition, _ in a.transfers_out():
        a = a.handed_over(partition)
    assert a.status(frozenset())["pending_transfers"] == 0


def with_address(state: dict, where: str, bad: object) -> dict:
    """A copy of a view's state with member n0's address at ``where`` replaced: its
    ``client`` or ``peer`` entry, or in the ring's member list ``ring_client`` or
    ``ring_peer``."""
    member = list(state["members"]["n0"])
    ring_members = [list(m) for m in state["ring"]["members"]]
    slot = {"client": (member, 0), "peer": (member, 1),
            "ring_client": (ring_members[0], 1), "ring_peer": (ring_members[0], 2)}[where]
    slot[0][slot[1]] = bad
    return {**state, "members": {**state["members"], "n0": member},
            "ring": {**state["ring"], "members": ring_members}}


def test_a_gossiped_view_with_a_bad_address_is_refused_whole():
    """A gossiped view is one of the places an address enters: one bad member address
    (in the members or in the ring) refuses the view, so it never spreads to members
    whose network stage would connect to it."""
    good = founder().to_state()
    for where, bad in [("client", "x:y"), ("peer", "x:y"), ("peer", "127.0.0.1:0"),
                       ("peer", "ho st:7100"), ("peer", 7100), ("ring_peer", "x:y"),
                       ("ring_client", "[::1:7100")]:
        state = with_address(good, where, bad)
        with pytest.raises(ValueError, match="address"):
            joiner(1).merge_state(state)
    merged = joiner(1).merge_state(good)  # the same view with good addresses is taken
    assert merged.ring is not None and "n0" in merged.members


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=30), st.integers(), st.none()),
       st.sampled_from(["client", "peer", "ring_client", "ring_peer"]))
def test_no_view_carrying_an_address_the_core_refuses_is_ever_merged(bad, where):
    """The class: whatever a peer puts where an address goes, merge takes the view only
    if the address core takes the address."""
    state = with_address(founder().to_state(), where, bad)
    if address.valid(bad):
        assert joiner(1).merge_state(state).members["n0"]
    else:
        with pytest.raises(ValueError):
            joiner(1).merge_state(state)
