"""The consistent-hashing ring: Q equal partitions, their owners, and preference lists.

Dynamo paper sections 4.2 (partitioning) and 4.3 (replication), with strategy 3 of
section 6.2: the hash space is cut into Q equal partitions and each node owns whole
partitions. A key's partition is ``md5(key) * Q >> 128``; its preference list is the
first N distinct nodes met walking the ring clockwise from that partition. Who owns
which partition is decided by ``seda_dynamo.claim``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

HASH_BITS = 128


def key_hash(key: bytes) -> int:
    """The key's 128-bit position on the ring: its MD5 digest, big-endian."""
    return int.from_bytes(hashlib.md5(key).digest(), "big")


def partition_of_hash(h: int, partitions: int) -> int:
    """The partition holding ring position ``h``."""
    return (h * partitions) >> HASH_BITS


def partition_of(key: bytes, partitions: int) -> int:
    return partition_of_hash(key_hash(key), partitions)


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
    #: The owners a membership change plans (empty: settled). A partition moves from
    #: ``owners[p]`` to ``next_owners[p]`` only once its data has been handed over.
    next_owners: tuple[str, ...] = ()
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

    def with_owners(self, owners: Sequence[str], members: Sequence[Member] | None = None,
                    epoch: int | None = None) -> Ring:
        """This ring with new owners (and members), at ``epoch`` (default: this one plus 1)."""
        members = self.members if members is None else tuple(members)
        if len(owners) != self.partitions or not {m.id for m in members}.issuperset(owners):
            raise ValueError("owners must name a member for each of the ring's partitions")
        return Ring(self.partitions, self.epoch + 1 if epoch is None else epoch,
                    tuple(members), tuple(owners))

    @property
    def planned(self) -> tuple[str, ...]:
        return self.next_owners or self.owners

    def pending(self) -> list[tuple[int, str, str]]:
        """Planned moves not yet settled: (partition, current owner, next owner)."""
        if not self.next_owners:
            return []  # settled (asked every tick: no walk of the Q owners)
        return [(p, a, b) for p, (a, b) in enumerate(zip(self.owners, self.planned,
                                                         strict=True)) if a != b]

    def to_state(self) -> dict[str, Any]:
        """The ring as plain data, for gossip and for stages that hold a copy."""
        return {"partitions": self.partitions, "epoch": self.epoch, "owners": list(self.owners),
                "next": list(self.next_owners),
                "members": [[m.id, m.client, m.peer, m.status, m.weight] for m in self.members]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ring:
        members = tuple(Member(*m) for m in state["members"])
        return cls(state["partitions"], state["epoch"], members, tuple(state["owners"]),
                   tuple(state.get("next") or ()))

    def to_wire(self, n: int, r: int, w: int) -> dict[str, Any]:
        """The ``ring`` reply of the wire protocol."""
        return {
            "nodes": [{"id": m.id, "client": m.client, "peer": m.peer,
                       "status": "up" if m.status == "valid" else m.status}
                      for m in self.members],
            "partitions": self.partitions,
            "n": n,
            "r": r,
            "w": w,
            "owners": [self.preference_list(p, n) for p in range(self.partitions)],
            "epoch": self.epoch,
        }


def preference_lists(owners: Sequence[str], n: int) -> list[list[str]]:
    """Every partition's preference list at once, in O(Q * n): one sweep backwards
    around the ring twice, each list being its owner followed by the next list less
    that owner."""
    q = len(owners)
    lists: list[list[str]] = [[] for _ in range(q)]
    following: list[str] = []
    for i in range(2 * q - 1, -1, -1):
        owner = owners[i % q]
        following = [owner, *(x for x in following if x != owner)][:n]
        if i < q:
            lists[i] = following
    return lists
