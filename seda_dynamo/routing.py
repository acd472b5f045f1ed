"""Sloppy quorum routing: which nodes a request goes to, and the hints they carry.

Dynamo paper sections 4.5 and 4.6: a request goes to the first N *healthy* nodes of the
key's extended preference list. Healthy primaries are asked as themselves; each primary
that is down is replaced, in order, by the next healthy node beyond the first N, which
receives the write with a hint naming the primary it stands in for (hinted handoff).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from seda_dynamo.ring import Ring


@dataclass(frozen=True, slots=True)
class Target:
    node: str
    hint: str | None = None  # the down primary this fallback stands in for


def targets(ring: Ring, partition: int, n: int, down: Collection[str]) -> list[Target]:
    """The first ``n`` healthy nodes for ``partition``, fallbacks carrying hints."""
    walk = ring.preference_list(partition, ring.partitions)  # every distinct node, clockwise
    primaries, beyond = walk[:n], walk[n:]
    missing = [node for node in primaries if node in down]
    chosen = [Target(node) for node in primaries if node not in down]
    fallbacks = (node for node in beyond if node not in down)
    for primary in missing:
        node = next(fallbacks, None)
        if node is None:
            break
        chosen.append(Target(node, primary))
    return chosen


def coordinator(ring: Ring, partition: int, n: int, down: Collection[str],
                me: str) -> str | None:
    """Who stamps a write: this node if it is a chosen replica, else the first healthy one."""
    chosen = targets(ring, partition, n, down)
    if any(t.node == me for t in chosen):
        return me
    return chosen[0].node if chosen else None
