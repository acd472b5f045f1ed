"""The coordination stage's handler alone (paper 4.5, 4.6): quorums, read repair,
forwarding, fail-over within a request, and learning the ring from gossip.

Fail-over within a request (paper 4.6), at the coordination handler: no processes.

A target the network stage cannot reach, or one that stays silent past its attempt's
share of the deadline, is replaced by the next healthy node of the extended preference
list (a write's stand-in carrying a hint for the owner it replaces); a forwarded write
goes to the next replica; the request still ends by its own deadline; a node that just
failed is routed around for a while.
"""

from __future__ import annotations

from seda_dynamo import causality, placement
from seda_dynamo.config import NodeConfig
from seda_dynamo.ring import Member, Ring, partition_of
from stages import coordination

CLOCK = causality.encode(causality.update(causality.new(b"v"), causality.EMPTY, "a#1"))


TIMEOUT_MS = 1000


ATTEMPT = coordination.ATTEMPT_SHARE * TIMEOUT_MS / 1000


def coordinator(owners=("a", "b", "c", "d", "e", "a", "b", "c")):
    config = NodeConfig(node_id="a", engine="memory", n=3, r=2, w=2, partitions=8)
    members = tuple(Member(x, f"c-{x}", f"p-{x}") for x in "abcde")
    ring = Ring(8, 1, members, tuple(owners))
    handler = coordination.Handler(config)
    handler.on_ring(0.0, ring.to_state(), [])
    return handler, ring


def keys_walking(ring: Ring, first: str, count: int = 5) -> list[tuple[bytes, list[str]]]:
    """Keys whose extended preference list starts at ``first``, with that list."""
    found = []
    for i in range(1000):
        key = b"k%d" % i
        walk = ring.preference_list(partition_of(key, 8), 8)
        if walk[0] == first:
            found.append((key, walk))
            if len(found) == count:
                return found
    raise AssertionError("no such key")


def calls(out) -> list[tuple[str, list]]:
    """(peer, request) of every peer call emitted."""
    return [(e[1], e[4]) for dest, e in out if dest == "network" and e[0] == "call"]


def replies(out) -> list[dict]:
    return [e[2] for dest, e in out if dest == "network" and e[0] == "reply"]


def put_stamped(h, key: bytes, now: float = 0.0, rid: int = 1) -> tuple[int, list]:
    """A client put at a (a replica): stamped locally; the calls it then makes."""
    h.handle_events([["req", rid, "put", key, b"v", None, None, 2, TIMEOUT_MS, False]], now)
    update = next(e for dest, e in h.take_outbox() if dest == "versioning")
    cid = update[2]
    h.handle_events([["updated", cid, b"ctx", CLOCK, None]], now)
    return cid, h.take_outbox()


def test_an_unreachable_replica_is_replaced_by_the_next_node_with_a_hint():
    _, ring = coordinator()
    for key, walk in keys_walking(ring, "a"):
        h, _ = coordinator()
        assert walk[:5] == ["a", "b", "c", "d", "e"]
        cid, out = put_stamped(h, key)
        assert sorted(p for p, _ in calls(out)) == ["p-b", "p-c"]
        h.handle_events([["unreachable", "p-b", cid]], 0.01)
        out = h.take_outbox()
        assert calls(out) == [("p-d", ["rput", key, CLOCK, "b"])], out
        assert not replies(out)
        h.handle_events([["resp", "d", cid, ["updated", None]]], 0.02)
        assert [r["ok"] for r in replies(h.take_outbox())] == [True]


def test_a_stand_in_that_fails_too_is_replaced_with_the_same_owner_in_its_hint():
    h, ring = coordinator()
    key, _ = keys_walking(ring, "a", 1)[0]
    cid, _ = put_stamped(h, key)
    h.handle_events([["unreachable", "p-b", cid], ["unreachable", "p-c", cid]], 0.01)
    assert sorted(r for _, r in calls(h.take_outbox())) == [["rput", key, CLOCK, "b"],
                                                            ["rput", key, CLOCK, "c"]]
    h.handle_events([["unreachable", "p-d", cid]], 0.02)
    out = h.take_outbox()
    assert not calls(out), "no spare left: a and e are all there is"
    h.handle_events([["resp", "e", cid, ["updated", None]]], 0.03)
    assert [r["ok"] for r in replies(h.take_outbox())] == [True]


