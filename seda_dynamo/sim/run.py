"""One simulated run, from a seed to a verdict: a cluster forms, clients work while the
seed injects faults (a lossy, duplicating, reordering network; partitions, one-way too;
nodes and single stages crashing and restarting on their disks), faults stop, the
cluster heals and converges (hinted handoff and anti-entropy: paper sections 4.6, 4.7),
everything is read back, and the checkers judge it.

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
from seda_dynamo.sim.net import Faults
from seda_dynamo.sim.node import peer_address
from seda_dynamo.sim.workload import Workload
from seda_dynamo.stage import STAGE_NAMES

FAULT_SECONDS = 8.0  # simulated seconds of client work under faults
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
             clients_reach_outsiders: bool = False) -> Result:
    """Run ``seed``; ``joins``: faults may include a node joining; with
    ``clients_reach_outsiders`` clients may talk to a joining node before its join
    takes (it is a one-node cluster until then: see tests/sim/test_seeds.py)."""
    with logged_errors() as errors, tempfile.TemporaryDirectory(prefix="seda-sim-") as tmp:
        result = _run(seed, nodes, ops, Path(tmp), joins, clients_reach_outsiders)
    result.anomalies += [f"logged {message}" for message in errors.messages]
    return result


def _run(seed: int, nodes: int, ops: int, root: Path, joins: bool, open_door: bool
         ) -> Result:
    rng = random.Random(seed)
    result = Result(seed, nodes)
    cluster = Cluster(root, nodes, seed=rng.getrandbits(64),
                      partitions=partitions_for(nodes), anti_entropy_every=1.0)
    if not cluster.run_until(cluster.converged, 60.0):
        result.anomalies.append("the cluster did not form within 60 s")
        return _done(result, cluster)
    workload = Workload(cluster, random.Random(rng.getrandbits(64)), keys=4)
    cluster.net.faulty(Faults())
    for _ in range(ops):
        cluster.schedule(rng.uniform(0, FAULT_SECONDS), workload.one)
    for _ in range(rng.randint(1, 4)):
        _fault(cluster, rng)
    if joins and nodes < 50 and rng.random() < 0.5:
        cluster.schedule(rng.uniform(0, FAULT_SECONDS / 2), _join, cluster, workload,
                         open_door)
    cluster.run(FAULT_SECONDS)

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
        reply = cluster.call(rng.choice(sorted(cluster.nodes)),
                             {"op": "get", "key": key, "r": cluster.config["n"]})
        final[key] = reply["values"] if reply and reply.get("ok") else None
    result.anomalies += checkers.replies(cluster, workload)
    result.anomalies += checkers.lost_and_phantom(workload, final)
    result.anomalies += checkers.dots(cluster)
    result.anomalies += checkers.ring(cluster)
    result.requests = len(workload.ops)
    return _done(result, cluster)


def _done(result: Result, cluster: Cluster) -> Result:
    result.trace_hash = cluster.trace.hexdigest()
    result.deliveries = cluster.trace.deliveries
    result.simulated = cluster.now
    return result


def _fault(cluster: Cluster, rng: random.Random) -> None:
    """Schedule one fault within the fault window, and its end."""
    ids = sorted(cluster.nodes)
    at = rng.uniform(0, FAULT_SECONDS * 0.8)
    lasts = rng.uniform(0.3, 3.0)
    kind = rng.choice(("partition", "crash", "stage"))
    if kind == "partition":
        side = rng.sample(ids, rng.randint(1, max(1, len(ids) // 2)))
        others = [i for i in ids if i not in side]
        cluster.schedule(at, cluster.net.partition, side, others, rng.random() < 0.3)
        cluster.schedule(at + lasts, cluster.net.heal)
        return
    node = rng.choice(ids)
    stage = rng.choice(STAGE_NAMES) if kind == "stage" else None
    cluster.schedule(at, _crash, cluster, node, stage)
    cluster.schedule(at + lasts, _restart, cluster, node, stage)


def _join(cluster: Cluster, workload: Workload, open_door: bool) -> None:
    """A new node starts (its own one-node cluster) and an operator joins it to n1's
    (paper section 4.9: it takes partitions over, streamed by their owners)."""
    node = cluster.add()
    if not open_door:
        workload.outsiders.add(node.id)
    cluster.request(node.id, {"op": "admin", "command": "join", "seed": peer_address(1)})


def _crash(cluster: Cluster, node: str, stage: str | None) -> None:
    if cluster.nodes[node].stages.get(stage or "network") is not None:
        cluster.crash(node, stage)


def _restart(cluster: Cluster, node: str, stage: str | None) -> None:
    for name in [stage] if stage else STAGE_NAMES:
        if name not in cluster.nodes[node].stages:
            cluster.start(node, name)
