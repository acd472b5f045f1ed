"""The versioning stage: stamps new versions and merges versions into the stored siblings.

Dynamo paper section 4.4 (data versioning), with dotted version vector sets
(``seda_dynamo.causality``). Each key's read-merge-write is one atomic step: while a key's
new state is being read or written, further operations on it wait here and are applied to
the state just written, so concurrent puts through the pipeline never lose a sibling.

Actors (Riak's kv679 in both its forms): a write is stamped with the newest of this
node's actors that the key's stored versions show (``actors.own_actor``), or else with
a fresh actor. A fresh actor is named by the order persistence gave the read it follows
(``node#incarnation.m<epoch>.<sequence>``): persistence is one process, its epoch is a
durable counter bumped at each start and its sequence grows with every key it reads, so
an actor minted later always sorts later, whatever versioning worker minted it. A replica
whose data was wiped (new incarnation), or whose copy of a key was reaped after a delete,
has forgotten the dots it issued for the key, so it never continues an old counter: a
context read before the wipe or the delete cannot cover a value written after it.

One operation that cannot be applied (a context that would overflow a counter or the
key's actor limit, a bug) fails that operation's request only; the key's other
operations and the rest of the batch go on. A write whose compare-and-set keeps losing
to other writers gives up after ``MAX_CAS_RETRIES`` with an error instead of looping.
Each key's queue, the merge, those checks and what follows a conflict are
``seda_dynamo.reconciliation`` (pure); this stage asks persistence and answers.
"""

from __future__ import annotations

from typing import Any

from seda_dynamo import causality, ids
from seda_dynamo.causality import DVVSet
from seda_dynamo.config import NodeConfig
from seda_dynamo.merkle import object_hash
from seda_dynamo.messages import Get, Updated, Write
from seda_dynamo.messagetable import answer_to
from seda_dynamo.reconciliation import (
    BAD_REQUEST,
    MAX_CAS_RETRIES,
    KeyQueue,
    KeyWork,
    Op,
    apply,
    hinted,
    read_again,
    retry,
    write_hints,
)
from seda_dynamo.stage import Event, Stage, stage_of

#: How long persistence may take to answer before the waiting operations fail: a
#: backstop for a wedged stage; one that restarted announces it (``on_started``).
ENGINE_DEADLINE = 10.0
#: A key's work older than this is failed whatever it waits for (a backstop: every
#: engine request has its own deadline, so only a bug leaves work behind).
WORK_DEADLINE = 3 * ENGINE_DEADLINE
#: Seconds between sweeps for work past ``WORK_DEADLINE``.
SWEEP_EVERY = 1.0
#: The prefix of an operation failed because a queue it needed was full.
OVERLOADED = "overloaded: "


