"""The peer port trusts nothing a frame says (issue 11, items 5, 6 and 8).

Handler-level: stage handlers fed events in memory, no processes. A peer event is
validated whole before anything is stored or emitted; an answer is taken only for a call
this node made to that peer, with an id the sender could not guess; ids never repeat
across a stage's restarts.
"""

from __future__ import annotations

import itertools
import random

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from seda_dynamo import causality, contexts, ids
from seda_dynamo.config import NodeConfig
from seda_dynamo.engines import open_engine
from seda_dynamo.ring import Member, Ring
from stages import coordination, gossip, network, persistence, versioning

CONFIG = NodeConfig(node_id="a", engine="memory", n=3, r=2, w=2, partitions=8,
                    peer="127.0.0.1:7100", client="127.0.0.1:7000", data_dir="/nonexistent")
PEERS = {"b": "127.0.0.1:7101", "c": "127.0.0.1:7102"}


def peer_frame(events: list) -> list[bytes]:
    return [b"dealer-identity", msgpack.packb(events, use_bin_type=True)]


def client_frame(body: dict, ident: bytes = b"c") -> list[bytes]:
    return [ident, b"", msgpack.packb(body, use_bin_type=True)]


def replies(handler: network.Handler) -> list[dict]:
    return [msgpack.unpackb(e[-1]) for dest, e in handler.take_outbox() if dest == "client"]


def coordinator() -> coordination.Handler:
    members = tuple(Member(x, f"127.0.0.1:700{i}", f"127.0.0.1:710{i}")
                    for i, x in enumerate("abc"))
    handler = coordination.Handler(CONFIG)
    handler.on_ring(0.0, Ring(8, 1, members, ("a", "b", "c") * 2 + ("a", "b")).to_state(), [])
    return handler


class TwoStages:
    """A network stage and a coordination stage of node ``a``, wired in memory; peer
    frames go in by hand, what the network stage sends to peers is kept."""

    def __init__(self) -> None:
        self.net = network.Handler(CONFIG)
        self.coord = coordinator()
        self.sent: list[tuple[str, list]] = []  # (peer address, event)
        self.client: list[dict] = []
        self.local: list[list] = []  # what coordination asked of versioning/persistence
        self.now = 0.0

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for handler in (self.net, self.coord):
                for dest, event in handler.take_outbox():
                    moved = True
                    if dest == "client":
                        self.client.append(msgpack.unpackb(event[-1]))
                    elif dest.startswith("peer:"):
                        self.sent.append((dest.removeprefix("peer:"), event))
                    elif dest == "network":
                        self.net.handle_events([event], self.now)
                    elif dest == "coordination":
                        self.coord.handle_events([event], self.now)
                    elif dest in ("versioning", "persistence"):
                        self.local.append(event)

    def request(self, body: dict) -> None:
        self.net.handle_frames("client", [client_frame(body)], self.now)
        self.pump()

    def peer(self, events: list) -> None:
        self.net.handle_frames("peer", [peer_frame(events)], self.now)
        self.pump()

    def local_answer(self, event: list) -> None:
        self.coord.handle_events([event], self.now)
        self.pump()

    def calls_to(self, peer: str, op: str) -> list[list]:
        return [e for p, e in self.sent if p == peer and e[0] == "req" and e[3][0] == op]


def forgeries(stage: str, tag, payload: list) -> list[list]:
    """Answers a local process could send without having seen this node's request:
    the old reply-tag shape, the stage's own tag, small and random ids, every node."""
    guesses = [[stage, tag], tag, 0, 1, 2, *random.Random(7).sample(range(2**20), 20)]
    return [["resp", node, guess, payload] for node in ("b", "c", "zz")
            for guess in guesses]


# Item 6: replies must match a call this node made --------------------------------------
def test_a_forged_updated_does_not_count_toward_w():
    s = TwoStages()
    s.request({"op": "put", "key": b"k", "value": b"v", "id": 1, "w": 2})
    update = next(e for e in s.local if e[0] == "update")
    clock = causality.encode(causality.update(causality.new(b"v"), causality.EMPTY, "a#1"))
    s.local_answer(["updated", update[2], b"ctx", clock, None])
    assert s.calls_to(PEERS["b"], "rput") and not s.client
    s.peer(forgeries("coordination", update[2], ["updated", None]))
    assert s.client == [], "a forged 'updated' was counted toward W"
    assert s.net.bad_peer_events > 0
    genuine = s.calls_to(PEERS["b"], "rput")[0]
    s.peer([["resp", "b", genuine[2], ["updated", None]]])
    assert [r["ok"] for r in s.client] == [True]


