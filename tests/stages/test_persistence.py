"""The persistence stage's handler (paper 4.1's local engine behind one stage, section 5's
pluggable engine): group commit, compare-and-set, the mint order, hints (4.6), folds for
hand-overs, Merkle trees (4.7), reaping. Events in, outbox out, no processes.
"""

from __future__ import annotations

from unittest import mock

from frames import build, hex_range, live, tomb
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline import Pipeline
from test_peer_trust import CONFIG, store

from seda_dynamo.antientropy import new_tree
from seda_dynamo.config import NodeConfig
from seda_dynamo.engines import KEY_SPACE, key_hash, open_engine
from seda_dynamo.merkle import EMPTY, object_hash
from seda_dynamo.reaper import only_tombstones
from seda_dynamo.ring import partition_of
from stages import persistence, versioning

Q = CONFIG.partitions


def write(tag, items, hints=(), reply_to: str = "versioning") -> list:
    return ["write", reply_to, tag, [list(i) for i in items], [list(h) for h in hints]]


def run(h: persistence.Handler, events: list, now: float = 0.0) -> list[tuple[str, list]]:
    h.handle_events(events, now)
    return h.take_outbox()


# Group commit ------------------------------------------------------------------------
def test_every_writer_of_a_batch_is_answered_once_in_order_after_one_commit():
    h, engine = store()
    batch = [write(i, [[b"k%d" % i, live(b"v%d" % i)]], reply_to=f"versioning.{i % 2}")
             for i in range(6)]
    batch.insert(3, ["get", "coordination", "g", [b"k0"]])
    out = run(h, batch)
    written = [(dest, e) for dest, e in out if e[0] == "written"]
    assert [(dest, e[1]) for dest, e in written] == [(f"versioning.{i % 2}", i)
                                                     for i in range(6)]
    assert all(e[2:] == [None, []] for _, e in written)
    assert h.commits == 1, "one group commit for the whole batch"
    assert engine.get_many([b"k%d" % i for i in range(6)]) == [live(b"v%d" % i)
                                                               for i in range(6)]
    run(h, [["get", "coordination", "g2", [b"k1"]]])
    assert h.commits == 1, "a batch of reads commits nothing"


def test_a_failed_commit_fails_each_writer_once_stores_nothing_and_the_stage_goes_on():
    h, engine = store()
    for broken in ("engine", "hints"):
        target = engine if broken == "engine" else h.hints
        with mock.patch.object(target, "write_batch", side_effect=OSError("disk full")):
            out = run(h, [write(i, [[b"k%d" % i, live(b"v")]], hints=[["b", b"k%d" % i]])
                          for i in range(3)])
        assert [e[1] for _, e in out] == [0, 1, 2]
        assert all(e[0] == "written" and "disk full" in e[2] for _, e in out)
        assert engine.count() == 0 and h.commits == 0
    assert h.errors == 2
    out = run(h, [write(9, [[b"k9", live(b"v")]])])
    assert out == [("versioning", ["written", 9, None, []])] and h.commits == 1


def test_a_failed_read_is_answered_with_its_error():
    h, engine = store()
    with mock.patch.object(engine, "get_many", side_effect=OSError("bad sector")):
        (dest, got), = run(h, [["get", "coordination", 5, [b"k"]]])
    assert dest == "coordination" and got[:3] == ["got", 5, None]
    assert "bad sector" in got[3]


# Compare-and-set -------------------------------------------------------------------
def test_a_write_whose_expected_record_changed_is_refused_and_the_record_kept():
    for built in (False, True):  # checked against the engine, then against the trees
        h, engine = store()
        engine.write_batch([(b"k", live(b"old"))])
        if built:
            build(h)
        stale, now = object_hash(live(b"older")), object_hash(live(b"old"))
        out = run(h, [write(1, [[b"k", live(b"x"), stale], [b"j", live(b"j"), None]]),
                      write(2, [[b"k", live(b"new"), now]]),
                      write(3, [[b"k", live(b"lost"), now]]),  # read before write 2
                      write(4, [[b"k", live(b"late"), None]])])  # "absent": it is not
        assert [e[1:] for _, e in out] == [[1, None, [b"k"]], [2, None, []],
                                           [3, None, [b"k"]], [4, None, [b"k"]]], built
        assert engine.get(b"k") == live(b"new") and engine.get(b"j") == live(b"j")
        assert h.conflicts == 3
        # A deletion is a write like any other: it takes the same compare.
        out = run(h, [write(5, [[b"k", None, now]]),
                      write(6, [[b"k", None, object_hash(live(b"new"))]])])
        assert [e[3] for _, e in out] == [[b"k"], []] and engine.get(b"k") is None
        out = run(h, [write(7, [[b"k", live(b"again"), None]])])
        assert out[0][1][3] == [] and engine.get(b"k") == live(b"again")


