"""Hint delivery (paper 4.6, seda_dynamo.hintedhandoff) under a fake clock: scans of the
hints of members that are up, hand-over to each owner, forgetting only what was
acknowledged."""

from __future__ import annotations

from dataclasses import replace

from duties import LOG, FakeCluster, N, Q, Sent, entry, settled_view
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.background import BackgroundShare
from seda_dynamo.claim import claim
from seda_dynamo.duty import Route, Timer
from seda_dynamo.hintedhandoff import HINT_BATCH, HINT_WAIT, HINTS_EVERY, Delivery
from seda_dynamo.membership import View
from seda_dynamo.ring import Member, Ring, partition_of

PEER2 = settled_view().members["n2"].peer


def delivery(down: frozenset[str] = frozenset()) -> tuple[Delivery, Sent, FakeCluster]:
    sent, cluster = Sent(), FakeCluster(settled_view(), down)
    return Delivery(sent, cluster, BackgroundShare(0.0), Timer(), LOG), sent, cluster


def test_a_scan_asks_for_the_hints_of_members_that_are_up_once_per_period():
    d, sent, _ = delivery(down=frozenset({"n3"}))
    d.tick(0.0)
    assert sent.take() == [("persistence", ["hints", "gossip", "scan", ["n2"], HINT_BATCH])]
    d.tick(HINTS_EVERY / 2)
    assert sent.take() == []
    d.tick(HINTS_EVERY)
    assert len(sent.take()) == 1


def test_nobody_up_means_no_scan_and_a_busy_foreground_holds_the_scan_back():
    d, sent, cluster = delivery(down=frozenset({"n2", "n3"}))
    d.tick(0.0)
    assert sent.take() == []
    cluster.down = frozenset()
    d.share.target = 0.01
    d.share.report(1.0, requests=100, p99=1.0)
    d.share.spend(10_000)  # the bucket is empty: background work waits
    d.tick(1.0)
    assert sent.take() == []


def test_each_hint_goes_to_its_owner_and_is_forgotten_once_acknowledged():
    d, sent, _ = delivery()
    malformed = d.found(0.0, [["n2", b"k", b"t", b"v"], ["n2", b"gone", b"t2", None],
                              ["n9", b"k", b"t3", b"v"], "junk", ["n2", 5, b"t", b"v"]])
    assert malformed == 2
    (call,) = sent.calls()
    assert call == ["call", PEER2, "gossip", ["hint", "n2", b"k", b"t"],
                    ["rput", b"k", b"v", None], "n2", None]
    # Nothing to hand over (no versions left; the owner left the cluster): forgotten now.
    assert sent.take() == [("persistence", ["hint_done", [["n2", b"gone", b"t2"],
                                                          ["n9", b"k", b"t3"]]])]
    assert d.in_flight == 1 and d.timer.at == HINT_WAIT
    d.answer(0.5, "n2", Route.parse(call[3]), ["updated", None])
    assert sent.take() == [("persistence", ["hint_done", [["n2", b"k", b"t"]]])]
    assert (d.delivered, d.in_flight, d.timer.at) == (1, 0, 0.5), "the batch is done: scan"


def test_a_failed_or_unsent_delivery_keeps_the_hint_for_the_next_scan():
    d, sent, _ = delivery()
    d.found(0.0, [["n2", b"a", b"t", b"v"], ["n2", b"b", b"t", b"v"]])
    first, second = sent.calls()
    d.answer(0.1, "n2", Route.parse(first[3]), ["updated", "conflict"])
    d.unreachable(0.1, PEER2, Route.parse(second[3]))
    assert sent.take() == [] and d.delivered == 0 and d.in_flight == 0


OUTCOMES = st.sampled_from(["ok", "error", "unreachable", "lost"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["n2", "n3", "n9"]), st.integers(0, 3),
                          st.booleans(), OUTCOMES), max_size=20),
       st.randoms(use_true_random=False))
