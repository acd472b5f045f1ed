"""The client wire protocol, version 1 (docs/protocol.md): decoding, validation, replies.

Pure functions with no IO, used by the network stage to turn a client frame into a
validated ``Request`` (or a ``ProtocolError`` carrying one of the documented error codes)
and by the clients to build requests. Dynamo paper section 4.1 (the get/put interface).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from seda_dynamo import address, causality, contexts

OPS = frozenset({"get", "put", "delete", "ping", "ring", "stats", "admin"})
ADMIN_COMMANDS = frozenset({"status", "transfers", "leave", "join"})
#: The admin commands that change the cluster; the others only read.
CHANGING_COMMANDS = frozenset({"leave", "join"})
KEY_OPS = frozenset({"get", "put", "delete"})
ERROR_CODES = ("bad_request", "too_large", "unavailable", "overloaded", "timeout", "internal")
MAX_TIMEOUT_MS = 600_000
#: Room for the map keys, the context and the small fields around a key and a value.
ENVELOPE_SLACK = 64 * 1024


class ProtocolError(Exception):
    """A request the node refuses; ``code`` is one of ``ERROR_CODES``."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Limits:
    """Client request limits; replication traffic is never held to them."""

    max_key_bytes: int = 64 * 1024
    max_value_bytes: int = 1024 * 1024
    n: int = 3

    @property
    def max_body_bytes(self) -> int:
        return self.max_key_bytes + self.max_value_bytes + ENVELOPE_SLACK


@dataclass(frozen=True, slots=True)
class Request:
    """One validated client request."""

    op: str
    id: int | None = None
    key: bytes = b""
    value: bytes | None = None
    context: causality.VersionVector | None = None
    r: int | None = None
    w: int | None = None
    timeout_ms: int | None = None
    command: str = ""  # admin
    seed: str = ""  # admin join: a member's peer HOST:PORT


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack_body(body: bytes, limits: Limits) -> Any:
    """Decode one msgpack object with every length capped, so a bomb allocates nothing big."""
    if len(body) > limits.max_body_bytes:
        raise ProtocolError("too_large", f"request of {len(body)} bytes exceeds the limit of "
                            f"{limits.max_body_bytes} bytes")
    try:
        # One call, every length capped (the body's own size is checked above).
        return msgpack.unpackb(
            body, raw=False, max_bin_len=limits.max_value_bytes + limits.max_key_bytes,
            max_str_len=limits.max_key_bytes + 1024, max_array_len=64, max_map_len=64,
            max_ext_len=0)
    except msgpack.ExtraData:
        raise ProtocolError("bad_request", "body holds more than one msgpack object") from None
    except msgpack.OutOfData:
        raise ProtocolError("bad_request",
                            "body is truncated: not one complete msgpack object") from None
    except (ValueError, TypeError, msgpack.FormatError, msgpack.StackError) as exc:
        if "incomplete" in str(exc):
            raise ProtocolError("bad_request", "body is truncated: not one complete msgpack "
                                "object") from None
        raise ProtocolError("bad_request", "body is not valid msgpack: "
                            f"{str(exc) or type(exc).__name__}") from None


def _int_field(msg: dict[str, Any], name: str, lo: int, hi: int, rid: Any) -> int | None:
    value = msg.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError("bad_request", f"field '{name}' must be an integer in {lo}..{hi}", rid)
    return value


def _bytes_field(msg: dict[str, Any], name: str, rid: Any, *, allow_str: bool) -> bytes:
    if name not in msg:
        raise ProtocolError("bad_request", f"field '{name}' is required for op '{msg['op']}'", rid)
    value = msg[name]
    if isinstance(value, bytes):
        return value
    if allow_str and isinstance(value, str):
        return value.encode("utf-8")
    kinds = "bin or str" if allow_str else "bin"
    raise ProtocolError("bad_request", f"field '{name}' must be {kinds}, "
                        f"not {type(value).__name__}", rid)


