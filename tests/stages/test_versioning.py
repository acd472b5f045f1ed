"""The versioning stage's promises, at the handler level (no processes).

Dynamo paper section 4.4 with dotted version vector sets: a replica never issues a dot
that a context it could be handed already covers (whatever its actors' names, across
reaps, restarts and stale contexts), one bad operation fails only its own request, and
no key's write loops forever.
"""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pipeline import CONFIG, Pipeline

from seda_dynamo import actors, causality, contexts
from seda_dynamo.engines import key_hash, open_engine
from seda_dynamo.merkle import object_hash
from seda_dynamo.ring import partition_of
from stages import persistence, versioning


def put(p: Pipeline, key: bytes, value: bytes, context: bytes | None = None) -> dict:
    body = {"op": "put", "key": key, "value": value, "id": len(p.replies)}
    if context is not None:
        body["context"] = context
    p.request(body)
    p.run()
    return p.replies[-1]


def get(p: Pipeline, key: bytes) -> dict:
    p.request({"op": "get", "key": key, "id": len(p.replies)})
    p.run()
    return p.replies[-1]


def reap(p: Pipeline, key: bytes) -> None:
    """The reaper's compare-and-delete, once every replica holds the same tombstone."""
    p.stages["persistence"].handle_events([["reap", key, p.engine.get(key)]], p.now)
    p.collect()
    assert p.engine.get(key) is None


def test_a_blind_write_after_a_reap_is_never_lost_whatever_the_actor_names_sort_as():
    """Item 1 of the broken-promises issue, as reproduced on a real node: K first written
    by a fresh actor minted after 0xe2 others, re-created after a reap by one minted after
    0x1dd others; text order puts the old actor last, and the blind write v4 was stamped
    with it at a counter that ctx2 already covered, so `put v5 ctx2` dropped v4."""
    p = Pipeline()
    for i in range(0xE2):
        put(p, b"other-%d" % i, b"x")
    ctx1 = put(p, b"K", b"v1")["context"]
    ctx2 = put(p, b"K", b"v2", ctx1)["context"]
    p.request({"op": "delete", "key": b"K", "context": ctx2, "id": 0})
    p.run()
    reap(p, b"K")
    for i in range(0xE2, 0x1DD):
        put(p, b"other-%d" % i, b"x")
    assert put(p, b"K", b"v3", ctx1)["ok"]
    assert put(p, b"K", b"v4")["ok"]  # blind: no context ever saw it
    assert put(p, b"K", b"v5", ctx2)["ok"]
    assert sorted(get(p, b"K")["values"]) == [b"v3", b"v4", b"v5"]


def many_actors_context(count: int, counter: int = 1) -> bytes:
    return contexts.encode_context({f"forged-{i:05}": counter for i in range(count)})


def test_a_context_at_the_actor_limit_fails_alone_and_the_key_stays_writable():
    """A put whose context holds 1,024 actors used to make versioning raise in the middle
    of its batch: every key of the batch stayed in flight and every later put of the key
    timed out. Now that one put is refused; the puts beside it and after it succeed."""
    p = Pipeline()
    put(p, b"k", b"v0")
    bodies = [{"op": "put", "key": b"k", "value": b"honest-1", "id": 100},
              {"op": "put", "key": b"k", "value": b"bad", "id": 101,
               "context": many_actors_context(contexts.MAX_CONTEXT_ACTORS)},
              {"op": "put", "key": b"other", "value": b"x", "id": 102},
              {"op": "put", "key": b"k", "value": b"honest-2", "id": 103}]
    for body in bodies:  # one batch: all reach versioning together
        p.stages["network"].handle_frames("client", [[b"c", b"", msgpack.packb(body)]], p.now)
    p.collect()
    p.run()
    by_id = {r["id"]: r for r in p.replies if r.get("id", 0) >= 100}
    assert by_id[101]["error"] == "bad_request" and "actors" in by_id[101]["message"]
    assert [by_id[i]["ok"] for i in (100, 102, 103)] == [True, True, True]
    assert not p.stages["versioning"].inflight and not p.stages["versioning"].queued
    assert put(p, b"k", b"later")["ok"]
    assert sorted(get(p, b"k")["values"]) == [b"honest-1", b"honest-2", b"later", b"v0"]


