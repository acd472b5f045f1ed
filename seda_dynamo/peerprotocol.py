"""The peer protocol (docs/peer-protocol.md): one table of peer requests and answers,
each with the validator that checks its fields before anything is stored or emitted.

Dynamo paper sections 4.5 (the coordinator's requests to replicas: ``rput``, ``rget``,
a forwarded write), 4.6 (hinted handoff), 4.7 (anti-entropy: ``tree``) and 4.8
(membership: ``gossip``, ``ping``). The network stage checks every peer event here, as it
checks client frames with ``seda_dynamo.protocol``: a field of the wrong type or out of
range raises ``PeerError`` (a ``ValueError``) and the event is dropped whole, so no
half-entered state is left behind. Pure functions, no IO.

A request travels as ``["req", from_peer, call_id, request]`` and its answer as
``["resp", node_id, call_id, payload]``; ``call_id`` is chosen by the caller, at random,
and an answer is taken only if it names a call this node made and is of the kind that
call expects (``answer_kind``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from seda_dynamo import address as addresses
from seda_dynamo import causality, contexts
from seda_dynamo.brief import brief
from seda_dynamo.protocol import MAX_TIMEOUT_MS

#: Call ids are unsigned 64-bit integers (msgpack's largest).
MAX_CALL_ID = 2**64 - 1
#: Longest node id, peer address or hint owner accepted from a peer.
MAX_NAME_BYTES = 256
#: Most members an ``rcheck`` may name.
MAX_MEMBERS = 4096
#: Partitions of a ring are at most this many (config: a power of two in 1..65536).
MAX_PARTITIONS = 65536
WRITE_OPS = ("put", "delete")
#: Room in a peer message for what surrounds one record: the event's array headers,
#: the sender's address, the call id, the op, a hint owner.
MESSAGE_SLACK = 64 * 1024


class PeerError(ValueError):
    """A peer event that is malformed: dropped and counted, never half-applied."""


@dataclass(frozen=True, slots=True)
class PeerLimits:
    """What the ranges of peer fields depend on: this node's N."""

    n: int = 3


@dataclass(frozen=True, slots=True)
class Req:
    """A validated request from ``peer``; ``args`` are the request's fields, checked."""

    peer: str
    call_id: int
    op: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Resp:
    """A validated answer; ``node`` is only what the sender claims (callers use their
    own record of whom they called)."""

    node: str
    call_id: int
    payload: list[Any]


# Field checks ---------------------------------------------------------------------------
def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise PeerError(f"{what} must be bin, not {type(value).__name__}")
    return value


