"""A whole cluster in one process: nodes' real stage handlers joined by a simulated
clock, inter-stage queues and network, driven as the runtime drives them.

Events between a node's stages travel as the runtime sends them (``[sent_at, events]``
in msgpack, one message per destination per flush) and arrive a little later; an emit
to ``peer:HOST:PORT`` is packed with ``peerprotocol.pack_events`` and crosses the
simulated network to that node's ``peer`` port as ``[identity, message]``, as a
DEALER's message reaches a ROUTER. A node that is down, or unknown, is not connected: the
sender's ``undeliverable`` is called at once, as the runtime does. Each handler ticks at
its ``tick_interval``. What is in flight to a crashed stage or node, or from a crashed
node, is lost. A power failure also drops what the node's disk had not made durable, and one
that tears a write (``disk.Torn``, raised from inside a handler) crashes the node where it
lands. Client requests enter a node's client port as frames; each reply is
recorded by the request's id. Every delivery is hashed into the trace.

Dynamo paper sections 4.5-4.9 are what runs through it. No sockets, no wall clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from seda_dynamo import causality, peerprotocol
from seda_dynamo.sim.clock import Clock, Trace
from seda_dynamo.sim.disk import Torn
from seda_dynamo.sim.net import Network
from seda_dynamo.sim.node import Node, peer_address
from seda_dynamo.sim.views import Views
from seda_dynamo.stage import PEER_PREFIX, STAGE_NAMES, Stage

#: Settings every simulated node shares unless a run says otherwise: a small ring.
DEFAULTS: dict[str, Any] = {"partitions": 16, "n": 3, "r": 2, "w": 2}
CLIENT = b"client"  # the identity ``request``'s messages come with
STAGE_DELAY = 0.0001  # seconds an event spends between two stages of one node
MAX_ENTRIES = 5_000_000  # entries one run_until may take before it calls it a livelock


@dataclass(frozen=True, slots=True)
class Reach:
    """What could reach what from ``at`` on (until the next change)."""

    at: float
    up: frozenset[str]  # nodes with every stage running
    cut: frozenset[tuple[str, str]]  # (from, to): nothing sent gets there
    lossy: frozenset[tuple[str, str]]  # (from, to): a message may be lost


@dataclass(frozen=True, slots=True)
class Caller:
    """A client connection as the runtime describes it (``protocol.Caller``)."""

    address: str | None = "127.0.0.1"
    user_id: str | None = None


class Cluster(Views):
    """Nodes ``n1``..``nM`` (n1 founds the ring, the others join through it)."""

    def __init__(self, root: Path, nodes: int = 3, seed: int = 0,
                 stages: tuple[str, ...] = STAGE_NAMES, answer_pings: bool = False,
                 **config: Any) -> None:
        self.root = root
        #: Large membership-only runs: the simulator answers the gossip stage's pings
        #: itself (``_pings``), not the network stages (n^2 peer messages a second).
        self.answer_pings = answer_pings
        #: The stages each node runs (a membership-only run: network and gossip). An
        #: event for a stage not run is handed back at once to its sender's
        #: ``undeliverable``, as the runtime does for a destination that does not exist.
        self.stages = tuple(name for name in STAGE_NAMES if name in stages)
        self.rng = random.Random(seed)
        self.config = {**DEFAULTS, **config}
        self.clock = Clock()
        self.trace = Trace()
        self.nodes: dict[str, Node] = {}
        self.by_peer: dict[str, str] = {}
        self.boots: dict[str, int] = {}  # bumped at each crash of the whole node
        self.net = Network(random.Random(self.rng.getrandbits(64)), [])
        self.replies: dict[Any, dict[str, Any]] = {}  # each request's first reply
        self.reply_counts: dict[Any, int] = {}  # how many replies each request got
        self.refused: set[Any] = set()  # requests sent to a node that was down
        self.on_reply: dict[Any, Callable[[dict[str, Any]], None]] = {}  # by request id
        self.sent_at: dict[Any, float] = {}  # each request's time sent and of its first
        self.replied_at: dict[Any, float] = {}  # reply: its life, for the checkers
        #: Every (actor, counter) a value was seen under in a stamp's answer: one each.
        self.stamps: dict[bytes, set[tuple[str, int]]] = {}
        #: Reachability over time: from each entry's time until the next one, which nodes
        #: had every stage up, which directions were cut, and which could lose messages.
        self.reach: list[Reach] = []
        self.net.changed = self._note
        self.next_id = 0
        #: Replies to raw client messages (``frames``), by the identity they came with.
        self.frame_replies: dict[bytes, list[dict[str, Any]]] = {}
        self.left: set[str] = set()  # nodes seen to have left the cluster (admin leave)
        self.restart_after: dict[str, float] = {}  # seconds a torn node stays down
        self.peer_messages = self.peer_bytes = 0  # frames sent between nodes, and bytes
        for i in range(nodes):
            self.add(join=peer_address(1) if i else "")

    @property
    def now(self) -> float:
        return self.clock.now

    def add(self, join: str = "", **config: Any) -> Node:
        """Start one more node (a founder of its own ring when it names no ``join``)."""
        i = len(self.nodes) + 1
        node = Node(i, self.root / f"n{i}", random.Random(self.rng.getrandbits(64)),
                    self.clock.time, join=join, **{**self.config, **config})
        self.nodes[node.id] = node
        self.by_peer[node.config.peer] = node.id
        self.boots[node.id] = 0
        self.net.add(node.id, list(self.nodes))
        self.start(node.id)
        return node

    # Crashes and restarts ------------------------------------------------------------
    def start(self, node_id: str, stage: str | None = None) -> None:
        """Start the node's stages (or one), in the supervisor's order, on its disks."""
        node = self.nodes[node_id]
        for name in [stage] if stage else self.stages:
            handler = node.build(name)
            handler.start(self.now)
            self._flush(node, handler)
            self.clock.after(handler.tick_interval, "tick", node_id, name,
                             node.generation[name])
        self._note()

    def crash(self, node_id: str, stage: str | None = None, power: bool = False) -> None:
        """Kill the node's stages (or one): what is in flight to them is lost. With
        ``power`` (the whole node) its disk also loses what was not durable yet."""
        self.nodes[node_id].crash(stage)
        if stage is None:
            self.boots[node_id] += 1
            if power:
                self.nodes[node_id].disk.power_loss()
        self._note()

    def _note(self) -> None:
        """Record reachability as of now (after a crash, a start, a network change)."""
        up = frozenset(i for i, node in self.nodes.items()
                       if len(node.stages) == len(STAGE_NAMES))
        # Every change is kept, even several at one instant: a stage crashed and
        # restarted at once still lost what was in flight to it.
        self.reach.append(Reach(self.now, up, frozenset(self.net.cut), self.net.lossy()))


    def start_missing(self, node_id: str) -> None:
        """Start every stage of the node that is not running."""
        for name in STAGE_NAMES:
            if name not in self.nodes[node_id].stages:
                self.start(node_id, name)

    def _torn(self, node_id: str) -> None:
        """Power failed in the middle of one of the node's writes (``disk.Torn``)."""
        self.crash(node_id, power=True)
        self.schedule(self.restart_after.pop(node_id, 1.0), self.start_missing, node_id)

    # Sending: what the runtime's flush does ----------------------------------------
    def _flush(self, node: Node, handler: Stage) -> None:
        for _ in range(10_000):
            out = handler.take_outbox()
            if not out:
                return
            batches: dict[str, list[Any]] = {}
            for dest, event in out:
                if dest == "client":  # the client ROUTER: [identity, b"", reply]
                    reply = msgpack.unpackb(event[-1], raw=False)
                    if event[0] != CLIENT:
                        self.frame_replies.setdefault(event[0], []).append(reply)
                        continue
                    rid = reply.get("id")
                    self.replies.setdefault(rid, reply)
                    self.replied_at.setdefault(rid, self.now)
                    self.reply_counts[rid] = self.reply_counts.get(rid, 0) + 1
                    if rid in self.on_reply:
                        self.on_reply.pop(rid)(reply)
                    continue
                if event[0] == "updated" and event[3] is not None:  # a write applied
                    for actor, counter, values in causality.decode(event[3]).entries:
                        for i, value in enumerate(values):
                            if value is not None:  # tombstones are no client's value
                                self.stamps.setdefault(value, set()).add((actor, counter - i))
                batches.setdefault(dest, []).append(event)
            if self.answer_pings and handler.name == "gossip" and "network" in batches:
                if rest := self._pings(node, batches.pop("network")):
                    batches["network"] = rest
            for dest, events in batches.items():
                if dest.startswith(PEER_PREFIX):
                    self._to_peer(node, handler, dest, events)
                elif dest in self.stages:
                    frame = msgpack.packb([self.now, events], use_bin_type=True)
                    self.clock.after(STAGE_DELAY, "stage", node.id, dest,
                                     node.generation[dest], frame)
                else:
                    handler.undeliverable(dest, events, self.now)
        raise AssertionError(f"{handler.name} on {node.id} keeps emitting")

    def _pings(self, node: Node, events: list[Any]) -> list[Any]:
        """Answer ``node``'s pings (``Call`` of ``["ping"]``) as the pinged nodes' network
        stages would, without sending them: each up node whose links both ways deliver
        answers ``pong``; the answers reach the gossip stage together, one round trip
        (the longest) later. The other events go on to the network stage."""
        others, answers, late = [], [], 0.0
        for event in events:
            if event[0] != "call" or event[4] != ["ping"]:
                others.append(event)
                continue
            target = self.by_peer.get(event[1])
            if target is None or "network" not in self.nodes[target].stages:
                continue  # silence: the failure detector counts it
            there, back = self.net.delays(node.id, target), self.net.delays(target, node.id)
            # Counted as the frames the network stages would have sent (a 64-bit call id).
            self.peer_messages += 1 + bool(there)
            self.peer_bytes += len(msgpack.packb([["req", node.id, 1 << 62, ["ping"]]])) + (
                len(msgpack.packb([["resp", target, 1 << 62, ["pong"]]])) if there else 0)
            if there and back:
                late = max(late, there[0] + back[0])
                answers.append(["resp", target, event[3], ["pong"]])
        if answers:
            frame = msgpack.packb([self.now, answers], use_bin_type=True)
            self.clock.after(late, "stage", node.id, "gossip", node.generation["gossip"],
                             frame)
        return others

    def _to_peer(self, node: Node, handler: Stage, dest: str, events: list[Any]) -> None:
        target = self.by_peer.get(dest.removeprefix(PEER_PREFIX))
        frames, oversize = peerprotocol.pack_events(events, peerprotocol.max_message_bytes(
            node.config.max_key_bytes, node.config.max_record_bytes))
        if oversize:
            handler.undeliverable(dest, oversize, self.now)
        for frame, sent in frames:
            self.peer_messages += 1
            self.peer_bytes += len(frame)
            if target is None or "network" not in self.nodes[target].stages:
                handler.undeliverable(dest, sent, self.now)
                continue
            for delay in self.net.delays(node.id, target):
                self.clock.after(delay, "peer", node.id, target, self.boots[node.id],
                                 self.boots[target], frame)

    # Delivering ------------------------------------------------------------------------
    def step(self) -> None:
        """Take the next entry of the clock and do it."""
        entry = self.clock.pop()
        try:
            self._do(*entry)
        except Torn:
            if entry[0] == "call":  # no handler of a node writes from a scheduled call
                raise
            self._torn(entry[2] if entry[0] == "peer" else entry[1])

    def _do(self, kind: str, *rest: Any) -> None:
        if kind == "tick":
            node_id, name, generation = rest
            node = self.nodes[node_id]
            if node.generation[name] != generation:
                return
            handler = node.stages[name]
            handler.tick(self.now)
            self._flush(node, handler)
            self.clock.after(handler.tick_interval, "tick", node_id, name, generation)
        elif kind == "stage":
            node_id, name, generation, frame = rest
            node = self.nodes[node_id]
            if node.generation[name] != generation or name not in node.stages:
                return  # lost with the process it was queued for
            self.trace.record(self.now, node_id, name, frame)
            handler = node.stages[name]
            events = msgpack.unpackb(frame, raw=False, use_list=True,
                                     strict_map_key=False)[1]
            handler.handle_events(events, self.now)
            self._flush(node, handler)
        elif kind == "peer":
            src, dst, src_boot, dst_boot, frame = rest
            node = self.nodes[dst]
            if (self.boots[src], self.boots[dst]) != (src_boot, dst_boot) \
                    or "network" not in node.stages \
                    or (src, dst) in self.net.cut:
                return  # lost with a crashed node, or on a link cut since it was sent
            self.trace.record(self.now, dst, "peer:" + src, frame)
            handler = node.stages["network"]
            src_peer = self.nodes[src].config.peer.encode()
            handler.handle_frames("peer", [[src_peer, frame]], self.now)
            self._flush(node, handler)
        else:  # "call": something a run scheduled (a fault, a client's request)
            fn, args = rest
            fn(*args)

    def run_until(self, done: Callable[[], bool], within: float) -> bool:
        """Run until ``done()`` (checked as time moves) or ``within`` simulated seconds
        have passed; whether ``done()`` came true."""
        end = self.now + within
        checked = -1.0
        for _ in range(MAX_ENTRIES):
            if self.now > checked:
                checked = self.now
                if done():
                    return True
            due = self.clock.next_time()
            if due is None or due > end:
                self.clock.now = max(self.now, end)
                return done()
            self.step()
        raise AssertionError(f"still running after {MAX_ENTRIES} entries")

    def run(self, seconds: float) -> None:
        self.run_until(lambda: False, seconds)

    def schedule(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.clock.after(delay, "call", fn, args)

    # Clients -------------------------------------------------------------------------
    def request(self, node_id: str, body: dict[str, Any]) -> Any:
        """Send a client request to ``node_id``'s client port; its id. The replies land
        in ``replies[id]``; a node that is down refuses it (``refused``)."""
        self.next_id += 1
        body = {**body, "id": self.next_id}
        self.sent_at[self.next_id] = self.now
        node = self.nodes[node_id]
        if "network" not in node.stages:
            self.refused.add(self.next_id)
            return self.next_id
        frame = msgpack.packb(body, use_bin_type=True)
        self.trace.record(self.now, node_id, "client", frame)
        handler = node.stages["network"]
        handler.handle_frames("client", [[CLIENT, b"", frame]], self.now, [Caller()])
        self._flush(node, handler)
        return self.next_id

    def call(self, node_id: str, body: dict[str, Any], within: float = 10.0
             ) -> dict[str, Any] | None:
        """A request and its first reply, running the cluster until it comes."""
        rid = self.request(node_id, body)
        if not self.run_until(lambda: rid in self.replies, within):
            return None
        return self.replies[rid]

    def leave(self, node_id: str) -> Any:
        """An operator's ``admin leave`` of ``node_id``; the request's id."""
        return self.request(node_id, {"op": "admin", "command": "leave"})
