"""Tests for seda_dynamo.causality: examples, algebraic laws, a reference model, encoding."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from malformed import HOSTILE, packed

from seda_dynamo import causality as c
from seda_dynamo.causality import EMPTY, DVVSet, Occurred
from seda_dynamo.contexts import decode_context, encode_context

ACTORS = ("a", "b", "c")
FAST = settings(max_examples=150, deadline=None)

# -- strategies -------------------------------------------------------------------------

mixed_values = st.one_of(st.none(), st.binary(max_size=1), st.integers(0, 3))
wire_values = st.one_of(st.none(), st.binary(max_size=2))


@st.composite
def dvvsets(draw: st.DrawFn, vals: st.SearchStrategy = mixed_values) -> DVVSet:
    """Arbitrary well-formed DVVSets, including ones no real run could produce."""
    entries = []
    for actor in sorted(draw(st.sets(st.sampled_from(ACTORS)))):
        n = draw(st.integers(1, 5))
        k = draw(st.integers(0, min(n, 3)))
        entries.append((actor, n, tuple(draw(st.lists(vals, min_size=k, max_size=k)))))
    anon = c.sync_all(c.new(v) for v in draw(st.lists(vals, max_size=3)))
    return c.sync(DVVSet(tuple(entries)), anon)


def write(stored: DVVSet, value: object, actor: str, ctx: c.VersionVector | None = None):
    return c.update(c.new(value, ctx), stored, actor)


# -- examples ---------------------------------------------------------------------------


def test_blind_writes_through_one_actor_become_siblings() -> None:
    s = write(write(EMPTY, b"x", "a"), b"y", "a")
    assert c.values(s) == [b"y", b"x"]
    assert c.join(s) == {"a": 2}
    assert c.size(s) == 2


def test_writes_with_the_same_context_become_siblings() -> None:
    base = write(EMPTY, b"v0", "a")
    ctx = c.join(base)
    s1, s2 = write(base, b"x", "a", ctx), write(base, b"y", "b", ctx)
    assert c.compare(s1, s2) is Occurred.CONCURRENT
    assert sorted(c.values(c.sync(s1, s2))) == [b"x", b"y"]
    # A stale context through the same coordinator must not lose the first write either.
    s3 = write(s1, b"z", "a", ctx)
    assert c.values(s3) == [b"z", b"x"]
    assert c.join(s3) == {"a": 3}


def test_context_supersedes_exactly_what_was_read() -> None:
    s = c.sync(write(EMPTY, b"x", "a"), write(EMPTY, b"y", "b"))
    read = c.join(s)
    unseen = write(s, b"w", "c")  # concurrent with the read below
    s = write(c.sync(s, unseen), b"z", "a", read)
    assert sorted(c.values(s)) == [b"w", b"z"]
    assert c.less(unseen, s) and not c.less(s, unseen)


def test_new_dot_is_above_the_context_even_if_the_store_lags() -> None:
    s = write(EMPTY, b"x", "a", {"a": 5, "b": 0})
    assert s.entries == (("a", 6, (b"x",)),)
    other = DVVSet((("a", 5, (b"old",)),))
    assert c.values(c.sync(s, other)) == [b"x"]


def test_values_order_and_tombstones() -> None:
    a2 = write(write(EMPTY, b"1", "a"), b"2", "a")
    s = c.sync_all([c.new(b"anon"), write(EMPTY, None, "b"), a2])
    assert c.values(s) == [b"2", b"1", None, b"anon"]
    # the tombstone is superseded like any value; an undotted value cannot be
    assert c.values(write(s, b"3", "b", c.join(s))) == [b"3", b"anon"]


def test_update_keeps_stored_anonymous_and_stamps_several_values() -> None:
    stored = c.sync(write(EMPTY, b"s", "a"), c.new(b"pending"))
    clock = c.sync(c.new(b"q", {"a": 1}), c.new(b"p", {"a": 1}))
    s = c.update(clock, stored, "a")
    assert s.entries == (("a", 3, (b"q", b"p")),)
    assert s.anonymous == (b"pending",)


def test_update_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        c.update(EMPTY, EMPTY, "a")
    with pytest.raises(ValueError):
        c.update(c.new(b"x"), EMPTY, "")
    with pytest.raises(ValueError):
        c.new(b"x", {"a": -1})
    with pytest.raises(ValueError):
        c.new(b"x", {"a": True})
    assert c.new(b"x", {"a": 0}) == c.new(b"x")


def test_compare_examples() -> None:
    x = write(EMPTY, b"x", "a")
    assert c.compare(EMPTY, EMPTY) is Occurred.EQUAL
    assert c.compare(EMPTY, x) is Occurred.BEFORE and c.less(EMPTY, x)
    assert c.compare(x, EMPTY) is Occurred.AFTER
    assert c.compare(c.new(b"x"), c.new(b"y")) is Occurred.CONCURRENT
    assert c.equal(x, write(EMPTY, b"x", "a"))


def test_sync_of_inconsistent_replicas_still_converges() -> None:
    a, b = DVVSet((("a", 2, (b"p",)),)), DVVSet((("a", 2, (b"q", b"r")),))
    assert c.sync(a, b) == c.sync(b, a) == DVVSet((("a", 2, (b"p",)),))


def test_a_trusted_decode_of_damaged_bytes_still_raises_only_value_error() -> None:
    for obj in ([[["a", 1]], []], [[5], []], [None, []], [[["a", 1, None]], []]):
        with pytest.raises(ValueError):
            c.decode(msgpack.packb(obj), trusted=True)


def test_encoding_examples() -> None:
    assert c.encode(EMPTY) == b"\x92\x90\x90"
    assert c.decode(b"\x92\x90\x90") == EMPTY
    s = c.sync(write(EMPTY, None, "b"), c.new(b"v"))
    assert c.encode(s) == msgpack.packb([[["b", 1, [None]]], [b"v"]])
    with pytest.raises(ValueError):
        c.encode(write(EMPTY, 7, "a"))  # only bytes and None go on the wire


BAD_DVVSETS = HOSTILE + [
    packed([[], []]) + b"\xc0",  # trailing bytes
    packed([[], [], []]),
    packed({"entries": []}),
    packed([[["a", 0, []]], []]),
    packed([[["a", -1, []]], []]),
    packed([[["a", True, []]], []]),
    packed([[["a", 1.0, []]], []]),
    packed([[["a", 1, [b"x", b"y"]]], []]),  # more values than dots
    packed([[["a", 1, [7]]], []]),
    packed([[["", 1, []]], []]),
    packed([[[b"a", 1, []]], []]),
    packed([[["a" * 300, 1, []]], []]),
    packed([[["b", 1, []], ["a", 1, []]], []]),
    packed([[["a", 1, []], ["a", 2, []]], []]),
    packed([[["a", 1]], []]),
    packed([[], [b"y", b"x"]]),
    packed([[], [b"x", b"x"]]),
    packed([[], [1]]),
]


@pytest.mark.parametrize("data", BAD_DVVSETS)
def test_decode_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        c.decode(data)


@pytest.mark.parametrize("data", ["\x01\x90", None, 1, [b"\x01\x90"]])
def test_decode_rejects_non_bytes_with_value_error(data: object) -> None:
    with pytest.raises(ValueError):
        c.decode(data)  # type: ignore[arg-type]


# -- laws -------------------------------------------------------------------------------


@FAST
@given(dvvsets(), dvvsets(), dvvsets())
def test_compare_is_a_partial_order(a: DVVSet, b: DVVSet, x: DVVSet) -> None:
    assert c.compare(a, a) is Occurred.EQUAL
    ab, ba = c.compare(a, b), c.compare(b, a)
    flipped = {Occurred.BEFORE: Occurred.AFTER, Occurred.AFTER: Occurred.BEFORE}
    assert ba is flipped.get(ab, ab)
    assert c.less(a, b) == (ab is Occurred.BEFORE)
    assert c.equal(a, b) == (ab is Occurred.EQUAL) == c.equal(b, a)
    if ab is Occurred.EQUAL:  # antisymmetry: equal histories
        assert c.join(a) == c.join(b) and a.anonymous == b.anonymous
    if c.less(a, b) and c.less(b, x):
        assert c.less(a, x)
    # transitivity again, on a chain that is guaranteed to be ordered
    ab_, abx = c.sync(a, b), c.sync_all([a, b, x])
    assert c.compare(a, ab_) in (Occurred.BEFORE, Occurred.EQUAL)
    if c.less(a, ab_) and c.less(ab_, abx):
        assert c.less(a, abx)


@FAST
@given(dvvsets(), dvvsets(), dvvsets())
def test_sync_is_a_semilattice(a: DVVSet, b: DVVSet, x: DVVSet) -> None:
    ab = c.sync(a, b)
    assert ab == c.sync(b, a)
    assert c.sync(ab, x) == c.sync(a, c.sync(b, x)) == c.sync_all([x, b, a])
    assert c.sync(a, a) == a and c.sync(ab, a) == ab
    assert c.sync(a, EMPTY) == a == c.sync_all([a])
    for side in (a, b):
        assert c.compare(side, ab) in (Occurred.BEFORE, Occurred.EQUAL)
    assert c.size(ab) == len(c.values(ab))


@FAST
@given(dvvsets(wire_values))
def test_encode_round_trip(s: DVVSet) -> None:
    data = c.encode(s)
    assert c.decode(data) == s
    assert c.encode(c.decode(data)) == data
    assert c.decode(data, trusted=True) == s  # our own stored bytes: the fast path
    assert c.encode(s, trusted=True) == data
    vv = c.join(s)
    assert decode_context(encode_context(vv)) == vv


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_decode_raises_only_value_error_on_random_bytes(data: bytes) -> None:
    try:
        c.decode(data)
    except ValueError:
        pass


msgpack_objects = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.sampled_from(ACTORS) | st.text(max_size=3) | st.binary(max_size=3),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=2), inner, max_size=2),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(msgpack_objects)
def test_decode_raises_only_value_error_on_random_msgpack(obj: object) -> None:
    data = packed(obj)
    try:
        s = c.decode(data)
    except ValueError:
        pass
    else:
        assert c.encode(s) == data


@settings(max_examples=200, deadline=None)
@given(dvvsets(wire_values), st.data())
def test_decode_of_damaged_encodings_raises_only_value_error(
    s: DVVSet, data: st.DataObject
) -> None:
    blob = bytearray(c.encode(s))
    i = data.draw(st.integers(0, len(blob) - 1))
    if data.draw(st.booleans()):
        blob[i] = data.draw(st.integers(0, 255))
    else:
        del blob[i:]
    try:
        c.decode(bytes(blob))
    except ValueError:
        pass


# -- reference model --------------------------------------------------------------------

Dot = tuple[str, int]
REPLICAS = 3
POOL = (b"p", b"q", None)  # few values: equal values under different dots must all survive


@dataclass
class ModelReplica:
    siblings: set[tuple[Dot, object]] = field(default_factory=set)
    history: set[Dot] = field(default_factory=set)


def summary(history: set[Dot]) -> dict[str, int]:
    vv: dict[str, int] = {}
    for actor, k in history:
        vv[actor] = max(vv.get(actor, 0), k)
    return vv


def check_replica(s: DVVSet, rep: ModelReplica, contexts: dict[Dot, set[Dot]]) -> None:
    assert Counter(c.values(s)) == Counter(v for _, v in rep.siblings)
    assert {((a, n - i), v) for a, n, vals in s.entries for i, v in enumerate(vals)} \
        == rep.siblings
    vv = summary(rep.history)
    assert c.join(s) == vv
    # The history is downward closed per actor, so the summary describes it exactly ...
    assert rep.history == {(a, k) for a, n in vv.items() for k in range(1, n + 1)}
    # ... and the survivors are exactly the dots no seen write's context covers.
    alive = {d for d in rep.history if not any(d in contexts[e] for e in rep.history)}
    assert {d for d, _ in rep.siblings} == alive
    assert c.decode(c.encode(s)) == s


ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.sets(st.integers(0, REPLICAS - 1), max_size=2),
                  st.integers(0, REPLICAS - 1), st.sampled_from(POOL)),
        st.tuples(st.just("sync"), st.integers(0, REPLICAS - 1), st.integers(0, REPLICAS - 1)),
    ),
    max_size=25,
)


@settings(max_examples=250, deadline=None)
@given(ops)
def test_against_reference_model(script: list[tuple]) -> None:
    states = [EMPTY] * REPLICAS
    model = [ModelReplica() for _ in range(REPLICAS)]
    contexts: dict[Dot, set[Dot]] = {}
    actors = [f"r{i}" for i in range(REPLICAS)]
    for op in script:
        if op[0] == "write":
            _, readers, j, value = op  # read from `readers` (none: a blind write), write via j
            wire = encode_context(c.join(c.sync_all(states[r] for r in readers)))
            ctx = decode_context(wire)
            seen = set().union(*(model[r].history for r in readers))
            assert ctx == summary(seen)
            stored, rep = states[j], model[j]
            states[j] = c.update(c.new(value, ctx), stored, actors[j])
            assert c.sync(stored, states[j]) == states[j] == c.sync(states[j], stored)
            dot = (actors[j], summary(rep.history | seen).get(actors[j], 0) + 1)
            contexts[dot] = seen
            rep.siblings = {(d, v) for d, v in rep.siblings if d not in seen} | {(dot, value)}
            rep.history |= seen | {dot}
        else:
            _, i, j = op
            states[j] = c.sync(states[i], states[j])
            src, dst = model[i], model[j]
            dropped = (src.history - {d for d, _ in src.siblings}) | (
                dst.history - {d for d, _ in dst.siblings})
            dst.siblings = {(d, v) for d, v in src.siblings | dst.siblings if d not in dropped}
            dst.history |= src.history
        for s, rep in zip(states, model, strict=True):
            check_replica(s, rep, contexts)
    for x in states:  # on reachable states the history determines the contents
        for y in states:
            if c.compare(x, y) in (Occurred.BEFORE, Occurred.EQUAL):
                assert c.sync(x, y) == y
