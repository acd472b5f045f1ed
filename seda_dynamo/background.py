"""How much background work a node may do while clients are waiting.

Dynamo paper section 6.5 (balancing background vs. foreground tasks): background tasks
(here: partition transfers, anti-entropy repairs, hinted handoff) run only in the slices
the foreground leaves. An admission controller watches the foreground's latency
percentile over a trailing window and, when it passes a threshold, cuts the rate of
background work; when it is back under, the rate grows again. No foreground traffic at
all means nothing to protect, so background work runs unthrottled.

``BackgroundShare`` is that controller as a value: a rate of background *items* (keys)
per second, halved on every window over the threshold and raised by a quarter on every
window under it, and a token bucket that the background duties draw from. It never stops
background work entirely (``floor``), so a node under constant overload still hands over
its partitions, slowly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: How long a foreground report counts: older ones are as good as none (idle).
REPORT_TTL = 2.0
#: The most tokens the bucket holds, as seconds of the current rate (the burst).
BURST_SECONDS = 0.25


@dataclass(slots=True)
class BackgroundShare:
    """The background rate, driven by foreground p99 reports.

    ``target`` is the foreground p99 (seconds) above which background work backs off;
    0 turns the controller off (always unthrottled). ``floor`` is the rate (items per
    second) background work keeps however loaded the node is; the rate starts there.
    """

    target: float
    floor: float = 200.0
    rate: float = math.inf
    tokens: float = 0.0
    refilled_at: float = 0.0
    reported_at: float = -math.inf
    backoffs: int = 0

    def report(self, now: float, requests: int, p99: float) -> None:
        """The foreground's last window: how many requests finished and their p99."""
        self.reported_at = now
        if not self.target or requests == 0:
            self.rate = math.inf
        elif p99 > self.target:
            start = self.floor * 16 if math.isinf(self.rate) else self.rate
            self.rate = max(self.floor, start / 2)
            self.backoffs += 1
        elif not math.isinf(self.rate):
            self.rate = self.rate + max(self.floor, self.rate / 4)  # back up in a few windows
            if self.rate > self.floor * 1024:
                self.rate = math.inf

    def current_rate(self, now: float) -> float:
        if now - self.reported_at > REPORT_TTL:
            return math.inf  # no news from the foreground: it is idle (or gone)
        return self.rate

    def allows(self, now: float) -> bool:
        """Whether background work may start another piece now."""
        rate = self.current_rate(now)
        if math.isinf(rate):
            self.tokens, self.refilled_at = 0.0, now
            return True
        elapsed = max(0.0, now - self.refilled_at)
        self.tokens = min(rate * BURST_SECONDS, self.tokens + rate * elapsed)
        self.refilled_at = now
        return self.tokens > 0

    def spend(self, items: int) -> None:
        """``items`` keys of background work were done (may run the bucket negative)."""
        self.tokens -= items


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0 < q <= 1) of ``samples`` by nearest rank, 0.0 when empty."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def p99(samples: list[float]) -> float:
    """The 99th percentile of ``samples`` (nearest rank), 0.0 when there are none."""
    return percentile(samples, 0.99)
