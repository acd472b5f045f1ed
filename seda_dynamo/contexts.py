"""The client's context: the version vector a read hands out and a write hands back.

Dynamo paper section 4.4 (data versioning): a get returns, with the versions it found, an
opaque *context* that the client passes back with its next put, so the put supersedes
exactly what was read. Here the context is the version vector of the DVVSet read
(``causality.join``); this module is its wire form (a version byte, then msgpack
``[[actor, counter], ...]`` sorted by actor) and the bounds held to every context that
comes from outside, from a client or in a peer's forwarded write. Pure functions, no IO.
"""

from __future__ import annotations

from typing import Any

import msgpack

from seda_dynamo.causality import (
    MAX_ACTOR_BYTES,
    VersionVector,
    check_actor,
    check_counter,
    unpack,
    vector_items,
)

CONTEXT_VERSION = 1
#: What a client's context may hold (docs/protocol.md). The store never hands out more:
#: a write whose result would hold more actors is refused, and a write never issues a
#: counter above ``MAX_CONTEXT_COUNTER`` (a fresh actor takes over instead), so every
#: context the store returns passes ``decode_context``.
MAX_CONTEXT_ACTORS = 1024
MAX_CONTEXT_COUNTER = 2**62


def encode_context(vv: VersionVector) -> bytes:
    """The opaque client context: version byte 0x01 + msgpack ``[[actor, counter], ...]``.

    No limit on the number of actors here: the store's own merges are never refused;
    what a client may send back is bounded by ``decode_context``."""
    items = vector_items(vv)
    return bytes([CONTEXT_VERSION]) + msgpack.packb([list(i) for i in items], use_bin_type=True)


def _context_item(actor: Any, n: Any) -> tuple[str, int]:
    """One ``actor: counter`` of a context from outside: what the store could issue."""
    actor, n = check_actor(actor), check_counter(n, 1)
    if n > MAX_CONTEXT_COUNTER:
        raise ValueError(f"counter of {actor[:40]!r} is above {MAX_CONTEXT_COUNTER}, "
                         "more than this store issues")
    return actor, n


def check_context(vv: Any) -> VersionVector:
    """A decoded context from outside (a peer's forwarded write): the same bounds as
    ``decode_context`` puts on a client's; ValueError otherwise."""
    if not isinstance(vv, dict) or len(vv) > MAX_CONTEXT_ACTORS:
        raise ValueError(f"a context is a map of at most {MAX_CONTEXT_ACTORS} actors")
    return dict(_context_item(actor, n) for actor, n in vv.items())


def decode_context(data: bytes) -> VersionVector:
    """Inverse of ``encode_context``; raises ValueError (only) on anything malformed."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if not data:
            raise ValueError("malformed context: empty")
        if data[0] != CONTEXT_VERSION:
            raise ValueError(f"malformed context: unknown version byte {data[0]:#04x}")
        data = data[1:]
    obj = unpack(data, "context", max_str_len=MAX_ACTOR_BYTES, max_bin_len=0,
                  max_array_len=MAX_CONTEXT_ACTORS)
    if not isinstance(obj, list):
        raise ValueError("malformed context: expected an array of [actor, counter] pairs")
    vv: VersionVector = {}
    prev = ""
    try:
        for item in obj:
            if not isinstance(item, list) or len(item) != 2:
                raise ValueError("expected [actor, counter] pairs")
            actor, n = _context_item(item[0], item[1])
            if actor <= prev:
                raise ValueError("actors are not sorted or repeat")
            vv[actor] = n
            prev = actor
    except ValueError as exc:
        raise ValueError(f"malformed context: {exc}") from None
    return vv
