"""What a simulated run waits for and judges by, read from the nodes' handlers: the
ring each node routes by, which nodes have left, and whether the cluster has converged
(paper sections 4.2, 4.8, 4.9: one agreed ring, every hand-over done). Reads only; a
part of ``sim.cluster.Cluster``.
"""

from __future__ import annotations

from typing import Any

from seda_dynamo.ring import Ring
from seda_dynamo.sim.node import Node
from seda_dynamo.stage import STAGE_NAMES


class Views:
    """The cluster's reads of its nodes (``Cluster`` holds ``nodes``, ``left``, ``now``)."""

    nodes: dict[str, Node]
    left: set[str]

    @property
    def now(self) -> float:
        raise NotImplementedError

    def ring(self, node_id: str) -> Ring | None:
        """The ring ``node_id`` routes requests by (what gossip told coordination)."""
        coordination = self.nodes[node_id].stages.get("coordination")
        return None if coordination is None else coordination.ring  # type: ignore[attr-defined]

    def departed(self) -> set[str]:
        """The nodes that have left the cluster (``admin leave``, every partition handed
        over): they keep running but are no longer members."""
        for node_id, node in self.nodes.items():
            gossip: Any = node.stages.get("gossip")
            if gossip is not None and gossip.view.members[node_id].status == "left":
                self.left.add(node_id)
        return self.left

    def members(self) -> list[str]:
        """The nodes that have not left, in order."""
        departed = self.departed()
        return [node_id for node_id in sorted(self.nodes) if node_id not in departed]

    def converged(self) -> bool:
        """Every member (a node that left is none) is up and routes by the same ring, of
        the members exactly, with no move pending, no transfer running, its stray keys
        handed over (``strays.Strays.swept``), no peer down, and no peer its coordinator
        still suspects (a read it coordinates would ask a
        stand-in in the suspect's place: paper 4.6)."""
        states = []
        members = self.members()
        for node in map(self.nodes.__getitem__, members):
            if not node.up or len(node.stages) != len(STAGE_NAMES):
                return False
            coordination: Any = node.stages["coordination"]
            gauges = node.stages["gossip"].gauges()
            ring = coordination.ring
            placement = coordination.placement
            if ring is None or [m.id for m in ring.members] != members or \
                    gauges["transfers_active"] or gauges["down"] or \
                    not gauges["strays_swept"] or \
                    placement.moves_left or any(until > self.now for until in
                                                placement.suspects.values()):
                return False
            states.append(ring.to_state())
        return all(state == states[0] for state in states)
