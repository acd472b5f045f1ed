"""One simulated run, from a seed to a verdict: a cluster forms, clients work while the
seed injects the faults its ``Nemesis`` allows (``sim/nemesis.py``: a lossy, duplicating,
reordering network; partitions, one-way too; nodes and single stages crashing and
restarting on their disks, power failures and torn writes; joins and leaves), faults
stop, the cluster heals and its replicas converge within a bound (hinted handoff and
anti-entropy: paper sections 4.6, 4.7), everything is read back; then a calm outage
(whole nodes crash at once, W staying up, and clients write to the survivors at that
instant: paper 4.6), the replicas converge again, everything is read back again, and
the checkers judge it all.

Everything is drawn from ``random.Random(seed)``; each run's nodes live in a temp dir
created and removed here. The trace hash fingerprints the run: the same seed gives the
same hash in any process.
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from seda_dynamo.outstanding import CALL_TTL, GRACE
from seda_dynamo.sim import checkers
from seda_dynamo.sim.cluster import Cluster
from seda_dynamo.sim.nemesis import PRESETS, Nemesis, Schedule, without_membership
from seda_dynamo.sim.workload import Workload
from seda_dynamo.stage import STAGE_NAMES

#: Longer than any deadline: a request's (3 s), a peer call's (``CALL_TTL`` and grace).
QUIET_SECONDS = CALL_TTL + GRACE + 1.0
CONVERGENCE_STEP = 0.05  # simulated seconds between two looks at the replicas
OUTAGE_WRITES = 8  # blind puts sent the instant nodes crash in the calm outage


@dataclass(slots=True)
class Result:
    seed: int
    nodes: int
    trace_hash: str = ""
    anomalies: list[str] = field(default_factory=list)
    requests: int = 0
    deliveries: int = 0
    simulated: float = 0.0
    #: Simulated seconds from a quiet cluster until every replica agreed, after the
    #: faults and after the calm outage (the worse; None: not within the limit).
    convergence: float | None = 0.0
    happened: list[str] = field(default_factory=list)  # what the nemesis did, in order
    reaped: int = 0  # tombstones reaped during the run, over every node and restart
    replayed: int = 0  # client writes that replayed an old context
    torn: int = 0  # writes a power failure tore


class Errors(logging.Handler):
    """What the nodes logged at ERROR or worse: a handler bug is an anomaly."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()[:300]}")


@contextmanager
def logged_errors() -> Iterator[Errors]:
    """What the nodes log at ERROR or worse while open; nothing of theirs below ERROR is
    formatted, and none of it reaches the process's own handlers."""
    log = logging.getLogger("seda_dynamo")
    errors, level, propagate = Errors(), log.level, log.propagate
    log.addHandler(errors)
    log.setLevel(logging.ERROR)
    log.propagate = False
    try:
        yield errors
    finally:
        log.removeHandler(errors)
        log.setLevel(level)
        log.propagate = propagate


def partitions_for(nodes: int) -> int:
    """A power of two giving each node about eight partitions (at least 16)."""
    q = 16
    while q < 8 * nodes:
        q *= 2
    return q


def run_seed(seed: int, nodes: int = 3, ops: int = 60, *, joins: bool = True,
             clients_reach_outsiders: bool = False, nemesis: Nemesis | None = None
             ) -> Result:
    """Run ``seed`` under ``nemesis`` (default: ``PRESETS["default"]``); ``joins``:
    faults may include membership changes (nodes joining and leaving); with
    ``clients_reach_outsiders`` clients may talk to a joining node before its join
    takes (it is a one-node cluster until then: see tests/sim/test_seeds.py)."""
    nemesis = nemesis or PRESETS["default"]
    if not joins or nodes >= 50:
        nemesis = without_membership(nemesis)
    with logged_errors() as errors, tempfile.TemporaryDirectory(prefix="seda-sim-") as tmp:
        result = _run(seed, nodes, ops, Path(tmp), nemesis, clients_reach_outsiders)
    result.anomalies += [f"logged {message}" for message in errors.messages]
    return result


