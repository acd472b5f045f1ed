"""Sloppy quorum routing: which nodes a request goes to, and the hints they carry.

Dynamo paper sections 4.5 and 4.6: a request goes to the first N *healthy* nodes of the
key's extended preference list. Healthy primaries are asked as themselves; each primary
that is down is replaced, in order, by the next healthy node beyond the first N, which
receives the write with a hint naming the primary it stands in for (hinted handoff).
The healthy nodes beyond those N are the request's spares: when a chosen node proves
unreachable or does not answer in time, the next spare takes its place, with the hint of
the node it replaces (``stand_in``).

Clients route too (paper section 6.4, client-driven coordination): from the ring as the
``ring`` request returns it (docs/protocol.md), ``preference_list_of`` finds a key's
preference list and ``first_up`` / ``owner_table`` the first node of it that is up. The
client and the load generator both route with these, so they send a key where the
coordinators would (``Ring.preference_list`` of the key's partition).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from seda_dynamo.ring import Ring, partition_of


@dataclass(frozen=True, slots=True)
class Target:
    node: str
    hint: str | None = None  # the down primary this fallback stands in for


@dataclass(frozen=True, slots=True)
class Route:
    """The targets of one request and the healthy nodes that may replace them."""

    chosen: tuple[Target, ...]
    spare: tuple[str, ...]  # the rest of the extended preference list, healthy, in order


def route(ring: Ring, partition: int, n: int, down: Collection[str],
          suspect: Collection[str] = ()) -> Route:
    """The first ``n`` healthy nodes for ``partition`` (fallbacks carrying hints), then
    every other healthy node of the extended preference list, in order.

    ``suspect``: nodes that just failed a request but that gossip has not declared down.
    They are asked last, never dropped: a suspected primary still counts as itself when
    too few other nodes are healthy, and suspected nodes end the spares. So a loaded
    cluster whose nodes all answered one request late is slower for a moment, never
    unavailable."""
    walk = ring.preference_list(partition, ring.partitions)  # every distinct node, clockwise
    primaries = walk[:n]
    healthy = [node for node in walk if node not in down and node not in suspect]
    doubtful = [node for node in walk if node not in down and node in suspect]
    chosen = [Target(node) for node in primaries if node in healthy]
    missing = [node for node in primaries if node not in healthy]
    fallbacks = [node for node in healthy if node not in primaries]
    for primary, node in zip(missing, fallbacks, strict=False):
        chosen.append(Target(node, primary))
    spare = fallbacks[len(missing):]
    unfilled = missing[len(fallbacks):]
    # Last resort: a suspected primary as itself, then suspected others as fallbacks;
    # what is left ends the spares.
    last = [x for x in doubtful if x in unfilled] + [x for x in doubtful if x not in unfilled]
    for node in last:
        if node in unfilled:
            unfilled.remove(node)
            chosen.append(Target(node))
        elif unfilled and node not in primaries:
            chosen.append(Target(node, unfilled.pop(0)))
        else:
            spare.append(node)
    return Route(tuple(chosen), tuple(spare))


def targets(ring: Ring, partition: int, n: int, down: Collection[str]) -> list[Target]:
    """The first ``n`` healthy nodes for ``partition``, fallbacks carrying hints."""
    return list(route(ring, partition, n, down).chosen)


def stand_in(replaced: Target, node: str) -> Target:
    """``node`` takes the place of ``replaced``: it holds the write for the same owner
    (with no hint when it is that owner: a suspected primary asked as a spare)."""
    owner = replaced.hint or replaced.node
    return Target(node, None if owner == node else owner)


def with_me(found: Route, me: str, primaries: list[str], n: int) -> Route:
    """The route of a write this node must stamp although its own view does not choose
    it (a write forwarded to it by a node whose view differs, or one whose replicas all
    failed): it takes the place of the last chosen target, as the fallback for that
    target's owner; with fewer than ``n`` chosen, it stands in for the first primary no
    chosen node covers. Either way the write it stamps carries a hint."""
    if any(t.node == me for t in found.chosen):
        return found
    spare = tuple(x for x in found.spare if x != me)
    if len(found.chosen) >= n and found.chosen:
        *kept, last = found.chosen[: n]
        return Route((stand_in(last, me), *kept), spare)
    covered = {t.node for t in found.chosen} | {t.hint for t in found.chosen}
    owner = next((p for p in primaries if p not in covered and p != me), None)
    return Route((Target(me, owner), *found.chosen), spare)


def coordinator(ring: Ring, partition: int, n: int, down: Collection[str],
                me: str) -> str | None:
    """Who stamps a write: this node if it is a chosen replica, else the first healthy one."""
    chosen = targets(ring, partition, n, down)
    if any(t.node == me for t in chosen):
        return me
    return chosen[0].node if chosen else None


# Client-driven coordination: the ring as the ``ring`` request describes it ----------------
def check_description(described: Mapping[str, Any]) -> tuple[int, list[list[str]]]:
    """``(Q, owners)`` of a ``ring`` reply; ValueError if it cannot be routed by."""
    q, owners = described.get("partitions"), described.get("owners")
    if not isinstance(q, int) or q < 1 or not isinstance(owners, list) or len(owners) != q:
        raise ValueError(f"a malformed ring: partitions={q!r}, "
                         f"{len(owners) if isinstance(owners, list) else owners!r} owners")
    return q, owners


def preference_list_of(key: bytes, described: Mapping[str, Any]) -> list[str]:
    """The preference list of ``key`` (node ids, primaries first) in a ``ring`` reply."""
    q, owners = check_description(described)
    return list(owners[partition_of(key, q)])


def live_clients(described: Mapping[str, Any]) -> dict[str, str]:
    """Node id -> client address of every member the ``ring`` reply lists as up."""
    return {n["id"]: n["client"] for n in described.get("nodes", []) if n.get("status") == "up"}


def first_up(key: bytes, described: Mapping[str, Any],
             clients: Mapping[str, str] | None = None) -> str | None:
    """The client address of the first node of ``key``'s preference list that is up
    (``clients``: ``live_clients(described)``, when the caller keeps it), else None."""
    clients = live_clients(described) if clients is None else clients
    return next((clients[node] for node in preference_list_of(key, described)
                 if node in clients), None)


def owner_table(described: Mapping[str, Any], fallback: str) -> tuple[list[str], list[int]]:
    """``(addresses, table)``: the client addresses requests go to, and for each partition
    the index in ``addresses`` of the first node of its preference list that is up
    (``fallback`` when none is). A key then goes to
    ``addresses[table[partition_of(key, len(table))]]``, with no lookup per request."""
    _, owners = check_description(described)
    clients = live_clients(described)
    addresses: list[str] = []
    index: dict[str, int] = {}
    table = []
    for prefs in owners:
        address = next((clients[node] for node in prefs if node in clients), fallback)
        if address not in index:
            index[address] = len(addresses)
            addresses.append(address)
        table.append(index[address])
    return addresses, table
