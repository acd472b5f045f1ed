"""Local failure detection: how much a peer's silence should be suspected.

Dynamo paper section 4.8 ("Failure Detection"): a node considers a peer failed when the
peer does not answer its messages, a purely local view used to route around it, and
tries it again later. How long a silence means "failed" is not a constant here: this is
the accrual failure detector of Hayashibara, Défago, Yared and Katayama ("The φ accrual
failure detector", SRDS 2004), as Cassandra and Akka use it. Each peer's answers to the
gossip stage's pings are heartbeats; from the recent intervals between them (mean and
standard deviation, a normal distribution) the detector says how unlikely it is that an
answer still comes after the silence seen so far:
``phi = -log10(P(next interval > elapsed))``. A peer is suspected once phi reaches the
threshold (``phi_threshold`` in the config; 8 means a wrong suspicion about once in
10^8 silences of that length). A peer that answered erratically (a loaded machine) gets
proportionally longer before it is suspected, a steady one is suspected soon after it
stops.

Three guards, as in the implementations above: a floor on the standard deviation (a
perfectly steady series would otherwise suspect at the first jitter); an acceptable
pause added to the mean (a garbage-collection or scheduling stall of a few seconds is
not a crash); and intervals longer than ``max_interval`` are not learned from (a peer that
was down for a minute would otherwise be given a minute of grace ever after). When the
observer itself was stalled (its own silence, not theirs), ``excuse`` moves every peer's
last answer to just before now.

A suspicion is proved wrong when the suspected peer answers a ping that was sent before
the suspicion: it was alive all along, only slow (or we were). Those are counted
(``false_suspicions``), so an operator sees when the threshold is too tight.

``Watcher`` is the gossip stage's failure-detection duty around a ``Detector``: it pings
every member (``ping``), feeds the answers in (``heard``), keeps the set of members down
(a member is down until it has answered at all), and excuses every peer's silence when
the stage itself did not run for longer than ``OWN_STALL`` (the silence was ours).

Pure: no clock, no IO; the gossip stage feeds it the times it observed.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from seda_dynamo.duty import Component, Duty, Emit, Route

PING_EVERY = 0.5
OWN_STALL = 2 * PING_EVERY  # the watcher not run for longer: the silence was ours


@dataclass(frozen=True, slots=True)
class Settings:
    threshold: float = 8.0  # phi at which a peer is suspected
    min_std_dev: float = 0.1  # seconds: the floor of the interval's standard deviation
    acceptable_pause: float = 2.5  # seconds of extra silence that are never suspicious
    first_interval: float = 0.5  # the interval assumed before any was observed (ping period)
    max_interval: float = 2.0  # longer intervals are not learned from
    window: int = 100  # intervals remembered per peer


def phi(elapsed: float, mean: float, std_dev: float) -> float:
    """-log10 of the probability that an interval of a normal(mean, std_dev) distribution
    is longer than ``elapsed`` (inf when that probability is below a double's range)."""
    tail = 0.5 * math.erfc((elapsed - mean) / (std_dev * math.sqrt(2.0)))
    return -math.log10(tail) if tail > 0.0 else math.inf


@dataclass(slots=True)
class ArrivalWindow:
    """One peer's recent heartbeat intervals (bounded), its last heartbeat (a ping answer)
    and the last time it was heard at all (any answer)."""

    window: int
    last: float  # heard: any answer
    last_beat: float | None = None  # the last ping answer, where intervals are measured
    intervals: deque[float] = field(default_factory=deque)
    total: float = 0.0
    squares: float = 0.0

    def heard(self, now: float) -> None:
        self.last = max(self.last, now)

    def beat(self, now: float, max_interval: float) -> None:
        self.heard(now)
        if self.last_beat is not None and 0.0 <= now - self.last_beat <= max_interval:
            interval = now - self.last_beat
            self.intervals.append(interval)
            self.total += interval
            self.squares += interval * interval
            if len(self.intervals) > self.window:
                old = self.intervals.popleft()
                self.total -= old
                self.squares -= old * old
        self.last_beat = now

    def phi(self, now: float, s: Settings) -> float:
        count = len(self.intervals)
        if count:
            mean = self.total / count
            std = math.sqrt(max(0.0, self.squares / count - mean * mean))
        else:
            mean, std = s.first_interval, s.first_interval / 4
        return phi(now - self.last, mean + s.acceptable_pause, max(std, s.min_std_dev))


class Detector:
    """Every peer's arrival window, which peers are suspected, and since when."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.windows: dict[str, ArrivalWindow] = {}
        self.suspected: dict[str, float] = {}  # node -> when it was suspected
        self.ended: dict[str, float] = {}  # suspicions ended, not yet judged right or wrong
        self.suspicions = 0
        self.false_suspicions = 0

    def heartbeat(self, node: str, now: float, sent: float | None = None) -> bool:
        """``node`` answered at ``now``: a ping sent at ``sent`` (a heartbeat, learned
        from), or anything else (``sent`` None: heard, not learned from). True when this
        ends a suspicion of it."""
        w = self.windows.get(node)
        if w is None:
            w = self.windows[node] = ArrivalWindow(self.settings.window, now)
        if sent is None:
            w.heard(now)
        else:
            w.beat(now, self.settings.max_interval)
        since = self.suspected.pop(node, None)
        if since is not None:
            self.ended[node] = since
        if sent is not None and node in self.ended:
            # The first ping answered after a suspicion tells whether the peer was alive
            # all along (a ping from before the suspicion) or came back (one from after).
            if sent < self.ended.pop(node):
                self.false_suspicions += 1
        return since is not None

    def phi(self, node: str, now: float) -> float:
        w = self.windows.get(node)
        return math.inf if w is None else w.phi(now, self.settings)

    def check(self, now: float, peers: set[str] | frozenset[str] | dict[str, str]
              ) -> frozenset[str]:
        """Which of ``peers`` are down at ``now``: those never heard, and those whose phi
        reached the threshold. Forgets every node not in ``peers``."""
        for table in (self.windows, self.suspected, self.ended):
            for node in [n for n in table if n not in peers]:
                del table[node]
        down = set()
        for node in peers:
            if node not in self.windows:
                down.add(node)  # up only once it has answered
            elif node in self.suspected or self.phi(node, now) >= self.settings.threshold:
                if node not in self.suspected:
                    self.suspected[node] = now
                    self.suspicions += 1
                down.add(node)
        return frozenset(down)

    def heard(self, node: str) -> bool:
        return node in self.windows

    def excuse(self, now: float, gap: float) -> None:
        """The observer itself was silent until ``now``: count every peer as heard at most
        ``gap`` ago, and learn nothing from the interval that spans the silence."""
        for w in self.windows.values():
            w.last = max(w.last, now - gap)
            w.last_beat = None


class Watcher(Component):
    """The members down for routing, from pings and the detector.

    ``peers()`` gives the members to watch (node id -> peer address); ``changed`` is
    called whenever the down set changes (the stage tells coordination).
    """

    def __init__(self, emit: Emit, settings: Settings, peers: Callable[[], dict[str, str]],
                 changed: Callable[[], None], log: logging.Logger,
                 stage: str = "gossip") -> None:
        super().__init__(emit, stage)
        self.detector = Detector(settings)
        self.down: frozenset[str] = frozenset()
        self.last_detect = 0.0
        self.peers = peers
        self.changed = changed
        self.log = log

    def start(self) -> None:
        """Every peer is down until it has answered a ping."""
        self.down = frozenset(self.peers())

    def learned(self) -> None:
        """The members changed: one just learned of is down until it answers (never up
        by default); one that left is forgotten."""
        self.down = frozenset(node for node in self.peers()
                              if node in self.down or not self.detector.heard(node))

    def ping(self, now: float) -> None:
        """Ping every peer, and judge their silences so far."""
        for node, peer in self.peers().items():
            self.call(peer, Route(Duty.PING, (now,)), ["ping"], node)
        self.detect(now)

    def detect(self, now: float) -> None:
        if now - self.last_detect > OWN_STALL:
            # This stage itself was busy or stopped: the silence was ours, not theirs.
            self.detector.excuse(now, PING_EVERY)
        self.last_detect = now
        # A peer counts as up only once it has answered: until then neither its
        # connection nor its process is known to work (a node that just started would
        # otherwise route writes to peers it cannot reach yet).
        self._set_down(self.detector.check(now, self.peers()), now)

    def _set_down(self, down: frozenset[str], now: float) -> None:
        if down != self.down:
            for node in down - self.down:
                if self.detector.heard(node):
                    self.log.warning("%s is down (phi %.1f)", node, self.detector.phi(node, now))
            for node in self.down - down:
                self.log.info("%s is up", node)
            self.down = down
            self.changed()

    def heard(self, now: float, node: str, sent: float | None = None) -> None:
        """``node`` answered something at ``now`` (a ping sent at ``sent``): a member
        that was down is judged again at once, alone (judging every member at each such
        answer was O(n^2) when n members come up together). Anyone else is not
        remembered."""
        if node in self.peers():
            self.detector.heartbeat(node, now, sent)
            if node in self.down and node not in self.detector.suspected and \
                    self.detector.phi(node, now) < self.detector.settings.threshold:
                self._set_down(self.down - {node}, now)

    def answer(self, now: float, node: str, route: Route, payload: list[Any]) -> None:
        """A ping's answer: a heartbeat, timed from when the ping was sent."""
        self.heard(now, node, route.ident[0])
