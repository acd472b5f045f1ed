"""The load generator's targets: what a target string names, and one driver per kind.

``parse_target`` reads ``seda://host:port[,host:port...]`` (or bare ``host:port``),
``redis://127.0.0.1:PORT`` and ``etcd://127.0.0.1:PORT[,PORT...]``, each optionally ending
in ``?connections=N``. ``make_driver`` builds the driver ``seda_dynamo.loadgen``'s loop
runs: ``SedaDriver`` (ZeroMQ DEALERs, docs/protocol.md), ``RedisDriver`` (RESP ``GET`` /
``SET``) and ``EtcdDriver`` (etcd v3's HTTP/JSON gateway), the last two on
``FifoTcpDriver``: non-blocking TCP connections that pipeline and match replies in order.

These are written here rather than taken from client libraries: they sit in the load
generator's hot loop, where a general-purpose (async) client would cost more per request
than the servers under test. No new dependencies; the parsers are pure functions.
"""

from __future__ import annotations

import base64
import math
import select
import socket
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import msgpack
import zmq

from seda_dynamo.ring import partition_of
from seda_dynamo.security import curve_from_env as curve

KINDS = ("seda", "redis", "etcd")
CONNECT_TIMEOUT = 2.0
RECONNECT_EVERY = 0.05  # seconds between attempts to reopen a dropped TCP connection
READ_BYTES = 1 << 18
SELECT_FDS = 1000  # select() takes FDs below 1024 (FD_SETSIZE); poll() beyond
# Connections over all client processes when the target string does not say
# (``?connections=N``); see RedisDriver and EtcdDriver for why.
REDIS_CONNECTIONS = 8


def zmq_endpoint(server: str) -> str:
    return server if "://" in server else f"tcp://{server}"


def server_list(server: str | Sequence[str]) -> list[str]:
    """``"a:1"``, ``"a:1,b:2"`` or ``["a:1", "b:2"]`` as a list of servers (at least one)."""
    items = server.split(",") if isinstance(server, str) else list(server)
    servers = [s.strip() for s in items if s and s.strip()]
    if not servers:
        raise ValueError("no server given")
    return servers


def parse_target(target: str | Sequence[str]) -> tuple[str, list[str], dict[str, str]]:
    """``(kind, endpoints, options)`` of a target string (see the module docstring).

    ``"seda://a:1,b:2"``, ``"a:1,b:2"`` and ``["a:1", "b:2"]`` are seda targets;
    ``"redis://h:p"`` and ``"etcd://h:p1,p2,p3"`` (a bare port takes the host before it)
    are TCP targets. ``options`` come from a ``?name=value`` suffix.
    """
    if not isinstance(target, str):
        return "seda", server_list(target), {}
    text = target.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme == "tcp":
        return "seda", server_list(text), {}
    if scheme not in KINDS:
        raise ValueError(f"unknown target {target!r}; expected seda://, redis:// or etcd://")
    rest, _, query = rest.partition("?")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - {"connections"}
    if unknown:
        raise ValueError(f"unknown target option(s) {', '.join(sorted(unknown))} in {target!r}")
    if scheme == "seda":
        return "seda", server_list(rest.rstrip("/")), options
    endpoints, host = [], ""
    for item in server_list(rest.rstrip("/")):
        if item.isdigit() and host:
            item = f"{host}:{item}"
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a {scheme} endpoint must be HOST:PORT, not {item!r}")
        endpoints.append(item)
    return scheme, endpoints, options


# Drivers: one per target kind --------------------------------------------------------------
# A driver takes requests (send), pushes them out (flush), waits for readiness (wait) and
# hands back finished requests as (id, None) or (id, error code) (collect). abandon(id)
# is told when the loop gave up waiting for a request.


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


class _Conn:
    """One TCP connection of a FIFO driver: its output, input and requests in order."""

    __slots__ = ("index", "target", "address", "sock", "fd", "out", "inbuf", "rids",
                 "dirty", "last_try", "header")

    def __init__(self, index: int, target: int, address: tuple[str, int]) -> None:
        self.index, self.target, self.address = index, target, address
        self.sock: socket.socket | None = None
        self.fd = -1
        self.out = bytearray()
        self.inbuf = bytearray()
        self.rids: deque[int] = deque()
        self.dirty = False
        self.last_try = -math.inf
        self.header = b""


