"""One simulated run, from a seed to a verdict: a cluster forms, clients work while the
seed injects the faults its ``Nemesis`` allows (``sim/nemesis.py``: a lossy, duplicating,
reordering network; partitions, one-way too; nodes and single stages crashing and
restarting on their disks, power failures and torn writes; joins and leaves), faults
stop, the cluster heals and converges (hinted handoff and anti-entropy: paper sections
4.6, 4.7), everything is read back, and the checkers judge it.

Everything is drawn from ``random.Random(seed)``; each run's nodes live in a temp dir
created and removed here. The trace hash fingerprints the run: the same seed gives the
same hash in any process.
"""

from __future__ import annotations

import logging
import random
import tempfile
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


@dataclass(slots=True)
class Result:
    seed: int
    nodes: int
    trace_hash: str = ""
    anomalies: list[str] = field(default_factory=list)
    requests: int = 0
    deliveries: int = 0
    simulated: float = 0.0
    happened: list[str] = field(default_factory=list)  # what the nemesis did, in order
    reaped: int = 0  # tombstones reaped during the run, over every node
    replayed: int = 0  # client writes that replayed an old context
    torn: int = 0  # writes a power failure tore


class Errors(logging.Handler):
    """What the nodes logged at ERROR or worse: a handler bug is an anomaly."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()[:300]}")


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
    log = logging.getLogger("seda_dynamo")
    errors, level, propagate = Errors(), log.level, log.propagate
    log.addHandler(errors)
    log.setLevel(logging.ERROR)
    log.propagate = False
    try:
        with tempfile.TemporaryDirectory(prefix="seda-sim-") as tmp:
            result = _run(seed, nodes, ops, Path(tmp), nemesis, clients_reach_outsiders)
    finally:
        log.removeHandler(errors)
        log.setLevel(level)
        log.propagate = propagate
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
    for node_id, node in sorted(cluster.nodes.items()):
        for name in STAGE_NAMES:
            if name not in node.stages:
                cluster.start(node_id, name)
    if not cluster.run_until(workload.settled, 30.0):
        result.anomalies.append("requests still open 30 s after faults stopped")
    if not cluster.run_until(lambda: cluster.converged() and not any(
            node.hints.count() for node in cluster.nodes.values()), 60.0):
        result.anomalies.append("no convergence (or hints left) 60 s after faults stopped")
    before = checkers.outstanding(cluster)
    cluster.run(QUIET_SECONDS)
    result.anomalies += checkers.in_flight(before, checkers.outstanding(cluster))

    final: dict[bytes, list[bytes] | None] = {}
    for key in workload.keys:
        reply = cluster.call(rng.choice(cluster.members()),
                             {"op": "get", "key": key, "r": cluster.config["n"]})
        final[key] = reply["values"] if reply and reply.get("ok") else None
    result.anomalies += checkers.replies(cluster, workload)
    result.anomalies += checkers.lost_and_phantom(workload, final)
    result.anomalies += checkers.dots(cluster)
    result.anomalies += checkers.ring(cluster)
    result.requests = len(workload.ops)
    result.reaped = sum(node.stages["gossip"].gauges()["tombstones_reaped"]  # type: ignore[attr-defined]
                        for node in cluster.nodes.values())
    result.replayed = workload.replayed
    result.torn = sum(node.disk.torn for node in cluster.nodes.values())
    return _done(result, cluster)


def _done(result: Result, cluster: Cluster) -> Result:
    result.trace_hash = cluster.trace.hexdigest()
    result.deliveries = cluster.trace.deliveries
    result.simulated = cluster.now
    return result
