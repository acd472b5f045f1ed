"""What must hold at the end of every simulated run, whatever the seed threw at it.

- every request got exactly one reply (none only when refused, or when the network
  stage it was sent to crashed before answering);
- no acknowledged write is lost and no phantom appears (a set-full check over sibling
  sets, paper section 4.4): a value acknowledged for a key is among the values read back
  at the end unless a write or delete whose context was read with it covered it; every
  value read, during the run or at the end, is one some client wrote; and nothing an
  acknowledged write or delete covered comes back (docs/protocol.md, semantics 3 and 4);
- no dot issued twice: one (key, actor, counter) names one value on every node;
- no write stamped twice: every value written is unique, so one names one dot on every
  node (two would be one client write applied twice, which a read-modify-write that
  saw one of them cannot cover: ``stamped_once``);
- nothing left in flight once faults stop and the cluster is quiet;
- the ring (paper 4.2): every partition owned by a member, no node owning more than
  ceil(Q / members) + 1 partitions, and the members are the nodes that have not left
  (a node that left keeps running, owns nothing and is asked nothing);
- nothing stranded: a copy a node holds outside the key's preference list (a joiner's
  own data, an old owner's, a fallback's) is covered by what the key's replicas hold
  (``seda_dynamo.strays`` hands it home before it forgets it);
- no write fails while W nodes of its extended preference list are reachable (paper
  4.6, sloppy quorum: ``failed_writes``, which says what "reachable" means here);
- replicas converge within a bound once faults stop and the ring converged (paper
  4.7: ``disagreeing`` and ``convergence_bound``, whose comments argue the bound).

Each check returns its anomalies as text (none: it held). Reads only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from seda_dynamo import causality
from seda_dynamo.antientropy import QUESTION_DEADLINE
from seda_dynamo.failure import PING_EVERY
from seda_dynamo.ring import partition_of
from seda_dynamo.sim.cluster import Cluster, Reach
from seda_dynamo.sim.workload import Workload


def replies(cluster: Cluster, workload: Workload) -> list[str]:
    found = []
    for op in workload.ops.values():
        count = cluster.reply_counts.get(op.rid, 0)
        if count > 1:
            found.append(f"request {op.rid} ({op.op} at {op.node}) got {count} replies")
        elif count == 0 and not workload.done(op):
            found.append(f"request {op.rid} ({op.op} {op.key!r} at {op.node}) got no reply")
    return found


def lost_and_phantom(workload: Workload, final: dict[bytes, list[bytes] | None]) -> list[str]:
    """``final``: the values read back at the end for each key (None: the read failed)."""
    found = []
    puts = [op for op in workload.ops.values() if op.op == "put"]
    written = {op.value for op in puts}
    covered = {(op.key, value) for op in workload.ops.values() for value in op.supersedes
               if op.op in ("put", "delete") and op.rid not in workload.cluster.refused}
    for op in workload.ops.values():
        if op.op == "get" and op.acked:
            found += [f"phantom {value!r} read for {op.key!r} (request {op.rid})"
                      for value in op.reply.get("values", ()) if value not in written]  # type: ignore[union-attr]
    for key, values in final.items():
        if values is None:
            found.append(f"the final read of {key!r} failed")
            continue
        found += [f"phantom {value!r} at the end for {key!r}" for value in values
                  if value not in written]
        for op in workload.ops.values():
            if op.key == key and op.acked and op.op != "get":
                found += [f"{value!r} of {key!r} covered by acknowledged {op.op} {op.rid} "
                          f"is back at the end" for value in op.supersedes if value in values]
        for op in puts:
            if op.key == key and op.acked and op.value not in values and \
                    (key, op.value) not in covered:
                found.append(f"acknowledged write {op.value!r} of {key!r} (request {op.rid} "
                             f"at {op.node}) lost: the end reads {values!r}")
    return found


def dots(cluster: Cluster) -> list[str]:
    found = []
    seen: dict[tuple[bytes, str, int], tuple[Any, str]] = {}
    for node_id, node in sorted(cluster.nodes.items()):
        for key, clock in node.stored().items():
            for actor, counter, values in clock.entries:
                for i, value in enumerate(values):
                    dot = (key, actor, counter - i)
                    first = seen.setdefault(dot, (value, node_id))
                    if first[0] != value:
                        found.append(f"dot {dot!r} names {first[0]!r} on {first[1]} and "
                                     f"{value!r} on {node_id}")
    return found


def stamped_once(cluster: Cluster) -> list[str]:
    """Each value under one dot, in every stamp's answer of the run (``Cluster.stamps``:
    a dot a later write covered is seen there too) and on every node (tombstones aside)."""
    seen = {value: set(dots) for value, dots in cluster.stamps.items()}
    for _, node in sorted(cluster.nodes.items()):
        for clock in node.stored().values():
            for actor, counter, values in clock.entries:
                for i, value in enumerate(values):
                    if value is not None:
                        seen.setdefault(value, set()).add((actor, counter - i))
    return [f"{value!r} stamped twice: {sorted(found)}"
            for value, found in sorted(seen.items()) if len(found) > 1]


def outstanding(cluster: Cluster) -> dict[str, set[Any]]:
    """What each node waits on now, by where it is held: ids of requests and calls, keys
    with versioning work, engine requests."""
    held: dict[str, set[Any]] = {}
    for node_id, node in sorted(cluster.nodes.items()):
        s: Any = node.stages
        if len(s) < len(node.generation):
            continue
        held[f"{node_id} network.waiting"] = set(s["network"].waiting.pending)
        held[f"{node_id} network.calls"] = set(s["network"].calls.calls)
        held[f"{node_id} coordination.requests"] = set(s["coordination"].requests)
        held[f"{node_id} versioning.inflight"] = set(s["versioning"].keys.inflight)
        held[f"{node_id} versioning.queued"] = {k for k, v in s["versioning"].keys.queued.items()
                                               if v}
        held[f"{node_id} versioning.pending"] = set(s["versioning"].pending)
    return held


def in_flight(before: dict[str, set[Any]], after: dict[str, set[Any]]) -> list[str]:
    """What was held when the quiet time began and still is at its end (longer than any
    deadline): never answered, never timed out."""
    return [f"{where}: {sorted(map(repr, before[where] & ids))[:3]} still held after "
            f"quiet time" for where, ids in after.items() if before.get(where, set()) & ids]


def ring(cluster: Cluster) -> list[str]:
    found = []
    for node_id in cluster.members():
        r = cluster.ring(node_id)
        if r is None:
            found.append(f"{node_id} has no ring")
            continue
        members = {m.id for m in r.members}
        most = math.ceil(r.partitions / len(members)) + 1
        owned: dict[str, int] = {}
        for p, owner in enumerate(r.owners):
            if owner not in members:
                found.append(f"{node_id}: partition {p} owned by {owner!r}, no member")
            owned[owner] = owned.get(owner, 0) + 1
        found += [f"{node_id}: {owner} owns {n} partitions, over {most}"
                  for owner, n in sorted(owned.items()) if n > most]
        if members != set(cluster.members()):
            found.append(f"{node_id}: members {sorted(members)}")
    return found


def stranded(cluster: Cluster) -> list[str]:
    found = []
    for node_id, node in sorted(cluster.nodes.items()):
        r = cluster.ring(node_id)
        if r is None:
            continue
        n = min(cluster.config["n"], len(r.members))
        for key, raw in node.engine.fold(0, 1 << 128):
            replicas = r.preference_list(partition_of(key, r.partitions), n)
            if node_id in replicas:
                continue
            held = [cluster.nodes[x].engine.get(key) for x in replicas if x in cluster.nodes]
            seen = causality.join(causality.sync_all(
                causality.decode(h) for h in held if h is not None))
            found += [f"{node_id} holds {value!r} of {key!r} ({actor}:{counter - i}) outside "
                      f"its preference list, and its replicas {replicas} do not"
                      for actor, counter, values in causality.decode(raw).entries
                      for i, value in enumerate(values) if seen.get(actor, 0) < counter - i]
    return found


def merged(cluster: Cluster, key: bytes) -> list[bytes]:
    """The values of ``key`` once every node's copy is merged (what replicas converge to)."""
    raw = [node.engine.get(key) for _, node in sorted(cluster.nodes.items())]
    clocks = [causality.decode(data) for data in raw if data is not None]
    return [v for v in causality.values(causality.sync_all(clocks)) if v is not None]