# (end of this reply, error code or None, whether the connection stays open),
# or None while the reply is incomplete
Parsed = tuple[int, str | None, bool] | None


class FifoTcpDriver:
    """Request/reply protocols without ids on TCP: ``connections`` non-blocking sockets,
    each pipelining up to ``depth`` requests whose replies come back in order.

    Requests take a free slot from a queue holding each connection ``depth`` times, so
    they spread round-robin and no connection has more than ``depth`` in flight. A
    connection that drops, sends garbage or holds a request past the loop's timeout is
    closed, its requests fail (``closed``, ``bad_reply``, ``no_reply``), and it is opened
    again for a later request; while it cannot be, requests given to it fail ``refused``.
    """

    kind = ""

    def __init__(self, endpoints: list[str], connections: int, concurrency: int) -> None:
        self.targets = endpoints
        connections = max(1, min(connections, concurrency))
        self.depth = -(-concurrency // connections)
        self.conns = []
        for i in range(connections):
            host, _, port = endpoints[i % len(endpoints)].rpartition(":")
            self.conns.append(_Conn(i, i % len(endpoints), (host, int(port))))
        self.slots: deque[int] = deque(c.index for _ in range(self.depth) for c in self.conns)
        self.by_fd: dict[int, _Conn] = {}
        self.dirty: list[_Conn] = []
        self.blocked: set[_Conn] = set()  # output the kernel would not take yet
        self.failed: list[tuple[int, str | None]] = []
        self.readable: list[int] = []
        self.writable: list[int] = []
        for conn in self.conns:
            self._connect(conn)

    # the protocol: subclasses
    def encode(self, conn: _Conn, is_get: bool, key: bytes, value: bytes) -> bytes:
        raise NotImplementedError

    def parse(self, buf: bytearray, pos: int) -> Parsed:
        raise NotImplementedError

    def _connect(self, conn: _Conn) -> bool:
        conn.last_try = time.monotonic()
        try:
            sock = socket.create_connection(conn.address, timeout=CONNECT_TIMEOUT)
        except OSError:
            return False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn.sock, conn.fd = sock, sock.fileno()
        conn.header = b"%s:%d" % (conn.address[0].encode(), conn.address[1])
        self.by_fd[conn.fd] = conn
        return True

    def _reset(self, conn: _Conn, code: str) -> None:
        """Close ``conn``; its requests fail with ``code`` and give their slots back."""
        if conn.sock is not None:
            self.by_fd.pop(conn.fd, None)
            conn.sock.close()
            conn.sock, conn.fd = None, -1
        for rid in conn.rids:
            self.failed.append((rid, code))
            self.slots.append(conn.index)
        conn.rids.clear()
        conn.out.clear()
        conn.inbuf.clear()
        self.blocked.discard(conn)

    def send(self, rid: int, is_get: bool, key: bytes, value: bytes) -> int:
        # the loop keeps fewer than `concurrency` <= len(conns) * depth in flight
        conn = self.conns[self.slots.popleft()]
        if conn.sock is None and (time.monotonic() - conn.last_try < RECONNECT_EVERY
                                  or not self._connect(conn)):
            self.failed.append((rid, "refused"))
            self.slots.append(conn.index)
            return conn.target
        conn.out += self.encode(conn, is_get, key, value)
        conn.rids.append(rid)
        if not conn.dirty:
            conn.dirty = True
            self.dirty.append(conn)
        return conn.target

    def _write(self, conn: _Conn) -> None:
        assert conn.sock is not None
        try:
            n = conn.sock.send(conn.out)
        except BlockingIOError:
            n = 0
        except OSError:
            self._reset(conn, "closed")
            return
        del conn.out[:n]
        if conn.out:
            self.blocked.add(conn)
        else:
            self.blocked.discard(conn)

    def flush(self) -> None:
        for conn in self.dirty:
            conn.dirty = False
            if conn.sock is not None and conn.out:
                self._write(conn)
        self.dirty.clear()

    def wait(self, seconds: float) -> None:
        # select(): a timeval has microseconds where poll rounds up to milliseconds, which
        # matters for the open loop's schedule; poll() only past select's FD_SETSIZE.
        seconds = 0.0 if self.failed else max(0.0, seconds)
        readers, writers = list(self.by_fd), [c.fd for c in self.blocked]
        if max(readers, default=0) < SELECT_FDS:
            self.readable, self.writable, _ = select.select(readers, writers, [], seconds)
            return
        poller = select.poll()
        for fd in readers:
            poller.register(fd, select.POLLIN)
        for fd in writers:
            poller.modify(fd, select.POLLIN | select.POLLOUT)
        events = poller.poll(math.ceil(seconds * 1000))
        self.readable = [fd for fd, ev in events if ev & ~select.POLLOUT]
        self.writable = [fd for fd, ev in events if ev & select.POLLOUT]

    def collect(self, done: list[tuple[int, str | None]]) -> None:
        for fd in self.writable:
            conn = self.by_fd.get(fd)
            if conn is not None and conn.out:
                self._write(conn)
        for fd in self.readable:
            conn = self.by_fd.get(fd)
            if conn is None or conn.sock is None:
                continue
            try:
                data = conn.sock.recv(READ_BYTES)
            except BlockingIOError:
                continue
            except OSError:
                self._reset(conn, "closed")
                continue
            if not data:
                self._reset(conn, "closed")
                continue
            buf = conn.inbuf
            buf += data
            pos = 0
            keep = True
            try:
                while conn.rids:
                    parsed = self.parse(buf, pos)
                    if parsed is None:
                        break
                    pos, code, keep = parsed
                    done.append((conn.rids.popleft(), code))
                    self.slots.append(conn.index)
                    if not keep:
                        break
            except (ValueError, IndexError):
                self._reset(conn, "bad_reply")
                continue
            if not keep:
                self._reset(conn, "closed")  # what was pipelined behind it is lost
            elif pos:
                del buf[:pos]
            if conn.sock is not None and buf and not conn.rids:
                self._reset(conn, "bad_reply")  # bytes nobody asked for
        self.readable, self.writable = [], []
        if self.failed:
            done.extend(self.failed)
            self.failed.clear()

    def abandon(self, rid: int) -> None:
        """The loop stopped waiting for ``rid``: its connection can no longer be matched in
        order, so it is closed and what it still holds fails ``no_reply``."""
        for conn in self.conns:
            if rid in conn.rids:
                self._reset(conn, "no_reply")
                return

    def close(self) -> None:
        for conn in self.conns:
            if conn.sock is not None:
                conn.sock.close()
                conn.sock = None
        self.by_fd.clear()


class RedisDriver(FifoTcpDriver):
    """``GET`` and ``SET`` in RESP2. A reply is ``+``/``:`` (done), ``$n`` (a bulk string,
    ``$-1`` for a missing key) or ``-CODE message`` (an error, counted by its CODE).

    Redis runs commands on one thread, so more connections buy no parallelism on the
    server: a few connections (``REDIS_CONNECTIONS``), each pipelining its share of the
    in-flight requests, keep the client's per-request cost lowest.
    """

    kind = "redis"

    def encode(self, conn: _Conn, is_get: bool, key: bytes, value: bytes) -> bytes:
        if is_get:
            return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
        return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(key), key, len(value), value)

    def parse(self, buf: bytearray, pos: int) -> Parsed:
        return parse_resp(buf, pos)


