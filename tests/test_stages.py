"""Stage handlers wired together in memory (no ZeroMQ): the pipeline's logic alone."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo import causality
from seda_dynamo.config import NodeConfig
from seda_dynamo.engines import open_engine
from seda_dynamo.ring import Member, Ring
from stages import coordination, network, persistence, versioning

CONFIG = NodeConfig(node_id="t", engine="memory", n=1, r=1, w=1)


class Pipeline:
    """Delivers emitted events between handlers; ``pick`` chooses which queue goes next."""

    def __init__(self) -> None:
        self.engine = open_engine("memory", "", "data", "nosync")
        self.stages = {
            "network": network.Handler(CONFIG),
            "coordination": coordination.Handler(CONFIG),
            "versioning": versioning.Handler(CONFIG),
            "persistence": persistence.Handler(CONFIG, engine=self.engine,
                                               hints=open_engine("memory", "", "h", "nosync")),
        }
        ring = Ring.single(Member("t", CONFIG.client, CONFIG.peer), CONFIG.partitions)
        self.stages["coordination"].on_ring(0.0, ring.to_state(), [])
        self.queues: dict[str, list] = {name: [] for name in self.stages}
        self.replies: list[dict] = []
        self.now = 0.0

    def collect(self) -> None:
        for handler in self.stages.values():
            for dest, event in handler.take_outbox():
                if dest == "client":
                    self.replies.append(msgpack.unpackb(event[-1]))
                elif dest in self.queues:
                    self.queues[dest].append(event)
                else:
                    assert dest == "gossip", dest

    def request(self, body: dict, ident: bytes = b"c") -> None:
        self.stages["network"].handle_frames("client", [[ident, b"", msgpack.packb(body)]],
                                             self.now)
        self.collect()

    def step(self, pick: int = 0) -> bool:
        busy = [name for name, q in self.queues.items() if q]
        if not busy:
            return False
        name = busy[pick % len(busy)]
        batch, self.queues[name] = self.queues[name], []
        self.stages[name].handle_events(batch, self.now)
        self.collect()
        return True

    def run(self, picks=()) -> None:
        for pick in picks:
            self.step(pick)
        while self.step():
            pass


def test_put_then_get_through_the_handlers():
    p = Pipeline()
    p.request({"op": "put", "key": b"k", "value": b"v", "id": 1})
    p.run()
    p.request({"op": "get", "key": b"k", "id": 2})
    p.run()
    assert [r["id"] for r in p.replies] == [1, 2]
    assert p.replies[1]["values"] == [b"v"]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.lists(st.integers(0, 3), max_size=60))
def test_concurrent_blind_puts_never_lose_a_sibling_in_any_interleaving(count, picks):
    p = Pipeline()
    for i in range(count):
        p.request({"op": "put", "key": b"hot", "value": b"%d" % i, "id": i})
        if picks:
            p.step(picks.pop())
    p.run(picks)
    assert sorted(r["id"] for r in p.replies) == list(range(count))
    assert all(r["ok"] for r in p.replies)
    p.request({"op": "get", "key": b"hot", "id": 99})
    p.run()
    assert sorted(p.replies[-1]["values"]) == sorted(b"%d" % i for i in range(count))


def test_a_write_waiting_on_persistence_fails_at_the_deadline_instead_of_hanging():
    p = Pipeline()
    p.request({"op": "put", "key": b"k", "value": b"v", "id": 1, "timeout_ms": 50})
    p.step()  # network -> coordination
    p.step()  # coordination -> versioning; persistence never answers
    p.queues["persistence"].clear()
    p.now = 1.0
    for handler in p.stages.values():
        handler.tick(p.now)
    p.collect()
    p.run()
    assert p.replies == [{"ok": False, "error": "timeout", "id": 1,
                          "message": "0 of 1 replicas answered before the deadline"}]


def test_a_key_written_again_after_its_tombstone_was_reaped_gets_a_fresh_actor():
    """kv679 through reaping, at one replica: a context read before the delete must not
    cover the value written after the reap, so the old-context write is a sibling."""
    p = Pipeline()
    p.request({"op": "put", "key": b"k", "value": b"v1", "id": 1})
    p.run()
    old = p.replies[-1]["context"]
    p.request({"op": "delete", "key": b"k", "context": old, "id": 2})
    p.run()
    tombstone = p.engine.get(b"k")  # the reaper's compare-and-delete, once all replicas agree
    p.stages["persistence"].handle_events([["reap", b"k", tombstone]], p.now)
    assert p.engine.get(b"k") is None
    p.request({"op": "put", "key": b"k", "value": b"v2", "id": 3})
    p.run()
    p.request({"op": "put", "key": b"k", "value": b"v3-from-the-old-read", "context": old,
               "id": 4})
    p.run()
    p.request({"op": "get", "key": b"k", "id": 5})
    p.run()
    assert [r["ok"] for r in p.replies] == [True] * 5
    assert sorted(p.replies[-1]["values"]) == [b"v2", b"v3-from-the-old-read"]


def test_a_failed_group_commit_is_reported_to_every_writer():
    p = Pipeline()

    def broken(ops):
        raise OSError("disk full")

    p.engine.write_batch = broken
    for i in range(3):
        p.request({"op": "put", "key": b"k%d" % i, "value": b"v", "id": i})
    p.run()
    assert [r["error"] for r in p.replies] == ["unavailable"] * 3


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


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2), max_size=40), st.integers(2, 6))
def test_two_versioning_workers_racing_on_a_key_never_lose_a_sibling(picks, puts):
    """Two versioning workers may read the same key before either writes (several
    workers, or a change of their number, while a key's work is in flight): persistence's
    compare-and-set refuses the second write and that worker reads and merges again."""
    engine = open_engine("memory", "", "data", "nosync")
    store = persistence.Handler(CONFIG, engine=engine,
                                hints=open_engine("memory", "", "h", "nosync"))
    workers = [versioning.Handler(CONFIG), versioning.Handler(CONFIG)]
    workers[1].name = "versioning.1"
    handlers = {"persistence": store, "versioning": workers[0], "versioning.1": workers[1]}
    queues: dict[str, list] = {name: [] for name in handlers}
    answers = []
    for i in range(puts):
        worker = workers[i % 2]
        worker.handle_events([["update", "client", i, b"k", b"v%d" % i, None, False, None]],
                             0.0)
    adversary, picks = not picks, list(picks)
    while True:
        for handler in handlers.values():
            for dest, event in handler.take_outbox():
                if dest == "client":
                    answers.append(event)
                else:
                    queues[dest].append(event)
        busy = [name for name, q in queues.items() if q]
        if not busy:
            break
        name = busy[(picks.pop() if picks else 0) % len(busy)]
        batch, queues[name] = queues[name], []
        handlers[name].handle_events(batch, 0.0)
    assert sorted(a[1] for a in answers) == list(range(puts))
    assert all(a[4] is None for a in answers), answers
    if adversary:  # both workers read before either wrote: one write was refused
        assert store.conflicts >= 1
    assert sorted(causality.values(causality.decode(engine.get(b"k")))) == \
        sorted(b"v%d" % i for i in range(puts))


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
