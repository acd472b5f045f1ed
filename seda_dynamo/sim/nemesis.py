"""The nemesis: what one simulated run throws at a cluster while its clients work, as one
``Nemesis`` value (how harsh) and a schedule drawn from the run's seed.

Faults (Dynamo paper sections 4.6-4.9 must survive each): a lossy, duplicating,
reordering network (``net.Faults``); partitions, one-way too; a node or a single stage
crashing and restarting on its disks; a node losing power (its disks keep only what
reached a durability point, ``sim/disk.py``); a node losing power in the middle of a
write (the torn write is detected and dropped); and membership changes an operator
makes: a node joining (``admin join``, paper 4.9: it takes partitions over) and a member
leaving (``admin leave``: it streams every partition away, then has left), several in
one run (a join and a leave, two joins, a leave while a join is under way).

``PRESETS`` names the settings ``python -m seda_dynamo.sim --faults`` offers: ``calm``
(no faults at all), ``default`` and ``harsh``. Pure: it schedules calls on a
``Cluster``, which does the IO.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from seda_dynamo.sim.cluster import Cluster
from seda_dynamo.sim.net import Faults
from seda_dynamo.sim.workload import Workload
from seda_dynamo.stage import STAGE_NAMES

#: The membership changes a run may draw (each a list of steps, in order).
CHANGES: tuple[tuple[str, ...], ...] = (
    ("join",), ("leave",), ("join", "leave"), ("join", "join"), ("join", "leave-during"))
#: Members a leave must leave behind (N = 3 replicas on distinct members).
MIN_MEMBERS = 3


@dataclass(frozen=True, slots=True)
class Nemesis:
    """How unkind one run is; the seed draws within these."""

    seconds: float = 8.0  # simulated seconds of client work under faults
    net: Faults = field(default_factory=Faults)
    faults: tuple[int, int] = (1, 4)  # how many partitions and crashes, at least..at most
    kinds: tuple[str, ...] = ("partition", "crash", "stage", "partition", "crash",
                              "stage", "power", "torn")
    lasts: tuple[float, float] = (0.3, 3.0)  # how long a partition or a crash lasts
    membership: float = 0.5  # probability that a run changes membership at all
    changes: tuple[tuple[str, ...], ...] = CHANGES
    #: Seconds after a delete before its tombstone may be reaped (0: never); short, so
    #: reaps happen during the run and stale contexts meet re-created keys.
    reap_after: float = 1.0
    stale: float = 0.15  # probability a client write replays an old context


PRESETS: dict[str, Nemesis] = {
    "calm": Nemesis(net=Faults(0.0, 0.0, 0.0), faults=(0, 0), membership=0.0),
    "default": Nemesis(),
    "harsh": Nemesis(net=Faults(loss=0.15, duplicate=0.1, jitter=0.05), faults=(3, 8),
                     lasts=(0.3, 4.0), membership=0.9, stale=0.3),
}


def without_membership(nemesis: Nemesis) -> Nemesis:
    return replace(nemesis, membership=0.0)


class Schedule:
    """One run's faults, drawn from ``rng`` and put on ``cluster``'s clock."""

    def __init__(self, cluster: Cluster, workload: Workload, rng: random.Random,
                 nemesis: Nemesis, open_door: bool = False) -> None:
        self.cluster = cluster
        self.workload = workload
        self.rng = rng
        self.nemesis = nemesis
        self.open_door = open_door
        self.members = set(cluster.nodes)  # members as the operator counts them
        self.happened: list[str] = []  # what the nemesis did, in order (tests read it)

    def draw(self) -> None:
        """Schedule every fault of the run, and its end, within the fault window."""
        low, high = self.nemesis.faults
        for _ in range(self.rng.randint(low, high) if high else 0):
            self.fault()
        if self.nemesis.membership and self.rng.random() < self.nemesis.membership:
            self.membership(self.rng.choice(self.nemesis.changes))

    def end(self) -> None:
        """Faults stop: a torn write still waiting for a write never happens."""
        for node in self.cluster.nodes.values():
            node.disk.tearing = None
        self.cluster.restart_after.clear()

    def fault(self) -> None:
        cluster, rng = self.cluster, self.rng
        ids = sorted(cluster.nodes)
        at = rng.uniform(0, self.nemesis.seconds * 0.8)
        lasts = rng.uniform(*self.nemesis.lasts)
        kind = rng.choice(self.nemesis.kinds)
        if kind == "partition":
            side = rng.sample(ids, rng.randint(1, max(1, len(ids) // 2)))
            others = [i for i in ids if i not in side]
            cluster.schedule(at, self._partition, side, others, rng.random() < 0.3)
            cluster.schedule(at + lasts, cluster.net.heal)
            return
        node = rng.choice(ids)
        if kind == "torn":  # power fails while the node writes, at its next or a later write
            cluster.schedule(at, self._tear, node, lasts, rng.randint(0, 2))
            return
        stage = rng.choice(STAGE_NAMES) if kind == "stage" else None
        cluster.schedule(at, self._crash, node, stage, kind == "power")
        cluster.schedule(at + lasts, self._restart, node, stage)

    def membership(self, steps: tuple[str, ...]) -> None:
        """Schedule a run's membership changes (``CHANGES``) in the fault window."""
        at = self.rng.uniform(0, self.nemesis.seconds / 2)
        for i, step in enumerate(steps):
            if step == "join":
                self.cluster.schedule(at, self._join)
            else:  # a leave, of a member drawn when it is due
                self.cluster.schedule(at, self._leave, self.rng.getrandbits(32))
            following = steps[i + 1] if i + 1 < len(steps) else ""
            at += self.rng.uniform(0.1, 1.0) if following == "leave-during" else \
                self.rng.uniform(0.5, self.nemesis.seconds / 2)

    # What the scheduled calls do ---------------------------------------------------------
    def _partition(self, side: list[str], others: list[str], one_way: bool) -> None:
        self.happened.append("partition")
        self.cluster.net.partition(side, others, one_way)

    def _join(self) -> None:
        """A new node starts (its own one-node cluster) and an operator joins it through
        a member (paper section 4.9: it takes partitions over, streamed by their owners)."""
        node = self.cluster.add()
        if not self.open_door:
            self.workload.outsiders.add(node.id)
        seed = sorted(self.members)[0]
        self.members.add(node.id)
        self.happened.append(f"join {node.id}")
        self.cluster.request(node.id, {"op": "admin", "command": "join",
                                       "seed": self.cluster.nodes[seed].config.peer})

    def _leave(self, draw: int) -> None:
        """An operator asks a member to leave (paper 4.9 in reverse: it streams every
        partition to the nodes that take it over, then has left), unless that would
        leave fewer than ``MIN_MEMBERS``."""
        if len(self.members) <= MIN_MEMBERS:
            return
        ring = self.cluster.ring
        settled = sorted(n for n in self.members  # a node whose join has not taken stays
                         if (r := ring(n)) is not None and n in {m.id for m in r.members}
                         and len(r.members) > 1)
        if not settled:
            return
        node = settled[draw % len(settled)]
        self.members.discard(node)
        self.happened.append(f"leave {node}")
        self.cluster.leave(node)

    def _tear(self, node: str, lasts: float, after: int) -> None:
        self.happened.append(f"torn {node}")
        self.cluster.nodes[node].disk.tear_next(after)
        self.cluster.restart_after[node] = lasts

    def _crash(self, node: str, stage: str | None, power: bool) -> None:
        if self.cluster.nodes[node].stages.get(stage or "network") is not None:
            self.happened.append(f"{'power' if power else 'crash'} {node} {stage or ''}")
            self.cluster.crash(node, stage, power=power)

    def _restart(self, node: str, stage: str | None) -> None:
        for name in [stage] if stage else STAGE_NAMES:
            if name not in self.cluster.nodes[node].stages:
                self.cluster.start(node, name)