def test_a_forged_got_never_reaches_a_client_nor_read_repair():
    s = TwoStages()
    s.request({"op": "get", "key": b"k", "id": 1, "r": 2})
    read = next(e for e in s.local if e[0] == "get")
    s.local_answer(["got", read[2], [None], None, "x"])
    cid = next(iter(s.coord.requests))
    evil = causality.encode(causality.update(causality.new(b"forged"), causality.EMPTY,
                                             "evil#1"))
    s.peer(forgeries("coordination", cid, ["got", evil, None]))
    assert s.client == [], "a forged 'got' was returned to the client"
    assert not [e for p, e in s.sent if e[0] == "req" and e[3][0] == "rput"]
    genuine = s.calls_to(PEERS["b"], "rget")[0]
    s.peer([["resp", "b", genuine[2], ["got", None, None]]])
    assert s.client[0]["ok"] and s.client[0]["values"] == []


def test_an_answer_is_taken_once_only_from_the_node_called_and_of_the_kind_expected():
    s = TwoStages()
    s.request({"op": "get", "key": b"k", "id": 1, "r": 3})
    read = next(e for e in s.local if e[0] == "get")
    s.local_answer(["got", read[2], [None], None, "x"])
    to_b = s.calls_to(PEERS["b"], "rget")[0]
    # The right id with the wrong kind, then the right answer claimed by another node
    # (counted as b's, the node called), then the same answer again (b counted once).
    s.peer([["resp", "b", to_b[2], ["updated", None]]])
    s.peer([["resp", "c", to_b[2], ["got", None, None]]])
    s.peer([["resp", "c", to_b[2], ["got", None, None]]])
    assert s.client == []
    assert s.coord.requests[next(iter(s.coord.requests))].quorum.replies.keys() == {"a", "b"}


def test_call_ids_cannot_be_predicted_and_every_call_has_a_deadline():
    s = TwoStages()
    for i in range(20):
        s.request({"op": "get", "key": b"k%d" % i, "id": i})
    sent = [e[2] for _, e in s.sent if e[0] == "req"]
    assert len(set(sent)) == len(sent) == 40
    gaps = {b - a for a, b in itertools.pairwise(sorted(sent))}
    assert len(gaps) > 30, "call ids follow a pattern a sender could guess"
    assert set(s.net.calls) == set(sent)
    assert all(call.deadline < 60.0 for call in s.net.calls.values())
    s.net.tick(1e6)
    assert not s.net.calls


def test_last_heard_does_not_grow_from_forged_node_names():
    g = _gossip(CONFIG)
    for i in range(1000):
        g.on_resp(1.0, f"forged-{i}", ["ping", 0.5], ["pong"])
    assert len(g.watcher.detector.windows) <= len(g.view.members)
    assert not g.watcher.detector.suspected


def _gossip(config: NodeConfig) -> gossip.Handler:
    import tempfile

    tmp = tempfile.mkdtemp(prefix="pt-")
    return gossip.Handler(NodeConfig(**{**{f: getattr(config, f) for f in
                                          ("node_id", "engine", "peer")},
                                       "data_dir": tmp}), rng=random.Random(1))


# Item 6: rreap deletes only tombstones; types are checked --------------------------------
def store() -> tuple[persistence.Handler, object]:
    engine = open_engine("memory", "", "data", "nosync")
    handler = persistence.Handler(CONFIG, engine=engine,
                                  hints=open_engine("memory", "", "h", "nosync"))
    return handler, engine


def test_rreap_never_deletes_a_record_holding_a_live_sibling():
    handler, engine = store()
    live = causality.encode(causality.update(causality.new(b"v"), causality.EMPTY, "a#1"))
    dead = causality.encode(causality.update(causality.new(None), causality.EMPTY, "a#1"))
    mixed = causality.encode(causality.update(causality.new(None), causality.decode(live),
                                              "b#1"))
    for raw in (live, mixed, dead):
        engine.write_batch([(b"k", raw)])
        handler.on_reap(0.0, b"k", raw)  # rget, then rreap with the bytes just read
        assert (engine.get(b"k") is None) == (raw is dead)


