"""Stray keys: what a node holds for partitions it is not a replica of, handed home.

Dynamo paper sections 4.6 and 4.9: a node may hold keys of a partition whose preference
list it is not on. It acknowledged them as a one-node cluster before an operator joined
it to another; it owned the partition before a hand-over (4.9: the new owner got a copy,
the old one kept its own); it took them as a fallback (4.6). Hinted handoff covers only
the last, and only for keys that carry a hint. ``Strays`` is the gossip stage's duty that
sweeps, in a settled ring (no move pending, no hand-over running), the partitions this
node is not a replica of: it folds each from persistence in chunks, sends every key's
versions to each of the partition's replicas (``rput``, a merge, so sending twice is
harmless), and once every replica acknowledged a key tells persistence to forget it
only if it still holds exactly the bytes it sent (``forget``, a compare-and-delete: a
write that landed meanwhile keeps the key, for the next sweep). Riak calls this a
fallback vnode's handoff.

A sweep starts when the settled ring differs from the one last swept whole, every
``SWEEP_EVERY`` seconds, and ``RETRY_EVERY`` seconds after hinted handoff delivered a
hint (the fallback's copy of the key is then stray); partitions a sweep skipped (a
replica down) or did not finish (an error, a deadline) are swept again ``RETRY_EVERY``
seconds later. Reads draw on the same throttles as hand-overs (``transfer_keys_per_sec``
and what the foreground leaves: paper 6.5). Every read and every chunk of merges has a
deadline; a change of the ring ends the sweep, and late answers are ignored. Pure: no
clock, no IO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from seda_dynamo import ids
from seda_dynamo.background import BackgroundShare
from seda_dynamo.duty import Cluster, Component, Duty, Emit, Route
from seda_dynamo.membership import View
from seda_dynamo.messages import Fold, Forget
from seda_dynamo.ring import partition_range

SWEEP_EVERY = 60.0  # seconds between sweeps of a ring already swept whole
RETRY_EVERY = 5.0  # seconds before partitions skipped or unfinished are swept again
CHUNK_KEYS = 64
DEADLINE = 10.0  # seconds a read, or a chunk's merges, may take


@dataclass(slots=True)
class Chunk:
    """Keys read from one partition, each waiting for its replicas' acknowledgements."""

    seq: int
    partition: int
    deadline: float
    next_lo: int | None  # where the partition goes on (None: this was its last chunk)
    reading: bool = True
    waiting: dict[bytes, tuple[bytes, set[str]]] = field(default_factory=dict)
    failed: bool = False


def stray_partitions(view: View, n: int) -> dict[int, tuple[str, ...]] | None:
    """The partitions whose preference list does not hold this node, with their
    replicas; None unless the ring is settled (nothing is stray while moves are
    pending: the plan decides who will hold what)."""
    ring = view.ring
    if ring is None or ring.next_owners and ring.next_owners != ring.owners:
        return None
    n = min(n, len(ring.members))  # settled: the effective ring is the ring itself
    lists = {p: tuple(ring.preference_list(p, n)) for p in range(ring.partitions)}
    return {p: replicas for p, replicas in lists.items() if view.me not in replicas}


RingKey = tuple[int, tuple[str, ...]]


def ring_key(view: View) -> RingKey | None:
    """What tells one ring from another: its epoch and owners (rings that raced may
    share an epoch)."""
    return None if view.ring is None else (view.ring.epoch, view.ring.owners)


