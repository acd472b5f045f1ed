"""The shared base of the load generator's TCP drivers (``redis``, ``etcd``): request /
reply protocols without ids, pipelined on non-blocking sockets, replies matched in order.

Written here rather than taken from client libraries: they sit in the load generator's
hot loop, where a general-purpose (async) client would cost more per request than the
servers they compare seda-dynamo with (the Dynamo paper's section 6 numbers, here
side by side with Redis and etcd on one machine).
"""

from __future__ import annotations

import math
import select
import socket
import time
from collections import deque

CONNECT_TIMEOUT = 2.0
RECONNECT_EVERY = 0.05  # seconds between attempts to reopen a dropped TCP connection
READ_BYTES = 1 << 18
SELECT_FDS = 1000  # select() takes FDs below 1024 (FD_SETSIZE); poll() beyond


class Conn:
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
            self.conns.append(Conn(i, i % len(endpoints), (host, int(port))))
        self.slots: deque[int] = deque(c.index for _ in range(self.depth) for c in self.conns)
        self.by_fd: dict[int, Conn] = {}
        self.dirty: list[Conn] = []
        self.blocked: set[Conn] = set()  # output the kernel would not take yet
        self.failed: list[tuple[int, str | None]] = []
        self.readable: list[int] = []
        self.writable: list[int] = []
        for conn in self.conns:
            self._connect(conn)

    # the protocol: subclasses
    def encode(self, conn: Conn, is_get: bool, key: bytes, value: bytes) -> bytes:
        raise NotImplementedError

    def parse(self, buf: bytearray, pos: int) -> Parsed:
        raise NotImplementedError

    def _connect(self, conn: Conn) -> bool:
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

    def _reset(self, conn: Conn, code: str) -> None:
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

    def _write(self, conn: Conn) -> None:
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
