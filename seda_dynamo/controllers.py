"""The SEDA controllers of a stage and of the node's front door, as pure values.

Welsh, Culler and Brewer, "SEDA: An Architecture for Well-Conditioned, Scalable Internet
Services" (SOSP 2001), section 4.2 (resource controllers) and Welsh's "Adaptive Overload
Control for Busy Internet Servers" (USITS 2003); Dynamo paper section 6.5, which watches
request queue wait times for the same purpose.

* ``BatchController``: how many events a stage takes from its queue per wake-up. Small
  batches keep latency low when the queue is short; when the queue is longer than one
  batch and a batch is cheap, the batch grows (fewer wake-ups, fewer messages and one
  group commit for more writes); when a batch takes longer than its target, it shrinks,
  since nothing a batch emits leaves before the whole batch is done.
* ``QueueDelay``: how long the events of a batch waited in the stage's queue (every
  message between stages carries the time it was sent). A queue that stays deep in
  time is past the stage's *high-water mark*; it is what admission control looks at.
* ``should_grow``: the thread-pool controller: when a stage (one whose table row allows
  several workers) is busy nearly all the time with cores idle, it gets another worker.
* ``Gate``: the network stage's admission control. A new client request is shed with
  ``overloaded`` while any stage's queue delay is over the high-water mark (reported a
  moment ago), or while the node already has its limit of client requests in flight.
  Shedding at the door keeps the latency of the requests that are admitted bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from seda_dynamo.background import p99


@dataclass(slots=True)
class BatchController:
    """The number of events to take per wake-up, adapted to queue length and cost."""

    target: float = 0.010  # seconds one batch may take before it is cut down
    low: int = 16
    high: int = 4096
    limit: int = 256

    def observe(self, taken: int, more_waiting: bool, seconds: float) -> int:
        """After a batch of ``taken`` events took ``seconds``; returns the new limit."""
        if seconds > self.target and taken > self.low:
            self.limit = max(self.low, min(self.limit, taken) * 3 // 4)
        elif more_waiting and seconds < self.target / 2:
            self.limit = min(self.high, self.limit * 2)
        return self.limit


@dataclass(slots=True)
class QueueDelay:
    """How long a stage's messages wait in its queue.

    ``standing`` is the smallest wait seen over the last ``interval`` (CoDel's standing
    queue): it is high only if *every* batch of a whole interval waited long, so one
    slow batch (a GC pause, a busy core) is not overload, and one quick batch ends it.
    ``smoothed`` is an average for the counters.
    """

    interval: float = 0.1
    smoothed: float = 0.0
    standing: float = 0.0
    window_min: float = math.inf
    window_started: float = 0.0
    last_at: float = -math.inf

    def observe(self, sent_at: float, now: float) -> float:
        """The wait of the oldest message of a batch (``sent_at`` on the same clock)."""
        delay = max(0.0, now - sent_at)
        self.smoothed = 0.8 * self.smoothed + 0.2 * delay
        if now - self.last_at > self.interval:  # idle before this batch: a new window
            self.window_min, self.window_started = delay, now
        self.last_at = now
        self.window_min = min(self.window_min, delay)
        if now - self.window_started >= self.interval:
            self.standing = self.window_min
            self.window_min, self.window_started = math.inf, now
        self.standing = min(self.standing, delay)
        return delay


GROW_BUSY = 0.8  # a stage asks for a worker when busy this share of a window ...
GROW_IDLE_CPU = 25.0  # ... the machine has this much CPU idle (percent of all cores) ...
GROW_COOLDOWN = 30.0  # ... it has not asked for this many seconds ...
GROW_STANDING = 0.001  # ... and its queue holds a standing delay (seconds)


def should_grow(busy: float, standing: float, running: int, most: int, idle_cpu: float,
                since_asked: float) -> bool:
    """SEDA's thread-pool controller, with processes: one more worker for a stage that is
    the bottleneck (busy nearly all the time, a standing queue) while cores sit idle.
    On busy cores another process would only add switching."""
    return (running < most and busy >= GROW_BUSY and standing > GROW_STANDING
            and idle_cpu >= GROW_IDLE_CPU and since_asked >= GROW_COOLDOWN)


START_LIMIT = 128


@dataclass(slots=True)
class Gate:
    """Admission control at the network stage: admit or shed a new client request.

    Two signals, as in SEDA: a foreground stage whose queue delay is over the high-water
    mark (reported a moment ago) sheds at once; and a limit on client requests in flight,
    adapted to the latency the node gives them. Every ``window`` seconds with enough
    answers, if their p99 was over ``target`` the limit drops to what was in flight times
    ``target / p99`` (at most 90%, at least 25% of it), and if the limit was what held
    requests back it grows by 5%; it stays within the in-flight this throughput needs at
    half the target latency (Little's law) and
    ``low..high`` (``high`` is ``max_in_flight``). ``target`` 0 keeps the limit at
    ``high``.
    """

    high_water: float  # seconds of queue delay at which a stage counts as overloaded
    high: int  # the most client requests in flight (0: no limit)
    target: float = 0.0  # seconds: the p99 the in-flight limit steers to (0: fixed limit)
    low: int = 8
    window: float = 0.1
    min_samples: int = 32
    fresh_for: float = 0.25  # seconds a stage's pressure report stays valid
    pressure: dict[str, tuple[float, float]] = field(default_factory=dict)  # delay, at
    shed: int = 0
    shed_by: dict[str, int] = field(default_factory=dict)  # the reason: a stage, in_flight
    limit: float = 0.0
    samples: list[float] = field(default_factory=list)
    window_started: float = 0.0
    most_in_flight: int = 0
    held_back: bool = False

    def __post_init__(self) -> None:
        # Start modestly and grow while the latency allows (a burst at start-up must not
        # fill the queues before the first window has been measured).
        self.limit = float(min(self.high, START_LIMIT) if self.target else self.high)

    def report(self, stage: str, delay: float, now: float) -> None:
        self.pressure[stage] = (delay, now)

    def overloaded_stage(self, now: float) -> tuple[str, float] | None:
        """The most delayed stage over the high-water mark, with its delay, or None."""
        worst: tuple[str, float] | None = None
        for stage, (delay, at) in self.pressure.items():
            if delay > self.high_water and now - at <= self.fresh_for and \
                    (worst is None or delay > worst[1]):
                worst = (stage, delay)
        return worst

    def admit(self, in_flight: int, now: float) -> str | None:
        """None to admit, else the reason the request is shed."""
        self.most_in_flight = max(self.most_in_flight, in_flight + 1)
        if self.high_water > 0:
            worst = self.overloaded_stage(now)
            if worst is not None:
                self._count(worst[0])
                return (f"the node is overloaded: its {worst[0]} queue is "
                        f"{worst[1] * 1000:.0f} ms deep; retry later")
        if self.high and in_flight >= self.limit:
            self.held_back = True
            self._count("in_flight")
            return (f"the node is overloaded: {in_flight} requests in flight; "
                    "retry later")
        return None

    def answered(self, latency: float, now: float) -> None:
        """An admitted request was answered after ``latency`` seconds."""
        if not self.target or not self.high:
            return  # a fixed limit: nothing to measure on every reply
        self.samples.append(latency)
        if now - self.window_started < self.window:
            return
        if len(self.samples) >= self.min_samples:
            tail = p99(self.samples)
            if tail > self.target:  # in proportion, so a burst is cut in one window or two
                cut = max(0.25, min(0.9, self.target / tail))
                # Never below what this throughput needs at half the target latency
                # (Little's law): when the latency does not come from our queues (a busy
                # machine), fewer requests in flight would only lower the throughput.
                rate = len(self.samples) / max(now - self.window_started, 1e-3)
                floor = max(float(self.low), rate * self.target / 2)
                self.limit = max(floor, min(self.limit, self.most_in_flight) * cut)
            elif self.held_back:
                self.limit = min(float(self.high), self.limit * 1.05 + 1)
        self.samples.clear()
        self.window_started = now
        self.most_in_flight = 0
        self.held_back = False

    def _count(self, reason: str) -> None:
        self.shed += 1
        self.shed_by[reason] = self.shed_by.get(reason, 0) + 1