def test_peer_supplied_ints_are_never_taken_for_bytes():
    net = network.Handler(CONFIG)
    for request in (["rget", 1_000_000], ["rput", 5, b"c", None], ["rreap", b"k", 10**6],
                    ["rcheck", 10**6, []], ["fwd", "put", 10**6, b"v", None, None, None, 50]):
        net.handle_frames("peer", [peer_frame([["req", PEERS["b"], 9, request]])], 0.0)
    assert net.take_outbox() == []
    assert net.bad_peer_events == 5


def test_a_hint_that_is_not_a_node_id_is_refused_and_stops_no_delivery():
    net = network.Handler(CONFIG)
    net.handle_frames("peer", [peer_frame([["req", PEERS["b"], 9, ["rput", b"k", b"c",
                                                                     [1, 2]]]])], 0.0)
    assert net.take_outbox() == [] and net.bad_peer_events == 1
    # A malformed hint already stored (or any malformed record) does not stop the scan.
    handler, engine = store()
    handler.hints.write_batch([(msgpack.packb([[1, 2], b"k1"]), b"t1"),
                               (msgpack.packb(["b", b"k2"]), b"t2"),
                               (b"\xc1garbage", b"t3")])
    engine.write_batch([(b"k2", b"clock")])
    handler.on_hints(0.0, "gossip", "scan", ["b"], 128)
    (event,) = [e for _, e in handler.take_outbox()]
    assert [h[:2] for h in event[2]] == [["b", b"k2"]]
    # ... nor does a malformed item of a scan at the gossip stage.
    g = _gossip(CONFIG)
    g.peers = lambda: {"b": PEERS["b"]}  # b is a member
    g.on_hints_found(0.0, "scan", [[[1, 2], b"k1", b"t1", b"c"], "junk", ["b", b"k2", b"t2", b"c"]])
    calls = [e for dest, e in g.take_outbox() if dest == "network" and e[0] == "call"]
    assert [c[4] for c in calls] == [["rput", b"k2", b"c", None]]


# Item 5: nothing is stored before it is validated ------------------------------------
def test_a_thousand_fwd_with_a_bad_timeout_leave_no_state_and_clients_are_served():
    net = network.Handler(CONFIG)
    bad = [["req", PEERS["b"], 9, ["fwd", "put", b"k", b"v", None, None, None, "soon"]]]
    for _ in range(1100):
        net.handle_frames("peer", [peer_frame(bad)], 0.0)
    assert not net.waiting.pending and not net.waiting.deadlines
    net.take_outbox()
    net.handle_frames("client", [client_frame({"op": "get", "key": b"k", "id": 1})], 1.0)
    assert [e[2] for dest, e in net.take_outbox() if dest == "coordination"] == ["get"]


ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
              st.floats(allow_nan=False), st.binary(max_size=6), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=6)
OPS = st.sampled_from(["ping", "gossip", "rput", "rget", "tree", "rcheck", "rreap", "fwd",
                       "nope", 7])
REQUEST = st.builds(lambda op, args: [op, *args], OPS, st.lists(ANY, max_size=8))
FWD = st.builds(lambda *f: ["fwd", *f], st.sampled_from(["put", "delete", "get", 1]),
                st.one_of(st.binary(max_size=4), ANY), ANY, ANY,
                st.one_of(st.none(), st.integers(0, 4), ANY),
                st.one_of(st.none(), st.integers(0, 4), ANY),
                st.one_of(st.none(), st.integers(-1, 700_000), ANY))
EVENT = st.one_of(
    st.builds(lambda who, cid, req: ["req", who, cid, req],
              st.one_of(st.just(PEERS["b"]), ANY), st.one_of(st.integers(0, 9), ANY),
              st.one_of(REQUEST, FWD)),
    st.builds(lambda who, cid, payload: ["resp", who, cid, payload],
              st.one_of(st.sampled_from(["b", "c"]), ANY), ANY,
              st.one_of(st.lists(ANY, max_size=4),
                        st.builds(lambda k, rest: [k, *rest],
                                  st.sampled_from(["updated", "got", "reply", "view"]),
                                  st.lists(ANY, max_size=3)))),
    ANY)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(EVENT, max_size=6), max_size=8))
