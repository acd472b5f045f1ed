"""Sending a stage's outbox: one message per destination, and the full-queue rule.

Part of the stage runtime (SEDA, Welsh et al. 2001: a stage's queue is finite and a
full one is an explicit event, Sandstorm's ``SinkFull``). What a handler emitted for a
port (a client reply) goes out on that port; what it emitted for a stage or another
node goes as one message per destination: to a stage of this node ``[sent_at,
events]`` (the receiver measures its queue delay from ``sent_at``), to another node the
events of docs/peer-protocol.md in messages no larger than its peer port takes (Dynamo
paper section 4.6: a node not connected is treated as down).

When events cannot be queued the handler that emitted them hears it at once, through
``Stage.undeliverable(dest, events, now)``, so it can fail the requests they belonged
to instead of leaving them to time out:

- another node not connected (its DEALER queues only on a live connection), or an
  address that cannot be connected to;
- a stage whose table row says ``"drop"`` with a full queue (at once);
- a stage whose row says ``"block"`` with a queue still full after ``BLOCK_SEND_MS``
  (its process gone, or wedged): blocking bounds what one stage can pile up on the
  next, the timeout bounds how long two stages that send to each other can wait on
  each other's full queues;
- a destination no stage or node has, or events that cannot be encoded (a handler bug).

Every event counts once in ``sent`` or ``dropped``.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import zmq

from seda_dynamo import peerprotocol
from seda_dynamo.sockets import Sockets, send_parts
from seda_dynamo.stage import PEER_PREFIX, Stage, is_stage, spec

BLOCK_SEND_MS = 1000  # how long a send to a full "block" queue waits before it gives up
BIG_FRAME = 65536  # frames this large are handed to ZeroMQ without a copy


class Sender:
    """Moves a handler's emitted events onto sockets; counts ``sent`` and ``dropped``."""

    def __init__(self, handler: Stage, sockets: Sockets, counters: dict[str, Any]) -> None:
        self.handler = handler
        self.sockets = sockets
        self.counters = counters

    def to_ports(self, out: list[tuple[str, Any]]) -> dict[str, list[Any]]:
        """Send the multipart messages of ``out`` meant for one of the stage's ports; the
        rest grouped by destination, in the order emitted."""
        ports = self.sockets.ports
        batches: dict[str, list[Any]] = {}
        for dest, event in out:
            port = ports.get(dest)
            if port is None:
                batches.setdefault(dest, []).append(event)
                continue
            try:
                send_parts(port, event)
            except zmq.ZMQError:  # its queue for that connection is full
                self.counters["dropped"] += 1
        return batches

    def send(self, dest: str, events: list[Any]) -> None:
        """Queue ``events`` for stage (or worker) or node ``dest``; what cannot be queued
        is dropped and handed back to the handler as undeliverable."""
        h = self.handler
        if not is_stage(dest) and not dest.startswith(PEER_PREFIX):
            h.log.error("emit to unknown destination %r dropped", dest)
            self._undeliverable(dest, events)
            return
        try:
            if dest.startswith(PEER_PREFIX):
                frames, oversize = peerprotocol.pack_events(events, self.sockets.peer_max_bytes)
            else:
                frames, oversize = [(msgpack.packb([time.monotonic(), events],
                                                   use_bin_type=True), events)], []
        except (TypeError, ValueError, OverflowError) as exc:  # a handler bug: log it
            h.errors += 1
            h.log.error("events for %s cannot be encoded (%s): dropped", dest, exc)
            self._undeliverable(dest, events)
            return
        if oversize:
            h.errors += len(oversize)
            h.log.error("%d events for %s exceed the peer message limit of %d bytes: not "
                        "sent", len(oversize), dest, self.sockets.peer_max_bytes)
            self._undeliverable(dest, oversize)
        for frame, batch in frames:
            if self._queue(dest, frame, len(batch)):
                self.counters["sent"] += len(batch)
            else:
                self._undeliverable(dest, batch)

    def _undeliverable(self, dest: str, events: list[Any]) -> None:
        self.counters["dropped"] += len(events)
        self.handler.undeliverable(dest, events, time.monotonic())

    def _queue(self, dest: str, frame: bytes, count: int) -> bool:
        """Queue one message for ``dest``: False when it cannot be (the full-queue rule)."""
        sock = self.sockets.socket_to(dest)
        if sock is None:
            return False
        peer = dest.startswith(PEER_PREFIX)
        try:
            sock.send(frame, zmq.NOBLOCK, copy=len(frame) < BIG_FRAME)
            return True
        except zmq.ZMQError as exc:
            if not isinstance(exc, zmq.Again) and not peer:
                raise  # our own queue's socket broken: restart the stage
        if peer or spec(dest).when_full != "block":
            return False
        if not sock.poll(BLOCK_SEND_MS, zmq.POLLOUT):
            self.handler.log.warning("queue of %s full for %d ms: %d events undeliverable",
                                     dest, BLOCK_SEND_MS, count)
            return False
        try:
            sock.send(frame, zmq.NOBLOCK, copy=False)
        except zmq.Again:  # taken by another sender since the poll
            return False
        return True
