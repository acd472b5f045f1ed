"""What the gossip stage's background duties share: emit, reply routes, timers, cluster.

Dynamo paper sections 4.6 to 4.9 give every node background duties beside serving
requests: failure detection (4.8), hinted handoff (4.6), anti-entropy (4.7), handing
partitions over when members join or leave (4.9), and here also reaping tombstones. The
gossip stage runs them all, each as an IO-free component (riak_core likewise gives each
duty its own module):

- ``failure.Watcher``: pings, the accrual detector, the set of members down;
- ``hintedhandoff.Delivery``: hands stored hints to their owners once they are up;
- ``transfer.Transfers``: streams the partitions this node hands over;
- ``antientropy.Exchanges``: one Merkle exchange at a time, and its repairs;
- ``reaper.Reaper``: the reap queue and the cluster-wide checks before a reap;
- ``strays.Strays``: keys held outside their preference list, handed to its replicas;
- ``departure.Departure``: a leaving node departs only once its store holds no key.

A component sends through an ``emit(dest, event)`` callable, reads the node's membership
through ``Cluster`` (the stage owns the view), and moves its own ``Timer`` (the stage
creates and holds them all). What a component asks another node or a local stage carries a
``ref`` that the answer echoes back (the name ``seda_dynamo.messages`` gives the asker's own
reference): the ref is the wire form of a ``Route``, which duty asked and which of its
requests (the refs' shapes are part of the peer protocol and never change). The stage
parses an echoed ref back into a Route and hands the answer to the one component that its
table names for the route's duty; a ref that is no route is ignored (and counted). Pure:
no clock, no IO.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from seda_dynamo.membership import View
from seda_dynamo.messages import Call

Emit = Callable[[str, Any], None]  # (destination stage or port, event)


class Duty(enum.Enum):
    """Who asked; the value is the first element of the request's ref on the wire."""

    PING = "ping"  # ["ping", sent]: the failure watcher's heartbeat
    VIEW = "view"  # ["view"]: a gossip round (the stage's own membership exchange)
    HINT = "hint"  # ["hint", owner, key, token]: a hinted version handed to its owner
    TRANSFER = "xfer"  # ["xfer", partition, seq]: a chunk of a partition hand-over
    TREE = "ae"  # ["ae", exchange]: a Merkle question of an anti-entropy exchange
    PULL = "pull"  # ["pull", key]: a repair reading the peer's versions of a key
    PUSH = "push"  # ["push", exchange]: a repair reading our versions (local read)
    PUSHED = "pushed"  # ["pushed"]: a repair writing our versions at the peer
    CHECK = "reap"  # ["reap", check]: a holder's answer before a tombstone is reaped
    REAPED = "reaped"  # ["reaped"]: a holder told to delete a reaped tombstone
    STRAY = "stray"  # ["stray", seq, key]: a stray key handed to a replica (or its read)
    DEPART = "depart"  # ["depart", question]: is any key left here? (a leaving node's)


#: The types of each duty's identifying fields after the first element of its ref.
_SHAPES: dict[Duty, tuple[type, ...]] = {
    Duty.PING: (float,), Duty.VIEW: (), Duty.HINT: (str, bytes, bytes),
    Duty.TRANSFER: (int, int), Duty.TREE: (int,), Duty.PULL: (bytes,), Duty.PUSH: (int,),
    Duty.PUSHED: (), Duty.CHECK: (int,), Duty.REAPED: (), Duty.STRAY: (int, bytes),
    Duty.DEPART: (int,),
}


@dataclass(frozen=True, slots=True)
class Route:
    """The duty a request belongs to and which of its requests it is (``ident``)."""

    duty: Duty
    ident: tuple[Any, ...] = ()

    def ref(self) -> list[Any]:
        """The wire form: the request's ``ref``, echoed back with the answer."""
        return [self.duty.value, *self.ident]

    @classmethod
    def parse(cls, ref: Any) -> Route | None:
        """The route an echoed ref names, or None when it names none."""
        if not isinstance(ref, list) or not ref or not isinstance(ref[0], str):
            return None
        try:
            duty = Duty(ref[0])
        except ValueError:
            return None
        ident = tuple(ref[1:])
        shape = _SHAPES[duty]
        if len(ident) != len(shape) or not all(
                isinstance(v, t) and not (t is int and isinstance(v, bool))
                for v, t in zip(ident, shape, strict=True)):
            return None
        return cls(duty, ident)


class Cluster(Protocol):
    """What a duty reads of the node's membership (the gossip stage owns the view)."""

    @property
    def view(self) -> View: ...

    @property
    def down(self) -> frozenset[str]: ...

    def peers(self) -> dict[str, str]:
        """Every other member that has not left: node id -> peer address."""
        ...


@dataclass(slots=True)
class Timer:
    """When a periodic duty is next due."""

    at: float = 0.0

    def due(self, now: float, every: float) -> bool:
        """Is it due at ``now``? If so, it is next due ``every`` seconds later."""
        if now < self.at:
            return False
        self.at = now + every
        return True


class Component:
    """Base of a duty: how it asks, and how answers reach it (each ignores by default)."""

    def __init__(self, emit: Emit, stage: str = "gossip") -> None:
        self.emit = emit
        self.stage = stage  # where answers to its calls come back

    def call(self, peer: str, route: Route, request: list[Any], node: str | None = None
             ) -> None:
        """Ask the node at ``peer`` (whose id is ``node``, when known)."""
        self.emit("network", Call.wire(peer, self.stage, route.ref(), request, node))

    def answer(self, now: float, node: str, route: Route, payload: list[Any]) -> None:
        """Another node's answer to one of this duty's calls."""

    def local(self, now: float, route: Route, answer: list[Any]) -> None:
        """A local stage's answer (``[kind, *fields]``) to one of this duty's requests."""

    def unreachable(self, now: float, peer: str, route: Route) -> None:
        """A call of this duty's could not be sent: ``peer`` is not connected."""

    def lost(self, now: float, route: Route) -> None:
        """A request of this duty's to a local stage could not be queued (SEDA's
        full-queue event): no answer will come."""

    def restarted(self, now: float, stage: str) -> None:
        """Local stage ``stage`` began a new process (``messages.Started``): what this
        duty asked of the last one will not be answered."""