KEYS = [b"key-%d" % i for i in range(10)]
RECORDS = [live(b"a"), live(b"b", "b#1"), tomb(), tomb("b#1")]
EXPECT = st.sampled_from([None, "absent", 0, 1, 2, 3])  # None: no compare
OP = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 9), st.sampled_from([None, 0, 1, 2, 3]),
              EXPECT),
    st.tuples(st.just("reap"), st.integers(0, 9), st.integers(0, 3)),
    st.just(("tick",)))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(0, 9), st.integers(0, 3)),
       st.lists(st.lists(OP, max_size=6), max_size=8))
def test_writes_and_reaps_during_the_tree_build_match_a_model(initial, batches):
    """Compare-and-set and compare-and-delete against a model of the store, with the
    trees built in small chunks between batches: once built, every partition's tree
    holds exactly what the engine holds."""
    h, engine = store()
    committed = {KEYS[k]: RECORDS[r] for k, r in initial.items()}
    engine.write_batch(list(committed.items()))
    tag = 0
    with mock.patch.object(persistence, "BUILD_CHUNK", 2):
        for batch in batches:
            events, pending, conflicts = [], {}, []
            for op in batch:
                if op[0] == "tick":
                    continue
                key = KEYS[op[1]]
                if op[0] == "reap":
                    events.append(["reap", key, RECORDS[op[2]]])
                    if committed.get(key) == RECORDS[op[2]] and only_tombstones(RECORDS[op[2]]):
                        del committed[key]
                    continue
                value = None if op[2] is None else RECORDS[op[2]]
                item = [key, value]
                if op[3] is not None:
                    item.append(None if op[3] == "absent" else object_hash(RECORDS[op[3]]))
                    held = pending[key] if key in pending else committed.get(key)
                    if item[2] != (object_hash(held) if held is not None else None):
                        conflicts.append([tag, [key]])
                        events.append(write(tag, [item]))
                        tag += 1
                        continue
                pending[key] = value
                conflicts.append([tag, []])
                events.append(write(tag, [item]))
                tag += 1
            for key, value in pending.items():
                if value is None:
                    committed.pop(key, None)
                else:
                    committed[key] = value
            out = run(h, events)
            assert [[e[1], e[3]] for _, e in out] == conflicts
            if ("tick",) in batch:
                h.tick(0.0)
        build(h)
    assert dict(engine.fold(0, 1 << 128)) == committed
    for p in range(Q):
        want = new_tree()
        for key, value in committed.items():
            if partition_of(key, Q) == p:
                want.insert(key, object_hash(value))
        tree = h.trees.get(p)
        assert (tree.root() if tree is not None else EMPTY) == want.root(), p


# The mint order ------------------------------------------------------------------------
def minted(h: persistence.Handler, keys: list[bytes]) -> tuple[str, list[tuple[int, int]]]:
    """The incarnation and the (epoch, sequence) of each key a versioning read hands out."""
    (_, got), = run(h, [["get", "versioning", 0, keys, True]])
    epoch, first = got[5]
    return got[4], [(epoch, first + i) for i in range(len(keys))]


def test_mint_orders_never_repeat_and_grow_across_restarts_on_the_same_data(tmp_path):
    config = NodeConfig(node_id="t", engine="bdb", durability="nosync",
                        data_dir=str(tmp_path / "data"))
    seen, incarnations = [], set()
    for _ in range(3):  # a start and two restarts
        h = persistence.Handler(config)
        for n in (1, 3, 2):
            incarnation, orders = minted(h, [b"k%d" % i for i in range(n)])
            incarnations.add(incarnation)
            seen += orders
        (_, plain), = run(h, [["get", "coordination", 1, [b"k0"]]])
        assert len(plain) == 5, "a read not for versioning carries no mint order"
        h.close()
    assert seen == sorted(seen) and len(set(seen)) == len(seen) == 18
    assert len(incarnations) == 1, "the same data keeps its incarnation"
    h = persistence.Handler(NodeConfig(node_id="t", engine="bdb", durability="nosync",
                                       data_dir=str(tmp_path / "wiped")))
    assert minted(h, [b"k"])[0] not in incarnations, "new data, new incarnation"
    h.close()
    # A memory engine starts at epoch 1 every time, under a new incarnation each start.
    assert store()[0].incarnation != store()[0].incarnation


