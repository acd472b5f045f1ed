"""The network stage between nodes (docs/peer-protocol.md; Dynamo paper sections 4.5 to
4.8): a peer's request is answered once, with its call id; an answer is taken only for a
call this node made; calls have deadlines, after which nothing of them is left, and a
peer's read holds nothing here (its answer comes back in the respond envelope).
Handler-level, with a real persistence handler behind the network stage.
"""

from __future__ import annotations

from frames import build, live, tomb
from hypothesis import given, settings
from hypothesis import strategies as st
from test_peer_trust import CONFIG, PEERS, peer_frame, store

from seda_dynamo import peerprotocol
from seda_dynamo.messages import Got, Updated
from seda_dynamo.messagetable import answer_to
from seda_dynamo.outstanding import CALL_TTL, GRACE
from seda_dynamo.ring import partition_of
from stages import network

B = "peer:" + PEERS["b"]
ROOT = {"kind": "hashes", "level": 0, "indices": [0]}


def settle(net: network.Handler, store_h, others) -> list[tuple[str, list]]:
    """Move events between the network stage and a persistence stage until both are
    quiet; ``others(dest, event)`` gives what the other stages send back to network.
    Returns what the network stage sent to peers."""
    sent: list[tuple[str, list]] = []
    moved = True
    while moved:
        moved = False
        for dest, event in net.take_outbox():
            moved = True
            if dest.startswith("peer:"):
                sent.append((dest, event))
            elif dest == "persistence":
                store_h.handle_events([event], 0.0)
            else:
                net.handle_events(others(dest, event), 0.0)
        for dest, event in store_h.take_outbox():
            moved = True
            assert dest == "network", dest
            net.handle_events([event], 0.0)
    return sent


def other_stages(dest: str, event: list) -> list[list]:
    """Versioning, gossip and coordination answering at once, as they would."""
    if (dest, event[0]) == ("versioning", "sync"):  # answered in the respond envelope
        return [answer_to(event[1], Updated.wire(event[2], b"ctx", b"clock", None))[1]]
    if (dest, event[0]) == ("gossip", "gossip_in"):
        return [["respond", event[1], ["view", {"members": {}}]]]
    if (dest, event[0]) == ("coordination", "req"):
        return [["reply", event[1], {"ok": True, "context": b"c"}]]
    raise AssertionError(f"unexpected {dest}: {event}")


def test_each_peer_request_is_answered_once_with_its_call_id():
    net, (h, engine) = network.Handler(CONFIG), store()
    engine.write_batch([(b"k", live(b"v")), (b"gone", tomb())])
    build(h)
    p = partition_of(b"k", CONFIG.partitions)
    requests = {
        11: ["ping"], 12: ["rget", b"k"], 13: ["rget", b"absent"],
        14: ["rcheck", b"k", ["b", "c"]], 15: ["tree", p, ROOT],
        16: ["rput", b"k", live(b"w"), None],
        17: ["gossip", {"partitions": 8, "members": {}, "ring": None}],
        18: ["fwd", "put", b"k", b"v", None, None, None, 500], 2**64 - 1: ["ping"],
    }
    events = [["req", PEERS["b"], cid, request] for cid, request in requests.items()]
    # Call id 0: the caller expects no answer (rreap always; any request may).
    events += [["req", PEERS["b"], 0, ["ping"]], ["req", PEERS["b"], 0, ["rreap", b"gone",
                                                                        tomb()]]]
    net.handle_frames("peer", [peer_frame(events)], 0.0)
    sent = settle(net, h, other_stages)
    answers: dict[int, list] = {}
    for dest, event in sent:
        assert dest == B and event[:2] == ["resp", "a"], (dest, event)
        assert event[2] not in answers, f"call {event[2]} answered twice"
        answers[event[2]] = event[3]
    assert answers == {
        11: ["pong"], 12: ["got", live(b"v"), None], 13: ["got", None, None],
        14: ["checked", live(b"v"), False], 15: ["tree", h.trees[p].hashes(0, [0])],
        16: ["updated", None], 17: ["view", {"members": {}}],
        18: ["reply", {"ok": True, "context": b"c"}], 2**64 - 1: ["pong"]}
    assert engine.get(b"gone") is None, "the unanswered rreap ran"
    assert not net.waiting and not net.calls
    assert net.bad_peer_events == 0 and not net.errors


def test_a_forwarded_write_past_its_deadline_is_answered_timeout_and_forgotten():
    net = network.Handler(CONFIG)
    net.handle_frames("peer", [peer_frame([["req", PEERS["b"], 77, [
        "fwd", "delete", b"k", None, None, None, 2, 400]]])], 5.0)
    (dest, req), = net.take_outbox()
    assert (dest, req[0], req[-1]) == ("coordination", "req", True), "marked forwarded"
    net.tick(5.0 + 0.4 + GRACE - 0.01)
    assert net.take_outbox() == [] and net.waiting
    net.tick(5.0 + 0.4 + GRACE)
    (dest, resp), = net.take_outbox()
    assert dest == B and resp[:3] == ["resp", "a", 77]
    assert resp[3][0] == "reply" and resp[3][1]["error"] == "timeout"
    assert not net.waiting and not net.waiting.deadlines
    net.handle_events([["reply", req[1], {"ok": True}]], 9.0)
    assert net.take_outbox() == [], "coordination's late answer goes nowhere"


