"""What a fuzzer drives: a node reached by its two ports (``Target``), here as the real
stage handlers in memory (``HandlerNode``) and as one real node over ZeroMQ
(``SocketNode``). Dynamo paper section 4.1 (the client interface) and 4.8 (the peers).

A node of a simulated cluster (``seda_dynamo/sim``) is driven by the same fuzzers through
``simnode.SimNode``, with ``Target``'s methods; to be judged as ``test_handlers.fuzz``
judges, a target also offers ``errors()`` and ``tables()`` (``HandlerNode`` shows what
they return) and ``replies``, the replies by message number.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import msgpack
import zmq
from strategies import OpenCall, packed

from seda_dynamo.config import NodeConfig
from seda_dynamo.engines import open_engine
from seda_dynamo.membership import MemoryStore
from seda_dynamo.ring import Member, Ring
from stages import coordination, gossip, network, persistence, versioning


class Target(Protocol):
    def client(self, frames: list[bytes]) -> int:
        """Send one client message; its number (replies are matched to it by number)."""

    def peer(self, message: list[Any] | bytes) -> None:
        """Send one peer message: a list of events (``OpenCall`` ids resolved), or bytes."""

    def settle(self) -> object:
        """Run (or wait) until every request's deadline has passed; the replies: by
        message number where the target can tell them apart (``HandlerNode``, a
        simulator), else in arrival order (``SocketNode``: a DEALER cannot)."""


def resolve(events: list[Any], open_ids: list[int]) -> list[Any]:
    """``OpenCall(i)`` -> the i-th open call's id (or an id never issued, with none)."""
    if not isinstance(events, list):
        return events
    def one(event: Any) -> Any:
        if isinstance(event, list) and len(event) == 4 and isinstance(event[2], OpenCall):
            ids = sorted(open_ids)
            return [*event[:2], ids[event[2].index % len(ids)] if ids else 12345, event[3]]
        return event
    return [one(e) for e in events]


#: Frames below a stage's handler in its process (runpy, main, the loop, the guard).
STAGE_FRAMES = 10
#: Python's recursion limit in a stage process (the default: nothing raises it).
STAGE_RECURSION_LIMIT = 1000


@contextmanager
def stage_stack() -> Iterator[None]:
    """Run with the stack a stage process has: Hypothesis raises the recursion limit
    while a test runs (to 2048 here), which would hide a recursion a deep input causes
    in a real stage."""
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + STAGE_RECURSION_LIMIT - STAGE_FRAMES)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


CONFIG = NodeConfig(node_id="a", engine="memory", n=3, r=2, w=2, partitions=8,
                    peer="127.0.0.1:7100", client="127.0.0.1:7000", data_dir="/nonexistent")
MEMBERS = tuple(Member(x, f"127.0.0.1:700{i}", f"127.0.0.1:710{i}") for i, x in enumerate("abc"))


