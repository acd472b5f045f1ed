"""A deterministic simulator of whole clusters: every node's real stage handlers in one
process, under one simulated clock, network and set of disks, with faults drawn from a
seed (FoundationDB's simulation testing, applied to a SEDA node).

The stages are handlers fed by events, so no processes are needed: ``node`` builds each
node's handlers from the stage table as the supervisor does, ``clock`` orders every
delivery and tick by (time, sequence) and hashes the trace, ``net`` is the network
between nodes' peer ports (latency, loss, reordering, duplication, partitions),
``disk`` each node's engines with their durability point (power failures, torn writes),
``cluster`` moves events between them, ``nemesis`` says how harsh a run is and draws its
faults (crashes, partitions, joins and leaves), ``workload`` is the clients and their history,
``checkers`` judge a run, and ``run`` is one seed from start to verdict. One
``random.Random(seed)`` decides everything, so a failure replays from its seed.

It exercises the whole paper: partitioning and replication (4.2, 4.3), versioning
(4.4), sloppy quorums and hinted handoff (4.5, 4.6), anti-entropy (4.7), membership
(4.8, 4.9: joins and leaves) under failures. A shell: it loads stage code and touches
the disk (data dirs).
"""

from __future__ import annotations

from seda_dynamo.sim.cluster import Cluster
from seda_dynamo.sim.run import Result, run_seed

__all__ = ["Cluster", "Result", "run_seed"]
