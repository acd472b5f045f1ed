"""A leaving node's last step: it counts as left only once its store holds no key.

Dynamo paper sections 4.9 (a node removed hands its keys over) and 4.4 (deletes are
versions, reaped later: ``reaper.py``). The reaper asks every node that has not left
what it holds for a key before it reaps the key's tombstone, so a node that has left
must hold no copy of any key: not of the partitions it handed over, not a stand-in's
hinted copy (4.6), not a stray one. Once a leaving node owns nothing
(``membership.View.may_depart``), its copies are all stray and ``strays.Strays`` hands
them to their replicas and forgets them; ``Departure`` asks persistence, every
``CHECK_EVERY`` seconds, for any key of the whole hash range (a fold of at most one
key), and only when the answer is none does the node depart (``View.depart``: status
``left``, gossiped). The question asks persistence to seal the store when it finds it
empty: from that answer on it takes no write, restarts included, so a node whose view
is stale cannot leave a copy there afterwards (a coordinator's ``rput``, a read repair,
a hand-over: simulator seed 1044, harsh). While keys are found the strays are swept
again soon (``Strays.again``).
A hint whose versions are gone hands nothing over, so an empty data store is enough.
Pure: no clock, no IO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seda_dynamo.duty import Cluster, Component, Duty, Emit, Route
from seda_dynamo.engines import KEY_SPACE
from seda_dynamo.messages import Fold

CHECK_EVERY = 1.0  # seconds between two questions to persistence while leaving


class Departure(Component):
    """The question in flight to persistence, if any, and when the next is due."""

    def __init__(self, emit: Emit, cluster: Cluster, depart: Callable[[], None],
                 first_id: int, again: Callable[[float], None] = lambda now: None,
                 stage: str = "gossip") -> None:
        super().__init__(emit, stage)
        self.cluster = cluster
        self.depart = depart  # the stage adopts ``View.depart()``
        self.again = again  # ``Strays.again``: keys are left, sweep them again soon
        self.asked = first_id  # ids never repeat across restarts (ids.py)
        self.waiting = False
        self.next_at = 0.0

    def tick(self, now: float) -> None:
        """Ask whether any key is left here, when leaving, out of the ring and due."""
        if not self.cluster.view.may_depart():
            self.waiting = False
            return
        if now < self.next_at:
            return
        self.asked += 1
        self.waiting, self.next_at = True, now + CHECK_EVERY
        self.emit("persistence", Fold.wire(self.stage, Route(Duty.DEPART, (self.asked,)).ref(),
                                           lo_hex="0", hi_hex=f"{KEY_SPACE:x}", max_keys=1,
                                           seal=True))

    def local(self, now: float, route: Route, answer: list[Any]) -> None:
        """Persistence's answer: no key at all, and still out of the ring: depart."""
        if answer[0] != "folded" or not self.waiting or route.ident != (self.asked,):
            return
        self.waiting = False
        if not self.cluster.view.may_depart():
            return
        if answer[1]:
            self.again(now)
        else:
            self.depart()

    def lost(self, now: float, route: Route) -> None:
        """Persistence could not take the question: asked again when next due."""
        if route.ident == (self.asked,):
            self.waiting = False