def _opt_bytes(value: Any, what: str) -> bytes | None:
    return None if value is None else _bytes(value, what)


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PeerError(f"{what} must be a non-empty str, not {type(value).__name__}")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise PeerError(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    return value


def _opt_name(value: Any, what: str) -> str | None:
    return None if value is None else _name(value, what)


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise PeerError(f"{what} must be an integer in {lo}..{hi}, not {brief(value, 40)}")
    return value


def _opt_int(value: Any, what: str, lo: int, hi: int) -> int | None:
    return None if value is None else _int(value, what, lo, hi)


def address(value: Any, what: str = "peer address") -> str:
    """A ``HOST:PORT`` where answers may be sent: the one address rule of the node
    (``seda_dynamo/address.py``), so nothing a socket cannot connect to gets in."""
    try:
        return addresses.check(value, what)
    except addresses.AddressError as exc:
        raise PeerError(str(exc)) from None


def _context(value: Any) -> causality.VersionVector | None:
    """A forwarded write's context: held to the client port's bounds (``contexts``)."""
    if value is None:
        return None
    try:
        return contexts.check_context(value)
    except ValueError as exc:
        raise PeerError(f"context: {exc}") from None


def _arity(request: list[Any], count: int) -> None:
    if len(request) != count:
        raise PeerError(f"{request[0]!r} takes {count - 1} fields, not {len(request) - 1}")


# Requests: op -> (validator of the whole request -> its fields, the answer's kind) -----
def _ping(request: list[Any], _limits: PeerLimits) -> tuple[Any, ...]:
    _arity(request, 1)
    return ()


def _gossip(request: list[Any], _limits: PeerLimits) -> tuple[Any, ...]:
    _arity(request, 2)
    if not isinstance(request[1], dict):
        raise PeerError("a gossiped view must be a map")
    return (request[1],)


def _rput(request: list[Any], _limits: PeerLimits) -> tuple[Any, ...]:
    _arity(request, 4)
    return (_bytes(request[1], "key"), _bytes(request[2], "clock"),
            _opt_name(request[3], "hint"))


def _rget(request: list[Any], _limits: PeerLimits) -> tuple[Any, ...]:
    _arity(request, 2)
    return (_bytes(request[1], "key"),)


def _tree(request: list[Any], _limits: PeerLimits) -> tuple[Any, ...]:
    _arity(request, 3)
    if not isinstance(request[2], dict):
        raise PeerError("a tree question must be a map")
    return (_int(request[1], "partition", 0, MAX_PARTITIONS - 1), request[2])


def _rcheck(request: list[Any], _limits: PeerLimits) -> tuple[Any, ...]:
    _arity(request, 3)
    members = request[2]
    if not isinstance(members, list) or len(members) > MAX_MEMBERS:
        raise PeerError(f"members must be an array of at most {MAX_MEMBERS} node ids")
    return (_bytes(request[1], "key"), [_name(m, "a member") for m in members])


def _rreap(request: list[Any], _limits: PeerLimits) -> tuple[Any, ...]:
    _arity(request, 3)
    return (_bytes(request[1], "key"), _bytes(request[2], "tombstone"))


def _fwd(request: list[Any], limits: PeerLimits) -> tuple[Any, ...]:
    _arity(request, 8)
    _, op, key, value, context, r, w, timeout_ms = request
    if op not in WRITE_OPS:
        raise PeerError(f"a forwarded op must be one of {', '.join(WRITE_OPS)}, "
                        f"not {brief(op, 40)}")
    value = _bytes(value, "value") if op == "put" else None
    return (op, _bytes(key, "key"), value, _context(context),
            _opt_int(r, "r", 1, limits.n), _opt_int(w, "w", 1, limits.n),
            _opt_int(timeout_ms, "timeout_ms", 1, MAX_TIMEOUT_MS))


Validator = Callable[[list[Any], PeerLimits], tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class PeerOp:
    """One row of the peer request table (docs/peer-protocol.md's, in code)."""

    validate: Validator  # checks the request whole, returns its fields
    answer: str | None  # the kind of its answer (None: none is sent)
    served_by: str  # the stage that serves it


#: Every peer request, as docs/peer-protocol.md's table lists them
#: (``tests/cores/test_docs.py`` holds the two to each other).
REQUESTS: dict[str, PeerOp] = {
    "ping": PeerOp(_ping, "pong", "network"),
    "gossip": PeerOp(_gossip, "view", "gossip"),
    "rput": PeerOp(_rput, "updated", "versioning"),
    "rget": PeerOp(_rget, "got", "persistence"),
    "tree": PeerOp(_tree, "tree", "persistence"),
    "rcheck": PeerOp(_rcheck, "checked", "persistence"),
    "rreap": PeerOp(_rreap, None, "persistence"),
    "fwd": PeerOp(_fwd, "reply", "coordination"),
}


# Answers: kind -> validator of the payload --------------------------------------------
def _pong(payload: list[Any]) -> None:
    _arity(payload, 1)


def _view(payload: list[Any]) -> None:
    _arity(payload, 2)
    if not isinstance(payload[1], dict):
        raise PeerError("a view must be a map")


def _updated(payload: list[Any]) -> None:
    _arity(payload, 2)
    if payload[1] is not None and not isinstance(payload[1], str):
        raise PeerError("an update's error must be str or nil")


def _got(payload: list[Any]) -> None:
    _arity(payload, 3)
    _opt_bytes(payload[1], "versions")
    if payload[2] is not None and not isinstance(payload[2], str):
        raise PeerError("a read's error must be str or nil")


def _tree_answer(payload: list[Any]) -> None:
    _arity(payload, 2)  # its content is checked by antientropy.Round.feed


def _checked(payload: list[Any]) -> None:
    _arity(payload, 3)
    _opt_bytes(payload[1], "versions")
    if not isinstance(payload[2], bool):
        raise PeerError("'hinted' must be a bool")


def _reply(payload: list[Any]) -> None:
    _arity(payload, 2)
    reply = payload[1]
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise PeerError("a forwarded write's reply must be a map with a bool 'ok'")


ANSWERS: dict[str, Callable[[list[Any]], None]] = {
    "pong": _pong, "view": _view, "updated": _updated, "got": _got, "tree": _tree_answer,
    "checked": _checked, "reply": _reply,
}


def answer_kind(request: Any) -> str | None:
    """The kind of answer a request this node sends expects (None: no answer comes)."""
    entry = (REQUESTS.get(request[0]) if isinstance(request, list) and request
             and isinstance(request[0], str) else None)
    if entry is None:
        raise PeerError(f"unknown peer request {brief(request, 60)}")
    return entry.answer


def parse_event(event: Any, limits: PeerLimits) -> Req | Resp:
    """Check one peer event whole; raise ``PeerError`` naming what is wrong."""
    if not isinstance(event, list) or len(event) != 4:
        raise PeerError("a peer event must be a 4-item array")
    kind, who, call_id, body = event
    call_id = _int(call_id, "call id", 0, MAX_CALL_ID)
    if kind == "resp":
        node = _name(who, "node id")
        if not isinstance(body, list) or not body or not isinstance(body[0], str) \
                or body[0] not in ANSWERS:
            raise PeerError(f"unknown answer {brief(body, 60)}")
        ANSWERS[body[0]](body)
        return Resp(node, call_id, body)
    if kind != "req":
        raise PeerError(f"unknown peer event {brief(kind, 40)}")
    peer = address(who)
    if not isinstance(body, list) or not body or not isinstance(body[0], str):
        raise PeerError("a peer request must be an array that starts with its op")
    entry = REQUESTS.get(body[0])
    if entry is None:
        raise PeerError(f"unknown peer request {brief(body[0], 40)}")
    return Req(peer, call_id, body[0], entry.validate(body, limits))


def check_answer(expected: str | None, payload: list[Any]) -> None:
    """An answer must be of the kind its call expects (a forged ``got`` for a ``rput``
    call, say, is refused)."""
    if payload[0] != expected:
        raise PeerError(f"answer {payload[0]!r} to a call that expects {expected!r}")


# Sizes: the peer port's maximum message size -----------------------------------------
def max_message_bytes(max_key_bytes: int, max_record_bytes: int) -> int:
    """The peer port's maximum message size (ZMQ_MAXMSGSIZE): one largest record (its
    encoded versions, at most ``max_record_bytes``: versioning refuses a client write
    that would make a record larger) with its key and the event around it; a sender
    splits its batches so that no message is larger. Transfers, hints and repairs carry
    whole records and always store what they carry, so the peer port must take this."""
    return max_key_bytes + 5 + max_record_bytes + MESSAGE_SLACK


def pack_events(events: list[Any], limit: int) -> tuple[list[tuple[bytes, list[Any]]],
                                                       list[Any]]:
    """Pack events for a peer into as few messages as fit ``limit`` bytes each (a
    message is a msgpack array of events): ``[(message, its events)]``, and the events
    that alone exceed the limit (the receiver would drop the connection: not sent).
    Raises what msgpack raises for an event it cannot encode."""
    whole = msgpack.packb(events, use_bin_type=True)
    if len(whole) <= limit:  # the usual case: one message, one call into msgpack
        return [(whole, events)], []
    frames: list[tuple[bytes, list[Any]]] = []
    oversize: list[Any] = []
    parts: list[bytes] = []
    batch: list[Any] = []
    size = 0
    for event in events:
        packed = msgpack.packb(event, use_bin_type=True)
        if len(packed) + 5 > limit:
            oversize.append(event)
            continue
        if parts and size + len(packed) + 5 > limit:
            frames.append((_array(parts), batch))
            parts, batch, size = [], [], 0
        parts.append(packed)
        batch.append(event)
        size += len(packed)
    if parts:
        frames.append((_array(parts), batch))
    return frames, oversize


def _array(parts: list[bytes]) -> bytes:
    count = len(parts)
    if count < 16:
        head = bytes([0x90 | count])
    elif count < 65536:
        head = b"\xdc" + count.to_bytes(2, "big")
    else:
        head = b"\xdd" + count.to_bytes(4, "big")
    return head + b"".join(parts)