@example([[["resp", "b", 0, [[]]], ["req", PEERS["b"], 1, [["rget"], b"k"]]]])
def test_random_peer_events_leave_no_entry_without_a_deadline(frames):
    s = TwoStages()
    for i in range(3):  # calls of our own outstanding, so answers have something to hit
        s.request({"op": "get", "key": b"k%d" % i, "id": i})
    for events in frames:
        s.peer(events)
    net = s.net
    timed = {rid for _, rid in net.waiting.deadlines}
    assert set(net.waiting.pending) <= timed, "a pending request without a deadline"
    assert all(isinstance(c.deadline, float) for c in net.calls.values())
    assert not net.errors
    # Long after every deadline: nothing is left, and a client is served.
    net.tick(1e6)
    s.coord.tick(1e6)
    s.pump()
    assert not net.waiting and not net.calls
    s.now = 2e6  # later still: suspicions of silent replicas (fail-over) have ended
    s.coord.tick(s.now)
    s.client.clear()
    s.request({"op": "ping", "id": 77})
    s.request({"op": "get", "key": b"x", "id": 78})
    assert s.client[0] == {"ok": True, "node": "a", "id": 77}
    assert s.coord.requests, "the client get was not admitted"


# Item 8: ids never repeat across restarts --------------------------------------------
def test_ids_from_two_processes_never_meet():
    first, second = ids.process_base(), ids.process_base()
    assert first != second and first > 0 and second > 0
    assert ids.process_base(lambda bits: 0) > 0  # never 0, whatever the source gives
    rng = random.Random(3)
    assert ids.process_base(rng.getrandbits) == ids.process_base(random.Random(3).getrandbits)
    assert max(ids.process_base(lambda bits: 2**bits - 1), ids.call_id()) < 2**63


def test_a_restarted_network_stage_never_reuses_a_request_id():
    rids, refs = [], []
    for _ in range(2):  # the stage and its restart
        net = network.Handler(CONFIG)
        net.handle_frames("client", [client_frame({"op": "get", "key": b"k", "id": 1})], 0.0)
        net.handle_frames("peer", [peer_frame([["req", PEERS["b"], 5, ["rget", b"k"]]])], 0.0)
        out = [e for _, e in net.take_outbox()]
        rids += [e[1] for e in out if e[0] == "req"]
        refs += [e[2] for e in out if e[0] == "get"]
    assert len(set(rids)) == len(rids) == 2
    # A peer's read holds no id of this node's: its answer names the peer's own call
    # (the ``respond`` envelope), so a restart has nothing to reuse.
    assert refs == [[PEERS["b"], 5]] * 2
    seen = rids
    # A late reply for the old process's request is not matched to the new one's.
    late = network.Handler(CONFIG)
    late.handle_frames("client", [client_frame({"op": "get", "key": b"mine", "id": 2})], 0.0)
    late.take_outbox()
    late.handle_events([["reply", seen[0], {"ok": True, "values": [b"other key's"]}]], 0.1)
    assert late.take_outbox() == []


def test_a_late_answer_for_a_restarted_coordinator_is_not_matched_to_a_new_request():
    old = coordinator()
    old.handle_events([["req", 1, "get", b"secret", None, None, 3, None, 1000, False]], 0.0)
    old_calls = [e for dest, e in old.take_outbox() if dest == "network" and e[0] == "call"]
    new = coordinator()  # the restarted process
    new.handle_events([["req", 1, "get", b"mine", None, None, 3, None, 1000, False]], 0.0)
    new_calls = [e for dest, e in new.take_outbox() if dest == "network" and e[0] == "call"]
    assert {c[3] for c in old_calls}.isdisjoint(c[3] for c in new_calls)
    evil = causality.encode(causality.update(causality.new(b"secret's value"),
                                             causality.EMPTY, "a#1"))
    for call in old_calls:
        new.handle_events([["resp", "b", call[3], ["got", evil, None]],
                           ["resp", "c", call[3], ["got", evil, None]]], 0.1)
    assert not [e for dest, e in new.take_outbox() if e[0] == "reply"]


def test_versioning_and_gossip_tags_never_repeat_across_a_restart():
    tags = []
    for _ in range(2):
        v = versioning.Handler(CONFIG)
        v.handle_events([["update", "coordination", 1, b"k", b"v", None, False, None]], 0.0)
        tags += [e[2] for dest, e in v.take_outbox() if dest == "persistence"]
    assert len(set(tags)) == 2
    ids_seen = []
    for _ in range(2):
        g = _gossip(CONFIG)
        ids_seen.append((g.reaper.check_id, g.exchanges.exchange_id))
    assert ids_seen[0][0] != ids_seen[1][0] and ids_seen[0][1] != ids_seen[1][1]


