"""Hinted handoff's delivery side: hints handed to their owners once those are up.

Dynamo paper section 4.6: a write meant for a node that was down went to a fallback with
a hint naming that node; once the node is back, the fallback hands the versions over and
may then forget the hint. Here the fallback's persistence stage keeps the hint records
(``[owner, key] -> token``) and the versions in its data store; ``Delivery`` is the gossip
stage's duty that, every ``HINTS_EVERY`` seconds while background work is allowed, asks
persistence for hints of members that are up, sends each key's current versions to its
owner (``rput``, merged there, never overwriting) and tells persistence to forget a hint
only once its owner acknowledged it (``hint_done``), or when there is nothing to hand
over (no versions left). A hint whose owner has left the cluster (paper 4.9: its
partitions went to others) goes to the first replica up of the key's preference list
now, in its owner's place, unless this node is one of them and holds the versions
already; the scan asks for the hints of members that left too. A batch waits at most
``HINT_WAIT`` seconds for its acknowledgements; unanswered deliveries are retried by the
next scan. Pure: no clock, no IO.
"""

from __future__ import annotations

import logging
from typing import Any

from seda_dynamo.background import BackgroundShare
from seda_dynamo.brief import brief
from seda_dynamo.duty import Cluster, Component, Duty, Emit, Route, Timer
from seda_dynamo.messages import HintDone, Hints
from seda_dynamo.ring import partition_of

HINTS_EVERY = 1.0
HINT_BATCH = 128
HINT_WAIT = 5.0


class Delivery(Component):
    """Hints in flight to their owners, and how many were delivered."""

    def __init__(self, emit: Emit, cluster: Cluster, share: BackgroundShare, timer: Timer,
                 log: logging.Logger, stage: str = "gossip") -> None:
        super().__init__(emit, stage)
        self.cluster = cluster
        self.share = share
        self.timer = timer
        self.log = log
        self.in_flight = 0
        self.delivered = 0

    def delivered_count(self) -> int:
        """How many hints were delivered so far."""
        return self.delivered

    def tick(self, now: float) -> None:
        """Ask persistence for hints of the members that are up, when it is time."""
        if self.share.allows(now) and self.timer.due(now, HINTS_EVERY):
            self.in_flight = 0  # unanswered deliveries are retried by this scan
            up = [node for node in self.cluster.peers() if node not in self.cluster.down]
            view = self.cluster.view
            left = [node for node, e in sorted(view.members.items())
                    if e.status == "left" and node != view.me]
            if up:
                self.emit("persistence", Hints.wire(reply_to=self.stage, ref="scan",
                                                    owners=up + left, limit=HINT_BATCH))

    def found(self, now: float, hints: list[Any]) -> int:
        """Persistence's scan: hand each hint over; the number of malformed ones."""
        done, malformed = [], 0
        self.share.spend(len(hints))
        peers = self.cluster.peers()
        for hint in hints:
            if not well_formed(hint):  # skipped: never stops the hints after it
                malformed += 1
                self.log.warning("malformed hint skipped: %s", brief(hint, 120))
                continue
            owner, key, token, clock = hint
            target = owner if owner in peers else self._in_place_of(key)
            if clock is None or target == "":
                done.append([owner, key, token])  # nothing to hand over, or here already
                continue
            if target is None:
                continue  # no replica of the key is up: kept for a later scan
            self.in_flight += 1
            self.call(peers[target], Route(Duty.HINT, (owner, key, token)),
                      ["rput", key, clock, None], target)
        if done:
            self.emit("persistence", HintDone.wire(done))
        if self.in_flight:
            self.timer.at = now + HINT_WAIT
        return malformed

    def _in_place_of(self, key: bytes) -> str | None:
        """Who takes a hint whose owner is no member (it left): the first replica of the
        key that is up; "" when this node is a replica (the versions are here already);
        None when no replica is up now."""
        view = self.cluster.view
        ring = view.effective_ring()
        if ring is None:
            return None
        replicas = ring.preference_list(partition_of(key, ring.partitions), view.n)
        if view.me in replicas:
            return ""
        up = [node for node in replicas
              if node in self.cluster.peers() and node not in self.cluster.down]
        return up[0] if up else None

    def answer(self, now: float, node: str, route: Route, payload: list[Any]) -> None:
        """The owner merged the versions (``updated``, no error): the hint may go."""
        if payload[0] != "updated":
            return
        self.in_flight = max(0, self.in_flight - 1)
        if payload[1] is None:
            self.delivered += 1
            self.emit("persistence", HintDone.wire([list(route.ident)]))
        if not self.in_flight:
            self.timer.at = now  # this batch is done: look for more at once

    def unreachable(self, now: float, peer: str, route: Route) -> None:
        """Not sent: the hint stays, for the next scan."""
        self.in_flight = max(0, self.in_flight - 1)


def well_formed(hint: Any) -> bool:
    """``[owner, key, token, versions or nil]``, as persistence's hint scan gives them."""
    return (isinstance(hint, list) and len(hint) == 4 and isinstance(hint[0], str)
            and isinstance(hint[1], bytes) and isinstance(hint[2], bytes)
            and (hint[3] is None or isinstance(hint[3], bytes)))
