"""Scale by simulation: the paper's membership claims measured on simulated clusters of
50, 200 and 500 nodes running the real gossip handler (Dynamo paper sections 4.8
membership by gossip, 4.9 adding a node, 6.2 strategy 3's partition balance).

``python -m seda_dynamo.sim.scale`` (``make sim-scale``) measures, per cluster size:

1. a new node joins a settled n-node cluster through the real path (its own ``admin
   join`` request, then gossip): how many gossip rounds (``GOSSIP_EVERY`` units of
   simulated time) until every node's view holds it, over several seeds, against
   log2(n);
2. the bytes of the view each node gossips and stores (``View.encode``: the msgpack of
   ``View.to_state``, members and ring), and the peer traffic per node per second;
3. partition balance: most and fewest partitions per node against Q/n, before and
   after the join (Q from ``run.partitions_for``: about eight per node);
4. the simulated time from the join to its transfers finished (``Cluster.converged``:
   every ring the same, no move pending, no transfer running), with a small data set,
   on the full stage set;

and the wall time of each run. It writes the "Scale" section of
``seda_dynamo/sim/report.md`` and its plot (``scalereport``).

How a cluster forms: each node starts from a pre-agreed view instead of n sequential
joins (which take O(n) plans and hand-overs): the view a settled cluster of n nodes
would hold (every member's entry at version 1, and the ring ``claim`` gives them from
nothing, at epoch 1, no move pending), saved as each node's view file before its
gossip stage starts, so each loads it as a restarted member would. Only the measured
join goes through ``admin join``.

Membership-only runs (measures 1 to 3) run two stages per node, network and gossip: a
gossip round is the gossip stage's ``call`` to the network stage, a peer ``gossip``
request, the other node's network stage handing it to its gossip stage, and the answer
back the same way. Pings are the exception: a node's failure detector pings every
member twice a second (n^2 peer messages a second for the cluster, which made 500
nodes too slow to simulate), so these runs have the simulator answer them
(``Cluster(answer_pings=True)``): each ping the gossip stage emits to an up node
whose links deliver both ways gets the ``resp`` ``pong`` its network stage would
relay, one round trip later; the gossip stage's code path is unchanged, and the
frames are counted in the peer traffic as sent. What gossip emits
for the absent stages (the ring and the members down for coordination; hint scans,
folds and trees for persistence) is handed back at once to its ``undeliverable``, as
the runtime does for a destination that does not exist: a duty's request fails as
``lost`` and is tried again later, a report is dropped. Anti-entropy is off there.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from seda_dynamo.claim import claim
from seda_dynamo.membership import VIEW_FILE, Entry, View
from seda_dynamo.messages import RingState
from seda_dynamo.ring import Member, Ring
from seda_dynamo.sim.cluster import Cluster
from seda_dynamo.sim.node import client_address, peer_address
from seda_dynamo.sim.run import partitions_for
from seda_dynamo.stage import STAGE_NAMES, spec

#: Seconds between a node's gossip rounds: the gossip stage's (loaded through the stage
#: table, as the simulator loads every stage).
GOSSIP_EVERY: float = importlib.import_module(spec("gossip").module).GOSSIP_EVERY

GOSSIP_STAGES = ("network", "gossip")  # what membership needs (the docstring says why)
SIZES = (50, 200, 500)
PROBE_EVERY = 0.05  # simulated seconds between looks at every node's view
QUIET = 2.0  # simulated seconds of a settled cluster whose peer traffic is measured


@dataclass(slots=True)
class Spread:
    """One join into a settled cluster of ``nodes``, and how it spread."""

    nodes: int
    seed: int
    partitions: int
    rounds: float = math.nan  # from the admin join to the last node's view holding it
    spread_rounds: float = math.nan  # from the first old member to know to the last
    ring_rounds: float = math.nan  # until every node's ring (the plan) has it as member
    learned: int = 0  # old members whose view holds the new one at the end
    interval: float = math.nan  # n1's mean seconds between its gossip rounds, measured
    view_bytes: int = 0  # what gossip sends each round and the view file stores
    member_bytes: int = 0
    ring_bytes: int = 0
    announce_bytes: int = 0  # the ring as gossip tells coordination (RingState)
    messages_per_node_s: float = 0.0  # peer frames a node sends a second, when settled
    bytes_per_node_s: float = 0.0
    before: tuple[int, int] = (0, 0)  # most, fewest partitions per node: n nodes
    after: tuple[int, int] = (0, 0)  # and n + 1 (the join's plan)
    moves: int = 0  # partitions the join's plan moves
    wall: float = 0.0
    simulated: float = 0.0


@dataclass(slots=True)
class Transfer:
    """One join into a settled cluster holding ``keys`` keys, on the full stage set."""

    nodes: int
    seed: int
    partitions: int
    keys: int
    answered: bool = False  # pings answered by the simulator (else by network stages)
    seconds: float = math.nan  # simulated, from the admin join to converged
    moved: float = math.nan  # from the join to the new node owning all it was planned
    transfers: int = 0  # partition streams finished, over all nodes
    transfer_bytes: int = 0
    held: int = 0  # keys the new node holds at the end
    wall: float = 0.0
    problems: list[str] = field(default_factory=list)


def agreed_view(nodes: int, partitions: int, n: int) -> bytes:
    """The view file of a settled cluster of ``n1``..``n<nodes>`` (the same for all)."""
    members = {f"n{i}": Entry(client_address(i), peer_address(i)) for i in
               range(1, nodes + 1)}
    owners = claim(None, {node: e.weight for node, e in members.items()}, partitions, n)
    ring = Ring(partitions, 1, tuple(Member(node, e.client, e.peer, "valid", e.weight)
                                     for node, e in sorted(members.items())), owners)
    return View("n1", partitions, n, members, ring).encode()


def formed(root: Path, nodes: int, seed: int, stages: Sequence[str], **config: Any
           ) -> Cluster:
    """A cluster of ``nodes`` started on the agreed view, run until no node holds any
    other down (each has answered a ping)."""
    partitions = config.setdefault("partitions", partitions_for(nodes))
    cluster = Cluster(root, 0, seed=seed, stages=tuple(stages), **config)
    view = agreed_view(nodes, partitions, cluster.config["n"])
    for i in range(1, nodes + 1):
        (root / f"n{i}").mkdir(parents=True)
        (root / f"n{i}" / VIEW_FILE).write_bytes(view)
        cluster.add(join=peer_address(1) if i > 1 else "")
    if not cluster.run_until(lambda: not any(node.gossip.down for node in
                                             cluster.nodes.values()), 30.0):
        raise RuntimeError(f"{nodes} nodes on an agreed view did not all come up")
    return cluster


def balance(owners: Sequence[str]) -> tuple[int, int]:
    """Most and fewest partitions a node owns."""
    counts = Counter(owners).values()
    return max(counts), min(counts)


def join(cluster: Cluster) -> tuple[str, float]:
    """A new node, its own one-node cluster, joined to n1's by an operator's request."""
    new = cluster.add()
    rid = cluster.request(new.id, {"op": "admin", "command": "join",
                                   "seed": peer_address(1)})
    if cluster.replies.get(rid, {}).get("ok") is False:
        raise RuntimeError(f"admin join refused: {cluster.replies[rid]}")
    return new.id, cluster.now


def spread(nodes: int, seed: int, stages: Sequence[str] = GOSSIP_STAGES,
           within: float = 60.0, answer_pings: bool = True) -> Spread:
    """Measures 1 to 3 for one seed (see the module's docstring)."""
    started = time.monotonic()  # the wall clock measures the run; the run never reads it
    result = Spread(nodes, seed, partitions_for(nodes))
    with _quiet(), tempfile.TemporaryDirectory(prefix="seda-scale-") as tmp:
        cluster = formed(Path(tmp), nodes, seed, stages, anti_entropy_every=0,
                         answer_pings=answer_pings)
        first = cluster.nodes["n1"].gossip.view
        assert first.ring is not None
        result.before = balance(first.ring.owners)
        messages, sent = cluster.peer_messages, cluster.peer_bytes
        cluster.run(QUIET)
        result.messages_per_node_s = (cluster.peer_messages - messages) / nodes / QUIET
        result.bytes_per_node_s = (cluster.peer_bytes - sent) / nodes / QUIET

        new, joined_at = join(cluster)
        old = [node_id for node_id in cluster.nodes if node_id != new]
        learned: dict[str, float] = {}
        in_ring: dict[str, float] = {}

        first_gossip: Any = cluster.nodes["n1"].gossip
        ticks: list[tuple[float, int]] = []  # (when n1's round count was seen to change)

        def probe() -> None:
            if not ticks or ticks[-1][1] != first_gossip.rounds:
                ticks.append((cluster.now, first_gossip.rounds))
            for node_id in old:
                view = cluster.nodes[node_id].gossip.view
                if node_id not in learned and new in view.members:
                    learned[node_id] = cluster.now
                if node_id not in in_ring and view.ring is not None and any(
                        m.id == new for m in view.ring.members):
                    in_ring[node_id] = cluster.now
            if len(in_ring) < len(old):
                cluster.schedule(PROBE_EVERY, probe)

        probe()
        cluster.run_until(lambda: len(in_ring) == len(old), within)
        result.learned = len(learned)
        if len(learned) == len(old):
            result.rounds = (max(learned.values()) - joined_at) / GOSSIP_EVERY
            result.spread_rounds = (max(learned.values()) - min(learned.values())
                                    ) / GOSSIP_EVERY
        if len(in_ring) == len(old):
            result.ring_rounds = (max(in_ring.values()) - joined_at) / GOSSIP_EVERY
        if len(ticks) > 2:  # the first change seen may have come between two probes
            (t0, r0), (t1, r1) = ticks[1], ticks[-1]
            result.interval = (t1 - t0) / (r1 - r0)
        view = first_gossip.view
        state = view.to_state()
        result.view_bytes = len(view.encode())
        result.member_bytes = len(msgpack.packb(state["members"], use_bin_type=True))
        result.ring_bytes = len(msgpack.packb(state["ring"], use_bin_type=True))
        announced = view.announcement()
        if announced is not None:
            result.announce_bytes = len(msgpack.packb(RingState.wire(*announced),
                                                      use_bin_type=True))
        if view.ring is not None:
            result.after = balance(view.ring.planned)
            result.moves = len(view.ring.pending())
        result.simulated = cluster.now
    result.wall = time.monotonic() - started
    return result


def transfer(nodes: int, seed: int, keys: int = 200, within: float = 300.0,
             answer_pings: bool = False) -> Transfer:
    """Measure 4 for one seed: ``keys`` keys written, then a join on every stage (with
    ``answer_pings``, the simulator answers pings, as in the membership-only runs)."""
    started = time.monotonic()
    result = Transfer(nodes, seed, partitions_for(nodes), keys, answer_pings)
    with _quiet(), tempfile.TemporaryDirectory(prefix="seda-scale-") as tmp:
        cluster = formed(Path(tmp), nodes, seed, STAGE_NAMES, answer_pings=answer_pings)
        if not cluster.run_until(cluster.converged, 30.0):
            result.problems.append("the agreed cluster did not converge in 30 s")
        ids = [cluster.request(f"n{1 + k % nodes}", {"op": "put", "key": b"key%d" % k,
                                                     "value": b"v%d" % k})
               for k in range(keys)]
        cluster.run_until(lambda: all(rid in cluster.replies for rid in ids), 30.0)
        acked = sum(bool(cluster.replies.get(rid, {}).get("ok")) for rid in ids)
        if acked != keys:
            result.problems.append(f"{keys - acked} of {keys} puts not acknowledged")
        new, joined_at = join(cluster)
        seen: dict[str, float] = {}

        def probe() -> None:
            view = cluster.nodes[new].gossip.view
            if "moved" not in seen and view.ring is not None and len(view.ring.members) > 1 \
                    and new in view.ring.planned and view.effective_owners() == view.ring.planned:
                seen["moved"] = cluster.now  # every move of the join's plan handed over
            ring = cluster.ring(new)
            if ring is not None and new in ring.owners and cluster.converged():
                seen["done"] = cluster.now
            else:
                cluster.schedule(PROBE_EVERY, probe)

        probe()
        if cluster.run_until(lambda: "done" in seen, within):
            result.seconds = seen["done"] - joined_at
            result.moved = seen.get("moved", math.nan) - joined_at
        else:
            result.problems.append(f"no convergence within {within:.0f} s of the join")
        gauges = [node.gossip.gauges() for node in cluster.nodes.values()]
        result.transfers = sum(g["transfers_done"] for g in gauges)
        result.transfer_bytes = sum(g["transfer_bytes"] for g in gauges)
        result.held = len(cluster.nodes[new].stored())
    result.wall = time.monotonic() - started
    return result


class _quiet:
    """The nodes' own logging held to errors while a run goes (joins log warnings)."""

    def __enter__(self) -> None:
        self.log = logging.getLogger("seda_dynamo")
        self.level = self.log.level
        self.log.setLevel(logging.ERROR)

    def __exit__(self, *_: object) -> None:
        self.log.setLevel(self.level)


def main(argv: list[str] | None = None) -> int:
    from seda_dynamo.sim import scalereport

    parser = argparse.ArgumentParser(prog="python -m seda_dynamo.sim.scale",
                                     description="membership at scale, simulated")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="cluster sizes for the membership-only runs")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per size")
    parser.add_argument("--large-seeds", type=int, default=1,
                        help="seeds per size over 200 nodes (one is ~15 min at 500)")
    parser.add_argument("--transfer-sizes", default="50",
                        help="sizes for the join-with-transfers run (every stage; over "
                        "50 nodes the simulator answers pings)")
    parser.add_argument("--keys", type=int, default=200, help="keys written before it")
    parser.add_argument("--report", default=str(Path(__file__).with_name("report.md")),
                        help="the report whose Scale section is rewritten ('' : none)")
    parser.add_argument("--results", default="",
                        help="also save the runs' numbers here (JSON)")
    parser.add_argument("--render", default="",
                        help="run nothing: write the report from saved results")
    args = parser.parse_args(argv)
    spreads: list[Spread] = []
    transfers: list[Transfer] = []
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        spreads = [Spread(**{**r, "before": tuple(r["before"]), "after": tuple(r["after"])})
                   for r in saved["spreads"]]
        transfers = [Transfer(**r) for r in saved["transfers"]]
    for nodes in [] if args.render else [int(s) for s in args.sizes.split(",") if s]:
        for seed in range(args.seeds if nodes <= 200 else args.large_seeds):
            spreads.append(run := spread(nodes, seed))
            print(scalereport.spread_line(run), flush=True)
    for nodes in [] if args.render else [int(s) for s in args.transfer_sizes.split(",")
                                          if s]:
        # Real pings up to 50 nodes; beyond, the simulator answers them (n^2 a second).
        transfers.append(run2 := transfer(nodes, 0, args.keys, answer_pings=nodes > 50))
        print(scalereport.transfer_line(run2), flush=True)
    if args.results:
        Path(args.results).write_text(json.dumps(
            {"spreads": [asdict(r) for r in spreads],
             "transfers": [asdict(t) for t in transfers]}, indent=1))
    print(scalereport.tables(spreads, transfers))
    if args.report:
        scalereport.write(Path(args.report), spreads, transfers)
        print(f"wrote the Scale section of {args.report} and its plot")
    bad = [s for s in spreads if s.learned != s.nodes] + [t for t in transfers
                                                           if t.problems]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
