"""A key's read-merge-write: the operations waiting on one key, applied in order to the
versions persistence read, and what follows when the write is refused or done.

Dynamo paper section 4.4 (data versioning: each write is stamped with the newest actor of
this node the key's versions show, or a fresh one, and merged into the stored siblings
with ``seda_dynamo.causality``'s dotted version vector sets), with Riak's kv679 checks
(``seda_dynamo.actors``): a fresh actor is named by persistence's mint order of the read
behind the work, and a context or replica state naming an actor of this node that it
has not minted is refused. One operation that cannot be applied fails alone; a key whose
compare-and-set keeps losing gives up after ``MAX_CAS_RETRIES``. Pure, no IO: the
versioning stage reads and writes through persistence and answers the askers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from seda_dynamo import actors, causality, contexts
from seda_dynamo.causality import DVVSet
from seda_dynamo.merkle import object_hash

#: Compare-and-set conflicts one key's work may meet before its operations fail.
MAX_CAS_RETRIES = 8
#: The prefix of an error that is the request's fault (answered ``bad_request``).
BAD_REQUEST = "bad_request: "
#: The prefix of a write refused because the key's record would pass a size limit.
TOO_LARGE = "too_large: "


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


class KeyQueue:
    """Each key's work in flight and the operations waiting behind it: one
    read-merge-write per key at a time, the operations that arrive meanwhile applied to
    the state it writes, in the order they arrived."""

    def __init__(self) -> None:
        self.inflight: dict[bytes, KeyWork] = {}
        self.queued: dict[bytes, list[Op]] = defaultdict(list)
        self.fresh: dict[bytes, list[Op]] = {}  # keys with no work yet: read them

    def take(self, key: bytes, op: Op) -> None:
        """An operation on ``key``: it waits behind the key's work, or starts one."""
        if key in self.inflight:
            self.queued[key].append(op)
        else:
            self.fresh.setdefault(key, []).append(op)

    def start(self, now: float) -> list[bytes]:
        """Begin the work of the keys taken since the last start: the keys to read."""
        for key, ops in self.fresh.items():
            self.inflight[key] = KeyWork(ops, since=now)
        keys, self.fresh = list(self.fresh), {}
        return keys

    def done(self, key: bytes) -> tuple[KeyWork, KeyWork | None]:
        """The key's finished work, and the work of what queued behind it (None: none;
        it needs no read: it starts from the state just written)."""
        work = self.inflight.pop(key)
        if key not in self.queued:
            return work, None
        follow_up = self.inflight[key] = follow(work, self.queued.pop(key))
        return work, follow_up

    def drop(self, key: bytes) -> list[Op]:
        """Forget the key's work and what queued behind it: every operation to fail."""
        return self.inflight.pop(key, KeyWork([])).ops + self.queued.pop(key, [])

    def stale(self, now: float, deadline: float) -> list[bytes]:
        """The keys whose work began more than ``deadline`` seconds ago."""
        return [key for key, work in self.inflight.items() if now - work.since > deadline]


def read_again(work: KeyWork, family: str) -> bool:
    """Whether an operation names an actor of ours minted after this work's read (by
    another worker, while their number changed): read once more, so the check against
    forged actors (``actors.unissued_actor``) judges a current read. Counted as an
    attempt, so it happens once."""
    if work.attempts or not family:
        return False
    for op in work.ops:
        vv = op.context if op.kind == "update" else \
            (causality.join(op.clock) if op.clock is not None else None)
        if vv and actors.unissued_actor(vv, family, work.mint) is not None:
            work.attempts += 1
            return True
    return False


def retry(work: KeyWork) -> KeyWork | None:
    """The work to read and merge again after a compare-and-set conflict (None: the key
    changed under ``MAX_CAS_RETRIES`` + 1 writes in a row, its operations fail). A
    refused item wrote nothing (``groupcommit``: the batch commits whole, a conflicting
    item is left out), so applying its operations again stamps each write once."""
    if work.attempts + 1 > MAX_CAS_RETRIES:
        return None
    return KeyWork(work.ops, attempts=work.attempts + 1, since=work.since)


def follow(work: KeyWork, waiting: list[Op]) -> KeyWork:
    """The work of the operations that queued behind ``work``: applied to the state it
    wrote, compared against the hash of that write, under the same mint order."""
    base = object_hash(work.encoded) if work.encoded is not None else work.base
    return KeyWork(waiting, base=base, mint=work.mint, minted=work.minted, since=work.since)


