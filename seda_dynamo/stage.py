"""The stage contract (Welsh's SEDA ``handle_events``) and the one table of a node's stages.

A stage handler is plain Python with no sockets: the runtime hands it a batch of events,
it calls ``emit`` for what should travel on, and the runtime moves the emitted events to
the next stage's queue in one message per destination. Tested without ZeroMQ.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seda_dynamo import ids
from seda_dynamo.config import NodeConfig

Event = list[Any]  # [kind, *fields]: msgpack arrays between stages
PEER_PREFIX = "peer:"  # an emit to "peer:HOST:PORT" goes to that node's peer ROUTER


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One row of the stage table (as Cassandra's Stage enum)."""

    name: str
    module: str
    workers: int
    queue_hwm: int
    when_full: str  # "block": wait for room (never lose an event); "drop": count and drop
    # Seconds a batch may take before the batch controller cuts it down: a stage with a
    # large fixed cost per batch (persistence's fsync) needs big batches to keep up.
    batch_target: float
    # Its queue delay drives admission control: a stage on the path of client requests.
    # Not the network stage itself: it would count the cost of shedding as overload.
    foreground: bool
    # More than one worker process where the work allows it: events for the stage are
    # spread over its workers by a hash of their shard field (``messagetable.TABLE``:
    # the key, so one key's operations meet in one worker; events with none go to
    # worker 0), up to ``max_workers`` as the supervisor adds them.
    max_workers: int = 1


#: Every stage of a node, declared once. The supervisor spawns them in this order.
#: Only versioning runs several workers: its per-key read-merge-write is guarded by
#: persistence's compare-and-set, so even a key caught between two workers while their
#: number changes is merged, never overwritten. Persistence (one engine, the Merkle
#: trees), coordination (request state), gossip and network (bound ports) stay single.
STAGES: tuple[StageSpec, ...] = (
    StageSpec("persistence", "stages.persistence", 1, 10_000, "block", 0.040, True),
    StageSpec("versioning", "stages.versioning", 1, 10_000, "block", 0.010, True,
              max_workers=4),
    StageSpec("coordination", "stages.coordination", 1, 10_000, "block", 0.010, True),
    StageSpec("gossip", "stages.gossip", 1, 1_000, "drop", 0.020, False),
    StageSpec("network", "stages.network", 1, 10_000, "block", 0.010, False),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def workers(config: NodeConfig, stage: str) -> tuple[int, int]:
    """(workers at start, most workers) of ``stage``: the table's, or the config's."""
    if stage == "versioning":
        return config.versioning_workers, config.versioning_max_workers
    row = spec(stage)
    return row.workers, row.max_workers


def worker_name(stage: str, index: int) -> str:
    """Worker 0 is the stage's own name; the others are ``stage.N``."""
    return stage if index == 0 else f"{stage}.{index}"


def stage_of(name: str) -> str:
    """The stage a worker name belongs to: ``versioning.2`` -> ``versioning``."""
    return name.split(".", 1)[0]


def is_stage(name: str) -> bool:
    """Whether ``name`` is a stage or one of its workers."""
    return stage_of(name) in STAGE_NAMES


def spec(name: str) -> StageSpec:
    """The table row of a stage or of one of its workers."""
    base = stage_of(name)
    for s in STAGES:
        if s.name == base:
            return s
    raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Port:
    """A socket a stage owns besides its inbound queue (the network stage's ROUTERs)."""

    name: str
    kind: str  # "router", or "stream": raw TCP, [connection id, bytes] per message
    bind: str  # a ZeroMQ endpoint
    max_msg_bytes: int = -1
    curve: str = ""  # a ZAP domain: CURVE on, and only that domain's allowed keys get in
    callers: bool = False  # hand the handler each message's connection (address, key)


class Stage:
    """Base of every stage handler: dispatch ``[kind, ...]`` events to ``on_<kind>``."""

    name = "stage"
    tick_interval = 0.05

    def __init__(self, config: NodeConfig, entropy: ids.Entropy | None = None) -> None:
        self.config = config
        # Where randomness comes from (a simulator passes a seeded one), and the start
        # of this process's id counters: ids never repeat across restarts (ids.py).
        self.entropy: ids.Entropy = entropy or secrets.randbits
        self.id_base = ids.process_base(self.entropy)
        self.log = logging.getLogger(f"seda_dynamo.{self.name}")
        self.outbox: list[tuple[str, Any]] = []
        self.errors = 0
        self._dispatch: dict[str, Callable[..., None]] = {}

    # What the runtime calls -------------------------------------------------------
    def ports(self) -> list[Port]:
        return []

    def start(self, now: float) -> None:
        """Called once before the first batch."""

    def handle_events(self, events: list[Event], now: float) -> None:
        for event in events:
            self.dispatch(event, now)

    def handle_frames(self, port: str, messages: list[list[bytes]], now: float,
                      callers: list[Any] | None = None) -> None:
        """Multipart messages that arrived on one of ``ports()``; for a port with
        ``callers``, the connection each came on (``protocol.Caller``), in order."""

    def tick(self, now: float) -> None:
        """Called about every ``tick_interval`` seconds: deadlines, timers."""

    def undeliverable(self, dest: str, events: list[Event], now: float) -> None:
        """The runtime could not queue ``events`` for ``dest`` and dropped them (SEDA's
        full-queue event, Sandstorm's ``SinkFull``): another node not connected
        (``dest`` is ``peer:HOST:PORT``), or a stage or worker whose queue is full (a
        ``"drop"`` stage at once, a ``"block"`` one after waiting for room), or a
        destination that does not exist. Fail what the events belonged to now, rather
        than let it time out; called again for what this emits if that fails too."""

    def gauges(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """Release what the handler holds (an engine, files)."""

    # Helpers for handlers -----------------------------------------------------------
    def emit(self, dest: str, event: Any) -> None:
        """Queue ``event`` for stage ``dest`` (or multipart frames for port ``dest``)."""
        self.outbox.append((dest, event))

    def dispatch(self, event: Event, now: float) -> None:
        try:
            kind = event[0]
            fn = self._dispatch.get(kind)
            if fn is None:
                fn = getattr(self, f"on_{kind}")
                self._dispatch[kind] = fn
            fn(now, *event[1:])
        except Exception:
            self.errors += 1
            self.log.exception("%s: event %r failed", self.name, _short(event))

    def take_outbox(self) -> list[tuple[str, Any]]:
        out, self.outbox = self.outbox, []
        return out


def _short(event: Any) -> str:
    text = repr(event)
    return text if len(text) < 200 else text[:200] + "..."
