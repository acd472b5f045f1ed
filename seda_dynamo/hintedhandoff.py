"""Hinted handoff's delivery side: hints handed to their owners once those are up.

Dynamo paper section 4.6: a write meant for a node that was down went to a fallback with
a hint naming that node; once the node is back, the fallback hands the versions over and
may then forget the hint. Here the fallback's persistence stage keeps the hint records
(``[owner, key] -> token``) and the versions in its data store; ``Delivery`` is the gossip
stage's duty that, every ``HINTS_EVERY`` seconds while background work is allowed, asks
persistence for hints of members that are up, sends each key's current versions to its
owner (``rput``, merged there, never overwriting) and tells persistence to forget a hint
only once its owner acknowledged it (``hint_done``), or when there is nothing to hand
over (no versions left, or the owner left the cluster). A batch waits at most
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

    def tick(self, now: float) -> None:
        """Ask persistence for hints of the members that are up, when it is time."""
        if self.share.allows(now) and self.timer.due(now, HINTS_EVERY):
            self.in_flight = 0  # unanswered deliveries are retried by this scan
            up = [node for node in self.cluster.peers() if node not in self.cluster.down]
            if up:
                self.emit("persistence", Hints.wire(reply_to=self.stage, ref="scan", owners=up,
                                                    limit=HINT_BATCH))

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
            peer = peers.get(owner)
            if clock is None or peer is None:
                done.append([owner, key, token])  # nothing to hand over, or owner left
                continue
            self.in_flight += 1
            self.call(peer, Route(Duty.HINT, (owner, key, token)), ["rput", key, clock, None],
                      owner)
        if done:
            self.emit("persistence", HintDone.wire(done))
        if self.in_flight:
            self.timer.at = now + HINT_WAIT
        return malformed

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
