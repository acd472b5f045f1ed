"""Helpers the stage tests share for the persistence stage's events: records as the
versioning stage stores them (encoded DVVSets, paper section 4.4), the hash range of a
partition as a fold names it, and finishing the start-up Merkle tree build (4.7).
"""

from __future__ import annotations

from seda_dynamo import causality
from seda_dynamo.ring import partition_range
from stages import persistence


def live(value: bytes, actor: str = "a#1") -> bytes:
    """A stored record holding one live version of ``value``, stamped by ``actor``."""
    return causality.encode(causality.update(causality.new(value), causality.EMPTY, actor))


def tomb(actor: str = "a#1") -> bytes:
    """A stored record holding one tombstone (a reapable record)."""
    return causality.encode(causality.update(causality.new(None), causality.EMPTY, actor))


def hex_range(partition: int, partitions: int) -> tuple[str, str]:
    """A partition's hash range as a ``fold`` event names it (hex: beyond msgpack ints)."""
    lo, hi = partition_range(partition, partitions)
    return f"{lo:x}", f"{hi:x}"


def build(h: persistence.Handler) -> None:
    """Let the start-up tree build finish (it runs between batches, on ticks)."""
    while h.building is not None:
        h.tick(0.0)