def test_a_replica_silent_past_its_attempt_is_replaced_and_the_deadline_still_bounds_it():
    h, ring = coordinator()
    key, _ = keys_walking(ring, "a", 1)[0]
    cid, _ = put_stamped(h, key)
    h.tick(ATTEMPT * 0.9)
    assert not calls(h.take_outbox()), "not yet"
    h.tick(ATTEMPT * 1.01)  # b and c both silent (lost in a dead connection's queue)
    out = h.take_outbox()
    assert sorted(r for _, r in calls(out)) == [["rput", key, CLOCK, "b"],
                                                ["rput", key, CLOCK, "c"]]
    assert sorted(p for p, _ in calls(out)) == ["p-d", "p-e"]
    h.tick(2 * ATTEMPT * 1.01)
    assert not calls(h.take_outbox()), "no spares left"
    h.tick(TIMEOUT_MS / 1000 + 0.001)
    assert [r["error"] for r in replies(h.take_outbox())] == ["timeout"]
    assert not h.requests


def test_a_slow_replica_that_answers_after_all_still_counts():
    h, ring = coordinator()
    key, _ = keys_walking(ring, "a", 1)[0]
    cid, _ = put_stamped(h, key)
    h.tick(ATTEMPT * 1.01)
    h.take_outbox()
    h.handle_events([["resp", "b", cid, ["updated", None]]], ATTEMPT * 1.2)
    assert [r["ok"] for r in replies(h.take_outbox())] == [True]
    assert "b" not in h.placement.suspects, "an answer clears the suspicion"


def test_a_read_asks_the_next_node_when_a_replica_is_unreachable_or_slow():
    h, ring = coordinator()
    key, _ = keys_walking(ring, "a", 1)[0]
    h.handle_events([["req", 1, "get", key, None, None, 2, None, TIMEOUT_MS, False]], 0.0)
    out = h.take_outbox()
    read = next(e for dest, e in out if dest == "persistence")
    assert sorted(p for p, _ in calls(out)) == ["p-b", "p-c"]
    cid = next(e[3] for dest, e in out if dest == "network" and e[0] == "call")
    h.handle_events([["unreachable", "p-b", cid]], 0.01)
    assert calls(h.take_outbox()) == [("p-d", ["rget", key])]
    h.tick(ATTEMPT * 1.01)  # c stays silent
    assert calls(h.take_outbox()) == [("p-e", ["rget", key])]
    h.handle_events([["got", read[2], [CLOCK], None, "x"],
                     ["resp", "e", cid, ["got", CLOCK, None]]], ATTEMPT * 1.1)
    reply = replies(h.take_outbox())
    assert [r["values"] for r in reply] == [[b"v"]]


