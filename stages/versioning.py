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
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from seda_dynamo import actors, causality, contexts
from seda_dynamo.causality import DVVSet
from seda_dynamo.config import NodeConfig
from seda_dynamo.merkle import object_hash
from seda_dynamo.messages import Get, Updated, Write
from seda_dynamo.messagetable import answer_to
from seda_dynamo.stage import Event, Stage, stage_of

#: How long persistence may take to answer before the waiting operations fail.
ENGINE_DEADLINE = 10.0
#: Compare-and-set conflicts one key's work may meet before its operations fail.
MAX_CAS_RETRIES = 8
#: A key's work older than this is failed whatever it waits for (a backstop: every
#: engine request has its own deadline, so only a bug leaves work behind).
WORK_DEADLINE = 3 * ENGINE_DEADLINE
#: Seconds between sweeps for work past ``WORK_DEADLINE``.
SWEEP_EVERY = 1.0
#: The prefix of an error that is the request's fault (answered ``bad_request``).
BAD_REQUEST = "bad_request: "
#: The prefix of a write refused because the key's record would pass a size limit.
TOO_LARGE = "too_large: "
#: The prefix of an operation failed because a queue it needed was full.
OVERLOADED = "overloaded: "


class TooLarge(ValueError):
    """A client write that would make the key's record larger than the store holds."""


@dataclass(slots=True)
class Op:
    """One operation on a key: ``update`` (a client write) or ``sync`` (a replica's state)."""

    reply_to: str
    ref: Any  # the asker's, handed back in its ``updated``
    kind: str
    value: bytes | None = None
    context: causality.VersionVector | None = None
    cover_stored: bool = False
    clock: DVVSet | None = None
    hint: str | None = None  # the down primary this write stands in for (hinted handoff)


@dataclass(slots=True)
class KeyWork:
    ops: list[Op]
    # Per operation: (context, clock) when applied, or the error that failed it.
    results: list[tuple[bytes | None, bytes | None, str | None]] = field(default_factory=list)
    state: DVVSet | None = None
    base: bytes = b""  # object hash of the stored versions the merge started from ("": none)
    encoded: bytes | None = None  # ``state`` encoded: what is written (None: nothing)
    mint: tuple[int, ...] = ()  # persistence's (epoch, sequence) of the read behind this work
    minted: int = 0  # fresh actors minted under ``mint`` so far
    attempts: int = 0  # compare-and-set conflicts met so far
    since: float = 0.0  # when the key's work began


