"""Where a coordinator sends a key's requests: the ring gossip announced, the members
gossip holds down, the nodes this coordinator itself suspects, and the routes they give.

Dynamo paper sections 4.6 (sloppy quorum: the first N healthy nodes of the preference
list) and 4.8 (membership and failure detection). Gossip's failure detector takes a
second or more to mark a node down; a coordinator whose request a node just failed
*suspects* it for ``SUSPECT_SECONDS``: later requests ask it last (``routing.route``),
until it answers anything, gossip sees it come back, or the time runs out. Routes are
made once per partition and made again when the ring, the down set or the suspects
change. Pure, no IO: the coordination stage feeds it what gossip and replicas say.
"""

from __future__ import annotations

from typing import Any

from seda_dynamo.ring import Ring
from seda_dynamo.routing import Route, route, with_me

#: Seconds a node that failed a request is routed around, unless it answers meanwhile.
SUSPECT_SECONDS = 2.0
#: At most this many suspected nodes are remembered (the oldest suspicion goes first).
MAX_SUSPECTS = 64


class Placement:
    """One coordinator's view of where requests go (``me``: its node id; ``n``: the
    configured N)."""

    def __init__(self, me: str, n: int) -> None:
        self.me = me
        self.configured_n = n
        self.ring: Ring | None = None
        self.nodes_by_peer: dict[str, str] = {}
        self.others: list[list[str]] = []  # members not (or no longer) owning partitions
        self.moves_left = 0  # partitions planned to move and not yet handed over
        self.down: frozenset[str] = frozenset()
        self.suspects: dict[str, float] = {}  # node -> until when requests route around it
        self.avoid: frozenset[str] = frozenset()  # suspected: asked last
        self.routes: dict[int, Route] = {}

    @property
    def n(self) -> int:
        """N, capped by the number of members: a one-node ring keeps one replica."""
        return min(self.configured_n, len(self.ring.members)) if self.ring else 0

    # What gossip says ------------------------------------------------------------------
    def learn_ring(self, state: dict[str, Any], others: list[list[str]],
                   moves_left: int = 0) -> None:
        self.others = others
        self.moves_left = moves_left
        if self.ring is None or state["epoch"] != self.ring.epoch:
            self.ring = Ring.from_state(state)
            self.nodes_by_peer = {m.peer: m.id for m in self.ring.members}
            self.routes.clear()

    def learn_down(self, down: list[str]) -> None:
        new = frozenset(down)
        if new != self.down:
            for node in self.down - new:  # gossip saw it come back: no more suspicion
                self.suspects.pop(node, None)
            self.down = new
            self.routes.clear()
            self._avoid()

    # Suspicion: nodes that just failed a request ----------------------------------------
    def suspect(self, node: str, now: float) -> bool:
        """``node`` failed a request: route around it for a while. True if it was not
        suspected already."""
        if node == self.me or self.ring is None:
            return False
        fresh = node not in self.suspects
        self.suspects[node] = now + SUSPECT_SECONDS
        if fresh:
            while len(self.suspects) > MAX_SUSPECTS:
                del self.suspects[min(self.suspects, key=self.suspects.__getitem__)]
            self._avoid()
        return fresh

    def cleared(self, node: str) -> None:
        """``node`` answered: whatever it failed before, it serves now."""
        if self.suspects.pop(node, None) is not None:
            self._avoid()

    def expire(self, now: float) -> None:
        gone = [node for node, until in self.suspects.items() if until <= now]
        for node in gone:
            del self.suspects[node]
        if gone:
            self._avoid()

    def _avoid(self) -> None:
        """Routes are made again when the set of suspected nodes changes (they are asked
        last, never dropped: ``routing.route``)."""
        avoid = frozenset(self.suspects.keys())
        if avoid != self.avoid:
            self.avoid = avoid
            self.routes.clear()

    # Routes ----------------------------------------------------------------------------
    def route(self, partition: int) -> Route:
        found = self.routes.get(partition)
        if found is None:
            assert self.ring is not None
            found = self.routes[partition] = route(self.ring, partition, self.n, self.down,
                                                   self.avoid)
        return found

    def forwarding(self, found: Route) -> Route | None:
        """Where a write goes that this node is none of the chosen replicas of (only a
        replica stamps a write): to the first chosen, the others then the spares
        standing by. None when this node is chosen, or none is."""
        if not found.chosen or any(t.node == self.me for t in found.chosen):
            return None
        rest = [t.node for t in found.chosen[1:]] + list(found.spare)
        return Route(found.chosen[:1], tuple(rest))

    def stamping(self, partition: int) -> Route:
        """The route of a write this node stamps, with this node in it even where its
        view does not choose it (``routing.with_me``: it then stands in, with a hint)."""
        assert self.ring is not None
        return with_me(self.route(partition), self.me,
                       self.ring.preference_list(partition, self.n), self.n)

    def peer(self, node: str) -> str:
        """The peer address of ``node``: a member of the ring, or one outside it (joining,
        leaving, or left since a request chose it: its read repair still goes out)."""
        assert self.ring is not None
        try:
            return self.ring.member(node).peer
        except KeyError:
            for other, _client, peer, _status in self.others:
                if other == node:
                    return peer
            raise

    def ring_reply(self, r: int, w: int) -> dict[str, Any]:
        """The client's ``ring`` answer: the ring, the members outside it, who is down."""
        assert self.ring is not None
        wire = self.ring.to_wire(self.configured_n, r, w)
        wire["pending_transfers"] = self.moves_left
        wire["nodes"] += [{"id": node, "client": client, "peer": peer, "status": status}
                          for node, client, peer, status in self.others]
        for node in wire["nodes"]:
            if node["id"] in self.down:
                node["status"] = "down"
        return wire
