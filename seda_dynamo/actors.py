"""Which actor a replica stamps a client write with, so no dot is ever issued twice.

Dynamo paper section 4.4 (data versioning): the node coordinating a write advances its
own entry of the clock. With DVVSets (``seda_dynamo.causality``) that entry belongs to an
*actor*, and a replica must never stamp a new value with a dot that a context handed out
earlier already covers (the blind write silently lost). Once a key is reaped its dots are
forgotten, so a replica cannot simply continue an old actor's counter: it stamps with the
newest of its own actors the key's stored versions show, else with a fresh one,
``node#incarnation.m<epoch>.<sequence>.<k>``, named by the order in which the node minted
it (persistence hands out ``(epoch, sequence)``). Merges keep that newest actor one whose
every dot this store holds, and an actor of ours with an order not reached yet is forged.
Pure functions, no IO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from seda_dynamo.causality import DVVSet, VersionVector, new, sync, update
from seda_dynamo.contexts import MAX_CONTEXT_COUNTER


def mint_actor(family: str, order: tuple[int, ...]) -> str:
    """A fresh actor of ``family`` (``node#incarnation``), named by its place in the
    order in which this node minted actors: ``family.m<hex>.<hex>...``.

    ``order`` must grow with every actor the node mints (persistence hands out
    ``(epoch, read sequence)``, see ``stages/persistence.py``), so the newest actor of a
    key is the one with the largest order, whatever its name sorts as in text.
    """
    if not order or any(type(x) is not int or x < 0 for x in order):
        raise ValueError(f"a mint order is a tuple of non-negative ints, got {order!r}")
    return f"{family}.m" + ".".join(f"{x:x}" for x in order)


def mint_order(actor: str, family: str) -> tuple[int, ...] | None:
    """The order ``mint_actor`` gave ``actor`` if it is one of ``family``'s, else None
    (another node's actor, another incarnation's, or one of an older naming)."""
    prefix = family + ".m"
    if not actor.startswith(prefix):
        return None
    parts = actor[len(prefix):].split(".")
    try:
        order = tuple(int(x, 16) for x in parts)
    except ValueError:
        return None
    if any(x < 0 or not part or f"{x:x}" != part for x, part in zip(order, parts, strict=True)):
        return None  # only the canonical spelling is ours (no "+1", "0x1", "01")
    return order


def own_actor(stored: DVVSet, family: str) -> str | None:
    """The actor ``family`` may stamp ``stored``'s next write with, if any: of its own
    actors the stored versions show, the most recently minted (``mint_order``).

    Why the newest: a replica mints a fresh actor whenever its stored versions of a key
    show none of its own (a key never written here, or whose tombstone was reaped), so
    every dot of the newest actor was issued through this store and its stored counter
    covers them all. Older actors of the family can come back after a reap, carried in
    by a stale context or a stale replica, with counters below what was issued; stamping
    with one of them would issue a dot that a context already covers (a blind write
    silently lost). Actors named before ``mint_actor`` (no order) are never reused.
    """
    best: tuple[tuple[int, ...], str] | None = None
    for actor, _, _ in stored.entries:
        order = mint_order(actor, family)
        if order is not None and (best is None or order > best[0]):
            best = (order, actor)
    return best[1] if best is not None else None


def next_counter(stored: DVVSet, context: VersionVector, actor: str) -> int:
    """The counter ``update`` would give ``actor``'s next dot."""
    n = next((n for a, n, _ in stored.entries if a == actor), 0)
    return max(n, context.get(actor, 0)) + 1


def unissued_actor(actors: Iterable[str], family: str, now: tuple[int, ...]) -> str | None:
    """One of ``actors`` that ``family`` cannot have minted yet: a mint order past
    ``now``, the order of the read under way. A context or a replica state naming one
    was forged; taking it in would let it pass for the newest of our actors."""
    for actor in actors:
        order = mint_order(actor, family)
        if order is not None and order[: len(now)] > now:
            return actor
    return None


def replica_update(stored: DVVSet, value: Any, context: VersionVector, family: str,
                   mint: Callable[[], str]) -> DVVSet:
    """A client write coordinated by a replica of ``family``: ``update`` with the actor
    ``own_actor`` names, else (or when its next counter would pass
    ``MAX_CONTEXT_COUNTER``) with fresh actors from ``mint``, each newer than every actor
    of the family that ``stored`` and ``context`` name (the caller checks that with
    ``unissued_actor``)."""
    actor = own_actor(stored, family)
    while actor is None or next_counter(stored, context, actor) > MAX_CONTEXT_COUNTER:
        actor = mint()  # ends: a context names at most MAX_CONTEXT_ACTORS actors
    return _keep_newest(update(new(value, context), stored, actor), actor, family, mint)


def replica_sync(stored: DVVSet, incoming: DVVSet, family: str,
                 mint: Callable[[], str]) -> DVVSet:
    """Merge another replica's state into ``stored`` at a replica of ``family``."""
    return _keep_newest(sync(stored, incoming), own_actor(stored, family), family, mint)


def _keep_newest(state: DVVSet, trusted: str | None, family: str,
                 mint: Callable[[], str]) -> DVVSet:
    """Keep the newest of ``family``'s actors in ``state`` one whose every dot this store
    holds (``trusted``). A merge can bring an actor of ours back from before a reap (a
    stale copy or context) with a counter below what it issued; if it would now be the
    newest, a fresh actor is added above it, at counter 1 with no value (a dot seen and
    gone), so the next write is stamped with the fresh one."""
    newest = own_actor(state, family)
    if newest is None or newest == trusted:
        return state
    return sync(state, DVVSet(((mint(), 1, ()),)))
