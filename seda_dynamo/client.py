"""The Python clients of the wire protocol (docs/protocol.md): blocking and asyncio.

Dynamo paper section 4.1: ``get(key) -> (values, context)`` and ``put(key, value,
context)``. Both clients speak only the documented protocol over a ZeroMQ DEALER socket
and turn every error code into its own exception class. With ``keys``
(``security.ClientKeys``) they connect with CURVE, to a node that has it on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, NamedTuple

import msgpack
import zmq
import zmq.asyncio

from seda_dynamo.protocol import build_request
from seda_dynamo.routing import first_up, live_clients
from seda_dynamo.security import ClientKeys

DEFAULT_SERVER = "127.0.0.1:7000"


class DynamoError(Exception):
    """An error reply; ``code`` is the protocol's error code."""

    code = "internal"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class BadRequest(DynamoError):
    code = "bad_request"


class TooLarge(DynamoError):
    code = "too_large"


class Unavailable(DynamoError):
    code = "unavailable"


class Overloaded(DynamoError):
    code = "overloaded"


class RequestTimeout(DynamoError):
    code = "timeout"


class InternalError(DynamoError):
    code = "internal"


class NoReply(DynamoError):
    """The server did not answer within the client's own timeout."""

    code = "no_reply"


ERRORS: dict[str, type[DynamoError]] = {
    cls.code: cls for cls in (BadRequest, TooLarge, Unavailable, Overloaded, RequestTimeout,
                              InternalError)
}


class GetResult(NamedTuple):
    values: list[bytes]
    context: bytes | None


def _key(key: bytes | str) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


