"""Cluster membership and the ring, merged by gossip: a pure value and its merge rules.

Dynamo paper section 4.8 (ring membership, external discovery) with the ring of
section 6.2 strategy 3. Each member's own entry (addresses, weight, status) is written
only by that member and carries a version, so merging two views keeps the higher
version of every entry. The ring (owners of the Q partitions) is recomputed by any node
that sees members the ring lacks, with ``ring.claim``; among rings, the higher
``(epoch, digest)`` wins, so nodes that recompute from the same inputs agree at once and
nodes that raced converge within a gossip round.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from seda_dynamo.ring import Member, Ring, claim

ACTIVE = ("valid", "leaving")
VIEW_FILE = "cluster.state"  # in the data directory: the view a restarted node resumes


@dataclass(frozen=True, slots=True)
class Entry:
    client: str
    peer: str
    weight: int = 1
    status: str = "valid"  # valid, leaving, left
    version: int = 1


@dataclass(frozen=True, slots=True)
class View:
    """What one node knows of the cluster."""

    me: str
    partitions: int
    n: int
    members: dict[str, Entry] = field(default_factory=dict)
    ring: Ring | None = None

    # Building ---------------------------------------------------------------------
    @classmethod
    def fresh(cls, me: str, entry: Entry, partitions: int, n: int, founder: bool) -> View:
        """A new node: a founder owns a one-node ring; a joiner waits for a ring by gossip."""
        view = cls(me, partitions, n, {me: entry})
        if not founder:
            return view
        return replace(view, ring=view._ring(claim(None, {me: entry.weight}, partitions, n), 1))

    def with_self(self, entry: Entry) -> View:
        """This node's entry as configured now (a new version if anything changed)."""
        old = self.members.get(self.me)
        if old is not None:
            if (old.client, old.peer, old.weight, old.status) == \
                    (entry.client, entry.peer, entry.weight, entry.status):
                return self
            entry = replace(entry, version=old.version + 1)
        return replace(self, members={**self.members, self.me: entry})

    # Gossip -----------------------------------------------------------------------
    def merge(self, other_members: dict[str, Entry], other_ring: Ring | None) -> View:
        """Fold another node's view into ours; the result may carry a recomputed ring."""
        members = dict(self.members)
        for node, entry in other_members.items():
            mine = members.get(node)
            if mine is None or entry.version > mine.version:
                members[node] = entry
        ring = self.ring
        if other_ring is not None and other_ring.partitions == self.partitions and (
                ring is None or _rank(other_ring) > _rank(ring)):
            ring = other_ring
        return replace(self, members=members, ring=ring).reclaim()

    def reclaim(self) -> View:
        """Recompute the ring when the active members differ from its owners."""
        if self.ring is None:
            return self  # a joiner waits for the cluster's ring; only a founder makes one
        weights = {node: e.weight for node, e in self.members.items() if e.status in ACTIVE}
        current = {m.id: m.weight for m in self.ring.members}
        stale = any(self.ring.member(m).client != self.members[m].client
                    or self.ring.member(m).peer != self.members[m].peer
                    for m in current if m in self.members)
        if current == weights and not stale:
            return self
        owners = claim(self.ring.owners, weights, self.partitions, self.n)
        return replace(self, ring=self._ring(owners, self.ring.epoch + 1))

    def _ring(self, owners: tuple[str, ...], epoch: int) -> Ring:
        members = tuple(Member(node, e.client, e.peer, "up", e.weight)
                        for node, e in sorted(self.members.items()) if e.status in ACTIVE)
        return Ring(self.partitions, epoch, members, tuple(owners))

    # Wire form --------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "partitions": self.partitions,
            "members": {node: [e.client, e.peer, e.weight, e.status, e.version]
                        for node, e in self.members.items()},
            "ring": self.ring.to_state() if self.ring is not None else None,
        }

    def merge_state(self, state: dict[str, Any]) -> View:
        """Merge a peer's ``to_state()``; raise ValueError if it is malformed."""
        try:
            members = {str(node): Entry(str(v[0]), str(v[1]), int(v[2]), str(v[3]), int(v[4]))
                       for node, v in state["members"].items()}
            ring = Ring.from_state(state["ring"]) if state.get("ring") else None
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed membership state: {exc!r}") from None
        if ring is not None and len(ring.owners) != ring.partitions:
            raise ValueError("malformed ring: owners do not match partitions")
        return self.merge(members, ring)

    @classmethod
    def from_state(cls, me: str, n: int, state: dict[str, Any]) -> View:
        return cls(me, state["partitions"], n).merge_state(state)

    def encode(self) -> bytes:
        return msgpack.packb(self.to_state(), use_bin_type=True)

    @classmethod
    def decode(cls, me: str, n: int, data: bytes) -> View:
        """A saved view; ValueError if it is unreadable."""
        try:
            return cls.from_state(me, n, msgpack.unpackb(data, raw=False))
        except (KeyError, TypeError, msgpack.UnpackException) as exc:
            raise ValueError(f"unreadable view: {exc!r}") from None


def _rank(ring: Ring) -> tuple[int, str]:
    digest = hashlib.md5("\0".join(ring.owners).encode()).hexdigest()
    return ring.epoch, digest
