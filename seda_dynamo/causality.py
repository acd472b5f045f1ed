"""Causality tracking for stored values: dotted version vector sets (DVVSets).

Dynamo paper section 4.4 (data versioning) keeps, per key, every version that is not
causally dominated by another and hands the client a context summarising what it read, so
the client's next write supersedes exactly those versions. Plain per-node vector clocks get
this wrong for blind or stale concurrent writes coordinated by the same node: the node's
entry simply increments and the older sibling is silently lost. This module uses DVVSets
instead (Almeida et al., "Scalable and Accurate Causality Tracking for Eventually Consistent
Stores", 2014): every stored value carries its own *dot* (actor, counter), separate from
the causal past (the context) it was written with, so concurrent writes always become
siblings while the metadata stays one entry per coordinating actor.

Representation: per actor, a counter ``n`` (every dot (actor, 1..n) has been seen) and the
values still alive among the newest dots, ``n, n-1, ...``, newest first. Values not yet
stamped with a dot (a client-side ``new()``) are kept apart as ``anonymous``.

The one subtle rule: a replica that has seen a dot (its counter covers it) but does not
hold that dot's value has discarded it, because some write's context covered it. So on a
merge a value survives only if every side that has seen its dot still holds it; absence
under a covering counter means "superseded", not "unknown". (Relatedly, ``update`` mints
the dot max(stored counter, context counter) + 1, so a new value is never covered by the
very context it was written with, even if the coordinator's stored state lags the context.)

Which actor a replica stamps a write with is ``seda_dynamo.actors``; the context's wire
form and the bounds on contexts from outside are ``seda_dynamo.contexts``.

Values are opaque here (tombstones are simply ``None`` values); ``encode``/``decode``
support ``bytes`` and ``None``. Pure functions, no IO.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from seda_dynamo.brief import brief

Actor = str
VersionVector = dict[str, int]
Entry = tuple[str, int, tuple[Any, ...]]

#: Limits on what a decoded context or DVVSet may contain (actor names are UTF-8 bytes).
MAX_ACTOR_BYTES = 256
_MAX_COUNTER = 2**64 - 1


class Occurred(enum.Enum):
    """How two causal histories relate (as in Voldemort's ``Occurred``)."""

    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


@dataclass(frozen=True, slots=True)
class DVVSet:
    """Siblings of one key with their causal information (treat as immutable).

    ``entries`` is sorted by actor; each ``(actor, counter, values)`` holds the live values
    whose dots are ``(actor, counter), (actor, counter - 1), ...``, newest first, so
    ``len(values) <= counter``. ``anonymous`` holds values without a dot, in canonical order.
    """

    entries: tuple[Entry, ...] = ()
    anonymous: tuple[Any, ...] = ()


EMPTY = DVVSet()


def _value_key(value: Any) -> tuple[str, str]:
    # A total, deterministic order on opaque values of mixed types (bytes, None, ints...).
    return (type(value).__qualname__, repr(value))


def _canonical(vals: Iterable[Any]) -> tuple[Any, ...]:
    by_key: dict[tuple[str, str], Any] = {}
    for v in vals:
        by_key.setdefault(_value_key(v), v)
    return tuple(by_key[k] for k in sorted(by_key))


def check_actor(actor: Any) -> str:
    """``actor`` if it is a non-empty str of at most ``MAX_ACTOR_BYTES``; else ValueError."""
    if not isinstance(actor, str) or not actor:
        raise ValueError(f"actor must be a non-empty str, got {brief(actor)}")
    if len(actor.encode("utf-8", "surrogatepass")) > MAX_ACTOR_BYTES:
        raise ValueError(f"actor {actor[:40]!r}... is longer than {MAX_ACTOR_BYTES} bytes")
    return actor


def check_counter(n: Any, minimum: int) -> int:
    """``n`` if it is an int (not a bool) in ``[minimum, 2**64)``; else ValueError."""
    if type(n) is not int or not minimum <= n <= _MAX_COUNTER:
        raise ValueError(f"counter must be an int in [{minimum}, 2**64), got {brief(n)}")
    return n


def vector_items(vv: VersionVector) -> list[tuple[str, int]]:
    """A checked version vector's ``(actor, counter)`` pairs, sorted, zeros left out."""
    if not isinstance(vv, dict):
        raise ValueError(f"a version vector must be a dict, got {type(vv).__name__}")
    items = [(check_actor(a), check_counter(n, 0)) for a, n in vv.items()]
    return sorted((a, n) for a, n in items if n > 0)


def new(value: Any, context: VersionVector | None = None) -> DVVSet:
    """A client write of ``value`` (not yet stamped) whose causal past is ``context``."""
    entries = tuple((a, n, ()) for a, n in vector_items(context or {}))
    return DVVSet(entries, (value,))


def update(new_clock: DVVSet, stored: DVVSet, actor: str) -> DVVSet:
    """Coordinator side of a write: stamp ``new_clock``'s value(s) with fresh dots of
    ``actor`` and merge them into ``stored``.

    Stored values covered by the context ``join(new_clock)`` are dropped; every other stored
    value stays as a sibling. Several anonymous values get consecutive dots.
    """
    check_actor(actor)
    if not new_clock.anonymous:
        raise ValueError("update() needs a clock with an unstamped value (made by new())")
    ctx = join(new_clock)
    merged: dict[str, tuple[int, tuple[Any, ...]]] = {}
    for a, n, vals in stored.entries:
        seen = ctx.get(a, 0)
        merged[a] = (max(n, seen), vals[: max(0, n - seen)])
    for a, seen in ctx.items():
        merged.setdefault(a, (seen, ()))
    # Surviving values of `actor` have dots above the context, so they sit right below
    # the fresh dots and the run of dots stays contiguous.
    n, kept = merged.get(actor, (0, ()))
    fresh = new_clock.anonymous
    merged[actor] = (n + len(fresh), tuple(reversed(fresh)) + kept)
    entries = tuple((a, n, vals) for a, (n, vals) in sorted(merged.items()))
    return DVVSet(entries, stored.anonymous)

def _merge_entry(
    n1: int, l1: tuple[Any, ...], n2: int, l2: tuple[Any, ...]
) -> tuple[int, tuple[Any, ...]]:
    n = max(n1, n2)
    # Dots at or below either side's "floor" were seen there and dropped (the subtle rule).
    keep = n - max(n1 - len(l1), n2 - len(l2))
    if n1 != n2:
        return n, (l1 if n1 > n2 else l2)[:keep]
    p1, p2 = l1[:keep], l2[:keep]
    if p1 == p2:
        return n, p1
    # Only reachable with inconsistent replicas (one dot, two values); pick canonically
    # so that replicas still converge whatever the merge order.
    return n, min(p1, p2, key=lambda p: [_value_key(v) for v in p])


def sync(a: DVVSet, b: DVVSet) -> DVVSet:
    """Merge two replicas' states (commutative, associative, idempotent)."""
    merged = {x: (n, vals) for x, n, vals in a.entries}
    for x, n, vals in b.entries:
        cur = merged.get(x)
        merged[x] = (n, vals) if cur is None else _merge_entry(cur[0], cur[1], n, vals)
    entries = tuple((x, n, vals) for x, (n, vals) in sorted(merged.items()))
    anon = _canonical(a.anonymous + b.anonymous) if a.anonymous or b.anonymous else ()
    return DVVSet(entries, anon)


def sync_all(clocks: Iterable[DVVSet]) -> DVVSet:
    result = EMPTY
    for c in clocks:
        result = sync(result, c)
    return result


def join(c: DVVSet) -> VersionVector:
    """The version vector covering every dot in ``c``: the context handed to a client."""
    return {x: n for x, n, _ in c.entries}


def values(c: DVVSet) -> list[Any]:
    """Every sibling value: by actor, newest dot first, then the anonymous ones."""
    return [v for _, _, vals in c.entries for v in vals] + list(c.anonymous)


def size(c: DVVSet) -> int:
    return sum(len(vals) for _, _, vals in c.entries) + len(c.anonymous)


def compare(a: DVVSet, b: DVVSet) -> Occurred:
    """Order the causal histories of ``a`` and ``b``: the dots each has seen, plus its
    anonymous values (each a pending event of its own)."""
    va, vb = join(a), join(b)
    ka = {_value_key(v) for v in a.anonymous}
    kb = {_value_key(v) for v in b.anonymous}
    a_le = ka <= kb and all(n <= vb.get(x, 0) for x, n in va.items())
    b_le = kb <= ka and all(n <= va.get(x, 0) for x, n in vb.items())
    if a_le:
        return Occurred.EQUAL if b_le else Occurred.BEFORE
    return Occurred.AFTER if b_le else Occurred.CONCURRENT


def less(a: DVVSet, b: DVVSet) -> bool:
    """True if ``a``'s history is strictly contained in ``b``'s."""
    return compare(a, b) is Occurred.BEFORE


def equal(a: DVVSet, b: DVVSet) -> bool:
    """True if ``a`` and ``b`` have the same causal history."""
    return compare(a, b) is Occurred.EQUAL


# -- encoding ---------------------------------------------------------------------------


def _check_value(v: Any) -> Any:
    if v is not None and not isinstance(v, bytes):
        raise ValueError(f"values must be bytes or None, got {type(v).__name__}")
    return v


def _build(raw_entries: Any, raw_anon: Any) -> DVVSet:
    """Validate a (decoded or about-to-be-encoded) DVVSet; ValueError on any defect."""
    if not isinstance(raw_entries, (list, tuple)) or not isinstance(raw_anon, (list, tuple)):
        raise ValueError("entries and anonymous values must be arrays")
    entries: list[Entry] = []
    for e in raw_entries:
        if not isinstance(e, (list, tuple)) or len(e) != 3:
            raise ValueError("an entry must be an [actor, counter, values] array")
        actor, n = check_actor(e[0]), check_counter(e[1], 1)
        if entries and actor <= entries[-1][0]:
            raise ValueError("entries are not sorted by actor or repeat an actor")
        if not isinstance(e[2], (list, tuple)) or len(e[2]) > n:
            raise ValueError(f"values of {actor!r} must be an array of at most {n} items")
        entries.append((actor, n, tuple(_check_value(v) for v in e[2])))
    anon = tuple(_check_value(v) for v in raw_anon)
    if _canonical(anon) != anon:
        raise ValueError("anonymous values are not sorted or repeat a value")
    return DVVSet(tuple(entries), anon)


def unpack(data: Any, what: str, **limits: int) -> Any:
    """msgpack ``data`` (of a ``what``) within ``limits``; ValueError, only, if malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{what} must be bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, max_map_len=0, max_ext_len=0, **limits)
    except msgpack.StackError:
        raise ValueError(f"malformed {what}: nested too deeply") from None
    except Exception as exc:  # whatever msgpack raises, callers only ever see ValueError
        raise ValueError(f"malformed {what}: {str(exc) or type(exc).__name__}") from None


def encode(c: DVVSet, trusted: bool = False) -> bytes:
    """Compact, deterministic msgpack: ``[[[actor, counter, [value, ...]], ...], [anon...]]``.

    Raises ValueError unless values are bytes or None and ``c`` is well formed.
    ``trusted``: ``c`` was made by ``update``/``sync`` from checked inputs, so the check is
    skipped (it is a tenth of the versioning stage's time).
    """
    if not trusted:
        c = _build(c.entries, c.anonymous)
    entries = [[a, n, list(vals)] for a, n, vals in c.entries]
    return msgpack.packb([entries, list(c.anonymous)], use_bin_type=True)


def decode(data: bytes, trusted: bool = False) -> DVVSet:
    """Inverse of ``encode``; raises ValueError (only) on anything malformed.

    ``trusted``: ``data`` is what this node's own engine stored (written by ``encode``
    after the checks), so only its shape is taken, not every rule checked again; bytes
    from clients or peers are never trusted.
    """
    obj = unpack(data, "DVVSet encoding", max_str_len=MAX_ACTOR_BYTES)
    if not isinstance(obj, list) or len(obj) != 2:
        raise ValueError("malformed DVVSet encoding: expected a 2-item array")
    if trusted:
        try:
            return DVVSet(tuple((a, n, tuple(vals)) for a, n, vals in obj[0]), tuple(obj[1]))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed DVVSet encoding: {exc}") from None
    try:
        return _build(obj[0], obj[1])
    except ValueError as exc:
        raise ValueError(f"malformed DVVSet encoding: {exc}") from None