def _check(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok"):
        return reply
    code = reply.get("error", "internal")
    raise ERRORS.get(code, DynamoError)(reply.get("message", code), code)


def _endpoint(server: str) -> str:
    return server if "://" in server else f"tcp://{server}"


class _Requests:
    """Builds request bodies; shared by both clients."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)

    def body(self, op: str, **fields: Any) -> tuple[int, bytes]:
        rid = next(self.ids)
        return rid, build_request(op, id=rid, **fields)

    @staticmethod
    def keyed(op: str, key: bytes | str, timeout: float | None, default: float,
              **fields: Any) -> dict[str, Any]:
        """The fields of a get, put or delete; the client waits a second past the server."""
        return {"op": op, "key": _key(key), **fields,
                "timeout_ms": int(timeout * 1000) if timeout is not None else None,
                "client_timeout": (timeout if timeout is not None else default) + 1.0}


class Client:
    """A blocking client: ``Client("127.0.0.1:7000").put("k", b"v")``.

    With ``route=True`` the client fetches the ring (paper section 6.4, client-driven
    coordination) and sends each get, put and delete straight to the first live node of
    the key's preference list, refreshing the ring when a reply names a newer epoch; it
    falls back to ``server`` whenever a node does not answer.
    """

    def __init__(self, server: str = DEFAULT_SERVER, timeout: float = 5.0,
                 context: zmq.Context | None = None, route: bool = False,
                 keys: ClientKeys | None = None) -> None:
        self.server = server
        self.timeout = timeout
        self.route = route
        self.keys = keys  # CURVE: this client's key pair and the cluster's server key
        self._ctx = context or zmq.Context.instance()
        self._socks: dict[str, zmq.Socket] = {}
        self._requests = _Requests()
        self._ring: dict[str, Any] | None = None
        self._clients: dict[str, str] = {}  # node id -> client address

    def _sock(self, server: str) -> zmq.Socket:
        sock = self._socks.get(server)
        if sock is None:
            sock = self._socks[server] = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if self.keys is not None:
                self.keys.apply(sock)
            sock.connect(_endpoint(server))
        return sock

    def call(self, op: str, *, client_timeout: float | None = None, **fields: Any) -> dict:
        """Send one request and wait for its reply; raise the reply's error, if any."""
        target = self._route(fields.get("key")) if self.route and "key" in fields else None
        if target is not None:
            try:
                return self._call(target, op, client_timeout, fields)
            except NoReply:
                self._ring = None  # the node may be gone: ask the seed, refresh the ring
        return self._call(self.server, op, client_timeout, fields)

    def _call(self, server: str, op: str, client_timeout: float | None,
              fields: dict[str, Any]) -> dict:
        sock = self._sock(server)
        rid, body = self._requests.body(op, **fields)
        sock.send_multipart([b"", body])
        wait = client_timeout if client_timeout is not None else self.timeout
        deadline = time.monotonic() + wait
        while sock.poll(max(0.0, deadline - time.monotonic()) * 1000):
            reply = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
            if reply.get("id") == rid:  # else a late reply to an earlier request
                if self.route and self._ring and reply.get("epoch", 0) > self._ring["epoch"]:
                    self._ring = None
                return _check(reply)
        raise NoReply(f"no reply from {server} within {wait:.1f} s")

    def _route(self, key: bytes) -> str | None:
        """The client address of the first live node of ``key``'s preference list."""
        if self._ring is None:
            try:
                self._ring = self._call(self.server, "ring", None, {})
            except DynamoError:
                return None
            self._clients = live_clients(self._ring)
        return first_up(key, self._ring, self._clients)

    def get(self, key: bytes | str, r: int | None = None,
            timeout: float | None = None) -> GetResult:
        reply = self.call(**_Requests.keyed("get", key, timeout, self.timeout, r=r))
        return GetResult(reply["values"], reply.get("context"))

    def put(self, key: bytes | str, value: bytes, context: bytes | None = None,
            w: int | None = None, timeout: float | None = None) -> bytes:
        return self.call(**_Requests.keyed("put", key, timeout, self.timeout, value=value,
                                           context=context, w=w))["context"]

    def delete(self, key: bytes | str, context: bytes | None = None, w: int | None = None,
               timeout: float | None = None) -> bytes:
        """Delete what ``context`` covers; without one, everything the coordinator holds."""
        return self.call(**_Requests.keyed("delete", key, timeout, self.timeout,
                                           context=context, w=w))["context"]

    def ping(self) -> str:
        return self.call("ping")["node"]

    def ring(self) -> dict[str, Any]:
        return self.call("ring")

    def admin(self, command: str, seed: str | None = None) -> dict[str, Any]:
        """An operator's command: ``status``, ``transfers``, ``leave`` or ``join`` (seed)."""
        return self.call("admin", command=command, seed=seed)

    def stats(self) -> dict[str, Any]:
        return self.call("stats")["stages"]

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close(linger=0)
        self._socks.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """An asyncio client; many requests may be in flight on its one DEALER socket."""

    def __init__(self, server: str = DEFAULT_SERVER, timeout: float = 5.0,
                 context: zmq.asyncio.Context | None = None,
                 keys: ClientKeys | None = None) -> None:
        self.server = server
        self.timeout = timeout
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            keys.apply(self._sock)
        self._sock.connect(_endpoint(server))
        self._requests = _Requests()
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while True:
            frames = await self._sock.recv_multipart()
            reply = msgpack.unpackb(frames[-1], raw=False)
            future = self._waiting.pop(reply.get("id"), None)
            if future is not None and not future.done():
                future.set_result(reply)

    async def call(self, op: str, *, client_timeout: float | None = None,
                   **fields: Any) -> dict[str, Any]:
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        rid, body = self._requests.body(op, **fields)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        await self._sock.send_multipart([b"", body])
        wait = client_timeout if client_timeout is not None else self.timeout
        try:
            reply = await asyncio.wait_for(future, wait)
        except TimeoutError:
            raise NoReply(f"no reply from {self.server} within {wait:.1f} s") from None
        finally:
            self._waiting.pop(rid, None)
        return _check(reply)

    async def get(self, key: bytes | str, r: int | None = None,
                  timeout: float | None = None) -> GetResult:
        reply = await self.call(**_Requests.keyed("get", key, timeout, self.timeout, r=r))
        return GetResult(reply["values"], reply.get("context"))

    async def put(self, key: bytes | str, value: bytes, context: bytes | None = None,
                  w: int | None = None, timeout: float | None = None) -> bytes:
        return (await self.call(**_Requests.keyed("put", key, timeout, self.timeout,
                                                  value=value, context=context, w=w)))["context"]

    async def delete(self, key: bytes | str, context: bytes | None = None,
                     w: int | None = None, timeout: float | None = None) -> bytes:
        """Delete what ``context`` covers; without one, everything the coordinator holds."""
        return (await self.call(**_Requests.keyed("delete", key, timeout, self.timeout,
                                                  context=context, w=w)))["context"]

    async def ping(self) -> str:
        return (await self.call("ping"))["node"]

    async def stats(self) -> dict[str, Any]:
        return (await self.call("stats"))["stages"]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self._sock.close(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