def parse_resp(buf: bytes | bytearray, pos: int) -> Parsed:
    """One RESP reply to GET/SET at ``buf[pos:]``: ``(end, error code or None, True)``,
    or None when it is not all there yet; ValueError for anything else."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind = buf[pos]
    if kind == 0x24:  # $ bulk string
        n = int(buf[pos + 1:end])
        if n < 0:
            return end + 2, None, True
        stop = end + 4 + n
        return (stop, None, True) if len(buf) >= stop else None
    if kind in (0x2B, 0x3A):  # + simple string, : integer
        return end + 2, None, True
    if kind == 0x2D:  # - error: the first word is its code
        code = bytes(buf[pos + 1:end]).split(b" ", 1)[0].decode("ascii", "replace")
        return end + 2, code or "ERR", True
    raise ValueError(f"unexpected RESP reply type {chr(kind)!r}")


_B64 = base64.b64encode


class EtcdDriver(FifoTcpDriver):
    """etcd v3's JSON gateway on HTTP/1.1 keep-alive: ``POST /v3/kv/range`` with
    ``serializable`` (a member answers from its own store, as a Dynamo node answers from
    its replicas) and ``POST /v3/kv/put``. Keys and values travel base64-encoded. Any
    status but 200 is an error counted as ``http_STATUS``.

    One request per connection, ``concurrency`` connections (the default): Go's HTTP
    server reads a connection's next request only once it has answered the one before, so
    pipelining gives no parallelism on the server, it only queues requests behind each
    other (head-of-line blocking). Measured on the 2-core machine against a 3-member etcd
    3.4 on loopback (64 in flight, 50/50 mix, 100-byte values, 4 s each, a busy machine):
    64 connections of depth 1 did 3.7k-7.0k ops/s with get p50 2.3-4.4 ms; 16 connections
    pipelining 4 each 2.8k ops/s; 8 pipelining 8 each 2.2k-3.6k ops/s, and there a get
    waited behind the puts before it (get p50 15-23 ms, close to the put p50). So depth 1
    is both the faster and the fairer way to load etcd; ``?connections=8`` pipelines.
    """

    kind = "etcd"

    def encode(self, conn: _Conn, is_get: bool, key: bytes, value: bytes) -> bytes:
        if is_get:
            path = b"/v3/kv/range"
            body = b'{"key":"%s","serializable":true}' % _B64(key)
        else:
            path = b"/v3/kv/put"
            body = b'{"key":"%s","value":"%s"}' % (_B64(key), _B64(value))
        return (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (path, conn.header, len(body), body))

    def parse(self, buf: bytearray, pos: int) -> Parsed:
        return parse_http_response(buf, pos)


def _chunked_end(buf: bytes | bytearray, pos: int) -> int | None:
    """The end of a chunked body starting at ``pos`` (trailers included), None if short."""
    while True:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        size = int(bytes(buf[pos:end]).split(b";", 1)[0].strip(), 16)
        pos = end + 2
        if size == 0:
            while True:  # optional trailer lines, then an empty line
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    return None
                if end == pos:
                    return end + 2
                pos = end + 2
        pos += size + 2
        if pos > len(buf):
            return None


def parse_http_response(buf: bytes | bytearray, pos: int) -> Parsed:
    """One HTTP/1.1 response at ``buf[pos:]``: ``(end, None or "http_STATUS", keep-alive)``
    with a ``Content-Length`` or a chunked body; None while incomplete; ValueError else."""
    head_end = buf.find(b"\r\n\r\n", pos)
    if head_end < 0:
        return None
    head = bytes(buf[pos:head_end]).lower()
    if not head.startswith(b"http/1."):
        raise ValueError("not an HTTP/1.x response")
    status = int(head[9:12])
    body = head_end + 4
    keep = not head.startswith(b"http/1.0") and b"\r\nconnection: close" not in head
    i = head.find(b"\r\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 2)
        stop = body + int(head[i + 17:j if j >= 0 else len(head)])
        if len(buf) < stop:
            return None
    elif (i := head.find(b"\r\ntransfer-encoding:")) >= 0 and b"chunked" in \
            head[i:head.find(b"\r\n", i + 2) if head.find(b"\r\n", i + 2) >= 0 else len(head)]:
        end = _chunked_end(buf, body)
        if end is None:
            return None
        stop = end
    elif status in (204, 304) or 100 <= status < 200:
        stop = body
    else:
        raise ValueError("an HTTP response without a length")
    return stop, None if status == 200 else f"http_{status}", keep


def make_driver(spec: dict[str, Any]) -> SedaDriver | FifoTcpDriver:
    kind = spec["kind"]
    if kind == "seda":
        return SedaDriver(spec["endpoints"], spec["route"], spec.get("contexts", False))
    cls = RedisDriver if kind == "redis" else EtcdDriver
    return cls(spec["endpoints"], spec["connections"], spec["concurrency"])
