"""The consistent-hashing ring: Q equal partitions, their owners, and preference lists.

Dynamo paper sections 4.2 (partitioning) and 4.3 (replication), with strategy 3 of
section 6.2: the hash space is cut into Q equal partitions and each node owns whole
partitions. A key's partition is ``md5(key) * Q >> 128``; its preference list is the
first N distinct nodes met walking the ring clockwise from that partition.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

HASH_BITS = 128


def key_hash(key: bytes) -> int:
    return int.from_bytes(hashlib.md5(key).digest(), "big")


def partition_of(key: bytes, partitions: int) -> int:
    return (key_hash(key) * partitions) >> HASH_BITS


def partition_range(partition: int, partitions: int) -> tuple[int, int]:
    """The half-open hash range ``[lo, hi)`` a partition covers."""
    size = (1 << HASH_BITS) // partitions
    return partition * size, (partition + 1) * size


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    client: str
    peer: str
    status: str = "up"  # up, down, joining, leaving (as this node sees it)
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Ring:
    partitions: int
    epoch: int
    members: tuple[Member, ...]
    owners: tuple[str, ...]  # owner (node id) of each partition
    _by_id: dict[str, Member] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def single(cls, member: Member, partitions: int) -> Ring:
        return cls(partitions, 1, (member,), (member.id,) * partitions)

    def member(self, node_id: str) -> Member:
        if not self._by_id:
            self._by_id.update((m.id, m) for m in self.members)
        return self._by_id[node_id]

    def preference_list(self, partition: int, n: int) -> list[str]:
        """The first ``n`` distinct owners clockwise from ``partition`` (primaries first)."""
        found: list[str] = []
        q = self.partitions
        for step in range(q):
            owner = self.owners[(partition + step) % q]
            if owner not in found:
                found.append(owner)
                if len(found) == n:
                    break
        return found

    def to_state(self) -> dict[str, Any]:
        """The ring as plain data, for gossip and for stages that hold a copy."""
        return {"partitions": self.partitions, "epoch": self.epoch, "owners": list(self.owners),
                "members": [[m.id, m.client, m.peer, m.status, m.weight] for m in self.members]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ring:
        members = tuple(Member(*m) for m in state["members"])
        return cls(state["partitions"], state["epoch"], members, tuple(state["owners"]))

    def to_wire(self, n: int, r: int, w: int) -> dict[str, Any]:
        """The ``ring`` reply of the wire protocol."""
        return {
            "nodes": [{"id": m.id, "client": m.client, "peer": m.peer, "status": m.status}
                      for m in self.members],
            "partitions": self.partitions,
            "n": n,
            "r": r,
            "w": w,
            "owners": [self.preference_list(p, n) for p in range(self.partitions)],
            "epoch": self.epoch,
        }
