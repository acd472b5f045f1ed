"""The multi-node tests' view of the simulator (``seda_dynamo.sim``): a cluster of real
stage handlers with small rings and no anti-entropy, links cut and healed both ways, and
a request with its reply in one call.

Dynamo paper sections 4.6 (hinted handoff), 4.8 (membership) and 4.9 (adding nodes) are
what the multi-node tests drive through it. No sockets, no processes, no wall clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seda_dynamo.sim.cluster import Cluster
from seda_dynamo.sim.node import peer_address

__all__ = ["Mesh", "peer_address"]

#: Settings every mesh node shares unless a test says otherwise: small rings, and no
#: anti-entropy, so that what a test sees is the mechanism it drives.
DEFAULTS: dict[str, Any] = {"partitions": 8, "n": 3, "r": 2, "w": 2,
                            "anti_entropy_every": 0.0}


class Mesh(Cluster):
    """A ``Cluster`` with the tests' defaults and shorthands."""

    def __init__(self, root: Path, nodes: int = 3, seed: int = 0, **config: Any) -> None:
        super().__init__(root, nodes, seed, **{**DEFAULTS, **config})

    @property
    def cut_links(self) -> set[tuple[str, str]]:
        return self.net.cut

    @property
    def delivered(self) -> int:
        return self.trace.deliveries

    def cut(self, a: str, b: str | None = None) -> None:
        """Cut the link between ``a`` and ``b`` both ways (no ``b``: all of ``a``'s
        links, a node down for everyone else); what is in flight on it is lost."""
        self.net.partition([a], [b] if b else [x for x in self.nodes if x != a])

    def heal(self) -> None:
        self.net.heal()

    def put(self, node_id: str, key: bytes, value: bytes, **fields: Any) -> dict[str, Any]:
        reply = self.call(node_id, {"op": "put", "key": key, "value": value, **fields})
        assert reply is not None, f"no reply to a put of {key!r}"
        return reply

    def get(self, node_id: str, key: bytes, **fields: Any) -> dict[str, Any]:
        reply = self.call(node_id, {"op": "get", "key": key, **fields})
        assert reply is not None, f"no reply to a get of {key!r}"
        return reply