def test_a_hint_is_forgotten_only_after_its_owner_acknowledged_it(hints, rnd):
    """Whatever the owners answer and in whatever order: a hint with versions to hand
    over is forgotten only after its owner's ``updated`` without error."""
    d, sent, cluster = delivery()
    found = [[owner, b"k%d" % k, b"t%d" % i, b"v" if has else None]
             for i, (owner, k, has, _) in enumerate(hints)]
    outcome = {(h[0], h[1], h[2]): o for h, (*_, o) in zip(found, hints, strict=True)}
    members = cluster.peers()
    free = {(o, k, t) for o, k, t, v in found if v is None or o not in members}
    d.found(0.0, found)
    calls = sent.calls()
    rnd.shuffle(calls)
    acked: set[tuple] = set()
    forgotten = [tuple(x) for e in sent.to("persistence") for x in e[1]]
    for call in calls:
        route = Route.parse(call[3])
        assert route is not None and call[5] == route.ident[0]
        result = outcome[route.ident]
        if result == "unreachable":
            d.unreachable(1.0, call[1], route)
        elif result != "lost":
            d.answer(1.0, call[5], route, ["updated", None if result == "ok" else "err"])
            if result == "ok":
                acked.add(route.ident)
        forgotten += [tuple(x) for e in sent.to("persistence") for x in e[1]]
        assert set(forgotten) - free <= acked  # never before the acknowledgement
    for owner, key, token, versions in found:
        if versions is not None and owner in members:
            assert ((owner, key, token) in forgotten) == ((owner, key, token) in acked)
        else:
            assert (owner, key, token) in forgotten  # nothing to hand over
    assert d.in_flight >= 0


def view_with_a_member_that_left() -> View:
    """n1..n4 on a settled ring; n5 was a member and has left (owns nothing)."""
    members = {f"n{i}": entry(i) for i in (1, 2, 3, 4)}
    owners = claim(None, {node: 1 for node in members}, Q, N)
    ring = Ring(Q, 1, tuple(Member(node, e.client, e.peer, "valid")
                            for node, e in sorted(members.items())), owners)
    members["n5"] = replace(entry(5), status="left", version=3)
    return View("n1", Q, N, members, ring)


def test_a_scan_also_asks_for_the_hints_of_members_that_left():
    """Found by the simulator (tests/sim/test_nemesis.py, seed 27): a hint naming a
    member that has since left was never scanned, so it stayed for ever (and its key
    could never be reaped)."""
    sent, cluster = Sent(), FakeCluster(view_with_a_member_that_left())
    Delivery(sent, cluster, BackgroundShare(0.0), Timer(), LOG).tick(0.0)
    assert sent.take() == [("persistence", ["hints", "gossip", "scan",
                                            ["n2", "n3", "n4", "n5"], HINT_BATCH])]


def test_a_hint_for_an_owner_that_left_goes_to_a_replica_its_key_has_now():
    view = view_with_a_member_that_left()
    assert view.ring is not None
    key = next(k for k in (b"k%d" % i for i in range(100)) if "n1" not in
               view.ring.preference_list(partition_of(k, Q), N))
    replica = view.ring.preference_list(partition_of(key, Q), N)[0]
    sent, cluster = Sent(), FakeCluster(view)
    d = Delivery(sent, cluster, BackgroundShare(0.0), Timer(), LOG)
    d.found(0.0, [["n5", key, b"t", b"v"]])
    (call,) = sent.calls()
    assert call == ["call", view.members[replica].peer, "gossip", ["hint", "n5", key, b"t"],
                    ["rput", key, b"v", None], replica, None]
    d.answer(0.5, replica, Route.parse(call[3]), ["updated", None])
    assert sent.take() == [("persistence", ["hint_done", [["n5", key, b"t"]]])]


def test_a_hint_for_an_owner_that_left_is_kept_while_no_replica_of_its_key_is_up():
    view = view_with_a_member_that_left()
    assert view.ring is not None
    key = next(k for k in (b"k%d" % i for i in range(100)) if "n1" not in
               view.ring.preference_list(partition_of(k, Q), N))
    sent = Sent()
    cluster = FakeCluster(view, frozenset({"n2", "n3", "n4"}))
    Delivery(sent, cluster, BackgroundShare(0.0), Timer(), LOG).found(
        0.0, [["n5", key, b"t", b"v"]])
    assert sent.take() == []
