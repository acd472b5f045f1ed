"""Partition hand-over: one partition streamed from its owner to its next owner.

Dynamo paper section 4.9 (adding/removing storage nodes): when the ring plans that a
partition moves, its current owner reads the partition in chunks (a fold over its hash
range) and sends every key's versions to the next owner, which merges them; the owner
says the partition is handed over only when every key of the last chunk was
acknowledged. A ``Transfer`` is the value that tracks one such stream, with no IO: the
gossip stage asks persistence for chunks and the peer for merges, and feeds the answers.
A chunk that fails or times out is sent again from the same cursor (merges are
idempotent), and a restart of either side starts the partition over.
"""

from __future__ import annotations

from dataclasses import dataclass

CHUNK_KEYS = 256
CHUNK_BYTES = 4 * 1024 * 1024
CHUNK_DEADLINE = 10.0


@dataclass(slots=True)
class Transfer:
    """Hand-over of ``partition`` to ``next_owner``: each item is a hash range of keys to
    stream to one node, ``(partition whose keys, target node, lo, hi)``.

    States: *idle* (a read is due), *reading* (a fold is outstanding), *sending* (acks are
    outstanding); ``done`` once every item is streamed and acknowledged.
    """

    partition: int
    next_owner: str
    items: list[tuple[int, str, int, int]]
    started: float
    item: int = 0
    cursor: int = 0  # hash of the next key to read in the current item
    state: str = "idle"
    seq: int = 0  # the chunk in flight (answers about an older chunk are ignored)
    outstanding: int = 0
    chunk_keys: int = 0
    failed: bool = False
    next_cursor: int | None = None
    deadline: float = 0.0
    keys_sent: int = 0
    bytes_sent: int = 0
    total: int | None = None  # keys in the range being streamed, when known

    def __post_init__(self) -> None:
        if self.items:
            self.cursor = self.items[0][2]

    @property
    def done(self) -> bool:
        return self.item >= len(self.items)

    @property
    def target(self) -> str:
        return self.items[self.item][1]

    def extend(self, items: list[tuple[int, str, int, int]]) -> None:
        """More ranges to stream before the hand-over is done."""
        was_done = self.done
        self.items.extend(items)
        if was_done:
            self.state, self.cursor = "idle", items[0][2]

    def due(self, now: float) -> bool:
        """Is a read due now? A chunk that stalled past its deadline is sent again."""
        if self.done:
            return False
        if self.state != "idle" and now > self.deadline:
            self.keys_sent -= self.outstanding
            self.state, self.outstanding, self.failed = "idle", 0, False
        return self.state == "idle"

    def read(self, now: float) -> tuple[int, int, int, int]:
        """Start the next chunk: (seq, lo, hi, keys) to fold."""
        self.seq += 1
        self.state, self.deadline = "reading", now + CHUNK_DEADLINE
        return self.seq, self.cursor, self.items[self.item][3], CHUNK_KEYS

    def chunk(self, seq: int, sizes: list[int], next_cursor: int | None,
              total: int | None) -> bool:
        """The folded chunk (the sizes of its records); True if it is to be sent."""
        if seq != self.seq or self.state != "reading":
            return False
        self.total = total if total is not None else self.total
        if not sizes:
            self._range_done()
            return False
        self.state, self.outstanding, self.failed = "sending", len(sizes), False
        self.chunk_keys = len(sizes)
        self.next_cursor = next_cursor
        self.keys_sent += len(sizes)
        self.bytes_sent += sum(sizes)
        return True

    def ack(self, seq: int, ok: bool) -> None:
        if seq != self.seq or self.state != "sending":
            return
        self.failed = self.failed or not ok
        self.outstanding -= 1
        if self.outstanding:
            return
        self.state = "idle"
        if self.failed:  # read and send the same chunk again, from the same cursor
            self.keys_sent -= self.chunk_keys
        elif self.next_cursor is not None:
            self.cursor = self.next_cursor
        else:
            self._range_done()

    def _range_done(self) -> None:
        self.state = "idle"
        self.item += 1
        if not self.done:
            self.cursor = self.items[self.item][2]

    def progress(self, now: float) -> dict[str, object]:
        elapsed = max(now - self.started, 1e-6)
        return {"partition": self.partition, "to": self.next_owner,
                "ranges_done": self.item, "ranges": len(self.items),
                "keys_sent": self.keys_sent, "keys_total": self.total,
                "bytes_sent": self.bytes_sent,
                "keys_per_sec": round(self.keys_sent / elapsed, 1),
                "seconds": round(elapsed, 1)}
