"""One group commit of the persistence stage: the write and get events it takes apart
itself, each checked whole, and the compare-and-set decision for every item written.

Dynamo paper section 5 (the local persistence engine, here committing each batch in one
transaction so one fsync covers it) and section 4.6 (a write a fallback takes for a down
owner leaves a hint, keyed ``[owner, key]`` in the hints store, with a fresh token). A
write item may name the object hash of what its writer read: if the key holds something
else now (in this batch, else in the store), the item is refused as a conflict and the
writer reads and merges again. Pure, no IO: the stage looks up what a key holds and
hands it in, with where the hint tokens come from.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import msgpack

from seda_dynamo.merkle import object_hash

#: A write item without an expected hash: no compare-and-set.
NO_EXPECTATION = object()

Item = tuple[bytes, bytes | None, Any]  # key, value (None: delete), expected hash
Hinted = tuple[str, bytes]  # owner, key


def write_event(event: list[Any]) -> tuple[str, Any, list[Item], list[Hinted]]:
    """A ``messages.Write``, items ``[key, value|None, expected hash?]`` and hints
    ``[owner, key]``, checked whole; ``ValueError`` names what is wrong."""
    if len(event) != 5 or not isinstance(event[1], str) \
            or not isinstance(event[3], list | tuple) or not isinstance(event[4], list | tuple):
        raise ValueError("a write is [write, reply_to, ref, items, hints]")
    items = []
    for item in event[3]:
        if not isinstance(item, list | tuple) or len(item) not in (2, 3) \
                or not isinstance(item[0], bytes) \
                or not (item[1] is None or isinstance(item[1], bytes)) \
                or not (len(item) == 2 or item[2] is None or isinstance(item[2], bytes)):
            raise ValueError("a write item is [key, value|nil, expected hash|nil?]")
        items.append((item[0], item[1], item[2] if len(item) == 3 else NO_EXPECTATION))
    hinted = []
    for hint in event[4]:
        if not isinstance(hint, list | tuple) or len(hint) != 2 or not isinstance(hint[0], str) \
                or not isinstance(hint[1], bytes):
            raise ValueError("a hint is [owner, key]")
        hinted.append((hint[0], hint[1]))
    return event[1], event[2], items, hinted


def get_event(event: list[Any]) -> tuple[str, Any, list[bytes], bool]:
    """A ``messages.Get``, ``keys`` all bin, checked whole."""
    if len(event) not in (4, 5) or not isinstance(event[1], str) \
            or not isinstance(event[3], list | tuple) \
            or not all(isinstance(key, bytes) for key in event[3]):
        raise ValueError("a get is [get, reply_to, ref, [key, ...], mint?]")
    return event[1], event[2], list(event[3]), len(event) == 5 and bool(event[4])


def hint_key(owner: str, key: bytes) -> bytes:
    """The hints store's key for "``owner`` still needs ``key``"."""
    return msgpack.packb([owner, key], use_bin_type=True)


def hint_record(hkey: bytes) -> tuple[str | None, bytes]:
    """``(owner, key)`` of a hint record; owner None if the record is malformed (it is
    skipped, never stopping the scan of the hints after it)."""
    try:
        owner, key = msgpack.unpackb(hkey, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None, b""
    if not isinstance(owner, str) or not isinstance(key, bytes):
        return None, b""
    return owner, key


def holds(expected: bytes | None, current: bytes | None) -> bool:
    """The compare-and-set rule: an item that names the hash its writer read (``b""`` or
    None: nothing) is written only if the key still holds exactly that."""
    return current == (expected or None)


def new_token() -> bytes:
    return secrets.token_bytes(8)


class GroupCommit:
    """What one batch's writes commit: the records and hints, and each writer's answer."""

    def __init__(self) -> None:
        self.writes: list[tuple[bytes, bytes | None]] = []
        self.hints: list[tuple[bytes, bytes | None]] = []
        self.acks: list[tuple[str, Any, list[bytes]]] = []  # reply_to, ref, conflicts
        self.hashes: dict[bytes, bytes | None] = {}  # key -> object hash as the batch leaves it

    def take(self, reply_to: str, ref: Any, items: list[Item], hinted: list[Hinted],
             current: Callable[[bytes], bytes | None],
             token: Callable[[], bytes] = new_token) -> list[bytes]:
        """Add one checked write; ``current(key)`` is the object hash the key holds now,
        this batch's writes included (asked only of items that name an expected hash).
        The keys refused as conflicts."""
        conflicts = []
        for key, value, expected in items:
            if expected is not NO_EXPECTATION and not holds(expected, current(key)):
                conflicts.append(key)  # changed since the writer read it
                continue
            self.writes.append((key, value))
            self.hashes[key] = object_hash(value) if value is not None else None
        self.hints.extend((hint_key(owner, key), token()) for owner, key in hinted)
        self.acks.append((reply_to, ref, conflicts))
        return conflicts
