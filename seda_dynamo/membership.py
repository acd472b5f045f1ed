"""Cluster membership and the ring, merged by gossip: a pure value and its merge rules.

Dynamo paper sections 4.8 (ring membership, external discovery) and 4.9 (adding and
removing nodes), with the ring of section 6.2 strategy 3. Each member's own entry
(addresses, weight, status, and the partitions it has handed over) is written only by
that member and carries a version, so merging two views keeps the higher version of
every entry. A membership change makes a *plan*: the ring keeps its settled ``owners``
and gains ``next_owners`` from ``claim.claim``. A partition moves to its next owner only
once the current owner has streamed it there and said so in its entry; the *effective*
ring (what requests are routed by) follows those hand-overs, and once every move is done
any node settles the plan. Plans and settlements are deterministic functions of the
merged view, and among rings the higher ``(epoch, digest)`` wins, so nodes that raced
converge within a gossip round. The view also answers what the gossip stage asks of it:
whom a round picks from, what coordination is told of the ring, an operator's join.

The gossip stage keeps its view where a restarted node finds it again: behind a
``ViewStore`` (the stage's file in the data directory, or ``MemoryStore`` for a
simulator's node, which keeps it across restarts of the handler only).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import msgpack

from seda_dynamo import address
from seda_dynamo.claim import claim
from seda_dynamo.ring import Member, Ring, preference_lists

VIEW_FILE = "cluster.state"  # in the data directory: the view a restarted node resumes
#: The effective ring's epoch is ``plan epoch * EPOCH_STRIDE + moves done``, so it grows
#: with every hand-over as well as with every plan (Q is at most 65,536).
EPOCH_STRIDE = 1 << 16


class ViewStore(Protocol):
    """Where a node's view is kept between its runs (``View.encode``'s bytes)."""

    def load(self) -> bytes | None:
        """The view last saved, or None when none was."""
        ...

    def save(self, data: bytes) -> None:
        """Replace the saved view; after a crash the old or the new one is there."""
        ...


@dataclass(slots=True)
class MemoryStore:
    """A view store in memory (a simulator's node)."""

    data: bytes | None = None

    def load(self) -> bytes | None:
        return self.data

    def save(self, data: bytes) -> None:
        self.data = data

    def __str__(self) -> str:
        return "the view kept in memory"


@dataclass(frozen=True, slots=True)
class Entry:
    client: str
    peer: str
    weight: int = 1
    status: str = "valid"  # valid, leaving, left
    version: int = 1
    handed: frozenset[int] = frozenset()  # partitions handed over under plan ``handed_epoch``
    handed_epoch: int = 0


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
        owners = claim(None, {me: entry.weight}, partitions, n)
        return replace(view, ring=view._ring(owners, owners, 1))

    def with_self(self, entry: Entry) -> View:
        """This node's entry as configured now (a new version if anything changed)."""
        old = self.members.get(self.me)
        if old is not None:
            if (old.client, old.peer, old.weight) == (entry.client, entry.peer, entry.weight):
                return self
            entry = replace(old, client=entry.client, peer=entry.peer, weight=entry.weight,
                            version=old.version + 1)
        return replace(self, members={**self.members, self.me: entry})

    def _change_self(self, **changes: Any) -> View:
        mine = self.members[self.me]
        entry = replace(mine, version=mine.version + 1, **changes)
        return replace(self, members={**self.members, self.me: entry})

    def leave(self) -> View:
        """Ask to leave: the next plan gives every partition of this node away."""
        if self.members[self.me].status != "valid":
            return self
        return self._change_self(status="leaving").reclaim()

    def handed_over(self, partition: int) -> View:
        """This node has streamed ``partition`` to its next owner under the current plan."""
        assert self.ring is not None
        mine = self.members[self.me]
        done = mine.handed if mine.handed_epoch == self.ring.epoch else frozenset()
        return self._change_self(handed=done | {partition}, handed_epoch=self.ring.epoch).reclaim()

    def join_refusal(self, seed: str, own_peer: str) -> str | None:
        """Why an operator's ``join`` through ``seed`` is refused (paper 4.8.1: joining is
        explicit), or None: the seed is gossiped to every second, so it must be an
        address the runtime can use, not this node's own, and a node in a cluster of
        others joins no second one."""
        try:
            address.check(seed, "seed")
        except address.AddressError as exc:
            return f"admin join: {exc}"
        if seed == own_peer:
            return (f"admin join: seed {seed!r} is this node's own peer address; name a "
                    "member of the cluster to join")
        if self.ring is not None and any(m.id != self.me for m in self.ring.members):
            return f"{self.me} is already in a cluster of {len(self.ring.members)}"
        return None

    def rejoined(self) -> View:
        """Start over as a joiner (after ``join_refusal`` said None): only this node, in
        a new version of its entry, waiting for the seed's ring."""
        entry = self.members[self.me]
        return View.fresh(self.me, replace(entry, version=entry.version + 1),
                          self.partitions, self.n, founder=False)

    # The effective ring -----------------------------------------------------------
    def _moved(self, partition: int, owner: str) -> bool:
        entry = self.members.get(owner)
        assert self.ring is not None
        return entry is None or (entry.handed_epoch == self.ring.epoch
                                 and partition in entry.handed)

    def effective_owners(self) -> tuple[str, ...]:
        assert self.ring is not None
        if not self.ring.next_owners:
            return self.ring.owners  # settled: nothing moves
        return tuple(b if a != b and self._moved(p, a) else a
                     for p, (a, b) in enumerate(zip(self.ring.owners, self.ring.planned,
                                                    strict=True)))

    def effective_ring(self) -> Ring | None:
        """The ring requests are routed by: the settled owners plus the moves done."""
        if self.ring is None:
            return None
        owners = self.effective_owners()
        done = owners is not self.ring.owners and sum(
            a != b for a, b in zip(self.ring.owners, owners, strict=True))
        return Ring(self.partitions, self.ring.epoch * EPOCH_STRIDE + done, self.ring.members,
                    owners)

    def transfers_out(self) -> list[tuple[int, str]]:
        """(partition, next owner) this node still has to hand over."""
        if self.ring is None:
            return []
        return [(p, b) for p, a, b in self.ring.pending()
                if a == self.me and not self._moved(p, a)]

    def transfer_plan(self, partition: int) -> list[tuple[int, str]]:
        """What handing ``partition`` over must stream: (partition whose keys, to whom).

        Moving one partition's ownership changes the preference lists of the partitions
        whose clockwise walk reaches it, so besides the next owner, any node that enters
        one of those lists must get that partition's keys before the move takes effect.
        The current owner holds them all: it is on every one of those lists.
        """
        assert self.ring is not None
        before = self.effective_owners()
        after = list(before)
        after[partition] = self.ring.planned[partition]
        n = min(self.n, len({*before, *after}))
        old, new = preference_lists(before, n), preference_lists(after, n)
        return [(p, node) for p in range(self.partitions) if old[p] != new[p]
                for node in new[p] if node not in old[p]]

    def status(self, down: frozenset[str]) -> dict[str, Any]:
        """The ``admin status`` reply: every member, its state and partitions, and the
        planned moves not yet handed over."""
        ring, effective = self.ring, self.effective_ring()
        owned = effective.owners if effective else ()
        planned = ring.planned if ring else ()
        pending = [(p, a, b) for p, a, b in ring.pending() if owned[p] != b] if ring else []
        nodes = [{"id": node, "status": entry.status,
                  "up": node == self.me or node not in down,
                  "partitions": owned.count(node), "planned": planned.count(node),
                  "transfers_out": sum(a == node for _, a, _ in pending),
                  "transfers_in": sum(b == node for _, _, b in pending)}
                 for node, entry in sorted(self.members.items())]
        return {"node": self.me, "epoch": effective.epoch if effective else 0,
                "nodes": nodes, "pending_transfers": len(pending)}

    def peers(self) -> dict[str, str]:
        """Every other member that has not left: node id -> peer address."""
        return {node: e.peer for node, e in self.members.items()
                if node != self.me and e.status != "left"}

    def gossip_partners(self, seeds: list[str], down: frozenset[str]) -> list[str]:
        """The peer addresses a gossip round picks one of (paper 4.8): the members up, or
        the seeds while this node has no ring or knows no one (external discovery);
        every member when all are down."""
        peers = self.peers()
        up = [peer for node, peer in peers.items() if node not in down]
        if self.ring is None or not peers:
            return seeds or up
        return up or list(peers.values())

    def announcement(self) -> tuple[dict[str, Any], list[list[str]], int] | None:
        """What coordination is told of the ring (``messages.RingState``'s fields): the
        effective ring's state, the members outside it (a valid one is still joining)
        and how many planned moves are not done yet; None while there is no ring."""
        ring = self.effective_ring()
        if ring is None or self.ring is None:
            return None
        in_ring = {m.id for m in ring.members}
        others = [[node, e.client, e.peer, "joining" if e.status == "valid" else e.status]
                  for node, e in sorted(self.members.items()) if node not in in_ring]
        done = ring.owners is not self.ring.owners and sum(
            a != b for a, b in zip(self.ring.owners, ring.owners, strict=True))
        return ring.to_state(), others, len(self.ring.pending()) - done

    # Gossip -----------------------------------------------------------------------
    def merge(self, other_members: dict[str, Entry], other_ring: Ring | None) -> View:
        """Fold another node's view into ours; the result may carry a new plan."""
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
        """Plan when the valid members differ from the plan's; settle a finished plan."""
        if self.ring is None:
            return self  # a joiner waits for the cluster's ring; only a founder makes one
        ring = self.ring
        valid = {node: e.weight for node, e in self.members.items() if e.status == "valid"}
        planned = {m.id: m.weight for m in ring.members if m.status == "valid"}
        stale = any(m.id in self.members and (m.client, m.peer) != (
            self.members[m.id].client, self.members[m.id].peer) for m in ring.members)
        view = self
        if valid != planned or stale:
            owners = self.effective_owners()
            planned_owners = claim(owners, valid, self.partitions, self.n) if valid else owners
            view = replace(self, ring=self._ring(owners, planned_owners, ring.epoch + 1))
        elif ring.next_owners and ring.next_owners != ring.owners and \
                self.effective_owners() == ring.next_owners:
            view = replace(self, ring=self._ring(ring.next_owners, ring.next_owners,
                                                 ring.epoch + 1))
        return view

    def may_depart(self) -> bool:
        """Is this node leaving and out of the ring (it owns and is planned nothing)?
        It departs (``depart``) once its store holds no key (``departure.py``)."""
        mine = self.members.get(self.me)
        return (mine is not None and mine.status == "leaving" and self.ring is not None
                and self.me not in self.ring.owners and self.me not in self.ring.planned)

    def depart(self) -> View:
        """A leaving node that owns nothing and holds no key any more has left: from now
        on no one asks it anything, the reaper included (``reaper.py``)."""
        return self._change_self(status="left") if self.may_depart() else self

    def _ring(self, owners: tuple[str, ...], planned: tuple[str, ...], epoch: int) -> Ring:
        holding = set(owners) | set(planned)
        members = tuple(
            Member(node, e.client, e.peer, "valid" if e.status == "valid" else "leaving", e.weight)
            for node, e in sorted(self.members.items())
            if e.status == "valid" or node in holding)
        return Ring(self.partitions, epoch, members, tuple(owners),
                    () if planned == owners else tuple(planned))

    # Wire form --------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "partitions": self.partitions,
            "members": {node: [e.client, e.peer, e.weight, e.status, e.version,
                               sorted(e.handed), e.handed_epoch]
                        for node, e in self.members.items()},
            "ring": self.ring.to_state() if self.ring is not None else None,
        }

    def merge_state(self, state: dict[str, Any]) -> View:
        """Merge a peer's ``to_state()``; raise ValueError if it is malformed."""
        try:
            members = {str(node): Entry(str(v[0]), str(v[1]), int(v[2]), str(v[3]), int(v[4]),
                                        frozenset(int(p) for p in v[5]), int(v[6]))
                       for node, v in state["members"].items()}
            ring = Ring.from_state(state["ring"]) if state.get("ring") else None
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed membership state: {exc!r}") from None
        if ring is not None and (len(ring.owners) != ring.partitions
                                 or len(ring.next_owners) not in (0, ring.partitions)):
            raise ValueError("malformed ring: owners do not match partitions")
        # Addresses enter here from any member: one this node could not connect to would
        # spread to every member, so the whole view is refused (seda_dynamo.address).
        named = [(node, e.client, e.peer) for node, e in members.items()]
        named += [(m.id, m.client, m.peer) for m in (ring.members if ring else ())]
        for node, client, peer in named:
            try:
                address.check(client, f"member {node!r} client")
                address.check(peer, f"member {node!r} peer")
            except address.AddressError as exc:
                raise ValueError(f"bad address in membership state: {exc}") from None
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
    digest = hashlib.md5("\0".join(ring.owners + ("|",) + ring.next_owners).encode())
    return ring.epoch, digest.hexdigest()
