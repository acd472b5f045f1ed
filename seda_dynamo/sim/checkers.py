"""What must hold at the end of every simulated run, whatever the seed threw at it.

- every request got exactly one reply (none only when refused, or when the network
  stage it was sent to crashed before answering);
- no acknowledged write is lost and no phantom appears (a set-full check over sibling
  sets, paper section 4.4): a value acknowledged for a key is among the values read back
  at the end unless a write or delete whose context was read with it covered it; every
  value read, during the run or at the end, is one some client wrote; and nothing an
  acknowledged write or delete covered comes back (docs/protocol.md, semantics 3 and 4);
- no dot issued twice: one (key, actor, counter) names one value on every node;
- nothing left in flight once faults stop and the cluster is quiet;
- the ring (paper 4.2): every partition owned by a member, no node owning more than
  ceil(Q / members) + 1 partitions, and the members are the nodes that have not left
  (a node that left keeps running, owns nothing and is asked nothing).

Each check returns its anomalies as text (none: it held). Reads only.
"""

from __future__ import annotations

import math
from typing import Any

from seda_dynamo import causality
from seda_dynamo.sim.cluster import Cluster
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


def merged(cluster: Cluster, key: bytes) -> list[bytes]:
    """The values of ``key`` once every node's copy is merged (what replicas converge to)."""
    raw = [node.engine.get(key) for _, node in sorted(cluster.nodes.items())]
    clocks = [causality.decode(data) for data in raw if data is not None]
    return [v for v in causality.values(causality.sync_all(clocks)) if v is not None]