def _run(seed: int, nodes: int, ops: int, root: Path, nemesis: Nemesis, open_door: bool
         ) -> Result:
    rng = random.Random(seed)
    result = Result(seed, nodes)
    cluster = Cluster(root, nodes, seed=rng.getrandbits(64),
                      partitions=partitions_for(nodes), anti_entropy_every=1.0,
                      tombstone_reap_after=nemesis.reap_after)
    if not cluster.run_until(cluster.converged, 60.0):
        result.anomalies.append("the cluster did not form within 60 s")
        return _done(result, cluster)
    workload = Workload(cluster, random.Random(rng.getrandbits(64)), keys=4,
                        stale=nemesis.stale)
    cluster.net.faulty(nemesis.net)
    for _ in range(ops):
        cluster.schedule(rng.uniform(0, nemesis.seconds), workload.one)
    schedule = Schedule(cluster, workload, rng, nemesis, open_door)
    schedule.draw()
    result.happened = schedule.happened
    cluster.run(nemesis.seconds)
    schedule.end()

    cluster.net.calm()  # faults stop: every node and stage back up
    calm = cluster.now
    for node_id, node in sorted(cluster.nodes.items()):
        for name in STAGE_NAMES:
            if name not in node.stages:
                cluster.start(node_id, name)
    if not cluster.run_until(workload.settled, 30.0):
        result.anomalies.append("requests still open 30 s after faults stopped")
    if cluster.run_until(cluster.converged, 60.0):
        _converge(cluster, result, "the faults", calm)
    if not _quiet(cluster):
        result.anomalies.append("no convergence (or hints left) 60 s after faults stopped")
    before = checkers.outstanding(cluster)
    cluster.run(QUIET_SECONDS)
    result.anomalies += checkers.in_flight(before, checkers.outstanding(cluster))
    # Read back before the calm outage too: its writes merge records, and must not
    # hide what the faults lost.
    result.anomalies += checkers.lost_and_phantom(workload, _read_back(cluster, workload, rng))
    result.anomalies += checkers.stamped_once(cluster)  # before the outage merges more
    # Judged by founders only, and only those still members (a node that left owns nothing).
    founders = [f"n{i}" for i in range(1, nodes + 1) if f"n{i}" not in cluster.departed()]
    _outage(cluster, workload, rng, founders, result)

    lost = checkers.lost_and_phantom(workload, _read_back(cluster, workload, rng))
    result.anomalies += [a for a in lost if a not in result.anomalies]
    result.anomalies += checkers.replies(cluster, workload)
    result.anomalies += checkers.dots(cluster)
    result.anomalies += [a for a in checkers.stamped_once(cluster) if a not in result.anomalies]
    result.anomalies += checkers.ring(cluster)
    result.anomalies += checkers.stranded(cluster)
    result.anomalies += checkers.failed_writes(cluster, workload, cluster.config["w"],
                                               founders)
    result.requests = len(workload.ops)
    result.reaped = sum(node.reaped for node in cluster.nodes.values())
    result.replayed = workload.replayed
    result.torn = sum(node.disk.torn for node in cluster.nodes.values())
    return _done(result, cluster)


def _read_back(cluster: Cluster, workload: Workload, rng: random.Random
               ) -> dict[bytes, list[bytes] | None]:
    """Every key read at R = N from a node drawn (None: the read failed)."""
    final: dict[bytes, list[bytes] | None] = {}
    for key in workload.keys:
        reply = cluster.call(rng.choice(cluster.members()),
                             {"op": "get", "key": key, "r": cluster.config["n"]})
        final[key] = reply["values"] if reply and reply.get("ok") else None
    return final


def _quiet(cluster: Cluster) -> bool:
    """Run until the ring converged with no hint left (60 s at most); whether it did."""
    return cluster.run_until(lambda: cluster.converged() and not any(
        node.hints.count() for node in cluster.nodes.values()), 60.0)


def _converge(cluster: Cluster, result: Result, after: str, faults_ended: float) -> None:
    """From a converged ring, run until every replica agrees: an anomaly past
    ``checkers.convergence_bound``; the time it took, measured to the step, goes into
    ``result.convergence`` (the worse of the runs' two)."""
    bound = checkers.convergence_bound(cluster, faults_ended)
    start = cluster.now
    while checkers.disagreeing(cluster):
        if cluster.now - start > bound:
            result.convergence = None  # stays None: one of them did not converge in time
            result.anomalies.append(f"replicas of {checkers.disagreeing(cluster)[:3]} still "
                                    f"disagree {bound:.2f} s after {after} (ring converged)")
            return
        cluster.run(CONVERGENCE_STEP)
    if result.convergence is not None:
        result.convergence = max(result.convergence, cluster.now - start)


def _outage(cluster: Cluster, workload: Workload, rng: random.Random, founders: list[str],
            result: Result) -> None:
    """The calm outage (paper 4.6): on a calm network, whole nodes crash at once, at
    least W staying up, and at that instant clients write to the survivors, before any
    failure detector can have noticed; then the nodes come back and the replicas must
    converge again. ``checkers.failed_writes`` judges these writes."""
    w = cluster.config["w"]
    victims = rng.sample(founders, rng.randint(1, max(1, len(founders) - w)))
    survivors = [x for x in founders if x not in victims]
    for node in victims:
        cluster.crash(node)
    for i in range(OUTAGE_WRITES):
        workload.send("put", rng.choice(workload.keys), rng.choice(survivors),
                      value=b"outage%d" % i)
    if not cluster.run_until(workload.settled, 10.0):
        result.anomalies.append("requests still open 10 s into the calm outage")
    for node in victims:
        cluster.start(node)
    back = cluster.now
    if cluster.run_until(cluster.converged, 60.0):
        _converge(cluster, result, "the outage", back)
    if not _quiet(cluster):
        result.anomalies.append("no convergence (or hints left) 60 s after the outage")


def _done(result: Result, cluster: Cluster) -> Result:
    result.trace_hash = cluster.trace.hexdigest()
    result.deliveries = cluster.trace.deliveries
    result.simulated = cluster.now
    return result