class Strays(Component):
    """The sweep in progress: partitions left to read and the chunk being handed."""

    def __init__(self, emit: Emit, cluster: Cluster, share: BackgroundShare, *, n: int,
                 keys_per_sec: int, busy: Callable[[], bool], entropy: ids.Entropy,
                 hints_delivered: Callable[[], int] = lambda: 0,
                 stage: str = "gossip") -> None:
        super().__init__(emit, stage)
        self.cluster, self.share, self.n = cluster, share, n
        self.keys_per_sec, self.busy = keys_per_sec, busy
        self.hints_delivered, self.delivered = hints_delivered, 0
        self.dirty = False  # a hint was delivered since the last full sweep started
        self.seq = ids.call_id(entropy)  # a late answer for an earlier process matches none
        self.epoch: RingKey | None = None  # the ring of the sweep in progress
        self.swept_epoch: RingKey | None = None  # the last ring swept whole
        self.last_epoch: RingKey | None = None  # the ring of the last sweep that ended
        self.todo: list[int] = []
        self.cursor = 0  # hash of the next key to read in ``todo[0]``
        self.retry: set[int] = set()
        self.retry_at = self.sweep_at = 0.0
        self.chunk: Chunk | None = None
        self.cached: tuple[Any, dict[int, tuple[str, ...]] | None] = (None, None)
        self.tokens = self.tokens_at = 0.0
        self.handed = 0  # keys handed to every replica and forgotten here
        self.sweeps = 0

    @property
    def swept(self) -> bool:
        """Is the current ring swept whole, and no sweep running? (A simulator's runs wait
        for it before they read back: no key is left outside its preference list.)"""
        return self.epoch is None and self.swept_epoch == ring_key(self.cluster.view)

    def tick(self, now: float) -> None:
        """Start a sweep when one is due; move the one in progress on."""
        strays = None if self.busy() else self._strays()
        epoch = ring_key(self.cluster.view)
        if strays is None or epoch is None or (self.epoch is not None and epoch != self.epoch):
            self._end()  # unsettled, or the ring changed under the sweep
            return
        if self.hints_delivered() != self.delivered:  # a fallback's copies are stray now
            self.delivered = self.hints_delivered()
            self.again(now)
        if self.chunk is not None and now > self.chunk.deadline:
            self._next_partition(failed=True)
        if self.epoch is None:
            self._start(now, epoch, strays)
        self._advance(now)

    def again(self, now: float) -> None:
        """Sweep again within ``RETRY_EVERY`` seconds: stray keys may have come since the
        last sweep (a hint delivered; a leaving node's store still holds keys)."""
        self.swept_epoch, self.dirty = None, True
        self.sweep_at = min(self.sweep_at, now + RETRY_EVERY)

    def _advance(self, now: float) -> None:
        """Read the next partition's next chunk, unless one is in hand: skip partitions
        with a replica down, end the sweep after the last one."""
        strays = self._strays()
        if strays is None or ring_key(self.cluster.view) != self.epoch:
            return  # the next tick ends the sweep
        peers, down = self.cluster.peers(), self.cluster.down
        while self.epoch is not None and self.chunk is None:
            if not self.todo:
                self._finished(now)
            elif self.todo[0] not in strays or any(
                    node not in peers or node in down for node in strays[self.todo[0]]):
                self._next_partition(failed=True)  # a replica down: later
            elif self._may_read(now):
                self._read(now)
            else:
                return

    def _strays(self) -> dict[int, tuple[str, ...]] | None:
        """``stray_partitions`` of the view, computed once per ring."""
        view = self.cluster.view
        key = (ring_key(view), view.me)
        if self.cached[0] != key:
            self.cached = (key, stray_partitions(view, self.n))
        return self.cached[1]

    def _start(self, now: float, epoch: RingKey, strays: dict[int, tuple[str, ...]]) -> None:
        if epoch != self.last_epoch or now >= self.sweep_at:
            todo = sorted(strays)
            self.retry.clear()
            self.dirty = False
        elif self.retry and now >= self.retry_at:
            todo, self.retry = sorted(self.retry & strays.keys()), set()
        else:
            return
        self.epoch, self.todo, self.sweeps = epoch, todo, self.sweeps + 1
        if todo:
            self.cursor = partition_range(todo[0], self.cluster.view.partitions)[0]

    def _finished(self, now: float) -> None:
        if not self.retry and not self.dirty:
            self.swept_epoch = self.epoch
        self.last_epoch, self.epoch = self.epoch, None
        self.sweep_at = now + (RETRY_EVERY if self.dirty else SWEEP_EVERY)
        self.retry_at = now + RETRY_EVERY

    def _end(self) -> None:
        """Drop the sweep: what it did not finish is swept again by the next one."""
        self.retry.update(self.todo)
        self.epoch, self.todo, self.chunk = None, [], None

    def _next_partition(self, failed: bool = False) -> None:
        if failed:
            self.retry.add(self.todo[0])
        self.chunk = None
        self.todo.pop(0)
        if self.todo:
            self.cursor = partition_range(self.todo[0], self.cluster.view.partitions)[0]

    def _may_read(self, now: float) -> bool:
        """The hand-overs' throttles: the foreground's share, and ``keys_per_sec``."""
        if not self.share.allows(now):
            return False
        if not self.keys_per_sec:
            return True
        self.tokens = min(float(self.keys_per_sec),
                          self.tokens + self.keys_per_sec * (now - self.tokens_at))
        self.tokens_at = now
        return self.tokens > 0

    def _read(self, now: float) -> None:
        self.seq += 1
        p = self.todo[0]
        self.chunk = Chunk(self.seq, p, now + DEADLINE, None)
        hi = partition_range(p, self.cluster.view.partitions)[1]
        self.emit("persistence", Fold.wire(self.stage, Route(Duty.STRAY, (self.seq, b"")).ref(),
                                           lo_hex=f"{self.cursor:x}", hi_hex=f"{hi:x}",
                                           max_keys=CHUNK_KEYS))

    def local(self, now: float, route: Route, answer: list[Any]) -> None:
        """Persistence's fold: hand each key to every replica of the partition."""
        chunk = self.chunk
        if answer[0] != "folded" or chunk is None or not chunk.reading or \
                route.ident[0] != chunk.seq:
            return
        replicas = self._strays()
        if replicas is None or ring_key(self.cluster.view) != self.epoch:
            self._end()  # the ring changed since the read was asked for
            return
        _, pairs, next_lo, _ = answer
        chunk.reading, chunk.deadline = False, now + DEADLINE
        chunk.next_lo = int(next_lo, 16) if next_lo is not None else None
        self.tokens -= len(pairs)
        self.share.spend(len(pairs))
        peers, targets = self.cluster.peers(), replicas.get(chunk.partition, ())
        if any(node not in peers for node in targets):
            self._next_partition(failed=True)
            self._advance(now)
            return
        for key, raw in pairs:
            chunk.waiting[key] = (raw, set(targets))
            for node in targets:
                self.call(peers[node], Route(Duty.STRAY, (chunk.seq, key)),
                          ["rput", key, raw, None], node)
        self._chunk_done(now)

    def lost(self, now: float, route: Route) -> None:
        """Persistence could not take the read: the partition is swept again later."""
        if self.chunk is not None and self.chunk.reading and route.ident[0] == self.chunk.seq:
            self._next_partition(failed=True)
            self._advance(now)

    def restarted(self, now: float, stage: str) -> None:
        """The read went down with the persistence stage: ask the new one, under a new
        ref (a late answer to the old one is not taken)."""
        if stage == "persistence" and self.chunk is not None and self.chunk.reading:
            self._read(now)

    def answer(self, now: float, node: str, route: Route, payload: list[Any]) -> None:
        if payload[0] == "updated":
            self._ack(now, route, node, payload[1] is None)

    def unreachable(self, now: float, peer: str, route: Route) -> None:
        self._ack(now, route, None, False)

    def _ack(self, now: float, route: Route, node: str | None, ok: bool) -> None:
        chunk = self.chunk
        seq, key = route.ident
        if chunk is None or chunk.reading or seq != chunk.seq or key not in chunk.waiting:
            return
        raw, replicas = chunk.waiting[key]
        if not ok:
            chunk.failed = True
            del chunk.waiting[key]  # kept here, for the next sweep
        elif node in replicas:
            replicas.discard(node)
            if not replicas:
                del chunk.waiting[key]
                self.handed += 1
                self.emit("persistence", Forget.wire(key, raw))
        self._chunk_done(now)

    def _chunk_done(self, now: float) -> None:
        """Once every key of the chunk is answered: on to the next chunk, at once."""
        chunk = self.chunk
        if chunk is None or chunk.waiting:
            return
        if chunk.failed or chunk.next_lo is None:
            self._next_partition(failed=chunk.failed)
        else:
            self.cursor, self.chunk = chunk.next_lo, None
        self._advance(now)
