"""Merkle hash trees: incremental == rebuilt, and the level-by-level sans-IO exchange."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.merkle import (
    EMPTY,
    Exchange,
    HashTree,
    Question,
    answer,
    object_hash,
    segment_of,
)

SMALL = {"segments": 64, "width": 4}

keys = st.binary(min_size=0, max_size=6)
hashes = st.sampled_from([object_hash(bytes([i])) for i in range(4)])
contents = st.dictionaries(keys, hashes, max_size=40)
ops = st.lists(st.one_of(st.tuples(st.just("put"), keys, hashes),
                         st.tuples(st.just("del"), keys, st.none()),
                         st.tuples(st.just("update"), st.none(), st.none())), max_size=60)


def build(items: dict[bytes, bytes], **shape: int) -> HashTree:
    return HashTree.from_items(items.items(), **shape)


def wire(obj):
    """Through msgpack and back, as the network would carry it."""
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False,
                           strict_map_key=False)


def run(local: HashTree, remote: HashTree, **kwargs: int) -> Exchange:
    exchange = Exchange(local, **kwargs)
    req = exchange.start()
    while req is not None:
        req = Question.from_wire(wire(req.to_wire()))
        req = exchange.feed(wire(answer(remote, req)))
    assert exchange.done
    return exchange


def expected_diff(a: dict[bytes, bytes], b: dict[bytes, bytes]) -> list[bytes]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


@given(ops)
def test_incremental_equals_rebuilt(script):
    tree, final = HashTree(**SMALL), {}
    for op, key, value in script:
        if op == "put":
            tree.insert(key, value)
            final[key] = value
        elif op == "del":
            tree.delete(key)
            final.pop(key, None)
        else:
            tree.update()
    tree.update()
    fresh = build(final, **SMALL)
    assert tree.root() == fresh.root()
    assert len(tree) == len(fresh) == len(final)
    for level in range(tree.levels()):
        idx = list(range(4**level))
        assert tree.hashes(level, idx) == fresh.hashes(level, idx)
    assert (tree.root() == EMPTY) == (not final)


@given(contents, st.randoms(use_true_random=False))
def test_insertion_order_does_not_matter(items, rnd):
    pairs = list(items.items())
    rnd.shuffle(pairs)
    assert HashTree.from_items(pairs, **SMALL).root() == build(items, **SMALL).root()


@settings(max_examples=60)
@given(contents, contents, st.booleans())
def test_exchange_finds_exactly_the_differences(a, b, small_batches):
    kwargs = {"batch": 3, "segment_batch": 2} if small_batches else {}
    local, remote = build(a, **SMALL), build(b, **SMALL)
    exchange = run(local, remote, **kwargs)
    assert exchange.differences == expected_diff(a, b)
    for key, kind in exchange.kinds.items():
        assert kind == ("missing_local" if key not in a
                        else "missing_remote" if key not in b else "different")
    if a == b:
        assert exchange.round_trips == 1 and local.root() == remote.root()


@settings(max_examples=60)
@given(contents)
def test_equal_contents_one_round_trip(items):
    exchange = run(build(items, **SMALL), build(dict(reversed(items.items())), **SMALL))
    assert exchange.differences == [] and exchange.round_trips == 1
    assert exchange.bytes_exchanged > 0


def test_defaults_find_the_differences():
    a = {b"key-%d" % i: object_hash(b"v%d" % i) for i in range(2000)}
    b = dict(a)
    b[b"key-7"] = object_hash(b"changed")
    del b[b"key-8"]
    b[b"extra"] = object_hash(b"x")
    local, remote = build(a), build(b)
    assert local.levels() == 5
    exchange = run(local, remote)
    assert exchange.differences == sorted([b"key-7", b"key-8", b"extra"])
    assert exchange.kinds == {b"key-7": "different", b"key-8": "missing_remote",
                              b"extra": "missing_local"}
    assert exchange.round_trips == local.levels() + 1  # every level, then the segments
    assert exchange.bytes_exchanged < 4096
    same = run(build(a), build(dict(sorted(a.items(), reverse=True))))
    assert same.differences == [] and same.round_trips == 1


def test_one_side_empty_defaults():
    a = {b"k%d" % i: object_hash(b"%d" % i) for i in range(50)}
    assert run(HashTree(), build(a)).differences == sorted(a)
    assert run(build(a), HashTree()).differences == sorted(a)


def test_empty_root_is_stable_and_deleting_absent_keeps_root():
    assert HashTree().root() == HashTree(**SMALL).root() == HashTree(1, 2).root() == EMPTY
    tree = HashTree(**SMALL)
    tree.delete(b"absent")
    assert tree.root() == EMPTY and tree.dirty == 0
    tree.insert(b"a", object_hash(b"1"))
    tree.insert(b"b", object_hash(b"2"))
    root = tree.root()
    assert root != EMPTY
    tree.delete(b"absent")
    assert tree.root() == root
    tree.delete(b"a")
    tree.delete(b"b")
    assert tree.root() == EMPTY and len(tree) == 0


def test_update_is_incremental():
    tree = build({b"k%d" % i: object_hash(b"%d" % i) for i in range(500)})
    tree.insert(b"k1", object_hash(b"new"))
    tree.insert(b"k1", object_hash(b"newer"))
    tree.insert(b"k2", object_hash(b"2"))  # unchanged: not dirty
    assert tree.dirty == 1
    tree.update()
    assert tree.dirty == 0


def test_documented_segment_formula_and_object_hash():
    key = b"some key"
    assert segment_of(key, 4096) == int.from_bytes(hashlib.sha1(key).digest()[:8], "big") % 4096
    tree = HashTree(**SMALL)
    tree.insert(key, object_hash(b"v"))
    assert tree.segment_keys(tree.segment_of(key)) == {key: object_hash(b"v")}
    assert len(object_hash(b"v")) == 16 and object_hash(b"v") != object_hash(b"w")


def test_bad_shapes_and_requests_raise_value_error():
    with pytest.raises(ValueError):
        HashTree(segments=60, width=4)
    with pytest.raises(ValueError):
        HashTree(segments=64, width=1)
    tree = HashTree(**SMALL)
    for bad in (Question("hashes", 9, (0,)), Question("hashes", 1, (4,)),
                Question("segments", 3, (64,)), Question("nope", 0, (0,))):
        with pytest.raises(ValueError):
            answer(tree, bad)
    for body in (None, {"kind": "hashes", "level": "0", "indices": []},
                 {"kind": "hashes", "level": 0, "indices": ["x"]}):
        with pytest.raises(ValueError):
            Question.from_wire(body)
    exchange = Exchange(tree)
    with pytest.raises(RuntimeError):
        exchange.feed([])
    exchange.start()
    with pytest.raises(ValueError):
        exchange.feed([EMPTY, EMPTY])
    with pytest.raises(TypeError):
        tree.insert("str key", EMPTY)