def test_a_forward_to_an_unreachable_replica_goes_to_the_next_one_then_to_us():
    """a holds no replica of these keys: it forwards; each forward target that proves
    unreachable is replaced by the next node of the list, with what is left of the
    deadline; when every node before a has failed, a stamps the write itself."""
    h, ring = coordinator(owners=("b", "c", "d", "a", "e", "b", "c", "d"))
    key, walk = keys_walking(ring, "b", 1)[0]
    assert walk == ["b", "c", "d", "a", "e"]
    h.handle_events([["req", 1, "put", key, b"v", None, None, 2, TIMEOUT_MS, False]], 0.0)
    out = h.take_outbox()
    [(peer, fwd)] = calls(out)
    assert peer == "p-b" and fwd[0] == "fwd" and fwd[-1] == TIMEOUT_MS
    cid = next(e[3] for dest, e in out if dest == "network")
    h.handle_events([["unreachable", "p-b", cid]], 0.1)
    [(peer, fwd)] = calls(h.take_outbox())
    assert peer == "p-c" and fwd[:7] == ["fwd", "put", key, b"v", None, None, 2]
    assert fwd[7] == TIMEOUT_MS - 100, "what is left of the deadline"
    h.handle_events([["unreachable", "p-c", cid]], 0.2)
    [(peer, fwd)] = calls(h.take_outbox())
    assert peer == "p-d" and fwd[0] == "fwd"
    h.handle_events([["unreachable", "p-d", cid]], 0.7)
    out = h.take_outbox()
    update = next(e for dest, e in out if dest == "versioning")
    assert update[-1] in ("b", "c", "d"), "a stands in for an owner, with a hint"
    h.handle_events([["updated", update[2], b"ctx", CLOCK, None]], 0.71)
    out = h.take_outbox()
    # e is healthy; b, c and d just failed: suspected, so asked only as a last resort,
    # and of them only d is needed to make up three replicas (it is a primary).
    assert sorted(p for p, _ in calls(out)) == ["p-d", "p-e"]
    h.handle_events([["resp", "e", update[2], ["updated", None]]], 0.72)
    assert [r["ok"] for r in replies(h.take_outbox())] == [True]


def test_a_silent_forward_target_is_not_replaced_and_the_request_ends_by_its_deadline():
    """b was sent the write and is silent past its forward share: it may have stamped
    it, so neither c nor a (after the others) stamps it a second time; b is suspected,
    its late answer is the client's answer, and without one the request ends by its
    deadline with ``timeout``."""
    h, ring = coordinator(owners=("b", "c", "d", "a", "e", "b", "c", "d"))
    key, _ = keys_walking(ring, "b", 1)[0]
    silent = 0.01 + coordination.FORWARD_SHARE * TIMEOUT_MS / 1000
    for rid, late in ((1, True), (2, False)):
        h.handle_events([["req", rid, "put", key, b"v", None, None, 2, TIMEOUT_MS, False]],
                        0.0)
        cid = next(e[3] for dest, e in h.take_outbox() if dest == "network")
        h.tick(silent)
        out = h.take_outbox()
        assert not calls(out) and not replies(out), "no second node is sent the write"
        assert not [e for dest, e in out if dest == "versioning"], "nor is it stamped here"
        assert "b" in h.placement.suspects
        if late:
            reply = {"ok": True, "context": b"c", "epoch": 1}
            h.handle_events([["resp", "b", cid, ["reply", reply]]], silent + 0.1)
            assert replies(h.take_outbox()) == [reply]
            continue
        h.tick(TIMEOUT_MS / 1000 + coordination.FORWARD_SLACK + 0.001)
        out = h.take_outbox()
        assert not calls(out) and [r["error"] for r in replies(out)] == ["timeout"]
    assert not h.requests


def test_a_forwarded_write_s_reply_is_passed_on_and_counted_in_the_metrics():
    """The replica that coordinated the forwarded write answers with the client reply:
    it goes to the client as it is, and this node's metrics count it with its error."""
    h, ring = coordinator(owners=("b", "c", "d", "a", "e", "b", "c", "d"))
    key, _ = keys_walking(ring, "b", 1)[0]
    for rid, reply in ((1, {"ok": True, "context": b"c", "epoch": 1}),
                       (2, {"ok": False, "error": "timeout", "message": "slow"})):
        h.handle_events([["req", rid, "put", key, b"v", None, None, 2, TIMEOUT_MS, False]],
                        0.0)
        cid = next(e[3] for dest, e in h.take_outbox() if dest == "network")
        h.handle_events([["resp", "b", cid, ["reply", reply]]], 0.1)
        assert replies(h.take_outbox()) == [reply]
    assert not h.errors and not h.requests
    ops = h.gauges()["ops"]
    assert ops["requests"]["put"] == 2 and ops["errors"]["put"] == {"timeout": 1}