def test_a_counter_no_store_issues_is_refused_at_the_door():
    p = Pipeline()
    ctx = put(p, b"k", b"v")["context"]
    (actor, n), = contexts.decode_context(ctx).items()
    for counter in (contexts.MAX_CONTEXT_COUNTER + 1, 2**64 - 1):
        forged = contexts.encode_context({actor: counter}) if counter < 2**64 else \
            b"\x01" + msgpack.packb([[actor, counter]])
        p.request({"op": "put", "key": b"k", "value": b"x", "context": forged, "id": 7})
        p.run()
        assert p.replies[-1]["error"] == "bad_request", p.replies[-1]
    assert not p.stages["versioning"].inflight  # nothing reached versioning
    assert put(p, b"k", b"v2", ctx)["ok"] and get(p, b"k")["values"] == [b"v2"]


def test_a_context_at_the_counter_limit_gets_a_fresh_actor_not_an_overflow():
    """A client that read this node's actor from a context may claim its counter is at
    the limit; the next write goes to a fresh actor, so no returned context ever holds a
    counter the door would refuse."""
    p = Pipeline()
    ctx = put(p, b"k", b"v")["context"]
    (actor, n), = contexts.decode_context(ctx).items()
    at_limit = contexts.encode_context({actor: contexts.MAX_CONTEXT_COUNTER})
    reply = put(p, b"k", b"after", at_limit)
    assert reply["ok"]
    returned = contexts.decode_context(reply["context"])
    assert max(returned.values()) <= contexts.MAX_CONTEXT_COUNTER
    assert put(p, b"k", b"again", reply["context"])["ok"]
    assert get(p, b"k")["values"] == [b"again"]


def peer_clock(context: dict[str, int]) -> bytes:
    """A replica's clock for ``x`` written by peer actor ``b#1.m0.1.0`` over ``context``."""
    return causality.encode(causality.update(causality.new(b"x", context), causality.EMPTY,
                                             "b#1.m0.1.0"))


@pytest.mark.parametrize("context", [
    {"b#1.m0.1.0": contexts.MAX_CONTEXT_COUNTER},  # stamped above the limit
    {f"forged-{i:05}": 1 for i in range(contexts.MAX_CONTEXT_ACTORS)},  # one actor too many
], ids=["counter", "actors"])
def test_a_peer_write_no_store_could_issue_is_refused_and_the_key_stays_writable(context):
    """Found by the fuzzers in the simulator (tests/fuzz/test_in_sim.py): a peer's rput
    whose clock names a counter above ``MAX_CONTEXT_COUNTER`` was stored; every get then
    returned a context that every put refused at the door (bad_request), so no
    read-modify-write of the key could succeed again, on any replica read repair reached.
    A replica takes from a peer no state whose context the store would refuse."""
    p = Pipeline()
    put(p, b"k", b"v")
    event = ["req", "127.0.0.1:7101", 0, ["rput", b"k", peer_clock(context), None]]  # no answer
    p.stages["network"].handle_frames("peer", [[b"peer", msgpack.packb([event])]], p.now)
    p.collect()
    p.run()
    assert p.stages["versioning"].failed_ops == 1 and not p.stages["versioning"].errors
    got = get(p, b"k")
    assert got["ok"] and got["values"] == [b"v"], got
    assert put(p, b"k", b"v2", got["context"])["ok"]
    assert get(p, b"k")["values"] == [b"v2"]


def test_an_operation_that_raises_fails_its_own_request_only(monkeypatch):
    """The class: whatever goes wrong applying one operation (here a bug, simulated),
    its request gets an error and every other request of the batch is answered."""
    p = Pipeline()
    real = actors.replica_update

    def buggy(stored, value, *args):
        if value == b"boom":
            raise KeyError("a bug")
        return real(stored, value, *args)

    monkeypatch.setattr(actors, "replica_update", buggy)
    for i, value in enumerate((b"a", b"boom", b"c")):
        body = {"op": "put", "key": b"k", "value": value, "id": 200 + i}
        p.stages["network"].handle_frames("client", [[b"c", b"", msgpack.packb(body)]], p.now)
    p.collect()
    p.run()
    by_id = {r["id"]: r for r in p.replies}
    assert by_id[201]["ok"] is False and by_id[200]["ok"] and by_id[202]["ok"]
    assert sorted(get(p, b"k")["values"]) == [b"a", b"c"]
    assert p.stages["versioning"].failed_ops == 1