class HandlerNode:
    """Node ``a`` of a three-node ring (b and c never answer): its five stage handlers
    joined in memory, with a fake clock. What goes to other nodes is kept, not
    delivered; so are gossip's ring and health reports to coordination, whose ring stays
    the three-node one fixed here (gossip's own view is of a node alone)."""

    def __init__(self) -> None:
        self.net = network.Handler(CONFIG)
        self.coord = coordination.Handler(CONFIG)
        self.coord.on_ring(0.0, Ring(8, 1, MEMBERS, ("a", "b", "c") * 2 + ("a", "b"))
                           .to_state(), [])
        self.versioning = versioning.Handler(CONFIG)
        self.persistence = persistence.Handler(
            CONFIG, engine=open_engine("memory", "", "data", "nosync"),
            hints=open_engine("memory", "", "h", "nosync"))
        self.gossip = gossip.Handler(CONFIG, rng=random.Random(1), store=MemoryStore())
        self.stages = {"network": self.net, "coordination": self.coord,
                       "versioning": self.versioning, "persistence": self.persistence,
                       "gossip": self.gossip}
        self.now = 0.0
        self.sent = 0
        self.replies: dict[int, list[dict]] = {}
        self.to_peers: list[tuple[str, list]] = []
        self.from_gossip: list[list] = []

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for handler in self.stages.values():
                for dest, event in handler.take_outbox():
                    moved = True
                    if dest == "client":
                        number = int(event[0])
                        self.replies.setdefault(number, []).append(msgpack.unpackb(event[-1]))
                    elif dest.startswith("peer:"):
                        self.to_peers.append((dest.removeprefix("peer:"), event))
                    elif handler is self.gossip and dest == "coordination" \
                            and event[0] in ("ring", "health"):
                        self.from_gossip.append(event)
                    else:
                        self.stages[dest].handle_events([event], self.now)

    def client(self, frames: list[bytes]) -> int:
        self.sent += 1
        self.now += 0.001
        self.net.handle_frames("client", [[b"%d" % self.sent, *frames]], self.now)
        self.pump()
        return self.sent

    def peer(self, message: list[Any] | bytes) -> None:
        if not isinstance(message, bytes):
            message = packed(resolve(message, list(self.net.calls)))
        self.now += 0.001
        self.net.handle_frames("peer", [[b"dealer", message]], self.now)
        self.pump()

    def tick(self, now: float) -> None:
        self.now = now
        for handler in self.stages.values():
            handler.tick(now)
        self.pump()

    def settle(self) -> dict[int, list[dict]]:
        self.tick(self.now + 1e6)  # past every deadline (600 s at most; calls 32 s)
        self.tick(self.now + 1e6)  # and past the suspicion of silent replicas
        return self.replies

    def errors(self) -> dict[str, int]:
        return {name: h.errors for name, h in self.stages.items()}

    def tables(self) -> dict[str, int]:
        return {"waiting": len(self.net.waiting), "calls": len(self.net.calls),
                "requests": len(self.coord.requests),
                "keys_in_flight": len(self.versioning.inflight)}


class SocketNode:
    """One real node, reached by a DEALER on its client port and one on its peer port
    (loopback only). Client messages are matched to replies by count (and by id)."""

    WINDOW = 32
    #: Peer messages sent between two pings on the peer port: a ping's answer comes to
    #: ``self.me`` once the node's network stage has read every message before it.
    PEER_WINDOW = 8

    def __init__(self, client: str, peer: str) -> None:
        self.ctx = zmq.Context()
        self.client_sock = self._dealer(client)
        self.peer_sock = self._dealer(peer)
        self.sent = 0
        self.replies: list[dict] = []
        self.largest_client = 0  # bytes of the largest message sent to each port
        self.largest_peer = 0
        self.peer_sent = 0
        self.pongs = self.ctx.socket(zmq.ROUTER)
        self.pongs.setsockopt(zmq.LINGER, 0)
        self.me = f"127.0.0.1:{self.pongs.bind_to_random_port('tcp://127.0.0.1')}"

    def _dealer(self, address: str) -> zmq.Socket:
        assert address.startswith("127."), address
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.connect(f"tcp://{address}")
        return sock

    def client(self, frames: list[bytes]) -> int:
        """Send, with at most ``WINDOW`` client messages unanswered (so what the node
        holds at once is bounded by the fuzz, not by how fast it sends)."""
        stuck = time.monotonic() + 10.0
        while self.sent - len(self.replies) >= self.WINDOW and time.monotonic() < stuck:
            self.drain(50)
        self.sent += 1
        self.largest_client = max(self.largest_client, sum(map(len, frames)))
        self.client_sock.send_multipart(frames)
        self.drain(0)
        return self.sent

    def peer(self, message: list[Any] | bytes) -> None:
        if not isinstance(message, bytes):
            message = packed(resolve(message, []))
        self.largest_peer = max(self.largest_peer, len(message))
        self.peer_sent += 1
        self.peer_sock.send(message)
        if self.peer_sent % self.PEER_WINDOW == 0:
            self.peer_sock.send(packed([["req", self.me, 1, ["ping"]]]))
            if self.pongs.poll(10_000):
                while self.pongs.poll(0):  # the pong, and answers to fuzzed requests
                    self.pongs.recv_multipart()

    def drain(self, wait_ms: int) -> None:
        while self.client_sock.poll(wait_ms):
            self.replies.append(msgpack.unpackb(self.client_sock.recv_multipart()[-1]))
            wait_ms = 0

    def settle(self, seconds: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + seconds
        while len(self.replies) < self.sent and time.monotonic() < deadline:
            self.drain(100)
        self.drain(200)  # a reply too many arrives now, if there is one
        return self.replies

    def close(self) -> None:
        self.client_sock.close(0)
        self.peer_sock.close(0)
        self.pongs.close(0)
        self.ctx.term()