def test_a_node_that_just_failed_is_routed_around_for_a_while_then_tried_again():
    h, ring = coordinator()
    (key, _), (other, _) = keys_walking(ring, "a", 2)
    cid, _ = put_stamped(h, key)
    h.handle_events([["unreachable", "p-b", cid], ["resp", "c", cid, ["updated", None]]], 0.01)
    h.take_outbox()
    second, out = put_stamped(h, other, now=0.02, rid=2)
    h.handle_events([["resp", node, second, ["updated", None]] for node in "cd"], 0.03)
    assert dict(calls(out)) == {"p-c": ["rput", other, CLOCK, None],
                                "p-d": ["rput", other, CLOCK, "b"]}, \
        "the next request skips b: c as itself, d for b"
    later = 0.01 + placement.SUSPECT_SECONDS + 0.01
    h.tick(later)
    h.take_outbox()
    _, out = put_stamped(h, other, now=later, rid=3)
    assert sorted(p for p, _ in calls(out)) == ["p-b", "p-c"], "the suspicion has expired"


def test_gossip_seeing_a_node_come_back_ends_its_suspicion():
    h, ring = coordinator()
    key, _ = keys_walking(ring, "a", 1)[0]
    cid, _ = put_stamped(h, key)
    h.handle_events([["unreachable", "p-b", cid]], 0.01)
    h.on_health(0.5, ["b"])
    h.on_health(0.6, [])
    assert not h.placement.suspects and not h.placement.avoid


def test_suspicions_are_bounded():
    h, _ = coordinator()
    for i in range(placement.MAX_SUSPECTS * 2):
        h.placement.nodes_by_peer[f"p-x{i}"] = f"x{i}"
        h.handle_events([["unreachable", f"p-x{i}", 0]], i * 0.001)
    assert len(h.placement.suspects) == placement.MAX_SUSPECTS


def test_a_failed_local_stamp_answers_at_once_instead_of_waiting_for_the_deadline():
    h, ring = coordinator()
    key, _ = keys_walking(ring, "a", 1)[0]
    h.handle_events([["req", 1, "put", key, b"v", None, None, 2, TIMEOUT_MS, False]], 0.0)
    update = next(e for dest, e in h.take_outbox() if dest == "versioning")
    h.handle_events([["updated", update[2], None, None, "disk full"]], 0.01)
    [reply] = replies(h.take_outbox())
    assert reply["error"] == "unavailable" and "disk full" in reply["message"]


def test_a_loaded_cluster_whose_every_peer_was_late_once_stays_writable():
    """Suspicion routes around a node only while others can serve: with every other
    node suspected (each answered one request late), a write still goes to them and
    succeeds, instead of failing at once with too few replicas."""
    h, ring = coordinator()
    for i, node in enumerate("bcde"):  # each one late once: all suspected
        h.placement.nodes_by_peer[f"p-{node}"] = node
        h.handle_events([["unreachable", f"p-{node}", 0]], 0.001 * i)
    assert set(h.placement.suspects) == set("bcde")
    key, _ = keys_walking(ring, "a", 1)[0]
    cid, out = put_stamped(h, key, now=0.01)
    asked = sorted(p for p, _ in calls(out))
    assert asked == ["p-b", "p-c"], "the primaries, suspected, as a last resort"
    h.handle_events([["resp", "b", cid, ["updated", None]]], 0.02)
    assert [r["ok"] for r in replies(h.take_outbox())] == [True]


def three_node_coordinator():
    config = NodeConfig(node_id="a", engine="memory", n=3, r=2, w=2, partitions=8)
    members = tuple(Member(x, f"c-{x}", f"p-{x}") for x in "abc")
    handler = coordination.Handler(config)
    handler.on_ring(0.0, Ring(8, 1, members, ("a", "b", "c") * 2 + ("a", "b")).to_state(), [])
    return handler


