"""The ZeroMQ sockets of one stage process: its queue, its ports, and where it sends.

Part of the stage runtime (SEDA, Welsh et al. 2001; Dynamo paper section 5): the
stage's inbound PULL queue at ``contract.endpoint``; the ports a handler owns (the
network stage's client and peer ROUTERs, CURVE with its ZAP handler when configured,
and the metrics listener's raw TCP); a PUSH to each stage it sends to; and a bounded
pool of DEALERs to other nodes (docs/peer-protocol.md). Peer addresses arrive from the
network (gossip, the address a peer asks its reply at), so a DEALER is made on first
use, closed when unused for ``PEER_IDLE`` seconds (a live member is pinged twice a
second), the least recently used closed past ``MAX_PEER_SOCKETS``, and an address that
cannot be connected to gets no socket at all: its events are undeliverable, as a dead
node's are. Reading batches off the queue and the ports is here too.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import msgpack
import zmq

from seda_dynamo import address, contract, peerprotocol, security
from seda_dynamo.config import NodeConfig
from seda_dynamo.stage import PEER_PREFIX, Port, spec

PEER_HWM = 10_000
PORT_HWM = 100_000
PEER_IDLE = 60.0
MAX_PEER_SOCKETS = 512
BAD_LOG_EVERY = 60.0  # seconds between log lines about one destination that cannot be used

_SEND_MORE = zmq.SNDMORE | zmq.NOBLOCK


def send_parts(sock: zmq.Socket, parts: list[bytes]) -> None:
    """``send_multipart`` without its per-call checks: a third of its cost, and the
    network stage sends one message per client reply (bench/NOTES.md)."""
    send = sock.send
    for part in parts[:-1]:
        send(part, _SEND_MORE)
    send(parts[-1], zmq.NOBLOCK)


class FrameCaller:
    """The connection a message came on, read from its first frame's ZeroMQ properties
    when the handler asks (``protocol.Caller``): ``Peer-Address``, the remote IP, and
    ``User-Id``, the Z85 public key the ZAP handler let in (CURVE only)."""

    __slots__ = ("_frame",)

    def __init__(self, frame: zmq.Frame) -> None:
        self._frame = frame

    def _get(self, name: str) -> str | None:
        try:
            value = self._frame.get(name)
        except zmq.ZMQError:  # not set on this connection (no CURVE, not TCP)
            return None
        return value if isinstance(value, str) else None

    @property
    def address(self) -> str | None:
        return self._get("Peer-Address")

    @property
    def user_id(self) -> str | None:
        return self._get("User-Id")


class Sockets:
    """Every socket of one stage process. ``counters`` is the runtime's counters dict:
    ``bad_destinations`` and ``peer_sockets`` are kept up to date in it."""

    def __init__(self, name: str, ports: list[Port], config: NodeConfig, run_dir: str,
                 counters: dict[str, Any], log: logging.Logger) -> None:
        self.run_dir = run_dir
        self.counters = counters
        self.log = log
        self.ctx = zmq.Context()
        self.inbound = self.ctx.socket(zmq.PULL)
        self.inbound.setsockopt(zmq.RCVHWM, spec(name).queue_hwm)
        self.inbound.setsockopt(zmq.LINGER, 0)
        self.inbound.bind(contract.endpoint(run_dir, name))
        self.outbound: dict[str, zmq.Socket] = {}
        self.peer_used: dict[str, float] = {}  # peer destination -> when last sent to
        self.bad_logged: dict[str, float] = {}  # bad destination -> when last logged
        self.ports: dict[str, zmq.Socket] = {}
        self.peer_max_bytes = peerprotocol.max_message_bytes(
            config.max_key_bytes, config.max_record_bytes)
        self.auth = None
        self.curve_server: security.KeyPair | None = None
        self.curve_node: security.KeyPair | None = None
        if config.curve_server_key:  # validated at start-up: the files are there
            self.curve_server = security.load(config.curve_server_key, True,
                                              "curve_server_key")
            self.curve_node = security.load(config.curve_node_key, True, "curve_node_key")
        if any(port.curve for port in ports):  # the ZAP handler first, or all get in
            self.auth = security.start_authenticator(self.ctx, {
                security.CLIENT_DOMAIN: config.curve_client_keys,
                security.PEER_DOMAIN: config.curve_peer_keys})
        for port in ports:
            self.ports[port.name] = self._bind_port(port)
        self.poller = zmq.Poller()
        self.poller.register(self.inbound, zmq.POLLIN)
        self.port_by_socket = {sock: name for name, sock in self.ports.items()}
        self.with_callers = {port.name for port in ports if port.callers}
        for sock in self.ports.values():
            self.poller.register(sock, zmq.POLLIN)

    def _bind_port(self, port: Port) -> zmq.Socket:
        if port.kind == "stream":  # raw TCP (the metrics listener's HTTP)
            sock = self.ctx.socket(zmq.STREAM)
            sock.setsockopt(zmq.LINGER, 0)
        else:
            sock = self.ctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
            sock.setsockopt(zmq.SNDHWM, PORT_HWM)
            sock.setsockopt(zmq.RCVHWM, PORT_HWM)
            if port.max_msg_bytes > 0:
                sock.setsockopt(zmq.MAXMSGSIZE, port.max_msg_bytes)
            if port.name == "peer":  # what we send a peer fits what its port takes
                self.peer_max_bytes = port.max_msg_bytes
            if port.curve:
                assert self.curve_server is not None
                security.serve(sock, self.curve_server, port.curve)
        if port.bind.startswith("tcp://["):  # an IPv6 literal (libzmq: off by default)
            sock.setsockopt(zmq.IPV6, 1)
        sock.bind(port.bind)
        return sock

    # Where events go ------------------------------------------------------------------
    def socket_to(self, dest: str) -> zmq.Socket | None:
        """The socket to ``dest``, made on first use; None for a node address that
        cannot be connected to (its events are undeliverable, as a dead node's are)."""
        sock = self.outbound.get(dest)
        if sock is None:
            if dest.startswith(PEER_PREFIX):
                return self._peer_socket(dest)
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, spec(dest).queue_hwm)
            sock.setsockopt(zmq.LINGER, 2000)
            sock.connect(contract.endpoint(self.run_dir, dest))
            self.outbound[dest] = sock
        elif dest in self.peer_used:
            self.peer_used[dest] = time.monotonic()
        return sock

    def _peer_socket(self, dest: str) -> zmq.Socket | None:
        """A new DEALER to another node, which queues only on a live connection, so
        events for a dead node are dropped at once instead of piling up."""
        peer = dest.removeprefix(PEER_PREFIX)
        try:
            address.check(peer, "peer")
        except address.AddressError as exc:
            self._bad_destination(dest, str(exc))
            return None
        if len(self.peer_used) >= MAX_PEER_SOCKETS:
            self._close_peer(min(self.peer_used, key=self.peer_used.__getitem__))
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.SNDHWM, PEER_HWM)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        if peer.startswith("["):  # an IPv6 literal: libzmq connects over IPv4 unless told
            sock.setsockopt(zmq.IPV6, 1)
        if self.curve_node is not None and self.curve_server is not None:
            security.connect_as(sock, self.curve_node, self.curve_server.public)
        try:
            sock.connect(address.endpoint(peer))
        except zmq.ZMQError as exc:  # what libzmq refuses that the address check took
            sock.close(linger=0)
            self._bad_destination(dest, str(exc))
            return None
        self.outbound[dest] = sock
        self.peer_used[dest] = time.monotonic()
        self.counters["peer_sockets"] = len(self.peer_used)
        return sock

    def _bad_destination(self, dest: str, why: str) -> None:
        self.counters["bad_destinations"] += 1
        now = time.monotonic()
        if now - self.bad_logged.get(dest, -math.inf) >= BAD_LOG_EVERY:
            if len(self.bad_logged) >= MAX_PEER_SOCKETS:
                self.bad_logged.clear()
            self.bad_logged[dest] = now
            self.log.warning("cannot send to %r (%s): its events are undeliverable",
                             dest, why)

    def _close_peer(self, dest: str) -> None:
        sock = self.outbound.pop(dest, None)
        self.peer_used.pop(dest, None)
        if sock is not None:
            sock.close(linger=0)
        self.counters["peer_sockets"] = len(self.peer_used)

    def close_idle_peers(self, now: float) -> None:
        """Close the sockets to nodes nothing was sent to for ``PEER_IDLE`` seconds (a
        member that left, a peer's one-off reply address); made again when needed."""
        for dest in [d for d, used in self.peer_used.items() if now - used > PEER_IDLE]:
            self._close_peer(dest)

    # What arrived ---------------------------------------------------------------------
    def drain_inbound(self, limit: int) -> tuple[list[Any], float | None, bool, int]:
        """Up to ``limit`` events off the queue: (events, when the oldest was sent,
        whether the limit stopped us while more may wait, frames that were undecodable)."""
        events: list[Any] = []
        oldest: float | None = None
        torn = 0
        while len(events) < limit:
            try:
                frame = self.inbound.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return events, oldest, False, torn
            try:
                sent_at, batch = msgpack.unpackb(frame, raw=False, use_list=True,
                                                 strict_map_key=False)
                sent_at = float(sent_at)
                if not isinstance(batch, list):
                    raise ValueError("a batch must be a list of events")
            except Exception:  # noqa: BLE001 - a torn frame must not stop the stage
                self.log.exception("undecodable inbound frame dropped")
                torn += 1
                continue
            if oldest is None or sent_at < oldest:
                oldest = sent_at
            events.extend(batch)
        return events, oldest, True, torn

    def drain_port(self, name: str, sock: zmq.Socket, limit: int
                   ) -> tuple[list[list[bytes]], list[FrameCaller] | None]:
        """Up to ``limit`` messages, and for a port with ``callers`` the connection
        of each (its first frame kept uncopied: the properties are read only if asked)."""
        messages: list[list[bytes]] = []
        callers: list[FrameCaller] | None = [] if name in self.with_callers else None
        recv, more = sock.recv, sock.getsockopt
        for _ in range(limit):
            try:
                if callers is None:
                    parts = [recv(zmq.NOBLOCK)]
                else:
                    first = recv(zmq.NOBLOCK, copy=False)
                    parts = [first.bytes]
                    callers.append(FrameCaller(first))
            except zmq.Again:
                break
            while more(zmq.RCVMORE):  # the rest of a message is there once its first is
                parts.append(recv())
            messages.append(parts)
        return messages, callers

    def close(self) -> None:
        for sock in [self.inbound, *self.outbound.values(), *self.ports.values()]:
            sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
