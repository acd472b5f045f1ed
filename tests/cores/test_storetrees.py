"""The Merkle trees over a node's store (``seda_dynamo.storetrees``, paper 4.7): however
writes and deletes interleave with the start-up build, the built trees are exactly the
trees of what the store holds; a key is known to the trees once the build passed it or
a write touched it; a partition's tree answers only once built.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo.antientropy import new_tree
from seda_dynamo.engines import KEY_SPACE, key_hash
from seda_dynamo.merkle import EMPTY, object_hash
from seda_dynamo.ring import partition_of
from seda_dynamo.storetrees import StoreTrees

Q = 4
KEYS = [b"k%d" % i for i in range(12)]


def roots(trees: StoreTrees) -> list[bytes]:
    return [t.root() if (t := trees.trees.get(p)) is not None else EMPTY for p in range(Q)]


def want(store: dict[bytes, bytes]) -> list[bytes]:
    trees = [new_tree() for _ in range(Q)]
    for key, value in store.items():
        trees[partition_of(key, Q)].insert(key, object_hash(value))
    return [t.root() if len(t) else EMPTY for t in trees]


@given(st.dictionaries(st.sampled_from(KEYS), st.binary(min_size=1, max_size=2)),
       st.lists(st.tuples(st.sampled_from(["write", "delete", "build"]),
                          st.sampled_from(KEYS), st.binary(min_size=1, max_size=2)),
                max_size=30),
       st.integers(1, 4))
def test_the_built_trees_are_the_store_s_whatever_was_written_meanwhile(start, steps, chunk):
    store = dict(start)
    records = iter(sorted(start.items(), key=lambda kv: key_hash(kv[0])))  # the fold
    trees, done = StoreTrees(Q), False
    for step, key, value in steps:
        if step == "build" and not done:
            done = trees.build(records, chunk)
        elif step == "write":
            store[key] = value
            trees.index([(key, value)], building=not done)
        elif step == "delete":
            store.pop(key, None)
            trees.index([(key, None)], building=not done)
        known, held = trees.held(key)
        if known:
            assert held == (object_hash(store[key]) if key in store else None)
    while not done:
        done = trees.build(records, chunk)
    assert trees.built_upto == KEY_SPACE and not trees.touched
    assert roots(trees) == want(store)
    assert all(trees.ready(p) for p in range(Q))


def test_nothing_is_known_or_ready_before_the_build_reaches_it():
    trees = StoreTrees(Q)
    assert not trees.ready(0) and trees.held(b"k1") == (False, None)
    trees.index([(b"k1", b"v")], {b"k1": b"given"}, building=True)
    assert trees.held(b"k1") == (True, b"given"), "a write's hash is taken as given"
    assert trees.touched == {b"k1"}
    assert trees.build(iter([]), 5) and trees.ready(Q - 1)
    assert trees.held(b"k2") == (True, None), "built: a key not in the trees holds nothing"
