"""A coordinator's requests in flight: each one's quorum, targets and deadline, and when
each target it asked counts as slow.

Dynamo paper sections 4.5 (a request is answered once R or W replicas have, or at its
deadline) and 4.6 (a target silent past its attempt's share of the deadline is replaced
by a spare; the request still ends by its own deadline). Pure, no IO: the coordination
stage passes the time in and acts on what falls due.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from seda_dynamo.messages import Call, Get, Update
from seda_dynamo.requests import FAIL_EVENT, OK_EVENT, WAITING, QuorumRequest
from seda_dynamo.routing import Route, Target


@dataclass(slots=True)
class Pending:
    rid: int
    op: str
    key: bytes
    quorum: QuorumRequest
    deadline: float
    targets: list[Target] = field(default_factory=list)
    replied: bool = False  # the client has its answer; a get may still be read-repairing
    started: float = 0.0
    measured: bool = True  # in this node's metrics (not a write another node forwarded)
    attempt: float = 0.0  # seconds each target has before it is slow and a spare is asked
    clock: bytes | None = None  # a write: the version this node stamped, for stand-ins
    forward: list[Any] | None = None  # a forwarded write: [op, key, value, context, r, w]
    why: str = ""  # what failed, when the request was aborted


class InFlight:
    """Requests by coordination id (``cid``; ids never repeat across restarts when
    ``first_cid`` is the process's base, ``ids.py``)."""

    def __init__(self, first_cid: int) -> None:
        self.requests: dict[int, Pending] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.attempts: list[tuple[float, int, str]] = []  # (when slow, cid, node)
        self.next_cid = first_cid
        self.reads: list[tuple[int, bytes]] = []  # this batch's local reads: (cid, key)
        self.read_batches: dict[int, list[int]] = {}  # engine read ref -> its cids

    def new_id(self) -> int:
        self.next_cid += 1
        return self.next_cid

    def track(self, rid: int, op: str, key: bytes, needed: int, found: Route,
              deadline: float, now: float, attempt: float = 0.0,
              forward: list[Any] | None = None) -> tuple[int, Pending]:
        """A new request waiting on ``needed`` of ``found``'s chosen targets, each of
        which has ``attempt`` seconds before it is slow. A ``forward``ed write
        (``[op, key, value, context, r, w]``) is stamped by the node it reaches: a silent
        one is never replaced (the next would stamp it again), only one it never
        reached (``requests.QuorumRequest.replace_slow``)."""
        cid = self.new_id()
        quorum = QuorumRequest(needed, tuple(t.node for t in found.chosen), found.spare,
                               replace_slow=forward is None)
        pending = Pending(rid, op, key, quorum, deadline, list(found.chosen), started=now,
                          attempt=attempt, forward=forward)
        self.requests[cid] = pending
        heapq.heappush(self.deadlines, (deadline, cid))
        return cid, pending

    def read_here(self, cid: int, key: bytes) -> None:
        """Request ``cid`` reads ``key`` from this node's own store."""
        self.reads.append((cid, key))

    def take_reads(self) -> tuple[int, list[bytes]] | None:
        """This batch's local reads as one engine read: its ref and keys (None: none)."""
        if not self.reads:
            return None
        ref = self.new_id()
        self.read_batches[ref] = [cid for cid, _ in self.reads]
        keys = [key for _, key in self.reads]
        self.reads = []
        return ref, keys

    def read_answered(self, ref: Any) -> list[int]:
        """The requests an engine read was for, in the order of its keys (once)."""
        return self.read_batches.pop(ref, [])

    def local_answers(self, ref: Any, found: list[bytes | None] | None,
                      error: str | None) -> Iterator[tuple[int, str, Any]]:
        """An engine read's answer as ``(cid, quorum event, what it carries)`` for each
        request it was for that still waits (found None: the read failed, for all)."""
        for i, cid in enumerate(self.read_answered(ref)):
            if cid not in self.requests:
                continue
            if found is None:
                yield cid, FAIL_EVENT, error
            else:
                yield cid, OK_EVENT, found[i]

    def stranded(self, event: list[Any]) -> list[Any]:
        """The requests a step that could not be queued belonged to: a stamp (``update``
        to versioning), a batch of local reads (``get``, once) or a peer ``call``; none
        for anything else (read repairs and reports are only dropped)."""
        kind = event[0]
        if kind == "update":
            return [Update.from_wire(event).ref]
        if kind == "get":
            return self.read_answered(Get.from_wire(event).ref)
        if kind == "call":
            return [Call.from_wire(event).ref]
        return []

    def attempt(self, cid: int, deadline: float, node: str, now: float,
                seconds: float) -> None:
        """``node`` was asked: past ``seconds`` (before the deadline) it counts as slow."""
        if 0 < seconds and now + seconds < deadline:
            heapq.heappush(self.attempts, (now + seconds, cid, node))

    def slow(self, now: float) -> Iterator[tuple[int, str]]:
        """``(cid, node)`` for each target whose attempt has run out while its request
        still waits on it; checked as each is taken, so acting on one may spare the
        next."""
        while self.attempts and self.attempts[0][0] <= now:
            _, cid, node = heapq.heappop(self.attempts)
            pending = self.requests.get(cid)
            if pending is not None and pending.quorum.state == WAITING and \
                    pending.quorum.waiting_on(node):
                yield cid, node

    def due(self, now: float) -> Iterator[tuple[int, Pending]]:
        """The requests still in flight whose deadline has passed, checked as each is
        taken."""
        while self.deadlines and self.deadlines[0][0] <= now:
            _, cid = heapq.heappop(self.deadlines)
            pending = self.requests.get(cid)
            if pending is not None:
                yield cid, pending