def test_a_write_during_the_tree_build_is_not_undone_by_the_build():
    """Persistence builds its Merkle trees at start by folding the store a chunk per
    tick; a key committed between ticks, whose old record the build had already read,
    had its tree entry put back to the old hash, and every later compare-and-set write
    of the key conflicted forever (versioning looped get -> conflict -> get)."""
    engine = open_engine("memory", "", "data", "nosync")
    keys = [b"key-%05d" % i for i in range(3 * persistence.BUILD_CHUNK)]
    engine.write_batch([(k, causality.encode(causality.new(b"old"))) for k in keys])
    store = persistence.Handler(CONFIG, engine=engine,
                                hints=open_engine("memory", "", "h", "nosync"))
    store.tick(0.0)  # the first chunk is indexed; the engine has read ahead of it
    built = store.built_upto
    ahead = sorted((k for k in keys if key_hash(k) > built), key=key_hash)
    writes = [[k, causality.encode(causality.new(b"new")), object_hash(engine.get(k))]
              for k in ahead[:50] + ahead[-50:]]
    store.handle_events([["write", "versioning", 1, writes, []]], 0.0)
    assert store.take_outbox()[-1][1] == ["written", 1, None, []]
    gone = ahead[60]  # deleted (a tombstone), then reaped
    tombstone = causality.encode(causality.new(None))
    store.handle_events([["write", "versioning", 3, [[gone, tombstone]], []]], 0.0)
    store.handle_events([["reap", gone, tombstone]], 0.0)
    assert engine.get(gone) is None
    while store.building is not None:
        store.tick(0.0)
    for key, value, _ in writes:
        tree = store.trees[partition_of(key, CONFIG.partitions)]
        assert tree.get(key) == object_hash(value), key
    assert store.trees[partition_of(gone, CONFIG.partitions)].get(gone) is None
    again = [[k, causality.encode(causality.new(b"newer")), object_hash(v)]
             for k, v, _ in writes]
    store.handle_events([["write", "versioning", 2, again, []]], 0.0)
    assert store.take_outbox()[-1][1] == ["written", 2, None, []], "no conflicts"


def test_a_key_that_keeps_changing_under_a_write_gives_up_with_an_error():
    """Whatever the cause of a compare-and-set conflict, a write retries a bounded number
    of times, then its request fails with a clear error and a counter."""
    p = Pipeline()
    put(p, b"k", b"v")
    store = p.stages["persistence"]
    store._current = lambda key, batch: b"someone else's"  # every write conflicts
    p.request({"op": "put", "key": b"k", "value": b"x", "id": 9})
    for _ in range(1000):
        if not p.step():
            break
    else:
        raise AssertionError("the write is still looping after 1,000 stage batches")
    reply = p.replies[-1]
    assert reply["id"] == 9 and not reply["ok"]
    vs = p.stages["versioning"]
    assert vs.cas_gave_up == 1 and vs.conflicts == versioning.MAX_CAS_RETRIES + 1
    assert not vs.inflight


steps = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(0, 40)),      # with an earlier context
    st.tuples(st.just("blind"), st.just(0)),
    st.tuples(st.just("delete"), st.integers(0, 40)),
    st.tuples(st.just("reap"), st.just(0)),
    st.tuples(st.just("delete_reap"), st.integers(0, 40)),  # a delete, reaped at once
    st.tuples(st.just("stale_copy"), st.integers(0, 40)),  # a replica's old state
    st.tuples(st.just("restart"), st.integers(1, 2**32)),  # persistence and versioning
    st.tuples(st.just("others"), st.integers(1, 2**40)),   # other keys read meanwhile
), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(0, 2**48))
# The two known shapes: a stale context after a reap with an order crossing a hex digit
# (text order misleads), and a stale copy of the key merged back in after a reap.
@example([("blind", 0), ("put", 1), ("delete_reap", 2), ("others", 0x20),
          ("put", 1), ("blind", 0), ("put", 2)], 0xF0)