# Hints -----------------------------------------------------------------------------------
def hints_of(h: persistence.Handler, owners: list[str], limit: int) -> list[list]:
    (dest, event), = run(h, [["hints", "gossip", "scan", owners, limit]])
    assert dest == "gossip" and event[:2] == ["hints_found", "scan"]
    return event[2]


def test_hints_are_stored_listed_in_batches_and_deleted_only_by_hint_done():
    h, engine = store()
    run(h, [write(i, [[b"k%d" % i, live(b"v%d" % i)]],
                  hints=[["b", b"k%d" % i]] + ([["c", b"k%d" % i]] if i % 3 == 0 else []))
            for i in range(10)])
    assert h.gauges()["hints"] == 14
    listed: list[list] = []
    for _ in range(6):  # batches of 3, the scan resumes where it stopped and wraps
        chunk = hints_of(h, ["b"], 3)
        assert len(chunk) <= 3
        listed += chunk
    assert {(o, k) for o, k, _, _ in listed} == {("b", b"k%d" % i) for i in range(10)}
    assert all(rec == engine.get(k) for _, k, _, rec in listed), "hints carry the record"
    assert h.gauges()["hints"] == 14, "listing a hint never deletes it"
    tokens = {k: t for _, k, t, _ in listed}
    # A newer write of k0 with a hint for b: its fresh token outlives the old delivery.
    run(h, [write(10, [[b"k0", live(b"newer")]], hints=[["b", b"k0"]])])
    run(h, [["hint_done", [["b", k, t] for k, t in tokens.items()]]])
    left = hints_of(h, ["b", "c"], 100) + hints_of(h, ["b", "c"], 100)
    assert sorted({(o, k) for o, k, _, _ in left}) == [
        ("b", b"k0"), ("c", b"k0"), ("c", b"k3"), ("c", b"k6"), ("c", b"k9")]
    assert next(r for o, k, _, r in left if (o, k) == ("b", b"k0")) == live(b"newer")
    assert h.gauges()["hints"] == 5


# Folds for hand-overs --------------------------------------------------------------------
def test_a_fold_is_bounded_and_resumes_where_it_stopped():
    h, engine = store()
    run(h, [write(0, [[b"key%02d" % i, live(b"v" * 40)] for i in range(60)])])
    size = len(b"key00") + len(live(b"v" * 40))
    # (partition, most keys, most bytes, trees built): each bound in turn stops a chunk.
    for p, keys, most, built in ((6, 2, 100 * size, False), (2, 9, 3 * size, True)):
        if built:
            build(h)
        lo, hi = hex_range(p, Q)
        want = {k for k, _ in engine.fold(int(lo, 16), int(hi, 16))}
        assert len(want) > 3, "some keys in the partition"
        got: list[bytes] = []
        with mock.patch.object(persistence, "FOLD_BYTES", most):
            while lo is not None:
                (dest, ev), = run(h, [["fold", "gossip", ["xfer", p], lo, hi, keys]])
                assert dest == "gossip" and ev[:2] == ["folded", ["xfer", p]]
                assert 0 < len(ev[2]) <= min(keys, 3)
                assert ev[3] is None or len(ev[2]) == min(keys, 3), "full unless the last"
                got += [k for k, v in ev[2] if v == engine.get(k)]
                assert ev[4] == (len(want) if built else None), "the tree's count, once built"
                lo = ev[3]
        assert sorted(got, key=key_hash) == sorted(want, key=key_hash)
        assert len(got) == len(want), "no key twice"


# Merkle trees ----------------------------------------------------------------------------
def tree_answer(h: persistence.Handler, partition: int, question: dict):
    (dest, ev), = run(h, [["tree", "gossip", "t", partition, question]])
    assert dest == "gossip" and ev[:2] == ["tree_answer", "t"]
    return ev[2]


ROOT = {"kind": "hashes", "level": 0, "indices": [0]}