class Handler(Stage):
    name = "versioning"
    tick_interval = 0.25

    def __init__(self, config: NodeConfig, entropy: ids.Entropy | None = None) -> None:
        super().__init__(config, entropy)
        self.family = ""  # node id and data incarnation, learned from persistence's replies
        self.keys = KeyQueue()  # each key's work in flight and what waits behind it
        self.inflight, self.queued = self.keys.inflight, self.keys.queued
        # Engine requests awaiting persistence, by ref: (kind, keys, deadline).
        self.pending: dict[int, tuple[str, list[bytes], float]] = {}
        self.next_ref = self.id_base  # ids never repeat across restarts (ids.py)
        self.conflicts = 0
        self.cas_gave_up = 0  # keys whose writes failed after MAX_CAS_RETRIES conflicts
        self.failed_ops = 0  # operations failed on their own (bad input, or a bug)
        self.swept_at = 0.0
        self.engine_generation: int | None = None  # persistence's process, once announced

    # Events ---------------------------------------------------------------------------
    def handle_events(self, events: list[Event], now: float) -> None:
        for event in events:
            kind = event[0] if isinstance(event, list) and event else None
            if kind not in ("update", "sync"):
                self.dispatch(event, now)  # its own guard: one that fails, fails alone
                continue
            try:
                if kind == "update":  # messages.Update
                    _, reply_to, ref, key, value, ctx, cover, hint = event
                    op = Op(reply_to, ref, "update", value, ctx, bool(cover), hint=hint)
                elif kind == "sync":  # messages.Sync (clock: encoded)
                    _, reply_to, ref, key, raw, hint = event
                    op = Op(reply_to, ref, "sync", clock=causality.decode(raw), hint=hint)
                if not isinstance(key, bytes):
                    raise ValueError(f"key must be bytes, not {type(key).__name__}")
            except (ValueError, TypeError) as exc:
                if kind == "sync":  # a peer's clock (rput): its bad input, no fault of ours
                    self.failed_ops += 1
                else:
                    self.errors += 1
                self.log.warning("bad %s event refused: %s", kind, exc)
                if len(event) > 2 and isinstance(event[1], str):
                    self.emit(*answer_to(event[1], Updated.wire(
                        event[2], None, None, f"{BAD_REQUEST}bad {kind}: {exc}")))
                continue
            self.keys.take(key, op)
        fresh = self.keys.start(now)
        if fresh:
            self._ask("get", fresh, now)

    def on_got(self, now: float, ref: int, found: list[bytes | None] | None,
               error: str | None, incarnation: str, mint: list[int] | None = None) -> None:
        entry = self.pending.pop(ref, None)
        if entry is None:
            return
        self.family = f"{self.config.node_id}#{incarnation}"
        keys = entry[1]
        if found is None or mint is None or len(found) != len(keys):
            self._fail(keys, error or "persistence read failed")
            return
        writes, reread = [], []
        epoch, first = mint
        for i, (key, raw) in enumerate(zip(keys, found, strict=True)):
            work = self.inflight.get(key)
            if work is None:
                continue
            work.mint, work.minted = (epoch, first + i), 0
            if read_again(work, self.family):
                reread.append(key)
                continue
            write = self._guarded(key, "merge", self._merge, key, raw)
            if write is not None:
                writes.append(write)
        if writes:
            self._ask("write", writes, now)
        if reread:
            self._ask("get", reread, now)

    def _guarded(self, key: bytes, what: str, step: Any, *args: Any) -> Any:
        """``step(*args)`` for one key; if it raises (a bug), that key's operations fail
        and the rest of the batch goes on."""
        try:
            return step(*args)
        except Exception as exc:  # noqa: BLE001 - one key's bug fails that key only
            self.errors += 1
            self.log.exception("%s of key %r failed", what, key[:40])
            self._fail([key], f"internal: {what} failed: {exc}")
            return None

    def _merge(self, key: bytes, raw: bytes | None) -> tuple[bytes, bytes, bytes] | None:
        """Apply a key's operations to what persistence read: the write to make, if any."""
        work = self.inflight[key]
        try:
            stored = causality.decode(raw, trusted=True) if raw is not None else causality.EMPTY
        except ValueError as exc:
            self.log.error("stored versions of key %r are unreadable: %s", key[:40], exc)
            self._fail([key], f"internal: stored versions are unreadable: {exc}")
            return None
        work.base = object_hash(raw) if raw is not None else b""
        encoded = self._apply(work, stored)
        if encoded is None or (encoded == raw and not hinted(work)):
            return self._done(key)  # nothing new, or a repair of what we hold already
        return key, encoded, work.base

    def on_written(self, now: float, ref: int, error: str | None,
                   conflicts: list[bytes] | None = None) -> None:
        entry = self.pending.pop(ref, None)
        if entry is None:
            return
        keys = entry[1]
        if error:
            self._fail(keys, error)
            return
        again = set(conflicts or ())
        reread = []
        for key in again & self.inflight.keys():
            # Another worker changed the key since we read it: read, merge again. A key
            # that keeps changing under us gives up rather than loop forever.
            self.conflicts += 1
            again_work = retry(self.inflight[key])
            if again_work is None:
                self.cas_gave_up += 1
                self.log.error("key %r changed under %d writes in a row: giving up",
                               key[:40], MAX_CAS_RETRIES + 1)
                self._fail([key], f"internal: the key changed under this write "
                                  f"{MAX_CAS_RETRIES + 1} times in a row; try again")
                continue
            self.inflight[key] = again_work
            reread.append(key)
        if reread:
            self._ask("get", reread, now)
        writes = []
        for key in keys:
            if key in again or key not in self.inflight:
                continue
            follow = self._guarded(key, "follow-up", self._done, key)
            if follow is not None:
                writes.append(follow)
        if writes:
            self._ask("write", writes, now)

    def on_started(self, now: float, stage: str, generation: int) -> None:
        """Persistence (re)started: what its last process was asked is lost. A write may
        have been made before the crash, and made again it would stamp a second dot, so
        the operations waiting on it fail now. A lost read is asked again for the merges
        waiting on it (``sync``: applied late or twice, a merge changes nothing more),
        but the client writes of its key fail, unstamped: their coordinator may already
        have asked another replica to stamp them (a forward replaced after its share of
        the deadline), and stamping them late here would issue a second dot for one write
        (found by the simulator, seed 100 of 5 nodes)."""
        if stage != "persistence" or generation == self.engine_generation:
            return
        self.engine_generation = generation
        reads: list[bytes] = []
        for ref, (kind, keys, _) in list(self.pending.items()):
            del self.pending[ref]
            if kind == "get":
                reads += keys
            else:
                self._fail(keys, "the persistence stage restarted during this write: it "
                                 "may or may not have been made")
        again = []
        for key in dict.fromkeys(reads):
            if key not in self.inflight:
                continue
            merges = []
            for op in self.keys.drop(key):
                if op.kind != "update":
                    merges.append(op)
                    continue
                self.emit(*answer_to(op.reply_to, Updated.wire(
                    op.ref, None, None, "the persistence stage restarted before this write "
                                        "was read: it was not made")))
            if merges:
                self.inflight[key] = KeyWork(merges, since=now)
                again.append(key)
        if again:
            self._ask("get", again, now)

    def undeliverable(self, dest: str, events: list[Event], now: float) -> None:
        """Persistence's queue is full: the operations waiting on that read or write
        fail now with ``overloaded`` (their callers answer or ask a spare), not at
        ``ENGINE_DEADLINE``."""
        for event in events:
            if event[0] in ("get", "write"):
                request = (Get if event[0] == "get" else Write).from_wire(event)
                entry = self.pending.pop(request.ref, None) \
                    if request.reply_to == self.name else None
                if entry is not None:
                    self._fail(entry[1], f"{OVERLOADED}the {stage_of(dest)} stage's queue "
                                         "is full")

    def tick(self, now: float) -> None:
        late = [ref for ref, (_, _, deadline) in self.pending.items() if deadline < now]
        for ref in late:
            _, keys, _ = self.pending.pop(ref)
            self._fail(keys, "persistence did not answer in time")
        if now - self.swept_at >= SWEEP_EVERY:
            self.swept_at = now
            stale = self.keys.stale(now, WORK_DEADLINE)
            if stale:
                self.log.error("%d keys in flight past their deadline: failed", len(stale))
                self._fail(stale, "internal: the write did not finish in time")

    def gauges(self) -> dict[str, Any]:
        return {"keys_in_flight": len(self.inflight), "engine_requests": len(self.pending),
                "conflicts": self.conflicts, "cas_gave_up": self.cas_gave_up,
                "failed_ops": self.failed_ops}

    # Internals ------------------------------------------------------------------------
    def _done(self, key: bytes) -> tuple[bytes, bytes, bytes] | None:
        """Answer a key's finished operations; start on its queued ones (no read needed)."""
        work, follow_up = self.keys.done(key)
        self._answer(work)
        if follow_up is None:
            return None
        assert work.state is not None  # _apply always leaves the state it reached
        encoded = self._apply(follow_up, work.state)
        if encoded is None:
            return self._done(key)
        return key, encoded, follow_up.base

    def _ask(self, kind: str, items: list[Any], now: float) -> None:
        self.next_ref += 1
        ref = self.next_ref
        if kind == "get":
            self.pending[ref] = (kind, items, now + ENGINE_DEADLINE)
            # Also hand out the mint order for each key read (fresh actors).
            self.emit("persistence", Get.wire(self.name, ref, items, mint=True))
            return
        keys = [item[0] for item in items]
        hints = [hint for key in keys for hint in write_hints(key, self.inflight[key])]
        self.pending[ref] = (kind, keys, now + ENGINE_DEADLINE)
        self.emit("persistence", Write.wire(self.name, ref, items, hints))

    def _apply(self, work: KeyWork, state: DVVSet) -> bytes | None:
        """``reconciliation.apply``, its failures counted and its bugs logged."""
        encoded, bugs = apply(work, state, self.family, self.config.max_record_bytes)
        self.failed_ops += sum(1 for _, _, err in work.results if err is not None)
        for kind, exc in bugs:
            self.errors += 1
            self.log.error("%s of a key failed", kind, exc_info=exc)
        return encoded

    def _answer(self, work: KeyWork) -> None:
        for op, (context, clock, error) in zip(work.ops, work.results, strict=True):
            self.emit(*answer_to(op.reply_to, Updated.wire(op.ref, context, clock, error)))

    def _fail(self, keys: list[bytes], error: str) -> None:
        """Fail every operation on ``keys``, in flight or waiting, with ``error``."""
        for key in keys:
            for op in self.keys.drop(key):
                self.emit(*answer_to(op.reply_to, Updated.wire(op.ref, None, None, error)))
