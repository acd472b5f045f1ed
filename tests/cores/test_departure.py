"""A leaving node counts as left only once its store is empty (seda_dynamo/departure.py,
``membership.View.depart``): the reaper asks only the nodes that have not left, so a
node that left must hold no copy of any key, hinted or stray (paper sections 4.4, 4.9)."""

from __future__ import annotations

from dataclasses import replace

from duties import LOG, FakeCluster, N, Q, Sent, entry, settled_view
from test_membership import founder, hand_over_everything, joiner

from seda_dynamo.background import BackgroundShare
from seda_dynamo.claim import claim
from seda_dynamo.departure import CHECK_EVERY, Departure
from seda_dynamo.duty import Duty, Route, Timer
from seda_dynamo.engines import KEY_SPACE
from seda_dynamo.hintedhandoff import Delivery
from seda_dynamo.membership import View
from seda_dynamo.reaper import Reaper
from seda_dynamo.ring import Member, Ring, partition_of
from seda_dynamo.strays import RETRY_EVERY, Strays


def out_of_the_ring(me: str = "n1") -> View:
    """n1 asked to leave and has handed every partition over: it owns nothing."""
    views = hand_over_everything([founder().merge_state(joiner(1).to_state()), joiner(1)])
    views = hand_over_everything([views[0].merge_state(views[1].to_state()), views[1]])
    views[1] = views[1].leave()
    views = hand_over_everything(views)
    return views[1] if me == "n1" else views[0]


def test_a_leaving_node_that_owns_nothing_is_still_leaving_until_its_store_is_empty():
    view = out_of_the_ring()
    assert "n1" not in view.ring.owners and "n1" not in {m.id for m in view.ring.members}
    assert view.members["n1"].status == "leaving", "it may still hold hints or strays"
    assert view.may_depart()
    left = view.depart()
    assert left.members["n1"].status == "left"
    assert left.members["n1"].version == view.members["n1"].version + 1
    other = out_of_the_ring("n0").merge_state(left.to_state())
    assert other.members["n1"].status == "left"


def test_only_a_leaving_node_out_of_the_ring_may_depart():
    view = settled_view()
    assert not view.may_depart() and view.depart() == view  # a valid member
    leaving = view.leave()
    assert leaving.members["n1"].status == "leaving" and "n1" in leaving.ring.owners
    assert not leaving.may_depart() and leaving.depart() == leaving  # still owns some


def folded(pairs: list[list[bytes]]) -> list[object]:
    return ["folded", pairs, None, None]


def test_the_departure_asks_persistence_for_any_key_and_departs_only_on_none():
    cluster, sent, departed, again = FakeCluster(out_of_the_ring()), Sent(), [], []
    departure = Departure(sent, cluster, lambda: departed.append(True), first_id=7,
                          again=again.append)
    departure.tick(0.0)
    (fold,) = sent.to("persistence")
    kind, reply_to, ref, lo_hex, hi_hex, max_keys, seal = fold
    assert (kind, reply_to, int(lo_hex, 16), int(hi_hex, 16), max_keys, seal) == (
        "fold", "gossip", 0, KEY_SPACE, 1, True), "no key at all: persistence seals itself"
    route = Route.parse(ref)
    assert route is not None and route.duty is Duty.DEPART
    departure.tick(0.1)
    assert sent.take() == [], "one question at a time"
    departure.local(0.2, route, folded([[b"k", b"stray copy"]]))
    assert departed == [], "a key is still here: it is not handed home yet"
    assert again == [0.2], "the strays are swept again soon (a copy came since the sweep)"
    departure.tick(0.3)
    assert sent.take() == [], "asked again only after CHECK_EVERY"
    departure.tick(CHECK_EVERY + 0.2)
    (fold,) = sent.to("persistence")
    departure.local(CHECK_EVERY + 0.3, route, folded([]))
    assert departed == [], "an answer to an earlier question counts for nothing"
    departure.local(CHECK_EVERY + 0.3, Route.parse(fold[2]), folded([]))
    assert departed == [True]


def test_no_question_while_the_node_is_a_member_or_has_left():
    for view in (settled_view(), settled_view().leave(), out_of_the_ring().depart()):
        sent = Sent()
        Departure(sent, FakeCluster(view), lambda: None, first_id=1).tick(0.0)
        assert sent.take() == []


