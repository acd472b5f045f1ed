"""In-memory local persistence engine for seda-dynamo.

A non-durable stand-in for the *pluggable local persistence engine* of the
Dynamo paper (sections 4 and 5; the paper's default is Berkeley DB, see
:mod:`seda_dynamo.engines.bdb`).  It implements the same
:class:`seda_dynamo.engines.Engine` contract -- atomic group-commit batches,
MD5-ordered range folds -- so the contract tests and in-process simulations
can run without touching the disk.  Nothing survives :meth:`close` or the
process; ``path`` is accepted for interface compatibility and not used, and
``durability`` is validated but has no effect.

Values live in a dict keyed by the raw key; a sorted list of
``md5(key) + key`` entries gives hash-ordered folds.  A lock makes every
method safe to call from several threads. A deep copy is an engine of its own with
the same contents.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, insort
from collections.abc import Iterator

from seda_dynamo.engines import (
    KEY_SPACE,
    Op,
    WriteBatchShortcuts,
    check_durability,
    check_ops,
    clamp_range,
    hash_prefix,
)

_FOLD_CHUNK = 256  # entries copied per lock acquisition during a fold


class MemoryEngine(WriteBatchShortcuts):
    """A process-local dict plus a hash-sorted index; see the module docstring."""

    def __init__(self, path: str = "", name: str = "memory", durability: str = "nosync") -> None:
        self.path = path
        self.name = name
        self.durability = check_durability(durability)
        self._values: dict[bytes, bytes] = {}
        self._order: list[bytes] = []  # sorted md5(key) + key
        self._bytes = 0
        self._commits = 0
        self._lock = threading.Lock()
        self._closed = False

    def __deepcopy__(self, memo: dict[int, object]) -> MemoryEngine:
        """An engine holding what this one holds now, with a lock of its own (a
        simulator copies whole clusters, disks included)."""
        copied = MemoryEngine(self.path, self.name, self.durability)
        with self._lock:
            copied._values = dict(self._values)
            copied._order = list(self._order)
            copied._bytes, copied._commits = self._bytes, self._commits
            copied._closed = self._closed
        memo[id(self)] = copied
        return copied

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"memory engine {self.name!r} is closed")

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            self._check_open()
            return self._values.get(key)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        with self._lock:
            self._check_open()
            return [self._values.get(key) for key in keys]

    def write_batch(self, ops: list[Op]) -> None:
        checked = check_ops(ops)  # validated before anything is applied: all or nothing
        with self._lock:
            self._check_open()
            if not checked:
                return
            for key, value in checked:
                old = self._values.get(key)
                if value is None:
                    if old is not None:
                        del self._values[key]
                        self._bytes -= len(key) + len(old)
                        entry = hash_prefix(key) + key
                        del self._order[bisect_left(self._order, entry)]
                    continue
                if old is None:
                    insort(self._order, hash_prefix(key) + key)
                    self._bytes += len(key)
                else:
                    self._bytes -= len(old)
                self._values[key] = value
                self._bytes += len(value)
            self._commits += 1

    def fold(self, lo: int, hi: int) -> Iterator[tuple[bytes, bytes]]:
        lo, hi = clamp_range(lo, hi)
        if lo >= hi:
            return
        start = lo.to_bytes(16, "big")
        stop = hi.to_bytes(16, "big") if hi < KEY_SPACE else None
        while True:
            chunk: list[tuple[bytes, bytes]] = []
            with self._lock:
                self._check_open()
                i = bisect_left(self._order, start)
                for entry in self._order[i : i + _FOLD_CHUNK]:
                    if stop is not None and entry >= stop:
                        break
                    key = entry[16:]
                    chunk.append((key, self._values[key]))
            # Lock released while the caller consumes the chunk; writes that
            # happen meanwhile may or may not be seen.
            yield from chunk
            if len(chunk) < _FOLD_CHUNK:
                return
            last = chunk[-1][0]
            start = hash_prefix(last) + last + b"\x00"  # smallest entry after `last`

    def count(self) -> int:
        with self._lock:
            self._check_open()
            return len(self._values)

    def stats(self) -> dict[str, int | float | str]:
        with self._lock:
            return {
                "engine": "memory",
                "name": self.name,
                "durability": self.durability,
                "keys": len(self._values),
                "commits": self._commits,
                "bytes": self._bytes,
            }

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._values = {}
            self._order = []
            self._bytes = 0
