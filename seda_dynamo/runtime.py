"""The stage runtime: the loop that moves one stage's events through its sockets.

Every stage process runs ``python -m seda_dynamo.runtime STAGE NODE_JSON``
(``contract.stage_command``): bind the stage's inbound queue, drain whatever has arrived
into one batch, hand the batch to the stage's pure handler, and send what it emitted on
as one message per destination (SEDA, Welsh et al. 2001; every hop costs a
serialization and an IPC, so batch; Dynamo paper section 5). The loop ties together
``sockets`` (the queue, ports, and where events go), ``outbox`` (sending what was
emitted, and the full-queue rule), ``accounting`` (counters, queue delay, pressure
reports, asking for a worker), ``hygiene`` (what the process does for itself) and
``contract`` (what it agrees on with the supervisor).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seda_dynamo import contract, hygiene
from seda_dynamo.accounting import STATS_INTERVAL, Accounting, fresh_counters
from seda_dynamo.config import NodeConfig
from seda_dynamo.messagetable import shard_index, to_every_worker
from seda_dynamo.outbox import Sender
from seda_dynamo.sockets import Sockets
from seda_dynamo.stage import Stage, spec, stage_of, worker_name

WORKERS_CHECK = 0.5  # seconds between looks at the workers file


def shard(key: Any, workers: int) -> int:
    """The worker of ``workers`` that handles ``key`` (the same in every process)."""
    return zlib.crc32(key) % workers if isinstance(key, bytes) else 0


class Runtime:
    """Runs one stage handler in this process until SIGTERM or the supervisor's death."""

    def __init__(self, handler: Stage, config: NodeConfig, run_dir: str) -> None:
        self.handler = handler
        self.config = config
        self.run_dir = run_dir
        self.stopping = False
        self.parent = os.getppid()
        self.counters = fresh_counters()
        self.sockets = Sockets(handler.name, handler.ports(), config, run_dir,
                               self.counters, handler.log)
        self.sender = Sender(handler, self.sockets, self.counters)
        self.accounting = Accounting(handler, config, self.counters)
        self.workers = contract.read_workers(run_dir)
        self.workers_checked = time.monotonic()
        self.housekeeping = hygiene.Housekeeping(handler.name, time.monotonic())

    # Sending --------------------------------------------------------------------------
    def send_outbox(self) -> None:
        """Send everything the handler emitted, until it emits nothing more (events it
        sends itself, and its answers to ``undeliverable``, may emit again)."""
        h = self.handler
        while h.outbox:
            batches = self._spread(self.sender.to_ports(h.take_outbox()))
            for dest, events in batches.items():
                if dest == h.name:
                    self._guarded("a batch", h.handle_events, events, time.monotonic())
                else:
                    self.sender.send(dest, events)

    def _spread(self, batches: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Events for a stage running several workers, spread over them by key."""
        for dest, events in list(batches.items()):
            count = self.workers.get(dest, 1)
            if count > 1:
                del batches[dest]
                for event in events:
                    kind = (event[0] if isinstance(event, list) and event
                            and isinstance(event[0], str) else None)
                    if to_every_worker(kind):  # an announcement: each worker waits on its own
                        for i in range(count):
                            batches.setdefault(worker_name(dest, i), []).append(event)
                        continue
                    # None: not sharded (nor an event at all), to worker 0
                    at = shard_index(kind) if kind is not None else None
                    key = event[at] if at is not None and len(event) > at else None
                    batches.setdefault(worker_name(dest, shard(key, count)), []).append(event)
        return batches

    # The loop -------------------------------------------------------------------------
    def run(self) -> None:
        h = self.handler
        now = time.monotonic()
        h.start(now)
        self.send_outbox()
        next_tick = now + h.tick_interval
        next_report = now
        while not self.stopping:
            timeout = max(0.0, next_tick - time.monotonic())
            ready = dict(self.sockets.poller.poll(timeout * 1000.0))
            if self.sockets.inbound in ready:
                self._handle_inbound()
            for sock in ready:
                name = self.sockets.port_by_socket.get(sock)
                if name is not None:
                    self._handle_port(name, sock)
            now = time.monotonic()
            if now - self.workers_checked >= WORKERS_CHECK:
                self.workers_checked = now
                self.workers = contract.read_workers(self.run_dir)
                stage = stage_of(h.name)
                if self.accounting.needs_worker(now, self.workers.get(stage, 1)):
                    contract.ask_to_grow(self.run_dir, stage, self.parent)
            if now >= next_tick:
                next_tick = now + h.tick_interval
                self._tick_guarded(now)
                if now >= next_report:
                    next_report = now + STATS_INTERVAL
                    self._every_second(now)
                self.send_outbox()

    def _handle_inbound(self) -> None:
        events, oldest, more, torn = self.sockets.drain_inbound(self.accounting.batch.limit)
        self.handler.errors += torn
        if not events:
            return
        started = time.monotonic()
        self._guarded("a batch", self.handler.handle_events, events, started)
        self.send_outbox()
        elapsed = self.accounting.batch_done(len(events), started)
        self.accounting.queue_seen(len(events), oldest, more, elapsed, started)
        self.send_outbox()  # a pressure report, if any

    def _handle_port(self, name: str, sock: Any) -> None:
        messages, callers = self.sockets.drain_port(name, sock, self.config.batch_max)
        if messages:
            started = time.monotonic()
            self._guarded(f"frames from {name}", self.handler.handle_frames, name, messages,
                          started, callers)
            self.send_outbox()
            self.accounting.batch_done(len(messages), started)

    def _guarded(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        """The backstop behind each handler's per-event guard: what a handler raises
        costs that batch (logged, counted in ``errors``), never the stage process, which
        would lose every request it holds and be restarted into the same input."""
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - see above
            self.handler.errors += 1
            self.handler.log.exception("%s: %s raised; it is lost", self.handler.name, what)

    def _tick_guarded(self, now: float) -> None:
        self._guarded("a tick", self.handler.tick, now)

    def _every_second(self, now: float) -> None:
        self.sockets.close_idle_peers(now)
        self.accounting.report()
        self.housekeeping.due(now)
        if hygiene.parent_gone(self.parent):
            self.handler.log.warning("supervisor is gone: exiting")
            self.stopping = True

    def close(self) -> None:
        try:
            self.handler.close()
        finally:
            self.sockets.close()


def main(argv: list[str] | None = None) -> int:
    stage_name, node_json, run_dir = contract.parse_stage_command(
        sys.argv[1:] if argv is None else argv)
    config = NodeConfig.from_json(Path(node_json).read_text())
    hygiene.die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us in order
    hygiene.setup_logging(config, stage_name)
    hygiene.set_title(config.node_id, stage_name)
    module = importlib.import_module(spec(stage_name).module)
    handler: Stage = module.Handler(config)
    handler.name = stage_name  # a worker: "versioning.1" (its replies come back to it)
    runtime = Runtime(handler, config, run_dir)

    def stop(_signum: int, _frame: Any) -> None:
        runtime.stopping = True

    signal.signal(contract.STOP_SIGNAL, stop)
    hygiene.quiet_gc()
    try:
        with hygiene.profiled(stage_name):
            runtime.run()
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