@example([("blind", 0), ("put", 1), ("delete_reap", 2), ("stale_copy", 0), ("blind", 0),
          ("put", 2)], 0)
def test_no_acknowledged_write_is_lost_through_the_handlers(script, first_seq):
    """Through the real versioning and persistence handlers: whatever the mint orders
    (large, unpadded), reaps, restarts, stale contexts and stale replica copies, every
    acknowledged value stays visible until a write whose context saw it."""
    p = Pipeline()
    p.stages["persistence"].mint_seq = first_seq
    incarnation = p.stages["persistence"].incarnation
    contexts: list[tuple[bytes | None, set[bytes]]] = [(None, set())]
    copies: list[bytes] = []
    live: set[bytes] = set()  # acknowledged and not yet seen by a superseding write
    serial = 0
    for op, arg in script:
        if op == "reap":
            if p.engine.get(b"K") is not None and not get(p, b"K")["values"]:
                reap(p, b"K")
            continue
        if op == "stale_copy":
            if copies:
                p.queues["versioning"].append(
                    ["sync", "gossip", None, b"K", copies[arg % len(copies)], None])
                p.run()
            continue
        if op == "restart":
            old = p.stages["persistence"]
            p.stages["persistence"] = persistence.Handler(
                CONFIG, engine=p.engine, hints=old.hints, incarnation_id=incarnation,
                mint_epoch=old.mint_epoch + 1)
            p.stages["persistence"].mint_seq = arg
            p.stages["persistence"].building = None
            p.stages["versioning"] = versioning.Handler(CONFIG)
            continue
        if op == "others":
            p.stages["persistence"].mint_seq += arg
            continue
        context, saw = (None, set()) if op == "blind" else contexts[arg % len(contexts)]
        serial += 1
        value = b"v%d" % serial
        if op in ("delete", "delete_reap"):
            if context is None:  # a delete without a context covers all it finds
                saw = set(get(p, b"K")["values"])
            body = {"op": "delete", "key": b"K", "id": len(p.replies)}
            if context is not None:
                body["context"] = context
            p.request(body)
            p.run()
            reply = p.replies[-1]
        else:
            reply = put(p, b"K", value, context)
        assert reply["ok"], reply
        live -= saw
        if op not in ("delete", "delete_reap"):
            live.add(value)
        if op == "delete_reap" and not get(p, b"K")["values"]:
            reap(p, b"K")
        now = get(p, b"K")
        assert live <= set(now["values"]), (live, now["values"])
        contexts.append((now["context"], set(now["values"])))
        if p.engine.get(b"K") is not None:
            copies.append(p.engine.get(b"K"))


def test_a_write_that_would_pass_the_record_limit_is_refused_and_one_resolving_is_taken():
    """The peer port is sized to the largest record (max_record_bytes): a client write
    that would leave a record larger, without resolving siblings, is refused with
    too_large; resolving them works. Small siblings are not limited by their number."""
    p = Pipeline()
    limit = 600 * 1024
    p.stages["versioning"].config = replace(CONFIG, max_record_bytes=limit)
    for i in range(200):
        assert put(p, b"small", b"s%d" % i)["ok"]  # blind: 200 concurrent siblings
    assert len(get(p, b"small")["values"]) == 200
    big = 100 * 1024
    stored = 0
    while True:
        reply = put(p, b"k", bytes([stored]) * big)
        if not reply["ok"]:
            break
        stored += 1
    assert limit // big - 1 <= stored <= limit // big and reply["error"] == "too_large"
    assert "max_record_bytes" in reply["message"]
    read = get(p, b"k")
    assert len(read["values"]) == stored
    assert put(p, b"k", b"resolved", read["context"])["ok"]
    assert get(p, b"k")["values"] == [b"resolved"]


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


def test_events_that_are_no_event_at_all_fail_alone():
    """A batch holding a value that is no ``[kind, ...]`` list: each such value fails on
    its own; the update behind them still reads its key."""
    h = versioning.Handler(CONFIG)
    h.handle_events([7, [], None, ["update", "coordination", 1, b"k", b"v", None, False, None]],
                    0.0)
    out = h.take_outbox()
    assert [(dest, event[0], event[3]) for dest, event in out] == [
        ("persistence", "get", [b"k"])]
    assert h.errors == 3