def parse_request(body: bytes, limits: Limits) -> Request:
    """Validate one client body; raise ``ProtocolError`` naming what is wrong."""
    msg = unpack_body(body, limits)
    if not isinstance(msg, dict):
        raise ProtocolError("bad_request", f"body must be a msgpack map, not {type(msg).__name__}")
    rid = msg.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int)):
        raise ProtocolError("bad_request", "field 'id' must be an integer", _echoable(rid))
    op = msg.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError("bad_request", f"unknown op {op!r}; expected one of "
                            f"{', '.join(sorted(OPS))}", rid)
    if op == "admin":
        command = msg.get("command")
        if not isinstance(command, str) or command not in ADMIN_COMMANDS:
            raise ProtocolError("bad_request", f"unknown admin command {command!r}; expected "
                                f"one of {', '.join(sorted(ADMIN_COMMANDS))}", rid)
        seed = ""
        if command == "join":
            try:  # the one address check: what cannot be connected to never gets in
                seed = address.check(msg.get("seed"), "seed")
            except address.AddressError as exc:
                raise ProtocolError("bad_request", f"admin join needs 'seed': a member's "
                                    f"peer HOST:PORT; {exc}", rid) from None
        return Request(op=op, id=rid, command=command, seed=seed)
    if op not in KEY_OPS:
        return Request(op=op, id=rid)
    key = _bytes_field(msg, "key", rid, allow_str=True)
    if len(key) > limits.max_key_bytes:
        raise ProtocolError("too_large", f"key of {len(key)} bytes exceeds the limit of "
                            f"{limits.max_key_bytes} bytes", rid)
    value = None
    if op == "put":
        value = _bytes_field(msg, "value", rid, allow_str=False)
        if len(value) > limits.max_value_bytes:
            raise ProtocolError("too_large", f"value of {len(value)} bytes exceeds the limit of "
                                f"{limits.max_value_bytes} bytes", rid)
    context = None
    if op != "get":
        raw = msg.get("context")
        if raw is not None:
            if not isinstance(raw, bytes):
                raise ProtocolError("bad_request", "field 'context' must be bin or nil", rid)
            try:
                context = contexts.decode_context(raw)
            except ValueError as exc:
                raise ProtocolError("bad_request", f"field 'context' is not a context this "
                                    f"store issued: {exc}", rid) from None
    return Request(
        op=op,
        id=rid,
        key=key,
        value=value,
        context=context,
        r=_int_field(msg, "r", 1, limits.n, rid) if op == "get" else None,
        w=_int_field(msg, "w", 1, limits.n, rid) if op != "get" else None,
        timeout_ms=_int_field(msg, "timeout_ms", 1, MAX_TIMEOUT_MS, rid),
    )


class Caller(Protocol):
    """What the runtime knows of the connection a client frame came on (ZeroMQ message
    properties): its IP (``Peer-Address``) and, with CURVE, its public key in Z85 text
    (``User-Id``, set by the ZAP handler). Either may be None."""

    @property
    def address(self) -> str | None: ...

    @property
    def user_id(self) -> str | None: ...


def admin_refusal(command: str, caller: Caller | None,
                  admin_keys: frozenset[bytes] | None) -> str | None:
    """Why ``caller`` may not run admin ``command``, or None if it may.

    ``status`` and ``transfers`` only read and are open to every client. ``join`` and
    ``leave`` change the cluster: with CURVE on (``admin_keys`` the Z85 public keys of
    ``curve_admin_keys``, empty when it is not set) the connection's key must be on that
    list; without CURVE (``admin_keys`` None) the connection must come from loopback.
    An unknown caller is refused.
    """
    if command not in CHANGING_COMMANDS:
        return None
    if admin_keys is not None:
        user = caller.user_id if caller is not None else None
        if user is not None and user.encode("ascii", "replace") in admin_keys:
            return None
        if not admin_keys:
            return (f"admin {command} changes the cluster: with CURVE on it needs a client "
                    "key on curve_admin_keys, which this node does not set")
        return (f"admin {command} changes the cluster: with CURVE on it needs a client key "
                "on curve_admin_keys, and this connection's key is not on it")
    peer = caller.address if caller is not None else None
    if address.is_loopback(peer):
        return None
    return (f"admin {command} changes the cluster: without CURVE it is taken only from "
            f"loopback clients, and this one is at {peer or 'an unknown address'}")


def _echoable(rid: Any) -> Any:
    return rid if isinstance(rid, (int, str, bytes)) else None


def error_reply(code: str, message: str, request_id: Any = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"ok": False, "error": code, "message": message}
    if request_id is not None:
        reply["id"] = request_id
    return reply


def build_request(op: str, **fields: Any) -> bytes:
    """Pack a request body for a client (fields whose value is None are left out)."""
    msg = {"op": op}
    msg.update({k: v for k, v in fields.items() if v is not None})
    return pack(msg)


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], bytes | None]:
    """A client message as the ROUTER gives it, ``[identity..., b"", body]`` ->
    (envelope, body); body is None when the shape is wrong (the envelope still gets the
    error reply)."""
    for i in range(1, len(frames)):
        if frames[i] == b"":
            envelope, rest = frames[: i + 1], frames[i + 1:]
            return envelope, rest[0] if len(rest) == 1 else None
    envelope = frames[:1]
    rest = frames[1:]
    return envelope, rest[0] if len(rest) == 1 else None


def with_id(reply: dict[str, Any], request_id: Any) -> dict[str, Any]:
    """``reply`` carrying the client's request id, when it gave one."""
    if request_id is not None:
        reply = {**reply, "id": request_id}
    return reply