def test_a_forwarded_write_that_arrives_twice_is_coordinated_once():
    """A network may deliver a frame twice (the simulator's does). Every other peer
    request is idempotent (a merge, a read, a compare-and-delete); a ``fwd`` is stamped
    by the coordination it reaches, so its copy would be a second dot of one client
    write. A repeat of a call id already taken from that peer is dropped, in the same
    batch, after the reply, and while its deadline lasts; another call is a new one."""
    net = network.Handler(CONFIG)
    fwd = ["fwd", "put", b"k", b"v", None, None, None, 400]
    twice = ["req", PEERS["b"], 77, fwd]
    net.handle_frames("peer", [peer_frame([twice, twice])], 1.0)
    [(dest, req)] = net.take_outbox()
    assert dest == "coordination" and req[0] == "req"
    net.handle_events([["reply", req[1], {"ok": True, "context": b"c"}]], 1.1)
    [(dest, resp)] = net.take_outbox()
    assert dest == B and resp[2] == 77
    net.handle_frames("peer", [peer_frame([twice])], 1.2)  # the late copy
    assert net.take_outbox() == [] and not net.waiting
    net.handle_frames("peer", [peer_frame([["req", PEERS["b"], 78, fwd],
                                           ["req", PEERS["c"], 77, fwd]])], 1.3)
    assert [e[0] for d, e in net.take_outbox() if d == "coordination"] == ["req", "req"]
    assert net.bad_peer_events == 0 and not net.errors


# Answers: only for a call this node made ----------------------------------------------
def call(net: network.Handler, request: list, tag, node: str | None = "b", ttl=5.0,
         now: float = 0.0, stage: str = "coordination") -> int:
    """A stage's call to peer b through the network stage: the call id it was sent with."""
    net.handle_events([["call", PEERS["b"], stage, tag, request, node, ttl]], now)
    (dest, event), = net.take_outbox()
    assert dest == B and event[:2] == ["req", CONFIG.peer] and event[3] == request
    return event[2]


def answer(net: network.Handler, events: list, now: float = 1.0) -> list:
    net.handle_frames("peer", [peer_frame(events)], now)
    return net.take_outbox()


def test_an_answer_is_taken_once_only_for_a_call_made_and_of_its_kind():
    net = network.Handler(CONFIG)
    cid = call(net, ["ping"], ["tag", 1])
    anonymous = call(net, ["rget", b"k"], ["tag", 2], node=None)
    assert call(net, ["rreap", b"k", tomb()], ["tag", 3]) == 0, "rreap expects nothing"
    assert set(net.calls) == {cid, anonymous}
    assert answer(net, [["resp", "b", cid ^ 1, ["pong"]],  # no call of ours
                        ["resp", "b", cid, ["got", None, None]],  # not what ping expects
                        ["resp", "b", 0, ["pong"]]]) == []
    assert net.bad_peer_events == 3 and set(net.calls) == {cid, anonymous}
    # Delivered with the node and tag this node recorded, whatever the answer claims.
    assert answer(net, [["resp", "zz", cid, ["pong"]], ["resp", "b", cid, ["pong"]]]) == [
        ("coordination", ["resp", "b", ["tag", 1], ["pong"]])]
    assert net.bad_peer_events == 4, "the second answer is refused"
    # A call that named no node: the answer's own claim is all there is.
    assert answer(net, [["resp", "c", anonymous, ["got", None, None]]]) == [
        ("coordination", ["resp", "c", ["tag", 2], ["got", None, None]])]
    assert not net.calls


KINDS = {"ping": (["ping"], ["pong"]), "rget": (["rget", b"k"], ["got", None, None]),
         "rput": (["rput", b"k", b"c", None], ["updated", None]),
         "tree": (["tree", 1, ROOT], ["tree", None]),
         "rcheck": (["rcheck", b"k", ["b"]], ["checked", None, False]),
         "gossip": (["gossip", {}], ["view", {}]),
         "fwd": (["fwd", "delete", b"k", None, None, None, None, None],
                 ["reply", {"ok": True}])}
OPS = list(KINDS)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6),
                          st.sampled_from(["b", "c", "zz"]), st.booleans()), max_size=24))
