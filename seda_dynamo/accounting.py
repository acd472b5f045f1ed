"""What a stage process measures about itself, and whom it tells.

Part of the stage runtime (SEDA, Welsh et al. 2001: the batching controller, queue
delay as the overload signal, more threads for a busy stage; Dynamo paper section 5):
after each batch the counters (``processed``, ``service_time_ms``, ...) and the batch
controller are fed; the queue delay of each batch is measured from the time its
messages were sent; a foreground stage whose standing delay passes the high-water mark
tells the network stage's admission control (``pressure``, every ``PRESSURE_EVERY``
seconds while it lasts and once when it is over); the counters go to the network stage
once a second (``stats``); and every ``GROW_WINDOW`` seconds a stage judges whether it
should ask the supervisor for one more worker (``controllers.should_grow``).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import psutil

from seda_dynamo.background import percentile
from seda_dynamo.config import NodeConfig
from seda_dynamo.controllers import BatchController, QueueDelay, should_grow
from seda_dynamo.stage import Stage, spec, stage_of
from seda_dynamo.stage import workers as stage_workers

STATS_SINK = "network"  # the stage every other stage reports to
STATS_INTERVAL = 1.0
PRESSURE_EVERY = 0.05  # seconds between queue-delay reports to admission control
GROW_WINDOW = 5.0  # seconds of load over which a stage judges whether it needs a worker
SERVICE_SAMPLES = 4096  # batch service times kept per report for its p50/p99


def fresh_counters() -> dict[str, Any]:
    """The counters every stage reports, at start."""
    return {
        "processed": 0, "batches": 0, "dropped": 0, "sent": 0, "queue_depth": 0,
        "batch_size": 0.0, "service_time_ms": 0.0, "pid": os.getpid(),
        "started": time.time(), "batch_limit": 0, "queue_delay_ms": 0.0,
        "queue_delay_max_ms": 0.0, "service_p50_ms": 0.0, "service_p99_ms": 0.0,
        "bad_destinations": 0, "peer_sockets": 0,
    }


class Accounting:
    """The counters and controllers of one stage worker (``handler.name``)."""

    def __init__(self, handler: Stage, config: NodeConfig, counters: dict[str, Any]
                 ) -> None:
        self.handler = handler
        self.counters = counters
        row = spec(handler.name)
        self.proc = psutil.Process()
        self.proc.cpu_percent()  # the first call only starts the measurement
        psutil.cpu_percent()
        self.service_times: list[float] = []  # of the batches handled since the last report
        self.batch = BatchController(row.batch_target, high=max(config.batch_max * 8, 16),
                                     limit=min(256, config.batch_max * 8))
        counters["batch_limit"] = self.batch.limit
        self.delay = QueueDelay()
        self.high_water = config.overload_delay_ms / 1000.0 if row.foreground else 0.0
        self.pressure_at = 0.0
        self.pressed = False
        self.busy = 0.0  # seconds spent handling batches since busy_since
        self.busy_since = time.monotonic()
        self.grow_asked = -math.inf
        self.max_workers = stage_workers(config, stage_of(handler.name))[1]

    def batch_done(self, count: int, started: float) -> float:
        """Count a batch of ``count`` events or messages begun at ``started``; its
        service time."""
        c = self.counters
        c["processed"] += count
        c["batches"] += 1
        c["batch_size"] = 0.9 * c["batch_size"] + 0.1 * count
        elapsed = time.monotonic() - started
        c["service_time_ms"] = 0.9 * c["service_time_ms"] + 0.1 * elapsed * 1000.0
        if len(self.service_times) < SERVICE_SAMPLES:
            self.service_times.append(elapsed)
        self.busy += elapsed
        return elapsed

    def queue_seen(self, count: int, oldest: float | None, more: bool, elapsed: float,
                   started: float) -> None:
        """Feed the batch controller and the queue delay; tell admission control when
        the delay passes the high-water mark (and once when it is back under)."""
        c = self.counters
        c["batch_limit"] = self.batch.observe(count, more, elapsed)
        if oldest is None:
            return
        delay = self.delay.observe(oldest, started)
        c["queue_delay_ms"] = round(self.delay.smoothed * 1000.0, 3)
        c["queue_delay_max_ms"] = max(c["queue_delay_max_ms"], round(delay * 1000.0, 3))
        # Drained: nothing waits. Else Little's law: the arrival rate times the wait.
        c["queue_depth"] = 0 if not more else max(count, int(
            delay * count / max(elapsed, 1e-6)))
        standing = self.delay.standing
        pressed = self.high_water > 0 and standing > self.high_water
        if pressed or self.pressed:
            if pressed != self.pressed or started - self.pressure_at >= PRESSURE_EVERY:
                self.pressed, self.pressure_at = pressed, started
                self.handler.emit(STATS_SINK, ["pressure", self.handler.name, standing])

    def report(self) -> None:
        """Emit the counters (with the handler's gauges) to the stats sink."""
        c = self.counters
        h = self.handler
        c["errors"] = h.errors
        c["cpu_percent"] = self.proc.cpu_percent()
        c["rss_bytes"] = self.proc.memory_info().rss
        if self.service_times:
            c["service_p50_ms"] = round(1000.0 * percentile(self.service_times, 0.5), 3)
            c["service_p99_ms"] = round(1000.0 * percentile(self.service_times, 0.99), 3)
            self.service_times = []
        c.update(h.gauges())
        h.emit(STATS_SINK, ["stats", h.name, dict(c)])
        c["queue_delay_max_ms"] = 0.0  # the worst wait since the last report

    def needs_worker(self, now: float, running: int) -> bool:
        """Whether, over the last ``GROW_WINDOW``, ``controllers.should_grow`` says this
        stage (``running`` workers now) should ask for one more."""
        window = now - self.busy_since
        if window < GROW_WINDOW:
            return False
        busy, self.busy, self.busy_since = self.busy / window, 0.0, now
        self.counters["busy_percent"] = round(100.0 * busy, 1)
        idle = 100.0 - psutil.cpu_percent()
        if not should_grow(busy, self.delay.standing, running, self.max_workers, idle,
                           now - self.grow_asked):
            return False
        self.grow_asked = now
        self.handler.log.warning("busy %.0f%% of the time with %.0f%% CPU idle: asking for "
                                 "worker %d", 100 * busy, idle, running + 1)
        return True
