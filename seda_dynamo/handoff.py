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
    partition: int
    target: str  # node id of the next owner
    cursor: int  # hash of the next key to read
    hi: int
    started: float
    seq: int = 0  # which chunk is in flight (acks of an older chunk are ignored)
    reading: bool = False  # a fold is outstanding
    outstanding: int = 0  # acks still awaited for the chunk in flight
    next_cursor: int | None = None
    deadline: float = 0.0
    keys_sent: int = 0
    bytes_sent: int = 0
    total: int | None = None  # keys in the partition, when known
    failed: bool = False

    def read(self, now: float) -> tuple[int, int, int, int]:
        """Ask for the next chunk: (seq, cursor, hi, keys) to fold."""
        self.seq += 1
        self.reading, self.failed = True, False
        self.deadline = now + CHUNK_DEADLINE
        return self.seq, self.cursor, self.hi, CHUNK_KEYS

    def chunk(self, seq: int, sizes: list[int], next_cursor: int | None,
              total: int | None) -> bool:
        """The folded chunk arrived (``sizes`` of its records); True if it is to be sent."""
        if seq != self.seq or not self.reading:
            return False
        self.reading = False
        self.total = total if total is not None else self.total
        self.next_cursor = next_cursor
        self.outstanding = len(sizes)
        self.keys_sent += len(sizes)
        self.bytes_sent += sum(sizes)
        return bool(sizes)

    def ack(self, seq: int, ok: bool) -> None:
        if seq != self.seq or self.reading:
            return
        if not ok:
            self.failed = True
        self.outstanding = max(0, self.outstanding - 1)

    @property
    def chunk_done(self) -> bool:
        return not self.reading and self.outstanding == 0

    @property
    def done(self) -> bool:
        return self.chunk_done and not self.failed and self.next_cursor is None \
            and self.seq > 0

    def advance(self, now: float) -> bool:
        """After a chunk: move the cursor on (or retry it); True if another read is due."""
        if self.failed or (not self.chunk_done and now > self.deadline):
            self.keys_sent -= self.outstanding  # resend the whole chunk
            self.outstanding, self.reading = 0, False
            return True
        if not self.chunk_done or self.next_cursor is None:
            return False
        self.cursor, self.next_cursor = self.next_cursor, None
        return True

    def progress(self, now: float) -> dict[str, object]:
        elapsed = max(now - self.started, 1e-6)
        return {"partition": self.partition, "to": self.target, "keys_sent": self.keys_sent,
                "keys_total": self.total, "bytes_sent": self.bytes_sent,
                "keys_per_sec": round(self.keys_sent / elapsed, 1),
                "seconds": round(elapsed, 1)}