#: Seconds a write's reachable nodes must have been so before it was sent. A coordinator
#: routes around the nodes its failure detector holds down; one that comes back (a
#: restart, a healed partition) is seen up after a ping (``PING_EVERY``) and its answer,
#: and gossip then tells coordination. Four ping periods cover that with room to spare.
STEADY = 4 * PING_EVERY
#: The failures this promise is about (docs/protocol.md): not ``overloaded`` (admission
#: control), ``bad_request`` or ``internal``, which are no quorum's doing.
QUORUM_ERRORS = ("unavailable", "timeout")


def reachable(entry: Reach, coordinator: str, nodes: Iterable[str]) -> set[str]:
    """Of ``nodes``, those that in ``entry`` have every stage up and exchange messages
    with ``coordinator`` and with each other both ways, on links that lose nothing
    (``coordinator`` included when it qualifies; nothing when it is not up)."""
    blocked = entry.cut | entry.lossy

    def ok(a: str, b: str) -> bool:
        return a == b or ((a, b) not in blocked and (b, a) not in blocked)
    if coordinator not in entry.up:
        return set()
    near = {x for x in nodes if x in entry.up and ok(coordinator, x)} | {coordinator}
    return {x for x in near if all(ok(x, y) for y in near)}


def failed_writes(cluster: Cluster, workload: Workload, w: int,
                  founders: Iterable[str]) -> list[str]:
    """Puts and deletes that failed ``unavailable`` or ``timeout`` although W nodes of the
    key's extended preference list were reachable from their coordinator (the node the
    client sent them to) for their whole life (paper 4.6: a write goes to the first N
    healthy nodes of the walk, and a target that fails or stays silent is replaced by the
    next one, within the request's deadline).

    Fair by construction, so that no honest failure is flagged: "reachable" is decided
    from what the simulator did, ``cluster.reach``, and a node counts only if, at every
    moment from ``STEADY`` seconds before the request was sent until its reply, it had
    every stage up and its links with the coordinator and with every other counted node
    were neither cut (either way) nor lossy. A lossy link is not unreachable, but a
    request can fail on it honestly (every retry lost), so any loss on a link involved
    takes the request out of judgement: in practice only writes on a calm network are
    judged, with nodes crashed or partitioned away (run.py's calm outage). The walk is
    the coordinator's ring's owners; only ``founders`` (the nodes that formed the
    cluster) count, since a node that joined later owns nothing in the walk until its
    transfers end, which the simulator does not record. A write whose coordinator is no
    replica of the key is forwarded to one replica and sent to another only if the send
    failed (a crash), never after silence, which may hide a stamp (one write, one dot):
    one whose coordinator had a cut or lossy link with a node of the walk is out of
    judgement.
    """
    founders = set(founders)
    found = []
    for op in workload.ops.values():
        reply = op.reply
        if op.op not in ("put", "delete") or reply is None or reply.get("ok") or \
                reply.get("error") not in QUORUM_ERRORS:
            continue
        ring = cluster.ring(op.node)
        if ring is None:
            continue
        walk = set(ring.owners) & founders
        start = cluster.sent_at[op.rid] - STEADY
        end = cluster.replied_at[op.rid]
        window = [e for e in cluster.reach if start < e.at <= end]
        window += [e for e in cluster.reach if e.at <= start][-1:]
        chosen = ring.preference_list(partition_of(op.key, ring.partitions),
                                      cluster.config["n"])
        # Forwarded, maybe into a partition: it times out rather than be stamped twice.
        if op.node not in chosen and any(
                {(op.node, x), (x, op.node)} & (e.cut | e.lossy) for e in window for x in walk):
            continue
        counted: set[str] | None = None
        for entry in window:
            now = reachable(entry, op.node, walk)
            counted = now if counted is None else counted & now
        if counted and op.node in counted and len(counted & walk) >= w:
            found.append(f"{op.op} {op.rid} of {op.key!r} at {op.node} failed "
                         f"{reply.get('error')} ({reply.get('message')!r}) though "
                         f"{sorted(counted & walk)} were reachable from "
                         f"{cluster.sent_at[op.rid]:.3f} s to {end:.3f} s")
    return found


