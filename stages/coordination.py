"""The coordination stage: one quorum state machine per client request.

Dynamo paper sections 4.5 (execution of get and put): build the key's preference list,
ask its replicas, answer when R (get) or W (put, delete) of them replied, or with
``unavailable`` / ``timeout`` at the deadline. Replies of a get are reconciled with
``causality.sync``; a put is stamped by the local versioning stage.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from seda_dynamo import causality
from seda_dynamo.config import NodeConfig
from seda_dynamo.requests import Outcome, QuorumRequest
from seda_dynamo.ring import Member, Ring, partition_of
from seda_dynamo.stage import Event, Stage


@dataclass(slots=True)
class Pending:
    rid: int
    op: str
    quorum: QuorumRequest
    deadline: float


class Handler(Stage):
    name = "coordination"
    tick_interval = 0.02

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        me = Member(config.node_id, config.client, config.peer)
        self.ring = Ring.single(me, config.partitions)
        self.requests: dict[int, Pending] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.next_cid = 0
        self.reads: list[tuple[int, bytes]] = []
        self.read_batches: dict[int, list[int]] = {}
        self.unavailable = 0
        self.timeouts = 0

    @property
    def n(self) -> int:
        """N, capped by the number of members: a one-node ring keeps one replica."""
        return min(self.config.n, len(self.ring.members))

    def handle_events(self, events: list[Event], now: float) -> None:
        for event in events:
            self.dispatch(event, now)
        if self.reads:
            self.next_cid += 1
            tag = self.next_cid
            self.read_batches[tag] = [cid for cid, _ in self.reads]
            self.emit("persistence", ["get", self.name, tag, [key for _, key in self.reads]])
            self.reads = []

    # From the network stage -----------------------------------------------------------
    def on_req(self, now: float, rid: int, op: str, key: bytes, value: bytes | None,
               context: dict[str, int] | None, r: int | None, w: int | None,
               timeout_ms: int | None) -> None:
        if op == "ring":
            reply = self.ring.to_wire(self.config.n, self.config.r, self.config.w)
            self.emit("network", ["reply", rid, {"ok": True, **reply}])
            return
        n = self.n
        needed = min(r or self.config.r, n) if op == "get" else min(w or self.config.w, n)
        replicas = self.ring.preference_list(partition_of(key, self.ring.partitions), n)
        local = [node for node in replicas if node == self.config.node_id]
        quorum = QuorumRequest(needed, tuple(local))
        self.next_cid += 1
        cid = self.next_cid
        deadline = now + (timeout_ms or self.config.timeout_ms) / 1000.0
        self.requests[cid] = Pending(rid, op, quorum, deadline)
        heapq.heappush(self.deadlines, (deadline, cid))
        if quorum.start() is not None:
            self._finish(cid)
            return
        if op == "get":
            self.reads.append((cid, key))
        else:
            self.emit("versioning", ["update", self.name, cid, key,
                                     value if op == "put" else None, context,
                                     op == "delete" and context is None])

    # From versioning and persistence --------------------------------------------------
    def on_updated(self, now: float, cid: int, ctx: bytes | None, clock: bytes | None,
                   error: str | None) -> None:
        pending = self.requests.get(cid)
        if pending is None:
            return
        if error:
            self.log.warning("local write failed: %s", error)
            outcome = pending.quorum.on("fail", self.config.node_id, error)
        else:
            outcome = pending.quorum.on("ok", self.config.node_id, ctx)
        if outcome is not None:
            self._finish(cid)

    def on_got(self, now: float, tag: int, found: list[bytes | None] | None,
               error: str | None, _incarnation: str) -> None:
        cids = self.read_batches.pop(tag, [])
        for i, cid in enumerate(cids):
            pending = self.requests.get(cid)
            if pending is None:
                continue
            if found is None:
                outcome = pending.quorum.on("fail", self.config.node_id, error)
            else:
                outcome = pending.quorum.on("ok", self.config.node_id, found[i])
            if outcome is not None:
                self._finish(cid)

    def on_ring(self, now: float, state: dict[str, Any]) -> None:
        """The gossip stage's ring: adopt it when it is newer than ours."""
        if state["epoch"] > self.ring.epoch:
            self.ring = Ring.from_state(state)

    # Deadlines and replies ------------------------------------------------------------
    def tick(self, now: float) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            _, cid = heapq.heappop(self.deadlines)
            pending = self.requests.get(cid)
            if pending is not None and pending.quorum.on("deadline") is not None:
                self._finish(cid)

    def gauges(self) -> dict[str, Any]:
        return {"requests_in_flight": len(self.requests), "unavailable": self.unavailable,
                "timeouts": self.timeouts}

    def _finish(self, cid: int) -> None:
        pending = self.requests.pop(cid)
        quorum = pending.quorum
        if quorum.outcome is Outcome.OK:
            reply = self._ok_reply(pending.op, list(quorum.replies.values()))
        elif quorum.outcome is Outcome.TIMEOUT:
            self.timeouts += 1
            reply = {"ok": False, "error": "timeout",
                     "message": f"{len(quorum.replies)} of {quorum.needed} replicas answered "
                                "before the deadline"}
        else:
            self.unavailable += 1
            reply = {"ok": False, "error": "unavailable",
                     "message": f"{quorum.needed} replicas needed, "
                                f"{len(quorum.asked) - len(quorum.failed)} could answer"}
        self.emit("network", ["reply", pending.rid, reply])

    @staticmethod
    def _ok_reply(op: str, replies: list[Any]) -> dict[str, Any]:
        if op != "get":
            return {"ok": True, "context": replies[0]}
        clocks = [causality.decode(raw) for raw in replies if raw is not None]
        merged = causality.sync_all(clocks)
        if not clocks:
            return {"ok": True, "values": [], "context": None}
        values = [v for v in causality.values(merged) if v is not None]
        return {"ok": True, "values": values,
                "context": causality.encode_context(causality.join(merged))}
