"""Partition hand-over: one partition streamed from its owner to its next owner.

Dynamo paper section 4.9 (adding/removing storage nodes): when the ring plans that a
partition moves, its current owner reads the partition in chunks (a fold over its hash
range) and sends every key's versions to the next owner, which merges them; the owner
says the partition is handed over only when every key of the last chunk was
acknowledged. A ``Transfer`` is the value that tracks one such stream, with no IO: the
gossip stage asks persistence for chunks and the peer for merges, and feeds the answers.
A chunk that fails or times out is sent again from the same cursor (merges are
idempotent), and a restart of either side starts the partition over.

``Transfers`` is the gossip stage's hand-over duty: it starts the hand-overs the view
plans for this node (at most ``transfers_at_once``, and only while every target is up),
drives each ``Transfer`` with folds from persistence and merges at the targets, holds the
reads to ``transfer_keys_per_sec`` (a token bucket across all hand-overs) and to what the
foreground leaves (paper 6.5), and reports each finished partition (``handed_over``) so
the stage records it in the view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seda_dynamo import ids
from seda_dynamo.background import BackgroundShare
from seda_dynamo.duty import Cluster, Component, Duty, Emit, Route
from seda_dynamo.messages import Fold
from seda_dynamo.ring import partition_range

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


class Transfers(Component):
    """The hand-overs in progress, by partition."""

    def __init__(self, emit: Emit, cluster: Cluster, share: BackgroundShare, *,
                 partitions: int, at_once: int, keys_per_sec: int, entropy: ids.Entropy,
                 handed_over: Callable[[int], None], log: logging.Logger,
                 stage: str = "gossip") -> None:
        super().__init__(emit, stage)
        self.cluster = cluster
        self.share = share
        self.partitions, self.at_once, self.keys_per_sec = partitions, at_once, keys_per_sec
        self.entropy = entropy
        self.handed_over = handed_over
        self.log = log
        self.active: dict[int, Transfer] = {}
        self.finished = 0  # hand-overs completed
        self.bytes = 0
        self.tokens = 0.0
        self.tokens_at = 0.0

    def tick(self, now: float) -> None:
        """Start planned hand-overs up to the limit; resend chunks that stalled."""
        while self._round(now):
            pass  # hand-overs with nothing to stream finish at once: fill their places

    def progress(self, now: float) -> list[dict[str, object]]:
        return [t.progress(now) for t in self.active.values()]

    def busy(self) -> bool:
        """Whether a hand-over is in progress."""
        return bool(self.active)

    def _items(self, pairs: list[tuple[int, str]]) -> list[tuple[int, str, int, int]]:
        return [(pp, node, *partition_range(pp, self.partitions)) for pp, node in pairs]

    def _round(self, now: float) -> bool:
        view = self.cluster.view
        planned = dict(view.transfers_out())
        for p in [p for p, t in self.active.items() if planned.get(p) != t.next_owner]:
            del self.active[p]  # the plan changed under us
        peers, down = self.cluster.peers(), self.cluster.down
        for p, next_owner in planned.items():
            if len(self.active) >= self.at_once:
                break
            if p in self.active:
                continue
            items = self._items(view.transfer_plan(p))
            if all(node in peers and node not in down for _, node, _, _ in items):
                # Chunks numbered from a random start: a late ack meant for an earlier
                # hand-over (or this stage's previous process) matches none of this one.
                self.active[p] = Transfer(p, next_owner, items, now,
                                          seq=ids.call_id(self.entropy))
        finished = False
        for transfer in list(self.active.values()):
            finished |= self._step(transfer, now)
        return finished

    def _step(self, transfer: Transfer, now: float) -> bool:
        """Move one hand-over on; True when it has just finished."""
        if transfer.done:
            # Other moves may have taken effect while this one streamed: what this one
            # brings into preference lists is judged again, and any new range sent too.
            sent = {(pp, node) for pp, node, _, _ in transfer.items}
            more = self._items([(pp, node) for pp, node in
                                self.cluster.view.transfer_plan(transfer.partition)
                                if (pp, node) not in sent])
            if more:
                transfer.extend(more)
                return self._step(transfer, now)
            del self.active[transfer.partition]
            self.finished += 1
            self.log.info("partition %d handed over to %s (%d keys to %d ranges)",
                          transfer.partition, transfer.next_owner, transfer.keys_sent,
                          len(transfer.items))
            self.handed_over(transfer.partition)
            return True
        if transfer.due(now) and self._may_read(now):
            seq, lo, hi, keys = transfer.read(now)
            ref = Route(Duty.TRANSFER, (transfer.partition, seq)).ref()
            self.emit("persistence", Fold.wire(self.stage, ref, lo_hex=f"{lo:x}",
                                               hi_hex=f"{hi:x}", max_keys=keys))  # 128 bits
        return False

    def restarted(self, now: float, stage: str) -> None:
        """Folds that went down with the persistence stage are read again at the next
        tick (a new chunk number: a late answer to the old one is not taken)."""
        if stage == "persistence":
            for transfer in self.active.values():
                if transfer.state == "reading":
                    transfer.state = "idle"

    def _may_read(self, now: float) -> bool:
        """The throttles: what the foreground leaves, and ``keys_per_sec`` across all
        hand-overs (0: none)."""
        if not self.share.allows(now):
            return False
        rate = self.keys_per_sec
        if not rate:
            return True
        self.tokens = min(float(rate), self.tokens + rate * (now - self.tokens_at))
        self.tokens_at = now
        return self.tokens > 0

    def local(self, now: float, route: Route, answer: list[Any]) -> None:
        """Persistence's fold: a chunk of keys to send to the current target."""
        if answer[0] != "folded":
            return
        _, pairs, next_cursor, total = answer
        transfer = self.active.get(route.ident[0])
        if transfer is None:
            return
        self.tokens -= len(pairs)  # the throttles count keys actually sent
        self.share.spend(len(pairs))
        self.bytes += sum(len(k) + len(v) for k, v in pairs)
        cursor = int(next_cursor, 16) if next_cursor is not None else None
        if transfer.chunk(route.ident[1], [len(k) + len(v) for k, v in pairs], cursor, total):
            peer = self.cluster.peers().get(transfer.target)
            if peer is None:  # it left while the chunk was read: the plan is made again
                del self.active[transfer.partition]
                return
            for key, value in pairs:
                self.call(peer, route, ["rput", key, value, None], transfer.target)
        if self._step(transfer, now):
            self.tick(now)

    def answer(self, now: float, node: str, route: Route, payload: list[Any]) -> None:
        if payload[0] == "updated":
            self._ack(route, payload[1] is None, now)

    def unreachable(self, now: float, peer: str, route: Route) -> None:
        self._ack(route, False, now)

    def _ack(self, route: Route, ok: bool, now: float) -> None:
        transfer = self.active.get(route.ident[0])
        if transfer is not None:
            transfer.ack(route.ident[1], ok)
            if self._step(transfer, now):
                self.tick(now)