#: The convergence bound, in anti-entropy intervals (``anti_entropy_every``), counted
#: from the moment the ring has converged once faults stopped (every node up and seen up
#: by every other, no transfer running, no client request open). From then on only hint
#: delivery and anti-entropy change a replica. Each node starts a sweep of the
#: partitions it replicates once per interval and, partition by partition, exchanges
#: trees with one other live replica and repairs both ways (antientropy.py). A sweep
#: under way at that moment may have passed a partition already: the first interval
#: can be lost. In each further interval every replica of a partition exchanges with
#: another, so with N = 3 the exchanges link all three replicas, and at least the last
#: pair to exchange holds every version; the third replica gets them in the next
#: interval. Hence three: one that may be lost, one to merge, one to spread. A sweep
#: takes a few simulated milliseconds per partition, and hints wait at most one scan
#: (``hintedhandoff.HINTS_EVERY``, 1 s) to be delivered: ``SLACK`` covers both.
CONVERGENCE_INTERVALS = 3
SLACK = 1.0


def convergence_bound(cluster: Cluster, faults_ended: float) -> float:
    """Simulated seconds from now within which every replica must agree: the intervals
    above and ``SLACK``, plus what is left of a tree question that a fault may have lost
    (one asked before ``faults_ended`` and still waiting). Such a question holds its
    node's sweep until it is asked again, ``QUESTION_DEADLINE`` after it was asked
    (antientropy.py; a question lost with a crashed persistence stage is asked again at
    its restart). Before, a lost question held the sweep until the whole exchange was
    abandoned, ``EXCHANGE_DEADLINE`` (10 s) after it started, and this term allowed for
    that (up to 7 s past the ring's convergence on seed 20 of 3 nodes)."""
    every = cluster.config["anti_entropy_every"]
    stalled = 0.0
    for _, node in sorted(cluster.nodes.items()):
        gossip: Any = node.stages.get("gossip")
        exchange = None if gossip is None else gossip.exchanges.exchange
        if exchange is not None and exchange.asked < faults_ended:
            stalled = max(stalled, exchange.asked + QUESTION_DEADLINE - cluster.now)
    return CONVERGENCE_INTERVALS * every + SLACK + stalled


def disagreeing(cluster: Cluster) -> list[bytes]:
    """Keys whose replicas (the preference list of n1's ring; every ring is the same
    once converged) do not all hold the same versions (the same DVVSet, or nothing)."""
    ring = cluster.ring(min(cluster.nodes))
    if ring is None:
        return []
    n = min(cluster.config["n"], len(ring.members))
    keys = sorted({key for node in cluster.nodes.values() for key, _ in
                   node.engine.fold(0, 1 << 128)})
    found = []
    for key in keys:
        replicas = ring.preference_list(partition_of(key, ring.partitions), n)
        held = [None if data is None else causality.decode(data) for data in
                (cluster.nodes[x].engine.get(key) for x in replicas if x in cluster.nodes)]
        if any(state != held[0] for state in held):
            found.append(key)
    return found
