"""Local storage engines for seda-dynamo.

This package is the *pluggable local persistence engine* of the Dynamo paper
(DeCandia et al., SOSP 2007, sections 4 and 5): each storage node keeps its
replicas in a local key/value store behind a small interface, and the paper's
default engine is Berkeley DB (BDB) Transactional Data Store.  Two engines
implement the :class:`Engine` protocol defined here:

* ``"bdb"`` -- :class:`seda_dynamo.engines.bdb.BDBEngine`, a transactional
  Berkeley DB B-tree (the default, durable engine);
* ``"memory"`` -- :class:`seda_dynamo.engines.memory.MemoryEngine`, a
  process-local, non-persistent engine for tests and benchmarks.

Records are ordered by the MD5 hash of their key (:func:`key_hash`), the same
hash that places keys on the consistent-hashing ring, so :meth:`Engine.fold`
over a hash range ``[lo, hi)`` enumerates exactly the keys of one ring range
(used for hand-off and Merkle-tree anti-entropy).

Engine modules are imported lazily by :func:`open_engine`; only
``seda_dynamo.engines.bdb`` imports ``berkeleydb``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Protocol, TypeAlias, runtime_checkable

from seda_dynamo.ring import key_hash  # the ring's placement: records sort by it

__all__ = [
    "DURABILITIES",
    "ENGINE_KINDS",
    "KEY_SPACE",
    "Engine",
    "KeyHash",
    "Op",
    "check_durability",
    "check_ops",
    "clamp_range",
    "hash_prefix",
    "key_hash",
    "open_engine",
]

KeyHash: TypeAlias = int
"""``int.from_bytes(hashlib.md5(key).digest(), "big")``, ``0 <= h < 2**128``."""

Op: TypeAlias = tuple[bytes, bytes | None]
"""One write: ``(key, value)`` is a put, ``(key, None)`` a delete."""

KEY_SPACE: int = 1 << 128
ENGINE_KINDS: tuple[str, ...] = ("bdb", "memory")
DURABILITIES: tuple[str, ...] = ("fsync", "nosync")


def hash_prefix(key: bytes) -> bytes:
    """The 16-byte big-endian MD5 digest of ``key`` (sorts like :func:`key_hash`)."""
    return hashlib.md5(key).digest()




def check_durability(durability: str) -> str:
    """Return ``durability`` if it is ``"fsync"`` or ``"nosync"``, else raise ValueError."""
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}; got {durability!r}")
    return durability


def check_ops(ops: list[Op]) -> list[Op]:
    """Validate a write batch up front so that no op can fail half-way for bad types."""
    checked: list[Op] = []
    for op in ops:
        key, value = op
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, got {type(key).__name__}")
        if value is not None and not isinstance(value, bytes):
            raise TypeError(f"value must be bytes or None, got {type(value).__name__}")
        checked.append((key, value))
    return checked


def clamp_range(lo: int, hi: int) -> tuple[int, int]:
    """Clamp a hash range to ``[0, 2**128]``; an empty range has ``lo >= hi``."""
    return max(int(lo), 0), min(int(hi), KEY_SPACE)


@runtime_checkable
class Engine(Protocol):
    """A local key/value store with group commit and MD5-ordered range scans."""

    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None."""
        ...

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """``[get(k) for k in keys]``, in the same order."""
        ...

    def write_batch(self, ops: list[Op]) -> None:
        """Group commit: apply all puts/deletes in order in ONE transaction.

        A later op on the same key wins; deleting an absent key is not an
        error.  All ops apply or none do (the transaction is aborted and the
        error re-raised).  With durability ``"fsync"`` the batch is on disk
        when this returns; with ``"nosync"`` it is committed, but the commit
        may be lost on power failure.
        """
        ...

    def put(self, key: bytes, value: bytes) -> None:
        """``write_batch([(key, value)])``."""
        ...

    def delete(self, key: bytes) -> None:
        """``write_batch([(key, None)])``; no error if ``key`` is absent."""
        ...

    def fold(self, lo: int, hi: int) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` with ``lo <= key_hash(key) < hi``, in hash order."""
        ...

    def count(self) -> int:
        """Number of keys stored."""
        ...

    def stats(self) -> dict[str, int | float | str]:
        """At least ``engine``, ``keys``, ``commits`` and ``bytes`` (approximate size)."""
        ...

    def close(self) -> None:
        """Release all resources; idempotent."""
        ...


class WriteBatchShortcuts:
    """``put`` and ``delete`` as one-op group commits, for every engine."""

    def write_batch(self, ops: list[Op]) -> None:
        raise NotImplementedError

    def put(self, key: bytes, value: bytes) -> None:
        self.write_batch([(key, value)])

    def delete(self, key: bytes) -> None:
        self.write_batch([(key, None)])


def open_engine(kind: str, path: str, name: str, durability: str) -> Engine:
    """Open the ``name`` database of engine ``kind`` in directory ``path``.

    ``kind`` is ``"bdb"`` or ``"memory"``; ``durability`` is ``"fsync"`` or
    ``"nosync"``.  Raises ValueError for anything else.
    """
    if kind not in ENGINE_KINDS:
        raise ValueError(f"unknown engine kind {kind!r}; allowed kinds: {', '.join(ENGINE_KINDS)}")
    check_durability(durability)
    if kind == "bdb":
        from seda_dynamo.engines.bdb import BDBEngine

        return BDBEngine(path, name, durability)
    from seda_dynamo.engines.memory import MemoryEngine

    return MemoryEngine(path, name, durability)