def hinted(work: KeyWork) -> bool:
    """Whether an applied operation stands in for a down owner (its hint must be kept
    even when the key's versions do not change)."""
    return any(op.hint for op, (_, _, err) in zip(work.ops, work.results, strict=True)
               if err is None)


def write_hints(key: bytes, work: KeyWork) -> list[list[Any]]:
    """The ``[owner, key]`` hints a write of ``work`` carries."""
    return [[op.hint, key] for op in work.ops if op.hint]


def apply(work: KeyWork, state: DVVSet, family: str,
          max_record_bytes: int) -> tuple[bytes | None, list[tuple[str, Exception]]]:
    """Apply every waiting operation in order; remember each one's result. An operation
    that cannot be applied fails alone. The encoded new state (None when no operation was
    applied), and the (kind, exception) of each operation failed by a bug."""
    encoded = None
    bugs = []
    for op in work.ops:
        try:
            new = step(work, op, state, family)
            new_encoded = causality.encode(new, trusted=True)
            if op.kind == "update":
                check_size(new_encoded, new, state, max_record_bytes)
            context = contexts.encode_context(causality.join(new))
        except ValueError as exc:  # what the request asked cannot be done
            prefix = TOO_LARGE if isinstance(exc, TooLarge) else BAD_REQUEST
            work.results.append((None, None, f"{prefix}{exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - a bug: this operation fails alone
            bugs.append((op.kind, exc))
            work.results.append((None, None, f"internal: {op.kind} failed: {exc}"))
            continue
        state, encoded = new, new_encoded
        work.results.append((context, new_encoded, None))
    work.state, work.encoded = state, encoded
    return encoded, bugs


def step(work: KeyWork, op: Op, state: DVVSet, family: str) -> DVVSet:
    """One operation applied to ``state``; ``ValueError`` if the request cannot be."""
    if not work.mint or not family:
        raise RuntimeError("no mint order from persistence for this key")
    if op.kind != "update":
        assert op.clock is not None
        forged = actors.unissued_actor(causality.join(op.clock), family, work.mint)
        if forged is not None:
            raise ValueError(f"the state names {forged!r}, an actor of this node "
                             "that it has not minted")
        new = actors.replica_sync(state, op.clock, family, lambda: mint(work, family))
        issuable(new)
        return new
    if op.context is not None:
        ctx = op.context
    else:
        ctx = causality.join(state) if op.cover_stored else {}
    forged = actors.unissued_actor(ctx, family, work.mint)
    if forged is not None:
        raise ValueError(f"the context names {forged!r}, an actor of this node that "
                         "it has not minted")
    new = actors.replica_update(state, op.value, ctx, family, lambda: mint(work, family))
    if len(new.entries) > contexts.MAX_CONTEXT_ACTORS:
        raise ValueError(f"the key's history would hold {len(new.entries)} actors, "
                         f"more than the {contexts.MAX_CONTEXT_ACTORS} a context may")
    return new


def issuable(new: DVVSet) -> None:
    """A state taken from a peer (a replica write, a hint, a transfer, a repair) must be
    one whose context the store would take back from a client (``contexts.check_context``:
    at most ``MAX_CONTEXT_ACTORS`` actors, no counter above ``MAX_CONTEXT_COUNTER``), as
    every state the store makes itself is; else ``ValueError``. Stored, it would make
    every read-modify-write of the key fail at the door, on every replica it reaches."""
    try:
        contexts.check_context(causality.join(new))
    except ValueError as exc:
        raise ValueError(f"the replica's state holds what no store issues: {exc}") from None


def check_size(encoded: bytes, new: DVVSet, state: DVVSet, limit: int) -> None:
    """The limit the peer port is sized by (docs/peer-protocol.md, "Sizes"): a client
    write that resolves siblings is always taken, one that would leave the record past
    ``limit`` (``max_record_bytes``) otherwise never."""
    if len(encoded) > limit and causality.size(new) >= causality.size(state):
        raise TooLarge(f"the key's record would be {len(encoded)} bytes with "
                       f"{causality.size(new)} siblings, more than max_record_bytes "
                       f"({limit}); read it and write with its context to resolve "
                       "them")


def mint(work: KeyWork, family: str) -> str:
    """A fresh actor, newer than any this node minted before: the order of the read
    behind this work, then a count of the actors minted under it."""
    work.minted += 1
    return actors.mint_actor(family, (*work.mint, work.minted))
