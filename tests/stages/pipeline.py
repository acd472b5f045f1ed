"""Stage handlers wired together in memory (no ZeroMQ): the pipeline the stage tests
share, one node, events delivered between handlers in an order a test picks.
"""

from __future__ import annotations

import msgpack

from seda_dynamo.config import NodeConfig
from seda_dynamo.engines import open_engine
from seda_dynamo.ring import Member, Ring
from stages import coordination, network, persistence, versioning

CONFIG = NodeConfig(node_id="t", engine="memory", n=1, r=1, w=1)


class Pipeline:
    """Delivers emitted events between handlers; ``pick`` chooses which queue goes next."""

    def __init__(self) -> None:
        self.engine = open_engine("memory", "", "data", "nosync")
        self.stages = {
            "network": network.Handler(CONFIG),
            "coordination": coordination.Handler(CONFIG),
            "versioning": versioning.Handler(CONFIG),
            "persistence": persistence.Handler(CONFIG, engine=self.engine,
                                               hints=open_engine("memory", "", "h", "nosync")),
        }
        ring = Ring.single(Member("t", CONFIG.client, CONFIG.peer), CONFIG.partitions)
        self.stages["coordination"].on_ring(0.0, ring.to_state(), [])
        self.queues: dict[str, list] = {name: [] for name in self.stages}
        self.replies: list[dict] = []
        self.now = 0.0
        # Stages whose queue is full: what is emitted to them is handed back to its
        # sender as undeliverable, as the runtime does (seda_dynamo/outbox.py).
        self.full: set[str] = set()

    def collect(self) -> None:
        while any(handler.outbox for handler in self.stages.values()):
            for handler in self.stages.values():
                for dest, event in handler.take_outbox():
                    if dest in self.full:
                        handler.undeliverable(dest, [event], self.now)
                    elif dest == "client":
                        self.replies.append(msgpack.unpackb(event[-1]))
                    elif dest in self.queues:
                        self.queues[dest].append(event)
                    else:
                        assert dest == "gossip", dest

    def request(self, body: dict, ident: bytes = b"c") -> None:
        self.stages["network"].handle_frames("client", [[ident, b"", msgpack.packb(body)]],
                                             self.now)
        self.collect()

    def step(self, pick: int = 0) -> bool:
        busy = [name for name, q in self.queues.items() if q]
        if not busy:
            return False
        name = busy[pick % len(busy)]
        batch, self.queues[name] = self.queues[name], []
        self.stages[name].handle_events(batch, self.now)
        self.collect()
        return True

    def run(self, picks=()) -> None:
        for pick in picks:
            self.step(pick)
        while self.step():
            pass
