"""What the tests of the gossip stage's duty components share (seda_dynamo/duty.py):
a cluster they read, an emit that collects, and views of three nodes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from seda_dynamo.claim import claim
from seda_dynamo.membership import Entry, View
from seda_dynamo.ring import Member, Ring

Q, N = 8, 3
LOG = logging.getLogger("tests.duties")


def entry(i: int) -> Entry:
    return Entry(f"127.0.0.1:{7000 + i}", f"127.0.0.1:{7100 + i}")


def planned_view(me: str = "n1") -> View:
    """n1 founded the ring, n2 and n3 joined: the ring plans moves n1 hands over."""
    view = View.fresh("n1", entry(1), Q, N, founder=True)
    for i in (2, 3):
        view = view.merge_state(View.fresh(f"n{i}", entry(i), Q, N, founder=False).to_state())
    return View.from_state(me, N, view.to_state())


def settled_view(me: str = "n1") -> View:
    """Three members on a settled ring (nothing to hand over)."""
    members = {f"n{i}": entry(i) for i in (1, 2, 3)}
    owners = claim(None, {node: 1 for node in members}, Q, N)
    ring = Ring(Q, 1, tuple(Member(node, e.client, e.peer, "valid")
                            for node, e in sorted(members.items())), owners)
    return View(me, Q, N, members, ring)


@dataclass
class FakeCluster:
    """The membership a component reads (``duty.Cluster``); a test changes it at will."""

    view: View
    down: frozenset[str] = frozenset()

    def peers(self) -> dict[str, str]:
        return {node: e.peer for node, e in self.view.members.items()
                if node != self.view.me and e.status != "left"}


@dataclass
class Sent:
    """An ``emit`` that collects what it is given."""

    events: list[tuple[str, Any]] = field(default_factory=list)

    def __call__(self, dest: str, event: Any) -> None:
        self.events.append((dest, event))

    def take(self) -> list[tuple[str, Any]]:
        out, self.events = self.events, []
        return out

    def calls(self) -> list[list[Any]]:
        """The calls to other nodes, taken: ``["call", peer, stage, ref, request, node, ttl]``."""
        taken = self.take()
        self.events = [(d, e) for d, e in taken if not (d == "network" and e[0] == "call")]
        return [e for d, e in taken if d == "network" and e[0] == "call"]

    def to(self, dest: str) -> list[Any]:
        """The events for ``dest``, taken."""
        taken = self.take()
        self.events = [(d, e) for d, e in taken if d != dest]
        return [e for d, e in taken if d == dest]
