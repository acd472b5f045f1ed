"""The simulated clock: one queue of what happens next, ordered by (time, sequence), and
the hash of the trace of every delivery (a run's fingerprint: same seed, same hash).

No wall clock anywhere: time moves only when the next entry is popped. Entries at the
same time run in the order they were scheduled, so the order is decided by the seed
alone (never by a set's or a dict's hash order). Serves the simulator of the Dynamo
paper's failure handling (sections 4.6-4.8); pure, no IO.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from typing import Any


class Clock:
    """The event queue and the simulated time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list[tuple[float, int, tuple[Any, ...]]] = []
        self.seq = 0

    def at(self, when: float, *entry: Any) -> None:
        """Schedule ``entry`` at simulated time ``when`` (never in the past)."""
        self.seq += 1
        heapq.heappush(self.heap, (max(when, self.now), self.seq, entry))

    def time(self) -> float:
        """The simulated time: what a handler is given as its wall clock."""
        return self.now

    def after(self, delay: float, *entry: Any) -> None:
        self.at(self.now + delay, *entry)

    def next_time(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def pop(self) -> tuple[Any, ...]:
        """The next entry; the clock moves to its time."""
        when, _, entry = heapq.heappop(self.heap)
        self.now = when
        return entry


class Trace:
    """A running hash of every delivery: time, node, destination, event bytes."""

    def __init__(self) -> None:
        self.hash = hashlib.blake2b(digest_size=16)
        self.deliveries = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> Trace:
        """A copy that goes on from the same hash (a copied cluster's trace)."""
        copied = Trace.__new__(Trace)
        copied.hash = self.hash.copy()
        copied.deliveries = self.deliveries
        return copied

    def record(self, now: float, node: str, dest: str, data: bytes) -> None:
        self.deliveries += 1
        self.hash.update(struct.pack("<dI", now, len(data)))
        self.hash.update(f"{node}\0{dest}\0".encode())
        self.hash.update(data)

    def hexdigest(self) -> str:
        return self.hash.hexdigest()
