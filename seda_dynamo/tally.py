"""What a coordinator counts of the client requests it answers.

Dynamo paper section 6 (the latencies and failures the paper reports per operation:
this node's metrics endpoint, ``seda_dynamo.metrics.OpMetrics``) and section 6.5
(balancing background and foreground tasks: the latencies of the requests answered in
each ``FOREGROUND_WINDOW`` go to gossip, whose admission controller slows background
work when they rise). Also the coordinator's own counts (``unavailable``, ``timeouts``,
``forwarded``, ...). Pure, no IO: the coordination stage sends the report.
"""

from __future__ import annotations

from typing import Any

from seda_dynamo.background import p99
from seda_dynamo.metrics import OpMetrics

#: Seconds of answered requests in each foreground latency report to gossip.
FOREGROUND_WINDOW = 0.5
#: The coordinator's counts, each from 0 at start.
COUNTS = ("unavailable", "timeouts", "forwarded", "read_repairs", "replaced", "suspected",
          "overloaded")


class Tally:
    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTS, 0)
        self.latencies: list[float] = []  # of requests answered since the last report
        self.metrics = OpMetrics()  # by operation, since start: the metrics endpoint's
        self.reported_at = 0.0

    def answered(self, op: str, seconds: float, error: str | None, measured: bool = True,
                 foreground: bool = True) -> None:
        """A request answered after ``seconds`` (``error``: its code, None if it
        succeeded). ``measured``: in this node's metrics (not a write another node
        forwarded, which that node counts); ``foreground``: in the latency report."""
        if foreground:
            self.latencies.append(seconds)
        if measured:
            self.metrics.answered(op, seconds, error)

    def finished(self, op: str, seconds: float, reply: dict[str, Any], read: int | None,
                 counted: str | None, measured: bool) -> None:
        """A request answered by its own quorum (``quorumreply.final_reply``'s reply,
        values read and count)."""
        if read is not None:
            self.metrics.read(read)
        if counted is not None:
            self.counts[counted] += 1
        self.answered(op, seconds, None if reply["ok"] else reply["error"], measured)

    def report(self, now: float) -> tuple[int, float] | None:
        """Once per ``FOREGROUND_WINDOW``: how many requests were answered since the last
        report and their p99 latency (None: not time yet)."""
        if now - self.reported_at < FOREGROUND_WINDOW:
            return None
        self.reported_at = now
        count, slowest = len(self.latencies), p99(self.latencies)
        self.latencies = []
        return count, slowest
