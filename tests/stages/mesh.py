"""Several nodes' stage handlers wired together in memory: the seed of a deterministic
simulator (the multi-node version of ``pipeline.py``).

Each node is the five real stage handlers with memory engines. Events between a node's
stages travel as the runtime sends them (``[sent_at, events]`` in msgpack, one message per
destination per flush); an emit to ``peer:HOST:PORT`` is packed with
``peerprotocol.pack_events`` and arrives at the addressed node's ``peer`` port as
``[identity, message]``, as a DEALER's message reaches a ROUTER; when the destination is
unknown or its link is cut, the sender's ``undeliverable`` is called, as the runtime does
for a node it is not connected to. A simulated clock calls each handler's ``tick`` at its
``tick_interval``; a seeded ``random.Random`` picks which queue is delivered next, and
every handler that takes a source of randomness gets a seeded one, so a seed is a run.
Deliveries take no simulated time: the clock moves to the next tick only once every queue
is empty. A cut link loses what was in flight on it; a node whose links are all cut keeps
running (a partition, not a crash).

Dynamo paper sections 4.6 (hinted handoff), 4.8 (membership) and 4.9 (adding nodes) are
what the multi-node tests drive through it. No sockets, no processes, no wall clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from seda_dynamo import causality, peerprotocol
from seda_dynamo.config import NodeConfig
from seda_dynamo.engines import open_engine
from seda_dynamo.ring import Ring
from seda_dynamo.stage import PEER_PREFIX, STAGE_NAMES, Stage
from stages import coordination, gossip, network, persistence, versioning

#: Settings every mesh node shares unless a test says otherwise: small rings, and no
#: anti-entropy, so that what a test sees is the mechanism it drives.
DEFAULTS: dict[str, Any] = {"partitions": 8, "n": 3, "r": 2, "w": 2,
                            "anti_entropy_every": 0.0}
MAX_STEPS = 200_000  # deliveries in one settle before the mesh calls it a livelock


@dataclass(frozen=True, slots=True)
class Caller:
    """A client connection as the runtime describes it (``protocol.Caller``)."""

    address: str | None = "127.0.0.1"
    user_id: str | None = None


def client_address(i: int) -> str:
    return f"127.0.0.1:{7000 + i}"


def peer_address(i: int) -> str:
    return f"127.0.0.1:{7100 + i}"


class Node:
    """One node: its config, engines and stage handlers (in the runtime's start order)."""

    def __init__(self, i: int, data_dir: Path, rng: random.Random, **config: Any) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.id = f"n{i}"
        self.config = NodeConfig(node_id=self.id, client=client_address(i),
                                 peer=peer_address(i), data_dir=str(data_dir),
                                 engine="memory", durability="nosync", **config)
        self.engine = open_engine("memory", "", "data", "nosync")
        self.hints = open_engine("memory", "", "hints", "nosync")

        def entropy() -> Callable[[int], int]:
            return random.Random(rng.getrandbits(64)).getrandbits

        cfg = self.config
        # Versioning and persistence take no entropy: their tags and hint tokens are not
        # seeded, but nothing they do depends on those values (test_a_seed_is_a_run).
        self.coordination = coordination.Handler(cfg, entropy=entropy())
        self.gossip = gossip.Handler(cfg, rng=random.Random(rng.getrandbits(64)),
                                     entropy=entropy())
        self.network = network.Handler(cfg, entropy=entropy())
        self.stages: dict[str, Stage] = {
            "persistence": persistence.Handler(cfg, engine=self.engine, hints=self.hints,
                                               incarnation_id=f"{rng.getrandbits(32):08x}",
                                               mint_epoch=1),
            "versioning": versioning.Handler(cfg),
            "coordination": self.coordination,
            "gossip": self.gossip,
            "network": self.network,
        }
        assert tuple(self.stages) == STAGE_NAMES  # started in the supervisor's order
        self.peer_max_bytes = peerprotocol.max_message_bytes(cfg.max_key_bytes,
                                                             cfg.max_record_bytes)

    def values(self, key: bytes) -> list[bytes] | None:
        """The sibling values this node's engine holds for ``key`` (None: nothing)."""
        raw = self.engine.get(key)
        return None if raw is None else causality.values(causality.decode(raw))


class Mesh:
    """Nodes ``n1``..``nM``: n1 founds the ring, the others join it through n1's peer
    address. Queues are ``("stage", node, stage)`` and ``("link", from, to)``."""

    def __init__(self, root: Path, nodes: int = 3, seed: int = 0, **config: Any) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.config = {**DEFAULTS, **config}
        self.now = 0.0
        self.nodes: dict[str, Node] = {}
        self.by_peer: dict[str, str] = {}
        self.queues: dict[tuple[str, str, str], list[bytes]] = {}
        self.next_tick: dict[tuple[str, str], float] = {}
        self.cut_links: set[frozenset[str]] = set()
        self.replies: dict[Any, dict[str, Any]] = {}
        self.next_id = 0
        self.delivered = 0
        for i in range(nodes):
            self.add(join=peer_address(1) if i else "")

    def add(self, join: str = "", **config: Any) -> Node:
        """Start one more node (a founder of its own ring when it names no ``join``)."""
        i = len(self.nodes) + 1
        node = Node(i, self.root / f"n{i}", random.Random(self.rng.getrandbits(64)),
                    join=join, **{**self.config, **config})
        self.nodes[node.id] = node
        self.by_peer[node.config.peer] = node.id
        for name, handler in node.stages.items():
            handler.start(self.now)
            self._flush(node, handler)
            self.next_tick[(node.id, name)] = self.now + handler.tick_interval
        return node

    # Sending: what the runtime's flush does ----------------------------------------
    def _flush(self, node: Node, handler: Stage) -> None:
        while out := handler.take_outbox():
            batches: dict[str, list[Any]] = {}
            for dest, event in out:
                if dest == "client":  # the client ROUTER: [identity, b"", reply]
                    reply = msgpack.unpackb(event[-1], raw=False)
                    self.replies[reply.get("id")] = reply
                    continue
                batches.setdefault(dest, []).append(event)
            for dest, events in batches.items():
                if dest.startswith(PEER_PREFIX):
                    self._to_peer(node, handler, dest, events)
                else:
                    assert dest in node.stages, f"{handler.name} emitted to {dest!r}"
                    frame = msgpack.packb([self.now, events], use_bin_type=True)
                    self.queues.setdefault(("stage", node.id, dest), []).append(frame)

    def _to_peer(self, node: Node, handler: Stage, dest: str, events: list[Any]) -> None:
        target = self.by_peer.get(dest.removeprefix(PEER_PREFIX))
        frames, oversize = peerprotocol.pack_events(events, node.peer_max_bytes)
        if oversize:
            handler.undeliverable(dest, oversize, self.now)
        for frame, sent in frames:
            if target is None or self.is_cut(node.id, target):
                handler.undeliverable(dest, sent, self.now)
            else:
                self.queues.setdefault(("link", node.id, target), []).append(frame)

    # Delivering ------------------------------------------------------------------------
    def step(self) -> bool:
        """Deliver everything waiting in one queue, picked at random; False: all empty."""
        busy = [key for key, frames in self.queues.items() if frames]
        if not busy:
            return False
        key = self.rng.choice(busy)
        frames, self.queues[key] = self.queues[key], []
        kind, src, dst = key
        self.delivered += 1
        if kind == "stage":
            node, handler = self.nodes[src], self.nodes[src].stages[dst]
            events = [event for frame in frames for event in msgpack.unpackb(
                frame, raw=False, use_list=True, strict_map_key=False)[1]]
            handler.handle_events(events, self.now)
        else:
            node = self.nodes[dst]
            handler = node.network
            handler.handle_frames("peer", [[src.encode(), frame] for frame in frames],
                                  self.now)
        self._flush(node, handler)
        return True

    def settle(self) -> None:
        """Deliver until every queue is empty (no time passes)."""
        for _ in range(MAX_STEPS):
            if not self.step():
                return
        raise AssertionError(f"still delivering after {MAX_STEPS} steps")

    def run_until(self, done: Callable[[], bool], within: float) -> bool:
        """Settle, then move the clock to the next tick due and tick, until ``done()``
        or ``within`` simulated seconds have passed; whether ``done()`` came true."""
        end = self.now + within
        while True:
            self.settle()
            if done():
                return True
            due = min(self.next_tick.values())
            if due > end:
                self.now = end
                return False
            self.now = due
            ticking = [key for key, at in self.next_tick.items() if at <= due]
            self.rng.shuffle(ticking)
            for node_id, name in ticking:
                node = self.nodes[node_id]
                handler = node.stages[name]
                self.next_tick[(node_id, name)] = due + handler.tick_interval
                handler.tick(due)
                self._flush(node, handler)

    def run(self, seconds: float) -> None:
        self.run_until(lambda: False, seconds)

    # Links ---------------------------------------------------------------------------
    def is_cut(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.cut_links

    def cut(self, a: str, b: str | None = None) -> None:
        """Cut the link between ``a`` and ``b`` (no ``b``: all of ``a``'s links, a node
        down for everyone else); what was in flight on a cut link is lost."""
        for other in [b] if b is not None else [x for x in self.nodes if x != a]:
            self.cut_links.add(frozenset((a, other)))
            self.queues.pop(("link", a, other), None)
            self.queues.pop(("link", other, a), None)

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        """Heal the link between ``a`` and ``b`` (no ``b``: all of ``a``'s; neither:
        every link)."""
        if a is None:
            self.cut_links.clear()
        elif b is None:
            self.cut_links = {link for link in self.cut_links if a not in link}
        else:
            self.cut_links.discard(frozenset((a, b)))

    # Clients -------------------------------------------------------------------------
    def request(self, node_id: str, body: dict[str, Any], caller: Caller = Caller()) -> Any:
        """Send a client request to ``node_id``'s client port; its id (given one if the
        body has none). The reply lands in ``replies[id]``."""
        if "id" not in body:
            self.next_id += 1
            body = {**body, "id": self.next_id}
        node = self.nodes[node_id]
        node.network.handle_frames("client", [[b"client", b"", msgpack.packb(body)]],
                                   self.now, [caller])
        self._flush(node, node.network)
        return body["id"]

    def call(self, node_id: str, body: dict[str, Any], within: float = 10.0
             ) -> dict[str, Any]:
        """A request and its reply, running the mesh until it comes."""
        rid = self.request(node_id, body)
        assert self.run_until(lambda: rid in self.replies, within), f"no reply to {body}"
        return self.replies[rid]

    def put(self, node_id: str, key: bytes, value: bytes, **fields: Any) -> dict[str, Any]:
        return self.call(node_id, {"op": "put", "key": key, "value": value, **fields})

    def get(self, node_id: str, key: bytes, **fields: Any) -> dict[str, Any]:
        return self.call(node_id, {"op": "get", "key": key, **fields})

    # What tests wait for ----------------------------------------------------------------
    def ring(self, node_id: str) -> Ring | None:
        """The ring ``node_id`` routes requests by (what gossip told coordination)."""
        return self.nodes[node_id].coordination.ring

    def converged(self) -> bool:
        """Every node routes by the same ring with no move pending, no transfer running,
        and, while no link is cut, every peer is up."""
        states = []
        for node in self.nodes.values():
            ring, gauges = node.coordination.ring, node.gossip.gauges()
            if ring is None or gauges["transfers_active"] or node.coordination.placement.moves_left:
                return False
            if gauges["down"] and not self.cut_links:
                return False
            states.append(ring.to_state())
        return all(state == states[0] for state in states)
