"""The coordination stage: one quorum state machine per client request.

Dynamo paper sections 4.5 (execution of get and put), 4.6 (sloppy quorum, hinted
handoff) and 5 (read repair). For each request: route to the first N healthy nodes of
the key's preference list (``routing.targets``), answer once R (get) or W (put,
delete) replied, or with ``unavailable``/``timeout``. A write is stamped by a replica:
this node if it is one of the chosen replicas, else the request is forwarded to the
first that is. After a get has heard every replica (or its deadline), replicas that
returned stale or missing versions are sent the merged version.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seda_dynamo import causality, ids
from seda_dynamo.admission import p99
from seda_dynamo.config import NodeConfig
from seda_dynamo.membership import VIEW_FILE, View
from seda_dynamo.metrics import OpMetrics
from seda_dynamo.requests import Outcome, QuorumRequest
from seda_dynamo.ring import Ring, partition_of
from seda_dynamo.routing import Target, targets
from seda_dynamo.stage import Event, Stage

#: How much longer than the coordinator it forwards to a forwarding node waits.
FORWARD_SLACK = 0.25
#: Seconds of answered requests in each foreground latency report to gossip.
FOREGROUND_WINDOW = 0.5


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


class Handler(Stage):
    name = "coordination"
    tick_interval = 0.02

    def __init__(self, config: NodeConfig, entropy: ids.Entropy | None = None) -> None:
        super().__init__(config, entropy)
        self.me = config.node_id
        self.ring: Ring | None = None
        self.nodes_by_peer: dict[str, str] = {}
        self.others: list[list[str]] = []  # members not (or no longer) owning partitions
        self.moves_left = 0  # partitions planned to move and not yet handed over
        self.down: frozenset[str] = frozenset()
        self.routes: dict[int, list[Target]] = {}
        self.requests: dict[int, Pending] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.next_cid = self.id_base  # ids never repeat across restarts (ids.py)
        self.reads: list[tuple[int, bytes]] = []
        self.read_batches: dict[int, list[int]] = {}
        self.counts = {"unavailable": 0, "timeouts": 0, "forwarded": 0, "read_repairs": 0}
        self.now = 0.0
        self.latencies: list[float] = []  # of requests answered since the last report
        self.metrics = OpMetrics()  # by operation, since start: the metrics endpoint's
        self.reported_at = 0.0

    def start(self, now: float) -> None:
        """Begin with the ring gossip last saved, so a dead gossip stage costs nothing."""
        try:
            view = View.decode(self.me, self.config.n,
                               (Path(self.config.data_dir) / VIEW_FILE).read_bytes())
        except (OSError, ValueError):
            view = None
        ring = view.effective_ring() if view is not None else None
        if ring is not None:
            self.on_ring(now, ring.to_state(), [])
        self.emit("gossip", ["ring_please"])

    @property
    def n(self) -> int:
        """N, capped by the number of members: a one-node ring keeps one replica."""
        return min(self.config.n, len(self.ring.members)) if self.ring else 0

    def handle_events(self, events: list[Event], now: float) -> None:
        self.now = now
        for event in events:
            self.dispatch(event, now)
        if self.reads:
            self.next_cid += 1
            tag = self.next_cid
            self.read_batches[tag] = [cid for cid, _ in self.reads]
            self.emit("persistence", ["get", self.name, tag, [key for _, key in self.reads]])
            self.reads = []

    # From gossip ----------------------------------------------------------------------
    def on_ring(self, now: float, state: dict[str, Any], others: list[list[str]],
                moves_left: int = 0) -> None:
        self.others = others
        self.moves_left = moves_left
        if self.ring is None or state["epoch"] != self.ring.epoch:
            self.ring = Ring.from_state(state)
            self.nodes_by_peer = {m.peer: m.id for m in self.ring.members}
            self.routes.clear()

    def on_health(self, now: float, down: list[str]) -> None:
        if frozenset(down) != self.down:
            self.down = frozenset(down)
            self.routes.clear()

    def _targets(self, partition: int) -> list[Target]:
        route = self.routes.get(partition)
        if route is None:
            assert self.ring is not None
            route = self.routes[partition] = targets(self.ring, partition, self.n, self.down)
        return route

    def _peer(self, node: str) -> str:
        assert self.ring is not None
        return self.ring.member(node).peer

    # From the network stage -----------------------------------------------------------
    def on_req(self, now: float, rid: int, op: str, key: bytes, value: bytes | None,
               context: dict[str, int] | None, r: int | None, w: int | None,
               timeout_ms: int | None, forwarded: bool) -> None:
        if self.ring is None:
            self._reply(rid, _error("unavailable", "this node has not joined a ring yet"))
            return
        if op == "ring":
            self._reply(rid, {"ok": True, **self._ring_reply()})
            return
        n = self.n
        chosen = self._targets(partition_of(key, self.ring.partitions))
        timeout = (timeout_ms or self.config.timeout_ms) / 1000.0
        self.next_cid += 1
        cid = self.next_cid
        if op == "get":
            needed = min(r or self.config.r, n)
            pending = self._track(cid, rid, op, key, needed, chosen, now + timeout)
            if pending.quorum.start() is None:
                for target in chosen:
                    if target.node == self.me:
                        self.reads.append((cid, key))
                    else:
                        self._call(target.node, cid, ["rget", key])
            else:
                self._finish(cid)
            return
        needed = min(w or self.config.w, n)
        mine = next((t for t in chosen if t.node == self.me), None)
        if mine is None and not forwarded and chosen:
            self.counts["forwarded"] += 1
            self._track(cid, rid, op, key, 1, [Target(chosen[0].node)],
                        now + timeout + FORWARD_SLACK)
            self._call(chosen[0].node, cid, ["fwd", op, key, value, context, r, w, timeout_ms])
            return
        if mine is None:  # forwarded to us, but our view has us elsewhere: we stamp anyway
            mine = Target(self.me)
            chosen = [mine, *chosen[: n - 1]]
        pending = self._track(cid, rid, op, key, needed, chosen, now + timeout)
        pending.measured = not forwarded  # the forwarding coordinator counts it
        if pending.quorum.start() is not None:
            self._finish(cid)
            return
        self.emit("versioning", ["update", self.name, cid, key, value if op == "put" else None,
                                 context, op == "delete" and context is None, mine.hint])

    def _track(self, cid: int, rid: int, op: str, key: bytes, needed: int,
               chosen: list[Target], deadline: float) -> Pending:
        quorum = QuorumRequest(needed, tuple(t.node for t in chosen))
        pending = Pending(rid, op, key, quorum, deadline, chosen, started=self.now)
        self.requests[cid] = pending
        heapq.heappush(self.deadlines, (deadline, cid))
        return pending

    def _call(self, node: str, tag: Any, request: list[Any]) -> None:
        # Naming the node and how long the answer is awaited: the network stage takes
        # an answer only from the call it made, and forgets the call after that.
        pending = self.requests.get(tag) if tag is not None else None
        ttl = pending.deadline - self.now if pending is not None else None
        self.emit("network", ["call", self._peer(node), self.name, tag, request, node, ttl])

    # Replies from replicas ------------------------------------------------------------
    def on_updated(self, now: float, cid: int, ctx: bytes | None, clock: bytes | None,
                   error: str | None) -> None:
        """The local stamp of a write: count it, then send the new version to the rest."""
        pending = self.requests.get(cid)
        if pending is None:
            return
        if error:
            self.log.warning("local write failed: %s", error)
            self._feed(cid, "fail", self.me, error)
            return
        for target in pending.targets:
            if target.node != self.me:
                self._call(target.node, cid, ["rput", pending.key, clock, target.hint])
        self._feed(cid, "ok", self.me, ctx)

    def on_got(self, now: float, tag: int, found: list[bytes | None] | None,
               error: str | None, _incarnation: str) -> None:
        for i, cid in enumerate(self.read_batches.pop(tag, [])):
            if found is None:
                self._feed(cid, "fail", self.me, error)
            else:
                self._feed(cid, "ok", self.me, found[i])

    def on_resp(self, now: float, node: str, cid: int, payload: list[Any]) -> None:
        pending = self.requests.get(cid)
        if pending is None:
            return
        kind = payload[0]
        if kind == "reply":  # a forwarded request's answer: pass it on as it is
            self.requests.pop(cid)
            reply = payload[1]
            self._reply(pending.rid, reply)
            self.latencies.append(now - pending.started)
            self.metrics.answered(pending.op, now - pending.started,
                                  None if not isinstance(reply, dict) or reply.get("ok")
                                  else str(reply.get("error")))
        elif kind == "updated":
            self._feed(cid, "fail" if payload[1] else "ok", node, payload[1])
        elif kind == "got":
            _, raw, error = payload
            self._feed(cid, "fail" if error else "ok", node, raw)

    def on_unreachable(self, now: float, peer: str, cid: int) -> None:
        """The network stage could not send to ``peer``: that replica has failed."""
        node = self.nodes_by_peer.get(peer)
        if node is not None and cid in self.requests:
            self._feed(cid, "fail", node, "unreachable")

    def _feed(self, cid: int, event: str, node: str, payload: Any) -> None:
        pending = self.requests[cid]
        if pending.quorum.on(event, node, payload) is not None:
            self._finish(cid)
        elif pending.replied and pending.quorum.outstanding == 0:
            self._repair(cid)

    # Deadlines, replies, read repair --------------------------------------------------
    def tick(self, now: float) -> None:
        self.now = now
        if now - self.reported_at >= FOREGROUND_WINDOW:
            # Paper 6.5: gossip runs background work in the slices the foreground leaves.
            self.reported_at = now
            self.emit("gossip", ["foreground", len(self.latencies), p99(self.latencies)])
            self.latencies = []
        while self.deadlines and self.deadlines[0][0] <= now:
            _, cid = heapq.heappop(self.deadlines)
            pending = self.requests.get(cid)
            if pending is None:
                continue
            if pending.replied:
                self._repair(cid)
            elif pending.quorum.on("deadline") is not None:
                self._finish(cid)

    def _finish(self, cid: int) -> None:
        pending = self.requests[cid]
        quorum = pending.quorum
        if quorum.outcome is Outcome.OK:
            try:
                reply = self._ok_reply(pending.op, quorum.replies)
            except ValueError as exc:
                reply = _error("internal", f"a replica returned unreadable versions: {exc}")
        elif quorum.outcome is Outcome.TIMEOUT:
            self.counts["timeouts"] += 1
            reply = _error("timeout", f"{len(quorum.replies)} of {quorum.needed} replicas "
                                      "answered before the deadline")
        else:
            self.counts["unavailable"] += 1
            reply = _error("unavailable", f"{quorum.needed} replicas needed, "
                                          f"{len(quorum.asked) - len(quorum.failed)} could answer")
        self._reply(pending.rid, reply)
        self.latencies.append(self.now - pending.started)
        if pending.measured:
            self.metrics.answered(pending.op, self.now - pending.started,
                                  None if reply["ok"] else reply["error"])
        pending.replied = True
        if pending.op == "delete" and quorum.outcome is Outcome.OK:
            self.emit("gossip", ["deleted", pending.key])  # its tombstone may be reaped later
        if pending.op != "get" or quorum.outcome is not Outcome.OK or quorum.outstanding == 0:
            self._repair(cid)

    def _repair(self, cid: int) -> None:
        """Send the merged version to every replica that answered with less."""
        pending = self.requests.pop(cid)
        if pending.op != "get" or pending.quorum.outcome is not Outcome.OK:
            return
        replies = pending.quorum.replies
        try:
            clocks = {node: causality.decode(raw) if raw is not None else causality.EMPTY
                      for node, raw in replies.items()}
        except ValueError:
            return
        merged = causality.sync_all(clocks.values())
        if causality.size(merged) == 0 and not causality.join(merged):
            return
        encoded = None
        for target in pending.targets:
            clock = clocks.get(target.node)
            if clock is None or causality.equal(clock, merged):
                continue
            self.counts["read_repairs"] += 1
            encoded = encoded or causality.encode(merged)
            if target.node == self.me:
                self.emit("versioning", ["sync", self.name, None, pending.key, encoded,
                                         target.hint])
            else:
                self._call(target.node, None, ["rput", pending.key, encoded, target.hint])

    def _reply(self, rid: int, reply: dict[str, Any]) -> None:
        self.emit("network", ["reply", rid, reply])

    def _ring_reply(self) -> dict[str, Any]:
        assert self.ring is not None
        wire = self.ring.to_wire(self.config.n, self.config.r, self.config.w)
        wire["pending_transfers"] = self.moves_left
        wire["nodes"] += [{"id": node, "client": client, "peer": peer, "status": status}
                          for node, client, peer, status in self.others]
        for node in wire["nodes"]:
            if node["id"] in self.down:
                node["status"] = "down"
        return wire

    def gauges(self) -> dict[str, Any]:
        return {"requests_in_flight": len(self.requests), **self.counts,
                "ops": self.metrics.to_wire(),
                "epoch": self.ring.epoch if self.ring else 0, "down": sorted(self.down)}

    def _ok_reply(self, op: str, replies: dict[str, Any]) -> dict[str, Any]:
        epoch = self.ring.epoch if self.ring else 0
        if op != "get":  # the context of the version this node stamped
            return {"ok": True, "context": replies[self.me], "epoch": epoch}
        clocks = [causality.decode(raw) for raw in replies.values() if raw is not None]
        if not clocks:
            self.metrics.read(0)
            return {"ok": True, "values": [], "context": None, "epoch": epoch}
        merged = causality.sync_all(clocks)
        values = [v for v in causality.values(merged) if v is not None]
        self.metrics.read(len(values))
        return {"ok": True, "values": values, "epoch": epoch,
                "context": causality.encode_context(causality.join(merged))}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}