def test_of_any_answers_each_call_takes_the_first_genuine_one_only(answers):
    """One call of every kind outstanding; answers to them in any order: right or wrong
    kind, right or wrong call id, claimed by any node, repeated."""
    net = network.Handler(CONFIG)
    ids = [call(net, KINDS[op][0], ["tag", i]) for i, op in enumerate(OPS)]
    events, expected = [], {}
    for which, kind, node, forged in answers:
        payload = KINDS[OPS[kind]][1]
        events.append(["resp", node, ids[which] ^ 1 if forged else ids[which], payload])
        if not forged and kind == which and which not in expected:
            expected[which] = payload
    out = answer(net, events) if events else []
    assert all(dest == "coordination" and e[:2] == ["resp", "b"] for dest, e in out)
    assert [e[2][1] for _, e in out] == list(expected), "each once, in arrival order"
    assert {e[2][1]: e[3] for _, e in out} == expected
    assert net.bad_peer_events == len(events) - len(expected)
    assert set(net.calls) == {ids[i] for i in range(len(OPS)) if i not in expected}
    net.tick(5.0 + GRACE)
    assert not net.calls and not net.calls.deadlines


# Deadlines: nothing is left behind ------------------------------------------------------
def test_calls_are_forgotten_at_their_deadline_and_late_answers_refused():
    net = network.Handler(CONFIG)
    short = call(net, ["ping"], "short", ttl=1.0, now=10.0)
    default = [call(net, ["ping"], f"d{i}", ttl=ttl, now=10.0)
               for i, ttl in enumerate((None, -1, "soon", 0))]
    net.tick(10.0 + 1.0 + GRACE - 0.01)
    assert len(net.calls) == 5
    net.tick(10.0 + 1.0 + GRACE)
    assert set(net.calls) == set(default), "a call lives its ttl and a grace"
    assert answer(net, [["resp", "b", short, ["pong"]]], 20.0) == []
    assert net.bad_peer_events == 1, "an answer after the deadline is refused"
    net.tick(10.0 + CALL_TTL + GRACE - 0.01)
    assert len(net.calls) == 4, "no valid ttl: the default"
    net.tick(10.0 + CALL_TTL + GRACE)
    assert not net.calls and not net.calls.deadlines


def test_a_peer_read_holds_nothing_here_and_its_answer_is_relayed_when_it_comes():
    """The read names the peer's own call as its ref: nothing waits in this node, and
    persistence's answer, however late, goes back with that call id (the calling node's
    own call table decides whether it still counts)."""
    net = network.Handler(CONFIG)
    net.handle_frames("peer", [peer_frame([["req", PEERS["b"], 5, ["rget", b"k"]]])], 0.0)
    (dest, get), = net.take_outbox()
    assert dest == "persistence" and get[2] == [PEERS["b"], 5]
    assert not net.waiting and not net.calls
    net.tick(1e6)
    _, envelope = answer_to(get[1], Got.wire(get[2], [live(b"v")], None, "inc"))
    net.handle_events([envelope], 1e6)
    assert net.take_outbox() == [(B, ["resp", "a", 5, ["got", live(b"v"), None]])]


def test_past_max_calls_the_oldest_are_forgotten():
    net = network.Handler(CONFIG)
    net.calls.max_calls = 3
    ids = [call(net, ["ping"], i, ttl=1.0 + i) for i in range(5)]
    assert set(net.calls) == set(ids[2:])
    net.tick(1e9)
    assert not net.calls and not net.calls.deadlines


def test_a_call_to_a_node_not_connected_is_answered_unreachable_at_once():
    net = network.Handler(CONFIG)
    net.handle_events([["call", PEERS["b"], "gossip", ["t", i], ["ping"], "b"]
                       for i in range(2)] + [["call", PEERS["b"], "gossip", ["t", 2],
                                              ["rreap", b"k", tomb()], "b"]], 0.0)
    sent = [e for dest, e in net.take_outbox()]
    net.undeliverable(B, sent, 0.0)
    assert net.take_outbox() == [("gossip", ["unreachable", PEERS["b"], ["t", i]])
                                 for i in range(2)]
    assert not net.calls


def test_each_peer_request_goes_to_the_stage_the_peer_op_table_names():
    """``peerprotocol.REQUESTS`` is the one table of peer requests: every op in it is
    served (``_serve_<op>``) by handing it to the stage its row names."""
    samples = {"ping": ["ping"], "gossip": ["gossip", {"members": {}}],
               "rput": ["rput", b"k", live(b"w"), None], "rget": ["rget", b"k"],
               "tree": ["tree", 0, ROOT], "rcheck": ["rcheck", b"k", ["b"]],
               "rreap": ["rreap", b"k", tomb()],
               "fwd": ["fwd", "put", b"k", b"v", None, None, None, 500]}
    assert set(samples) == set(peerprotocol.REQUESTS)
    for op, row in peerprotocol.REQUESTS.items():
        net = network.Handler(CONFIG)
        net.handle_frames("peer", [peer_frame([["req", PEERS["b"], 7, samples[op]]])], 0.0)
        dests = {dest for dest, _ in net.take_outbox()}
        assert dests == ({B} if row.served_by == "network" else {row.served_by}), (op, dests)
        assert net.bad_peer_events == 0 and not net.errors, op
