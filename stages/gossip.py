"""The gossip stage: membership and ring state (Dynamo paper section 4.8).

With one node the ring is this node alone; the stage tells the coordination stage the
ring it holds now and again, so a restarted coordination stage learns it back. Joining,
gossip rounds with peers and failure detection arrive with the cluster.
"""

from __future__ import annotations

from typing import Any

from seda_dynamo.config import NodeConfig
from seda_dynamo.ring import Member, Ring
from seda_dynamo.stage import Stage

ANNOUNCE_EVERY = 5.0


class Handler(Stage):
    name = "gossip"
    tick_interval = 0.5

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.ring = Ring.single(Member(config.node_id, config.client, config.peer),
                                config.partitions)
        self.next_announce = 0.0

    def tick(self, now: float) -> None:
        if now >= self.next_announce:
            self.next_announce = now + ANNOUNCE_EVERY
            self.emit("coordination", ["ring", self.ring.to_state()])

    def gauges(self) -> dict[str, Any]:
        return {"members": len(self.ring.members), "epoch": self.ring.epoch}
