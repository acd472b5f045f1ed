"""A fuzzer's target inside the simulator (``seda_dynamo.sim``): node n1 of a simulated
three-node cluster, every node its real stage handlers, so that what the fuzz makes n1
send (answers to fuzzed requests, calls to replicas) crosses real node boundaries, and
forged answers race the real ones. Dynamo paper sections 4.1 (the client interface),
4.5 (quorums across replicas) and 4.8 (the members talk to each other).

It has ``target.HandlerNode``'s methods and what ``test_handlers.fuzz`` judges:
``replies`` by message number, ``errors()`` (each stage's ``errors`` on every node, and
each line logged at ERROR or worse) and ``tables()`` (what a request holds open,
summed over the cluster), and ``per_peer()``: the tables of network and coordination
kept by peer.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

from strategies import MAX_TIMEOUT_MS, packed
from target import resolve

from seda_dynamo import address
from seda_dynamo.outstanding import CALL_TTL, GRACE
from seda_dynamo.sim.cluster import Cluster
from seda_dynamo.sim.fuzzing import client_frames, copy_cluster, peer_message
from seda_dynamo.sim.run import Errors

FUZZED = "n1"  # the node the fuzz talks to
SEED = 13  # of the one cluster formed per process; each target runs on a copy of it
STEP = 0.001  # simulated seconds between two fuzzed messages
#: The longest anything may stay open: a request's longest timeout and the network
#: stage's grace, then a call's time to live and its grace.
LONGEST = MAX_TIMEOUT_MS / 1000 + GRACE + CALL_TTL + GRACE
#: After the last entry is gone, this much longer: a second reply would come by then.
AFTER = 5.0
#: Entries one request (or fuzzed peer event) may hold at once across the cluster: its
#: waiting entry, its coordinator's request, its calls to the two other replicas and
#: its read repairs to them, and its key in flight on each of the three replicas.
PER_REQUEST = 10

_formed: list[Cluster] = []


def formed() -> Cluster:
    """The cluster every target copies: three nodes, converged (formed once)."""
    if not _formed:
        root = Path(tempfile.mkdtemp(prefix="seda-fuzz-sim-"))
        atexit.register(shutil.rmtree, root, True)
        cluster = Cluster(root, 3, seed=SEED)
        assert cluster.run_until(cluster.converged, 60.0), "the cluster did not form"
        _formed.append(cluster)
    return _formed[0]


class SimNode:
    """Node n1 of a copy of ``formed()``. Client messages enter its client port with
    their number as the connection's identity. A peer event's reply address, when it is
    a valid one, is taken as one of three senders chosen by its hash: node n2, node n3,
    or the node of no cluster it names; what n1 answers goes there over the simulated network."""

    PER_REQUEST = PER_REQUEST
    #: Calls gossip's duties may hold open to one peer at once (a ping, a gossip round,
    #: an anti-entropy exchange's question, a hint batch, a transfer's, a reap check).
    BACKGROUND = 6

    def __init__(self, errors: Errors) -> None:
        self.cluster = copy_cluster(formed())
        self.logged = errors
        self.logged_before = len(errors.messages)
        self.node = self.cluster.nodes[FUZZED]
        self.others = [n.config.peer for n in self.cluster.nodes.values() if n.id != FUZZED]
        self.members = {name for n in self.cluster.nodes.values()
                        for name in (n.id, n.config.peer)}
        self.sent = 0

    @property
    def now(self) -> float:
        return self.cluster.now

    @property
    def replies(self) -> dict[int, list[dict]]:
        return {int(identity): got for identity, got in self.cluster.frame_replies.items()}

    def client(self, frames: list[bytes]) -> int:
        self.sent += 1
        client_frames(self.cluster, FUZZED, [b"%d" % self.sent, *frames])
        self.cluster.run(STEP)
        return self.sent

    def sender(self, who: Any) -> Any:
        """Who a fuzzed reply address stands for (a bad one stays as it is)."""
        if not address.valid(who):
            return who
        return [*self.others, who][zlib.crc32(who.encode()) % 3]

    def peer(self, message: list[Any] | bytes) -> None:
        identity = b"fuzz"
        if not isinstance(message, bytes):
            events = resolve(message, list(self.node.network.calls))
            if isinstance(events, list):
                events = [[e[0], self.sender(e[1]), *e[2:]]
                          if isinstance(e, list) and len(e) == 4 and e[0] == "req" else e
                          for e in events]
                who = next((e[1] for e in events if isinstance(e, list) and len(e) == 4
                            and e[0] == "req" and e[1] in self.others), None)
                identity = who.encode() if who else identity
            message = packed(events)
        peer_message(self.cluster, FUZZED, message, identity)
        self.cluster.run(STEP)

    def tick(self, now: float) -> None:
        self.cluster.run(max(0.0, now - self.now))

    def quiet(self) -> bool:
        return len(self.cluster.frame_replies) >= self.sent and \
            not any(self.tables().values())

    def settle(self) -> dict[int, list[dict]]:
        """Run until every message has its reply and nothing is open (or until the
        longest anything may stay open has passed), then a little longer."""
        self.cluster.run_until(self.quiet, LONGEST)
        self.cluster.run(AFTER)
        return self.replies

    def ask(self, node_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A well-formed request to any node, as a client sends it; its reply."""
        return self.cluster.call(node_id, body, within=10.0)

    def errors(self) -> dict[str, int]:
        """The stages that counted errors (``n2.network``: node n2's network stage), and
        each line the nodes logged at ERROR or worse: empty while all is well."""
        counts = {f"{node.id}.{name}": stage.errors for node in self.cluster.nodes.values()
                  for name, stage in node.stages.items() if stage.errors}
        logged = self.logged.messages[self.logged_before:]
        return {**counts, **{f"logged {line}": 1 for line in logged}}

    def tables(self) -> dict[str, int]:
        """What requests hold open, summed over the cluster (not the calls gossip's
        duties make all the time: ``per_peer`` bounds those), and the calls of any
        stage kept past their deadline."""
        nodes = list(self.cluster.nodes.values())
        return {
            "waiting": sum(len(n.network.waiting) for n in nodes),
            "calls": sum(call.stage != "gossip" for n in nodes
                         for call in n.network.calls.values()),
            "requests": sum(len(n.coordination.requests) for n in nodes),
            "keys_in_flight": sum(len(n.stages["versioning"].inflight) for n in nodes),
            "engine_requests": sum(len(n.stages["versioning"].pending) for n in nodes),
            # any call, gossip's too, kept a second past its deadline: never forgotten
            "overdue_calls": sum(call.deadline + 1.0 < self.now for n in nodes
                                 for call in n.network.calls.values()),
        }

    def per_peer(self) -> dict[str, dict[str, int]]:
        """The tables network and coordination keep by peer, on every node: the calls
        open to each peer (gossip's too), the nodes suspected, the peers known."""
        found: dict[str, dict[str, int]] = {}
        for node in self.cluster.nodes.values():
            calls = found.setdefault(f"{node.id} calls", {})
            for call in node.network.calls.values():
                calls[call.peer] = calls.get(call.peer, 0) + 1
            placement = node.coordination.placement
            found[f"{node.id} suspects"] = dict.fromkeys(placement.suspects, 1)
            found[f"{node.id} nodes by peer"] = dict.fromkeys(placement.nodes_by_peer, 1)
        return found