def test_tree_answers_follow_every_write_once_the_build_is_done():
    h, engine = store()
    engine.write_batch([(b"before", live(b"x"))])  # stored before the stage started
    p = partition_of(b"before", Q)
    assert tree_answer(h, p, ROOT) is None, "no answer while the tree is being built"
    build(h)
    first = tree_answer(h, p, ROOT)
    assert first != [EMPTY]
    key = next(b"k%d" % i for i in range(100) if partition_of(b"k%d" % i, Q) == p)
    run(h, [write(1, [[key, live(b"v")]])])
    second = tree_answer(h, p, ROOT)
    assert second != first
    want = new_tree()
    for k in (b"before", key):
        want.insert(k, object_hash(engine.get(k)))
    assert second == [want.root()]
    segment = want.segment_of(key)
    assert tree_answer(h, p, {"kind": "segments", "level": 2, "indices": [segment]}) == {
        segment: want.segment_keys(segment)}
    inner = tree_answer(h, p, {"kind": "hashes", "level": 1, "indices": list(range(32))})
    assert inner == want.hashes(1, list(range(32)))
    run(h, [write(2, [[key, None]])])
    assert tree_answer(h, p, ROOT) == first, "a deletion leaves the tree as before"
    for bad in ({"kind": "hashes", "level": 9, "indices": [0]}, {"kind": "x"}, [1]):
        assert tree_answer(h, p, bad) is None, bad


# A node that has left: the seal -------------------------------------------------------
def sealing_fold(tag: int) -> list:
    """A leaving node's last question (``departure.Departure``): any key at all? None:
    seal the store."""
    return ["fold", "gossip", tag, "0", f"{KEY_SPACE:x}", 1, True]


def test_a_store_found_empty_by_the_departure_is_sealed_and_stores_nothing_after_a_restart(
        tmp_path):
    """Seed 1044 (harsh): n1 departed on an empty store, then a read repair from n4 (whose
    view still had n1 as a replica) stored a copy on n1; the reaper, which asks only nodes
    that have not left, reaped the key's tombstone, and n1's stray sweep handed the stale
    copy home: a value an acknowledged delete covered came back. Once the store answers
    "no key" to the departure's question it takes no write, ever, restarts included."""
    config = NodeConfig(node_id="t", engine="memory", partitions=Q, data_dir=str(tmp_path))
    engine = open_engine("memory", "", "data", "nosync")
    hints = open_engine("memory", "", "h", "nosync")

    def restarted() -> persistence.Handler:
        return persistence.Handler(config, engine=engine, hints=hints, incarnation_id="i",
                                   mint_epoch=1)
    h = restarted()
    run(h, [write(0, [[b"stray", live(b"v")]])])
    (_, answer), = run(h, [sealing_fold(1)])
    assert answer[:2] == ["folded", 1] and answer[2], "a key is left: no seal"
    (_, answer), = run(h, [write(2, [[b"late", live(b"w")]])])
    assert answer == ["written", 2, None, []], "not sealed: writes go on"
    h.on_forget(0.0, b"stray", live(b"v"))
    h.on_forget(0.0, b"late", live(b"w"))
    (_, answer), = run(h, [sealing_fold(3)])
    assert answer[:3] == ["folded", 3, []], "empty: sealed, and the node may depart"
    for handler in (h, restarted()):
        (_, answer), = run(handler, [write(4, [[b"k", live(b"stale")]], hints=[["b", b"k"]])])
        assert answer[:2] == ["written", 4] and "left" in answer[2], answer
        assert engine.get(b"k") is None and hints.count() == 0
        assert handler.gauges()["sealed"]
    (_, answer), = run(restarted(), [["fold", "gossip", 5, "0", f"{KEY_SPACE:x}", 1]])
    assert answer[:3] == ["folded", 5, []], "a plain fold is answered as before"


