"""The load generator's seda-dynamo driver: the wire protocol (docs/protocol.md) on one
ZeroMQ DEALER per server, replies matched by ``id``; and routing by the ring.

With ``owner`` routing the ring is fetched once (``fetch_ring``) and each request goes
to the first live node of its key's preference list (``routing.owner_table``): the
client-driven coordination of the Dynamo paper, section 6.4, which saves the hop from a
random node to a coordinator.
"""

from __future__ import annotations

import select
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import zmq

from seda_dynamo.loadgen.targets import server_list
from seda_dynamo.ring import partition_of
from seda_dynamo.routing import owner_table
from seda_dynamo.security import curve_from_env as curve

RING_TIMEOUT = 2.0


def zmq_endpoint(server: str) -> str:
    return server if "://" in server else f"tcp://{server}"


def _wait(socks: list[zmq.Socket], seconds: float) -> list[zmq.Socket]:
    """The sockets with a reply to read, waiting up to ``seconds`` for one (sub-ms).

    zmq_poll counts whole milliseconds, so this selects on the sockets' FDs. An FD only
    signals that the socket's state may have changed, so ZMQ_EVENTS is checked before
    and after the select (the documented edge-triggered pattern).
    """
    ready = [s for s in socks if s.getsockopt(zmq.EVENTS) & zmq.POLLIN]
    if ready or seconds <= 0:
        return ready
    select.select([s.getsockopt(zmq.FD) for s in socks], [], [], seconds)
    return [s for s in socks if s.getsockopt(zmq.EVENTS) & zmq.POLLIN]


class SedaDriver:
    """seda-dynamo's wire protocol: one DEALER per server, replies matched by ``id``.

    With ``contexts``, a put carries the context of the last reply this client got for
    its key (Dynamo's read-modify-write: the new value supersedes what was read), so a
    long run over a fixed key space does not pile up siblings as blind puts would.
    """

    def __init__(self, servers: list[str], route: list[int] | None,
                 contexts: bool = False) -> None:
        self.contexts: dict[bytes, bytes] | None = {} if contexts else None
        self.keys: dict[int, bytes] = {}  # in flight, when contexts are kept
        self.targets = servers
        self.route = route
        self.q = len(route) if route else 0
        self.ctx = zmq.Context()
        self.socks: list[zmq.Socket] = []
        self.ready: list[zmq.Socket] = []
        for server in servers:
            sock = self.ctx.socket(zmq.DEALER)
            self.socks.append(sock)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            curve(sock)
            sock.connect(zmq_endpoint(server))

    def send(self, rid: int, is_get: bool, key: bytes, value: bytes) -> int:
        target = self.route[partition_of(key, self.q)] if self.route else rid % len(self.socks)
        body: dict[str, Any] = ({"op": "get", "id": rid, "key": key} if is_get else
                                {"op": "put", "id": rid, "key": key, "value": value})
        if self.contexts is not None:
            self.keys[rid] = key
            context = self.contexts.get(key)
            if context is not None and not is_get:
                body["context"] = context
        self.socks[target].send_multipart([b"", msgpack.packb(body, use_bin_type=True)],
                                          copy=False)
        return target

    def flush(self) -> None:
        pass  # ZeroMQ sends in its own I/O thread

    def wait(self, seconds: float) -> None:
        self.ready = _wait(self.socks, seconds)

    def collect(self, done: list[tuple[int, str | None]]) -> None:
        for sock in self.ready:
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                reply = msgpack.unpackb(frames[-1], raw=False)
                if isinstance(reply, dict):
                    rid = reply.get("id")
                    if self.contexts is not None:
                        key = self.keys.pop(rid, None)
                        if key is not None and reply.get("context"):
                            self.contexts[key] = reply["context"]
                    if reply.get("ok"):
                        done.append((rid, None))
                    else:
                        done.append((rid, str(reply.get("error", "internal"))))
        self.ready = []

    def abandon(self, rid: int) -> None:
        self.keys.pop(rid, None)  # a late reply is ignored: its id is no longer pending

    def close(self) -> None:
        for sock in self.socks:
            sock.close(linger=0)
        self.ctx.term()


def fetch_ring(servers: str | Sequence[str], timeout: float = RING_TIMEOUT) -> dict[str, Any]:
    """The ``ring`` reply of the first server that answers within ``timeout`` seconds."""
    tried = []
    for server in server_list(servers):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            curve(sock)
            sock.connect(zmq_endpoint(server))
            sock.send_multipart([b"", msgpack.packb({"op": "ring", "id": 0})])
            deadline = time.monotonic() + timeout
            while sock.poll(max(0.0, deadline - time.monotonic()) * 1000):
                reply = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
                if isinstance(reply, dict) and reply.get("id") == 0:
                    if reply.get("ok"):
                        return reply
                    tried.append(f"{server}: {reply.get('error')}: {reply.get('message')}")
                    break
            else:
                tried.append(f"{server}: no reply in {timeout:.1f} s")
        finally:
            sock.close(linger=0)
            ctx.term()
    raise RuntimeError("no ring to route by: " + "; ".join(tried))


def owner_routes(ring: dict[str, Any], seed: str) -> tuple[list[str], list[int]]:
    """``(targets, route)``: the live nodes' client addresses, and for each partition the
    index in ``targets`` of the first live node of its preference list (``seed`` when
    none of them is up): ``routing.owner_table``, a malformed ring a RuntimeError."""
    try:
        return owner_table(ring, seed)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None
