"""Failures within one request: how long each target has, and what a spare is asked in
the place of a target that failed.

Dynamo paper section 4.6 (handling temporary failures: sloppy quorum, hinted handoff). A
target the network stage cannot reach, or a replica that has not answered within its
attempt's share of the deadline (``ATTEMPT_SHARE`` of the request's timeout), is
replaced by the next healthy node of the extended preference list: a read asks the
spare too, a write's stand-in gets the stamped version with a hint for the owner it
replaces. A forwarded write goes to the next node, or is stamped here once every node
before this one was unreachable, only when the send certainly did not happen: a node a
write was forwarded to stamps it, so one silent past ``FORWARD_SHARE`` is suspected but
not replaced (a second node would stamp the write again). The request still ends by its
own deadline. Pure, no IO: the coordination stage sends.
"""

from __future__ import annotations

from typing import Any

from seda_dynamo.inflight import Pending
from seda_dynamo.routing import Target, stand_in

#: How much longer than the coordinator it forwards to a forwarding node waits.
FORWARD_SLACK = 0.25
#: Share of a request's timeout a replica has to answer before a spare is asked too.
ATTEMPT_SHARE = 0.25
#: ... and before a node a write was forwarded to is suspected (never replaced: it may
#: have stamped the write; it may need a replacement round of its own).
FORWARD_SHARE = 0.5

#: What a spare is asked (``replace``).
STAMP_HERE, FORWARD, READ, PUT, NOTHING = "stamp_here", "forward", "read", "put", "nothing"


def forward_request(pending: Pending, now: float) -> tuple[list[Any], float] | None:
    """A forwarded write's ``fwd`` request with what is left of its deadline, and how
    long the node has before it is slow (None: no time is left; the request's own
    deadline answers it)."""
    assert pending.forward is not None
    left = pending.deadline - FORWARD_SLACK - now
    if left <= 0:
        return None
    op, key, value, context, r, w = pending.forward
    return (["fwd", op, key, value, context, r, w, max(1, int(left * 1000))],
            min(pending.attempt, left))


def put_request(key: bytes, clock: bytes, target: Target) -> list[Any]:
    """A replica's ``rput`` of the version stamped for ``key`` (with its hint, if any)."""
    return ["rput", key, clock, target.hint]


def replace(pending: Pending, node: str, replaced: str, me: str) -> tuple[str, list[Any]]:
    """What spare ``node`` is asked in place of ``replaced`` (for ``PUT``, with the
    ``rput`` request), the spare added to the request's targets, a write's stand-in with
    its hint; unless this node takes the forwarded write (``STAMP_HERE``: the request
    moves to a new one). For a forwarded write only a target the write certainly never
    reached is replaced (``InFlight.track``'s ``forward``), so neither ``FORWARD`` nor
    ``STAMP_HERE`` stamps a write a second time."""
    if pending.forward is not None:
        if node == me:  # every replica before us failed: we take the write
            return STAMP_HERE, []
        pending.targets.append(Target(node))
        return FORWARD, []
    old = next((t for t in pending.targets if t.node == replaced), Target(replaced))
    target = stand_in(old, node)
    pending.targets.append(target)
    if pending.op == "get":
        return READ, []
    if pending.clock is None:  # not stamped yet: the stamp's answer asks every target
        return NOTHING, []
    return PUT, put_request(pending.key, pending.clock, target)


def taken_over(pending: Pending) -> tuple[list[Any], float, float]:
    """A forwarded write this node takes over: ``[op, key, value, context, r, w]``, its
    deadline and its request's timeout."""
    assert pending.forward is not None
    return pending.forward, pending.deadline - FORWARD_SLACK, pending.attempt / FORWARD_SHARE