class Handler(Stage):
    name = "versioning"
    tick_interval = 0.25

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.family = ""  # node id and data incarnation, learned from persistence's replies
        self.inflight: dict[bytes, KeyWork] = {}
        self.queued: dict[bytes, list[Op]] = defaultdict(list)
        # Engine requests awaiting persistence, by ref: (kind, keys, deadline).
        self.pending: dict[int, tuple[str, list[bytes], float]] = {}
        self.next_ref = self.id_base  # ids never repeat across restarts (ids.py)
        self.conflicts = 0
        self.cas_gave_up = 0  # keys whose writes failed after MAX_CAS_RETRIES conflicts
        self.failed_ops = 0  # operations failed on their own (bad input, or a bug)
        self.swept_at = 0.0

    # Events ---------------------------------------------------------------------------
    def handle_events(self, events: list[Event], now: float) -> None:
        fresh: dict[bytes, list[Op]] = {}
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
                self.errors += 1
                self.log.warning("bad %s event refused: %s", kind, exc)
                if len(event) > 2 and isinstance(event[1], str):
                    self.emit(*answer_to(event[1], Updated.wire(
                        event[2], None, None, f"{BAD_REQUEST}bad {kind}: {exc}")))
                continue
            if key in self.inflight:
                self.queued[key].append(op)
            else:
                fresh.setdefault(key, []).append(op)
        if fresh:
            for key, ops in fresh.items():
                self.inflight[key] = KeyWork(ops, since=now)
            self._ask("get", list(fresh), now)

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
            if self._read_again(work):
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

    def _read_again(self, work: KeyWork) -> bool:
        """Whether an operation names an actor of ours minted after this work's read
        (by another worker, while their number changed): read once more, so the check
        against forged actors (``actors.unissued_actor``) judges a current read."""
        if work.attempts or not self.family:
            return False
        for op in work.ops:
            vv = op.context if op.kind == "update" else \
                (causality.join(op.clock) if op.clock is not None else None)
            if vv and actors.unissued_actor(vv, self.family, work.mint) is not None:
                work.attempts += 1
                return True
        return False

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
        if encoded is None or (encoded == raw and not self._hinted(work)):
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
            old = self.inflight[key]
            if old.attempts + 1 > MAX_CAS_RETRIES:
                self.cas_gave_up += 1
                self.log.error("key %r changed under %d writes in a row: giving up",
                               key[:40], MAX_CAS_RETRIES + 1)
                self._fail([key], f"internal: the key changed under this write "
                                  f"{MAX_CAS_RETRIES + 1} times in a row; try again")
                continue
            self.inflight[key] = KeyWork(old.ops, attempts=old.attempts + 1, since=old.since)
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
            stale = [key for key, work in self.inflight.items()
                     if now - work.since > WORK_DEADLINE]
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
        work = self.inflight.pop(key)
        self._answer(work)
        if key not in self.queued:
            return None
        assert work.state is not None  # _apply always leaves the state it reached
        waiting = self.queued.pop(key)
        base = object_hash(work.encoded) if work.encoded is not None else work.base
        follow = KeyWork(waiting, base=base, mint=work.mint, minted=work.minted,
                         since=work.since)
        self.inflight[key] = follow
        encoded = self._apply(follow, work.state)
        if encoded is None:
            return self._done(key)
        return key, encoded, follow.base

    def _ask(self, kind: str, items: list[Any], now: float) -> None:
        self.next_ref += 1
        ref = self.next_ref
        if kind == "get":
            self.pending[ref] = (kind, items, now + ENGINE_DEADLINE)
            # Also hand out the mint order for each key read (fresh actors).
            self.emit("persistence", Get.wire(self.name, ref, items, mint=True))
            return
        keys = [item[0] for item in items]
        hints = [[op.hint, key] for key in keys for op in self.inflight[key].ops if op.hint]
        self.pending[ref] = (kind, keys, now + ENGINE_DEADLINE)
        self.emit("persistence", Write.wire(self.name, ref, items, hints))

    @staticmethod
    def _hinted(work: KeyWork) -> bool:
        return any(op.hint for op, (_, _, err) in zip(work.ops, work.results, strict=True)
                   if err is None)

    def _apply(self, work: KeyWork, state: DVVSet) -> bytes | None:
        """Apply every waiting operation in order; remember each one's result. An
        operation that cannot be applied fails alone. The encoded new state, or None
        when no operation was applied."""
        encoded = None
        for op in work.ops:
            try:
                new = self._one(work, op, state)
                new_encoded = causality.encode(new, trusted=True)
                if op.kind == "update":
                    self._check_size(new_encoded, new, state)
                context = contexts.encode_context(causality.join(new))
            except ValueError as exc:  # what the request asked cannot be done
                self.failed_ops += 1
                prefix = TOO_LARGE if isinstance(exc, TooLarge) else BAD_REQUEST
                work.results.append((None, None, f"{prefix}{exc}"))
                continue
            except Exception as exc:  # noqa: BLE001 - a bug: this operation fails alone
                self.failed_ops += 1
                self.errors += 1
                self.log.exception("%s of a key failed", op.kind)
                work.results.append((None, None, f"internal: {op.kind} failed: {exc}"))
                continue
            state, encoded = new, new_encoded
            work.results.append((context, new_encoded, None))
        work.state, work.encoded = state, encoded
        return encoded

    def _one(self, work: KeyWork, op: Op, state: DVVSet) -> DVVSet:
        if not work.mint or not self.family:
            raise RuntimeError("no mint order from persistence for this key")
        if op.kind != "update":
            assert op.clock is not None
            forged = actors.unissued_actor(causality.join(op.clock), self.family,
                                           work.mint)
            if forged is not None:
                raise ValueError(f"the state names {forged!r}, an actor of this node "
                                 "that it has not minted")
            return actors.replica_sync(state, op.clock, self.family,
                                       lambda: self._mint(work))
        if op.context is not None:
            ctx = op.context
        else:
            ctx = causality.join(state) if op.cover_stored else {}
        forged = actors.unissued_actor(ctx, self.family, work.mint)
        if forged is not None:
            raise ValueError(f"the context names {forged!r}, an actor of this node that "
                             "it has not minted")
        new = actors.replica_update(state, op.value, ctx, self.family,
                                    lambda: self._mint(work))
        if len(new.entries) > contexts.MAX_CONTEXT_ACTORS:
            raise ValueError(f"the key's history would hold {len(new.entries)} actors, "
                             f"more than the {contexts.MAX_CONTEXT_ACTORS} a context may")
        return new

    def _check_size(self, encoded: bytes, new: DVVSet, state: DVVSet) -> None:
        """The limit the peer port is sized by (docs/peer-protocol.md, "Sizes"): a client
        write that resolves siblings is always taken, one that would leave the record
        past ``max_record_bytes`` otherwise never."""
        limit = self.config.max_record_bytes
        if len(encoded) > limit and causality.size(new) >= causality.size(state):
            raise TooLarge(f"the key's record would be {len(encoded)} bytes with "
                           f"{causality.size(new)} siblings, more than max_record_bytes "
                           f"({limit}); read it and write with its context to resolve "
                           "them")

    def _mint(self, work: KeyWork) -> str:
        """A fresh actor, newer than any this node minted before: the order of the read
        behind this work, then a count of the actors minted under it."""
        work.minted += 1
        return actors.mint_actor(self.family, (*work.mint, work.minted))

    def _answer(self, work: KeyWork) -> None:
        for op, (context, clock, error) in zip(work.ops, work.results, strict=True):
            self.emit(*answer_to(op.reply_to, Updated.wire(op.ref, context, clock, error)))

    def _answer_all(self, ops: list[Op], error: str) -> None:
        for op in ops:
            self.emit(*answer_to(op.reply_to, Updated.wire(op.ref, None, None, error)))

    def _fail(self, keys: list[bytes], error: str) -> None:
        for key in keys:
            for work_ops in (self.inflight.pop(key, KeyWork([])).ops, self.queued.pop(key, [])):
                self._answer_all(work_ops, error)
