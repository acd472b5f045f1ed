"""The versioning stage: stamps new versions and merges versions into the stored siblings.

Dynamo paper section 4.4 (data versioning), with dotted version vector sets
(``seda_dynamo.causality``). Each key's read-merge-write is one atomic step: while a key's
new state is being read or written, further operations on it wait here and are applied to
the state just written, so concurrent puts through the pipeline never lose a sibling.

Actors (Riak's kv679 in both its forms): a write is stamped with this node's actor that
the key's stored versions already show, or else with a fresh actor
(``node#incarnation.epoch.serial``). A replica whose data was wiped (new incarnation), or
whose copy of a key was reaped after a delete, has forgotten the dots it issued for the
key, so it never continues an old counter: a context read before the wipe or the delete
cannot cover a value written after it.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seda_dynamo import causality
from seda_dynamo.causality import DVVSet
from seda_dynamo.config import NodeConfig
from seda_dynamo.durable import bump_counter
from seda_dynamo.merkle import object_hash
from seda_dynamo.stage import Event, Stage

#: How long persistence may take to answer before the waiting operations fail.
ENGINE_DEADLINE = 10.0


@dataclass(slots=True)
class Op:
    """One operation on a key: ``update`` (a client write) or ``sync`` (a replica's state)."""

    reply_to: str
    tag: Any
    kind: str
    value: bytes | None = None
    context: causality.VersionVector | None = None
    cover_stored: bool = False
    clock: DVVSet | None = None
    hint: str | None = None  # the down primary this write stands in for (hinted handoff)


@dataclass(slots=True)
class KeyWork:
    ops: list[Op]
    results: list[tuple[bytes, bytes]] = field(default_factory=list)  # (context, clock)
    state: DVVSet | None = None
    base: bytes = b""  # object hash of the stored versions the merge started from ("": none)
    encoded: bytes = b""  # ``state`` encoded: what is written


class Handler(Stage):
    name = "versioning"
    tick_interval = 0.25

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.family = ""  # node id and data incarnation, learned from persistence's replies
        self.epoch = ""  # this process's run of fresh actors (see _fresh_actor)
        self.minted = 0
        self.inflight: dict[bytes, KeyWork] = {}
        self.queued: dict[bytes, list[Op]] = defaultdict(list)
        self.pending: dict[int, tuple[str, list[bytes], float]] = {}
        self.next_tag = self.id_base  # ids never repeat across restarts (ids.py)
        self.conflicts = 0

    # Events ---------------------------------------------------------------------------
    def handle_events(self, events: list[Event], now: float) -> None:
        fresh: dict[bytes, list[Op]] = {}
        for event in events:
            kind = event[0]
            try:
                if kind == "update":  # ["update", reply_to, tag, key, value, ctx, cover, hint]
                    _, reply_to, tag, key, value, ctx, cover, hint = event
                    op = Op(reply_to, tag, "update", value, ctx, bool(cover), hint=hint)
                elif kind == "sync":  # ["sync", reply_to, tag, key, encoded clock, hint]
                    _, reply_to, tag, key, raw, hint = event
                    op = Op(reply_to, tag, "sync", clock=causality.decode(raw), hint=hint)
                else:
                    self.dispatch(event, now)
                    continue
            except (ValueError, TypeError) as exc:
                self.errors += 1
                self.log.warning("bad %s event refused: %s", kind, exc)
                if len(event) > 2:
                    self.emit(event[1], ["updated", event[2], None, None, f"bad {kind}: {exc}"])
                continue
            if key in self.inflight:
                self.queued[key].append(op)
            else:
                fresh.setdefault(key, []).append(op)
        if fresh:
            for key, ops in fresh.items():
                self.inflight[key] = KeyWork(ops)
            self._ask("get", list(fresh), now)

    def on_got(self, now: float, tag: int, found: list[bytes | None] | None,
               error: str | None, incarnation: str) -> None:
        entry = self.pending.pop(tag, None)
        if entry is None:
            return
        self.family = f"{self.config.node_id}#{incarnation}"
        keys = entry[1]
        if found is None:
            self._fail(keys, error or "persistence read failed")
            return
        writes = []
        for key, raw in zip(keys, found, strict=True):
            work = self.inflight[key]
            try:
                stored = (causality.decode(raw, trusted=True) if raw is not None
                          else causality.EMPTY)
            except ValueError as exc:
                self.log.error("stored versions of key %r are unreadable: %s", key[:40], exc)
                self._fail([key], f"stored versions are unreadable: {exc}")
                continue
            work.base = object_hash(raw) if raw is not None else b""
            encoded = self._apply(work, stored)
            if encoded == raw and not any(op.hint for op in work.ops):
                follow = self._done(key)  # a repair or handoff of what we hold already
                if follow is not None:
                    writes.append(follow)
            else:
                writes.append((key, encoded, work.base))
        if writes:
            self._ask("write", writes, now)

    def on_written(self, now: float, tag: int, error: str | None,
                   conflicts: list[bytes] | None = None) -> None:
        entry = self.pending.pop(tag, None)
        if entry is None:
            return
        keys = entry[1]
        if error:
            self._fail(keys, error)
            return
        again = set(conflicts or ())
        if again:  # another worker changed these keys since we read them: read, merge again
            self.conflicts += len(again)
            for key in again:
                self.inflight[key] = KeyWork(self.inflight[key].ops)
            self._ask("get", list(again), now)
        done = (self._done(key) for key in keys if key not in again)
        writes = [w for w in done if w is not None]
        if writes:
            self._ask("write", writes, now)

    def tick(self, now: float) -> None:
        late = [tag for tag, (_, _, deadline) in self.pending.items() if deadline < now]
        for tag in late:
            _, keys, _ = self.pending.pop(tag)
            self._fail(keys, "persistence did not answer in time")

    def gauges(self) -> dict[str, Any]:
        return {"keys_in_flight": len(self.inflight), "engine_requests": len(self.pending),
                "conflicts": self.conflicts}

    # Internals ------------------------------------------------------------------------
    def _done(self, key: bytes) -> tuple[bytes, bytes, bytes] | None:
        """Answer a key's finished operations; start on its queued ones (no read needed)."""
        work = self.inflight.pop(key)
        self._answer(work)
        waiting = self.queued.pop(key, None)
        if not waiting or work.state is None:
            return None
        follow = KeyWork(waiting, base=object_hash(work.encoded))
        self.inflight[key] = follow
        return key, self._apply(follow, work.state), follow.base

    def _ask(self, kind: str, items: list[Any], now: float) -> None:
        self.next_tag += 1
        tag = self.next_tag
        if kind == "get":
            self.pending[tag] = (kind, items, now + ENGINE_DEADLINE)
            self.emit("persistence", ["get", self.name, tag, items])
            return
        keys = [item[0] for item in items]
        hints = [[op.hint, key] for key in keys for op in self.inflight[key].ops if op.hint]
        self.pending[tag] = (kind, keys, now + ENGINE_DEADLINE)
        self.emit("persistence", ["write", self.name, tag, items, hints])

    def _apply(self, work: KeyWork, state: DVVSet) -> bytes:
        """Apply every waiting operation in order; remember each one's result."""
        for op in work.ops:
            if op.kind == "update":
                if op.context is not None:
                    ctx = op.context
                else:
                    ctx = causality.join(state) if op.cover_stored else {}
                actor = causality.own_actor(state, self.family) or self._fresh_actor()
                state = causality.update(causality.new(op.value, ctx), state, actor)
            else:
                assert op.clock is not None
                state = causality.sync(state, op.clock)
            encoded = causality.encode(state, trusted=True)
            work.results.append((causality.encode_context(causality.join(state)), encoded))
        work.state, work.encoded = state, encoded
        return encoded

    def _fresh_actor(self) -> str:
        """A new actor for a key this replica holds no dots of (``causality.own_actor``).

        Its epoch is a counter kept durably in the data directory and bumped once per
        process start, so neither a restart of this stage nor of the node repeats one.
        """
        if not self.epoch:
            if self.config.engine == "memory":  # the data dies with the node anyway
                self.epoch = secrets.token_hex(4)
            else:
                epoch = bump_counter(Path(self.config.data_dir) / "actor-epoch")
                self.epoch = f"{epoch:x}"
        self.minted += 1
        return causality.mint_actor(self.family, self.epoch, self.minted)

    def _answer(self, work: KeyWork) -> None:
        for op, (context, clock) in zip(work.ops, work.results, strict=True):
            self.emit(op.reply_to, ["updated", op.tag, context, clock, None])

    def _fail(self, keys: list[bytes], error: str) -> None:
        for key in keys:
            for work_ops in (self.inflight.pop(key, KeyWork([])).ops, self.queued.pop(key, [])):
                for op in work_ops:
                    self.emit(op.reply_to, ["updated", op.tag, None, None, error])