def get_with_replies(replies: dict[str, bytes | None]):
    """A get at node a, answered by a (locally) and b, c (as peers); what it emits."""
    h = three_node_coordinator()
    h.handle_events([["req", 1, "get", b"k", None, None, 3, None, 1000, False]], 0.0)
    out = h.take_outbox()
    read = next(e for dest, e in out if dest == "persistence")
    cid = next(e for dest, e in out if dest == "network" and e[0] == "call")[3]
    h.handle_events([["got", read[2], [replies["a"]], None, "x"]], 0.0)
    h.handle_events([["resp", node, cid, ["got", replies[node], None]] for node in "bc"], 0.0)
    return h.take_outbox()


def test_read_repair_sends_the_merged_version_only_to_stale_replicas():
    from seda_dynamo import causality

    one = causality.update(causality.new(b"v1"), causality.EMPTY, "a#1")
    two = causality.update(causality.new(b"v2", causality.join(one)), one, "a#1")
    out = get_with_replies({"a": causality.encode(two), "b": causality.encode(one), "c": None})
    reply = next(e for dest, e in out if dest == "network" and e[0] == "reply")
    assert reply[2]["values"] == [b"v2"]
    repairs = [(e[1], e[4]) for dest, e in out if dest == "network" and e[0] == "call"]
    assert sorted(peer for peer, _ in repairs) == ["p-b", "p-c"]
    assert all(req[0] == "rput" and causality.decode(req[2]) == two for _, req in repairs)


def test_replicas_holding_the_same_siblings_get_no_repair():
    from seda_dynamo import causality

    base = causality.update(causality.new(b"x"), causality.EMPTY, "a#1")
    sibs = causality.update(causality.new(b"y"), base, "b#1")  # two concurrent siblings
    raw = causality.encode(sibs)
    out = get_with_replies({"a": raw, "b": raw, "c": raw})
    assert sorted(next(e for d, e in out if e[0] == "reply")[2]["values"]) == [b"x", b"y"]
    assert not [e for dest, e in out if e[0] in ("call", "sync")]


def test_a_write_forwarded_to_this_coordinator_is_counted_by_the_one_that_forwarded_it():
    h = three_node_coordinator()
    clock = causality.encode(causality.update(causality.new(b"v"), causality.EMPTY, "a#1"))
    for rid, forwarded in ((1, True), (2, False)):
        h.handle_events([["req", rid, "put", b"k", b"v", None, None, 2, 1000, forwarded]], 0.0)
        update = next(e for dest, e in h.take_outbox() if dest == "versioning")
        cid = update[2]
        h.handle_events([["updated", cid, b"ctx", clock, None],
                         ["resp", "b", cid, ["updated", None]]], 0.01)
        assert any(e[0] == "reply" and e[2]["ok"] for dest, e in h.take_outbox()
                   if dest == "network")
    ops = h.gauges()["ops"]
    assert ops["requests"]["put"] == 1, "the forwarded one is the forwarding node's"
    assert ops["latency_ms"]["put"]["count"] == 1


def coordinator_outside_the_preference_list(down: frozenset[str] = frozenset()):
    """Node a is a member of a five-node ring that gives it no partition: a view in which
    a write forwarded to it (by a node whose view still has a as a replica) is not a's."""
    config = NodeConfig(node_id="a", engine="memory", n=3, r=2, w=2, partitions=8)
    members = tuple(Member(x, f"c-{x}", f"p-{x}") for x in "abcde")
    ring = Ring(8, 1, members, ("b", "c", "d", "e") * 2)
    handler = coordination.Handler(config)
    handler.on_ring(0.0, ring.to_state(), [])
    if down:
        handler.on_health(0.0, sorted(down))
    return handler, ring