# Item 6: the peer port's largest message fits the largest record ---------------------
def largest_record(config: NodeConfig) -> tuple[bytes, bytes]:
    """A key of the largest size with a record of the largest size a client write may
    leave: as many actors as a context may name, with the longest names and counters,
    and siblings of the largest size filling the rest of ``max_record_bytes``."""
    def actor(i: int) -> str:
        return f"{i:04d}".ljust(causality.MAX_ACTOR_BYTES, "x")

    def record(siblings: int, last: int) -> causality.DVVSet:
        sizes = [config.max_value_bytes] * siblings + [last]
        return causality.DVVSet(tuple(
            (actor(i), 2**64 - 1, (bytes([i % 256]) * sizes[i],) if i < len(sizes) else ())
            for i in range(contexts.MAX_CONTEXT_ACTORS)))

    base = len(causality.encode(record(0, 0)))
    room = config.max_record_bytes - base
    siblings = room // (config.max_value_bytes + 5)
    last = room - siblings * (config.max_value_bytes + 5) - 5
    clock = record(siblings, last)
    assert config.max_record_bytes - 16 <= len(causality.encode(clock)) <= config.max_record_bytes
    return b"k" * config.max_key_bytes, causality.encode(clock)


def test_a_key_at_the_record_limit_still_transfers():
    from seda_dynamo import peerprotocol

    config = NodeConfig(node_id="a", engine="memory", n=3, max_value_bytes=64 * 1024,
                        max_record_bytes=1024 * 1024, max_key_bytes=1024,
                        peer="127.0.0.1:7100")
    limit = peerprotocol.max_message_bytes(config.max_key_bytes, config.max_record_bytes)
    sender, receiver = network.Handler(config), network.Handler(config)
    assert [p.max_msg_bytes for p in receiver.ports() if p.name == "peer"] == [limit]
    key, record = largest_record(config)
    # Gossip streams a partition: three such records, one call each, in one batch.
    for i in range(3):
        sender.handle_events([["call", PEERS["b"], "gossip", ["xfer", 1, i],
                               ["rput", key, record, None], "b"]], 0.0)
    events = [e for _, e in sender.take_outbox()]
    frames, oversize = peerprotocol.pack_events(events, limit)
    assert not oversize and len(frames) == 3, "each record goes in a message of its own"
    assert all(len(frame) <= limit for frame, _ in frames)
    receiver.handle_frames("peer", [["id", frame] for frame, _ in frames], 0.0)
    synced = [e for dest, e in receiver.take_outbox() if dest == "versioning"]
    assert [e[3:] for e in synced] == [[key, record, None]] * 3
    assert receiver.bad_peer_events == 0
    # Small events share a message; one past the limit alone is held back, not sent.
    small = [["req", "127.0.0.1:1", i, ["ping"]] for i in range(100)]
    frames, oversize = peerprotocol.pack_events([*small, [b"x" * limit]], limit)
    assert len(frames) == 1 and frames[0][1] == small and len(oversize) == 1
    assert msgpack.unpackb(frames[0][0]) == small


def test_a_forwarded_context_is_held_to_the_client_ports_bounds():
    """A peer's forwarded write carries a decoded context: the same limits as a client's
    (actors, counters up to what the store issues), checked by the one context rule."""
    from seda_dynamo import peerprotocol

    limits = peerprotocol.PeerLimits(3)
    ok = {"a#1.m1.1": contexts.MAX_CONTEXT_COUNTER}
    event = ["req", PEERS["b"], 7, ["fwd", "put", b"k", b"v", ok, None, None, None]]
    assert peerprotocol.parse_event(event, limits).args[3] == ok
    for bad in ({"a": contexts.MAX_CONTEXT_COUNTER + 1}, {"": 1}, {"a": 0},
                {f"x{i}": 1 for i in range(contexts.MAX_CONTEXT_ACTORS + 1)}, ["a", 1]):
        event[3][4] = bad
        with pytest.raises(ValueError):
            peerprotocol.parse_event(event, limits)
