"""Tests for seda_dynamo.contexts: the client context's wire form and its bounds."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from malformed import HOSTILE, packed

from seda_dynamo.contexts import (
    MAX_CONTEXT_ACTORS,
    MAX_CONTEXT_COUNTER,
    decode_context,
    encode_context,
)


def test_context_encoding_examples() -> None:
    assert encode_context({}) == b"\x01\x90"
    assert encode_context({"b": 2, "a": 1}) == b"\x01" + msgpack.packb([["a", 1], ["b", 2]])
    assert decode_context(encode_context({"b": 2, "a": 1})) == {"a": 1, "b": 2}


BAD_CONTEXTS = HOSTILE + [
    b"\x02\x90",
    b"\x00\x90",
    b"\x01",
    b"\x01\x90\x90",  # trailing bytes
    b"\x01" + b"\x91" * 5000 + b"\x90",
    b"\x01" + packed({"a": 1}),
    b"\x01" + packed([["a", 1], ["a", 2]]),
    b"\x01" + packed([["b", 1], ["a", 2]]),
    b"\x01" + packed([["a", 0]]),
    b"\x01" + packed([["a", -3]]),
    b"\x01" + packed([["a", False]]),
    b"\x01" + packed([["a", 1.5]]),
    b"\x01" + packed([["a", "1"]]),
    b"\x01" + packed([["a", 1, 2]]),
    b"\x01" + packed([[b"a", 1]]),
    b"\x01" + packed([["", 1]]),
    b"\x01" + packed([["a" * 300, 1]]),
    b"\x01" + packed([[f"n{i:05}", 1] for i in range(MAX_CONTEXT_ACTORS + 1)]),
    b"\x01" + packed("a"),
    b"\x01" + packed(None),
    b"\x01" + b"\xdd\xff\xff\xff\xff",
]


@pytest.mark.parametrize("data", BAD_CONTEXTS)
def test_decode_context_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_context(data)


@pytest.mark.parametrize("data", ["\x01\x90", None, 1, [b"\x01\x90"]])
def test_decode_context_rejects_non_bytes_with_value_error(data: object) -> None:
    with pytest.raises(ValueError):
        decode_context(data)  # type: ignore[arg-type]


def test_encode_context_rejects_what_decode_would() -> None:
    for vv in ({"": 1}, {"a": -1}, {"a": 1.0}, {1: 1}):
        with pytest.raises(ValueError):
            encode_context(vv)  # type: ignore[arg-type]


#: Version vectors as a client may hold them: any actors, counters up to the limit.
vectors = st.dictionaries(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8),
    st.integers(1, MAX_CONTEXT_COUNTER), max_size=8)


@settings(max_examples=150, deadline=None)
@given(vectors)
def test_encode_context_round_trip(vv: dict[str, int]) -> None:
    assert decode_context(encode_context(vv)) == vv


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_decode_context_raises_only_value_error_on_random_bytes(data: bytes) -> None:
    for blob in (data, b"\x01" + data):
        try:
            decode_context(blob)
        except ValueError:
            pass


msgpack_objects = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.sampled_from(("a", "b", "c")) | st.text(max_size=3) | st.binary(max_size=3),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=2), inner, max_size=2),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(msgpack_objects)
def test_decode_context_raises_only_value_error_on_random_msgpack(obj: object) -> None:
    packed_obj = packed(obj)
    try:
        vv = decode_context(b"\x01" + packed_obj)
    except ValueError:
        pass
    else:
        assert encode_context(vv) == b"\x01" + packed_obj