def test_a_replica_write_to_a_sealed_node_fails_and_leaves_no_copy(tmp_path):
    """The path of seed 1044: another node's ``rput`` (a read repair) reaches versioning
    as a ``sync``; on a sealed node its write is refused, and the answer is an error, so
    the sender's request fails over to a spare instead of counting this node."""
    config = NodeConfig(node_id="t", engine="memory", partitions=Q, data_dir=str(tmp_path))
    engine = open_engine("memory", "", "data", "nosync")
    store_ = persistence.Handler(config, engine=engine, incarnation_id="i", mint_epoch=1,
                                 hints=open_engine("memory", "", "h", "nosync"))
    run(store_, [sealing_fold(1)])
    v = versioning.Handler(config)
    v.handle_events([["sync", "gossip", "repair", b"k", live(b"stale"), None]], 0.0)
    answers = []
    for _ in range(10):
        out = v.take_outbox()
        answers += [e for d, e in out if d == "gossip"]
        batch = [e for d, e in out if d == "persistence"]
        if not batch:
            break
        for dest, event in run(store_, batch):
            assert dest == "versioning"
            v.handle_events([event], 0.0)
    (answer,) = answers
    assert answer[0] == "updated" and answer[1] == "repair" and "left" in answer[4], answer
    assert engine.get(b"k") is None


def test_a_plain_fold_of_an_empty_store_seals_nothing(tmp_path):
    config = NodeConfig(node_id="t", engine="memory", partitions=Q, data_dir=str(tmp_path))
    h = persistence.Handler(config, engine=open_engine("memory", "", "data", "nosync"),
                            hints=open_engine("memory", "", "h", "nosync"),
                            incarnation_id="i", mint_epoch=1)
    run(h, [["fold", "gossip", 1, "0", f"{KEY_SPACE:x}", 64]])
    (_, answer), = run(h, [write(2, [[b"k", live(b"v")]])])
    assert answer == ["written", 2, None, []]


# Tombstones ------------------------------------------------------------------------------
def test_a_reap_deletes_only_the_tombstone_the_check_saw():
    h, engine = store()
    build(h)
    run(h, [write(1, [[b"k", tomb()], [b"j", tomb()]], hints=[["c", b"j"]])])
    (_, checked), = run(h, [["check", "gossip", "c1", b"k", ["b", "c"]]])
    assert checked == ["checked", "c1", tomb(), False]
    (_, checked), = run(h, [["check", "gossip", "c2", b"j", ["b", "c"]]])
    assert checked == ["checked", "c2", tomb(), True], "a hint names j"
    # k changes between the check and the reap: the reap compares, and keeps it.
    run(h, [write(2, [[b"k", tomb("b#1")]])])
    assert run(h, [["reap", b"k", tomb()]]) == []
    assert engine.get(b"k") == tomb("b#1") and h.reaped == 0
    run(h, [["reap", b"k", tomb("b#1")], ["reap", b"j", tomb()]])
    assert engine.get(b"k") is None and engine.get(b"j") is None and h.reaped == 2
    for key in (b"k", b"j"):
        assert h.trees[partition_of(key, Q)].get(key) is None, "the tree forgets it too"
    (_, checked), = run(h, [["check", "gossip", "c3", b"k", []]])
    assert checked == ["checked", "c3", None, False]


# Stray keys (seda_dynamo.strays) ---------------------------------------------------------
def test_a_forget_deletes_a_stray_key_only_while_it_holds_the_bytes_handed_over():
    h, engine = store()
    build(h)
    run(h, [write(1, [[b"k", live(b"v")], [b"j", live(b"w")]])])
    # A write lands on k after its versions were read and handed over: k is kept.
    run(h, [write(2, [[b"k", live(b"v2")]])])
    assert run(h, [["forget", b"k", live(b"v")], ["forget", b"j", live(b"w")]]) == []
    assert engine.get(b"k") == live(b"v2") and engine.get(b"j") is None
    assert h.forgotten == 1 and h.trees[partition_of(b"j", Q)].get(b"j") is None
    # A writer that read j before the forget conflicts (the tree forgot j), and reads again.
    (_, written), = run(h, [write(3, [[b"j", live(b"x"), object_hash(live(b"w"))]])])
    assert written[3] == [b"j"] and engine.get(b"j") is None
    run(h, [["forget", b"j", live(b"w")], ["forget", "k", b"x"]])  # gone, ill-typed
    assert h.forgotten == 1 and h.errors == 0


def test_a_failed_group_commit_is_reported_to_every_writer():
    p = Pipeline()

    def broken(ops):
        raise OSError("disk full")

    p.engine.write_batch = broken
    for i in range(3):
        p.request({"op": "put", "key": b"k%d" % i, "value": b"v", "id": i})
    p.run()
    assert [r["error"] for r in p.replies] == ["unavailable"] * 3