def test_a_late_empty_answer_after_the_node_rejoined_the_ring_departs_nothing():
    cluster, sent, departed = FakeCluster(out_of_the_ring()), Sent(), []
    departure = Departure(sent, cluster, lambda: departed.append(True), first_id=1)
    departure.tick(0.0)
    (fold,) = sent.to("persistence")
    cluster.view = settled_view()
    departure.local(0.1, Route.parse(fold[2]), folded([]))
    assert departed == []


def test_a_lost_question_is_asked_again_at_the_next_check():
    cluster, sent = FakeCluster(out_of_the_ring()), Sent()
    departure = Departure(sent, cluster, lambda: None, first_id=1)
    departure.tick(0.0)
    (fold,) = sent.to("persistence")
    departure.lost(0.1, Route.parse(fold[2]))
    departure.tick(CHECK_EVERY)
    assert len(sent.to("persistence")) == 1


def four_members_n3_leaving() -> View:
    """n1 to n4 on a settled ring; n3 has asked to leave and still owns its partitions."""
    members = {f"n{i}": entry(i) for i in (1, 2, 3, 4)}
    owners = claim(None, {node: 1 for node in members}, Q, N)
    ring = Ring(Q, 1, tuple(Member(node, e.client, e.peer, "valid")
                            for node, e in sorted(members.items())), owners)
    members["n3"] = replace(members["n3"], status="leaving", version=2)
    return View("n1", Q, N, members, ring)


def test_a_hint_for_a_leaving_owner_goes_to_a_valid_replica_of_its_key_instead():
    """A leaving node about to depart takes no more copies from hinted handoff: it could
    depart between its store's last check and the copy's arrival, holding the copy."""
    view = four_members_n3_leaving()
    sent = Sent()
    delivery = Delivery(sent, FakeCluster(view), BackgroundShare(0.5), Timer(), LOG)
    key = next(k for k in (b"k%d" % i for i in range(1000))
               if "n1" not in view.ring.preference_list(partition_of(k, Q), N)
               and "n3" in view.ring.preference_list(partition_of(k, Q), N))
    delivery.found(0.0, [["n3", key, b"t", b"versions"]])
    (call,) = sent.calls()
    assert call[5] in ("n2", "n4") and call[4][:2] == ["rput", key]


def test_strays_again_makes_a_swept_ring_due_for_a_sweep_within_the_retry_delay():
    strays = Strays(Sent(), FakeCluster(out_of_the_ring()), BackgroundShare(0.5), n=N,
                    keys_per_sec=0, busy=lambda: False, entropy=lambda bits: 1)
    strays.tick(0.0)
    while strays.epoch is not None:
        strays.local(0.0, strays_route(strays), ["folded", [], None, None])
    assert strays.swept
    strays.again(1.0)
    assert not strays.swept and strays.sweep_at <= 1.0 + RETRY_EVERY


def strays_route(strays) -> Route:
    return Route(Duty.STRAY, (strays.seq, b""))


def test_the_reaper_asks_a_leaving_node_whose_hint_then_keeps_the_key_but_never_one_that_left():
    """The invariant from the reaper's side: every node that has not left is asked (a
    leaving one's hint keeps the tombstone), and a node that left, asked nothing, holds
    nothing: it departed only on an empty store."""
    tomb = b"tombstone"
    view = four_members_n3_leaving()
    sent, cluster = Sent(), FakeCluster(view)
    reaper = Reaper(sent, cluster, 1.0, first_id=10)
    reaper.deleted(0.0, b"k")
    reaper.tick(1.0)
    (local,) = sent.to("persistence")
    assert local[4] == ["n1", "n2", "n3", "n4"]
    assert {c[5] for c in sent.calls()} == {"n2", "n3", "n4"}
    route = Route.parse(local[2])
    reaper.local(1.0, route, ["checked", tomb, False])
    for node in ("n2", "n4"):
        reaper.answer(1.0, node, route, ["checked", tomb, False])
    reaper.answer(1.0, "n3", route, ["checked", None, True])  # n3 holds a hint for k
    assert reaper.reaped == 0 and sent.take() == []
    cluster.view = replace(view, members={**view.members, "n3": replace(
        view.members["n3"], status="left", version=3)})
    reaper.queue[b"k"] = (0.0, 0)
    reaper.tick(2.0)
    (local,) = sent.to("persistence")
    assert local[4] == ["n1", "n2", "n4"]