def test_a_forwarded_write_stamped_by_a_non_replica_carries_a_hint_for_the_displaced_owner():
    """Item 10: views of the ring differ; the node a write was forwarded to stamps it, and
    must do so as a fallback for the owner whose place it takes (the last of the N it
    would have chosen), so the owner gets the version by hinted handoff; the rest are
    sent ``rput`` as usual. For every partition, and with a primary down as well."""
    from seda_dynamo.ring import partition_of

    clock = causality.encode(causality.update(causality.new(b"v"), causality.EMPTY, "a#1"))
    for down in (frozenset(), frozenset({"c"})):
        for i in range(16):
            key = b"k%d" % i
            h, ring = coordinator_outside_the_preference_list(down)
            walk = [x for x in ring.preference_list(partition_of(key, 8), 8) if x not in down]
            h.handle_events([["req", 1, "put", key, b"v", None, None, 2, 1000, True]], 0.0)
            primaries = ring.preference_list(partition_of(key, 8), 3)
            displaced = "c" if "c" in down and "c" in primaries else walk[2]
            update = next(e for dest, e in h.take_outbox() if dest == "versioning")
            assert update[-1] == displaced, (down, key, update)
            h.handle_events([["updated", update[2], b"ctx", clock, None]], 0.01)
            rputs = {e[1]: e[4] for dest, e in h.take_outbox()
                     if dest == "network" and e[0] == "call"}
            assert set(rputs) == {f"p-{walk[0]}", f"p-{walk[1]}"}
            assert all(req[0] == "rput" and req[2] == clock for req in rputs.values())
            for node in walk[:2]:  # a fallback among them keeps its own hint
                hint = rputs[f"p-{node}"][3]
                assert hint == (None if node in primaries else "c"), (node, hint)


def test_coordination_learns_the_ring_from_gossip_by_message_not_from_its_file(tmp_path):
    """Membership is gossip's: a (re)started coordination stage asks gossip for the ring
    and reads no file of gossip's; gossip's answer gives it the ring."""
    from stages import gossip

    config = NodeConfig(node_id="t", engine="memory", n=1, r=1, w=1,
                        data_dir=str(tmp_path))
    keeper = gossip.Handler(config)
    keeper.start(0.0)  # saves its view in the data directory, as it does on a real node
    keeper.take_outbox()
    coord = coordination.Handler(config)
    coord.start(0.0)
    assert coord.ring is None, "coordination read gossip's file"
    asked = coord.take_outbox()
    assert asked == [("gossip", ["ring_please"])]
    keeper.handle_events([asked[0][1]], 0.0)
    coord.handle_events([e for dest, e in keeper.take_outbox() if dest == "coordination"],
                        0.0)
    assert coord.ring is not None and [m.id for m in coord.ring.members] == ["t"]


def test_a_step_a_local_stage_cannot_take_answers_the_request_overloaded():
    """The runtime hands back what it could not queue (a full queue, SEDA's explicit
    event): the request is answered ``overloaded`` at once and forgotten; a read
    repair's step, whose request was answered already, is only dropped."""
    h, ring = coordinator()
    key, _ = keys_walking(ring, "a")[0]
    h.handle_events([["req", 1, "put", key, b"v", None, None, 2, TIMEOUT_MS, False]], 0.0)
    (dest, update), = h.take_outbox()
    h.undeliverable(dest, [update], 0.0)
    assert [(r["ok"], r["error"]) for r in replies(h.take_outbox())] == [(False, "overloaded")]
    h.handle_events([["req", 2, "get", key, None, None, None, 2, TIMEOUT_MS, False]], 0.0)
    out = h.take_outbox()
    read = next((d, e) for d, e in out if d == "persistence")
    h.undeliverable(read[0], [read[1]], 0.0)
    assert [(r["ok"], r["error"]) for r in replies(h.take_outbox())] == [(False, "overloaded")]
    h.handle_events([["req", 3, "get", key, None, None, None, 2, TIMEOUT_MS, False]], 0.0)
    call = next(e for d, e in h.take_outbox() if d == "network" and e[0] == "call")
    h.undeliverable("network", [call], 0.0)
    assert [(r["ok"], r["error"]) for r in replies(h.take_outbox())] == [(False, "overloaded")]
    assert h.requests == {} and h.counts["overloaded"] == 3
    h.undeliverable("versioning", [["sync", "coordination", None, key, CLOCK, None]], 0.0)
    h.undeliverable("network", [["reply", 9, {"ok": True}]], 0.0)
    assert h.take_outbox() == []
