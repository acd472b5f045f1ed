"""The coordination stage: one quorum state machine per client request.

Dynamo paper sections 4.5 (execution of get and put), 4.6 (sloppy quorum, hinted
handoff) and 5 (read repair). For each request: route to the first N healthy nodes of
the key's preference list (``routing.route``), answer once R (get) or W (put,
delete) replied, or with ``unavailable``/``timeout``. A write is stamped by a replica:
this node if it is one of the chosen replicas, else the request is forwarded to the
first that is. After a get has heard every replica (or its deadline), replicas that
returned stale or missing versions are sent the merged version.

Failures within a request (section 4.6): a target the network stage cannot reach, or
that has not answered within its attempt's share of the deadline (``ATTEMPT_SHARE`` of
the request's timeout for a replica, ``FORWARD_SHARE`` for a forwarded write), is
replaced by the next healthy node of the extended preference list, a write's stand-in
carrying a hint for the owner it replaces; the request still ends by its own deadline.
Such a node is *suspected* for ``placement.SUSPECT_SECONDS`` (later requests ask it
last) unless it answers first or gossip sees it come back.
"""

from __future__ import annotations

from typing import Any

from seda_dynamo import ids, quorumreply
from seda_dynamo.background import p99
from seda_dynamo.config import NodeConfig
from seda_dynamo.inflight import InFlight, Pending
from seda_dynamo.messages import Call, Deleted, Foreground, Get, Reply, RingPlease, Sync, Update
from seda_dynamo.metrics import OpMetrics
from seda_dynamo.placement import Placement
from seda_dynamo.quorumreply import error
from seda_dynamo.requests import (
    ABORT_EVENT,
    DEADLINE_EVENT,
    FAIL_EVENT,
    OK_EVENT,
    SLOW_EVENT,
    Outcome,
)
from seda_dynamo.ring import Ring, partition_of
from seda_dynamo.routing import Target, stand_in
from seda_dynamo.stage import Event, Stage, stage_of

#: How much longer than the coordinator it forwards to a forwarding node waits.
FORWARD_SLACK = 0.25
#: Seconds of answered requests in each foreground latency report to gossip.
FOREGROUND_WINDOW = 0.5
#: Share of a request's timeout a replica has to answer before a spare is asked too.
ATTEMPT_SHARE = 0.25
#: ... and a node a write was forwarded to (it may need a replacement round itself).
FORWARD_SHARE = 0.5


class Handler(Stage):
    name = "coordination"
    tick_interval = 0.02

    def __init__(self, config: NodeConfig, entropy: ids.Entropy | None = None) -> None:
        super().__init__(config, entropy)
        self.me = config.node_id
        # The ring, who is down or suspected, and the routes they give (paper 4.6).
        self.placement = Placement(self.me, config.n)
        self.inflight = InFlight(self.id_base)  # ids never repeat across restarts (ids.py)
        self.requests = self.inflight.requests  # by cid: the same dict
        self.counts = {"unavailable": 0, "timeouts": 0, "forwarded": 0, "read_repairs": 0,
                       "replaced": 0, "suspected": 0, "overloaded": 0}
        self.now = 0.0
        self.latencies: list[float] = []  # of requests answered since the last report
        self.metrics = OpMetrics()  # by operation, since start: the metrics endpoint's
        self.reported_at = 0.0

    def start(self, now: float) -> None:
        """Ask gossip, which owns membership, for the ring (it also announces it at its
        own start and every few seconds); requests before it arrives are unavailable."""
        self.emit("gossip", RingPlease.wire())

    @property
    def ring(self) -> Ring | None:
        return self.placement.ring

    def handle_events(self, events: list[Event], now: float) -> None:
        self.now = now
        for event in events:
            self.dispatch(event, now)
        reads = self.inflight.take_reads()  # this batch's local reads: one engine read
        if reads is not None:
            self.emit("persistence", Get.wire(self.name, *reads))

    # From gossip ----------------------------------------------------------------------
    def on_ring(self, now: float, state: dict[str, Any], others: list[list[str]],
                moves_left: int = 0) -> None:
        self.placement.learn_ring(state, others, moves_left)

    def on_health(self, now: float, down: list[str]) -> None:
        self.placement.learn_down(down)

    def _suspect(self, node: str, now: float) -> None:
        if self.placement.suspect(node, now):
            self.counts["suspected"] += 1

    # From the network stage -----------------------------------------------------------
    def on_req(self, now: float, rid: int, op: str, key: bytes, value: bytes | None,
               context: dict[str, int] | None, r: int | None, w: int | None,
               timeout_ms: int | None, forwarded: bool) -> None:
        if self.ring is None:
            self._reply(rid, error("unavailable", "this node has not joined a ring yet"))
            return
        if op == "ring":
            self._reply(rid, {"ok": True, **self.placement.ring_reply(self.config.r,
                                                                      self.config.w)})
            return
        n = self.placement.n
        partition = partition_of(key, self.ring.partitions)
        found = self.placement.route(partition)
        timeout = (timeout_ms or self.config.timeout_ms) / 1000.0
        if op == "get":
            needed = min(r or self.config.r, n)
            cid, pending = self.inflight.track(rid, op, key, needed, found, now + timeout,
                                               self.now)
            pending.attempt = ATTEMPT_SHARE * timeout
            if pending.quorum.start() is None:
                for target in found.chosen:
                    self._ask_read(cid, pending, target.node, now)
            else:
                self._finish(cid)
            return
        onward = None if forwarded else self.placement.forwarding(found)
        if onward is not None:
            self.counts["forwarded"] += 1
            cid, pending = self.inflight.track(rid, op, key, 1, onward,
                                               now + timeout + FORWARD_SLACK, self.now)
            pending.forward = [op, key, value, context, r, w]
            pending.attempt = FORWARD_SHARE * timeout
            self._forward(cid, pending, onward.chosen[0].node, now)
            return
        self._write_here(rid, op, key, value, context, w, now + timeout, timeout,
                         measured=not forwarded)  # a forwarding coordinator counts it

    def _write_here(self, rid: int, op: str, key: bytes, value: bytes | None,
                    context: dict[str, int] | None, w: int | None, deadline: float,
                    timeout: float, measured: bool) -> None:
        """Stamp the write here and send it on. Our own view may not choose this node (a
        write forwarded by a node whose view differs, or one whose replicas all failed):
        it then stands in, with a hint, for the owner whose place it takes."""
        assert self.ring is not None
        found = self.placement.stamping(partition_of(key, self.ring.partitions))
        mine = next(t for t in found.chosen if t.node == self.me)
        cid, pending = self.inflight.track(rid, op, key, min(w or self.config.w,
                                                             self.placement.n),
                                           found, deadline, self.now)
        pending.measured = measured
        pending.attempt = ATTEMPT_SHARE * timeout
        if pending.quorum.start() is not None:
            self._finish(cid)
            return
        self.emit("versioning", Update.wire(self.name, cid, key,
                                            value if op == "put" else None, context,
                                            op == "delete" and context is None, mine.hint))

    def _call(self, node: str, cid: int | None, request: list[Any]) -> None:
        # Naming the node and how long the answer is awaited: the network stage takes
        # an answer only from the call it made, and forgets the call after that.
        pending = self.requests.get(cid) if cid is not None else None
        ttl = pending.deadline - self.now if pending is not None else None
        self.emit("network", Call.wire(self.placement.peer(node), self.name, cid, request,
                                       node, ttl))

    def _ask(self, cid: int, pending: Pending, node: str, request: list[Any], now: float,
             attempt: float) -> None:
        """Send ``request`` to ``node``; past ``attempt`` seconds it counts as slow."""
        self._call(node, cid, request)
        self.inflight.attempt(cid, pending.deadline, node, now, attempt)

    def _ask_read(self, cid: int, pending: Pending, node: str, now: float) -> None:
        if node == self.me:
            self.inflight.read_here(cid, pending.key)
        else:
            self._ask(cid, pending, node, ["rget", pending.key], now, pending.attempt)

    def _forward(self, cid: int, pending: Pending, node: str, now: float) -> None:
        """Send the write to ``node`` with what is left of its deadline."""
        assert pending.forward is not None
        left = pending.deadline - FORWARD_SLACK - now
        if left <= 0:
            return  # the request's own deadline answers it
        op, key, value, context, r, w = pending.forward
        self._ask(cid, pending, node, ["fwd", op, key, value, context, r, w,
                                       max(1, int(left * 1000))], now,
                  min(pending.attempt, left))

    # Replies from replicas ------------------------------------------------------------
    def on_updated(self, now: float, cid: int, ctx: bytes | None, clock: bytes | None,
                   error: str | None) -> None:
        """The local stamp of a write: count it, then send the new version to the rest."""
        pending = self.requests.get(cid)
        if pending is None:
            return
        if error:
            code = quorumreply.refusal(error)
            if code is not None:  # the request cannot be applied, or not now
                self.requests.pop(cid)
                self._reply(pending.rid, quorumreply.error(code, error[len(code) + 2:]))
                if pending.measured:
                    self.metrics.answered(pending.op, now - pending.started, code)
                return
            self.log.warning("local write failed: %s", error)
            pending.why = f"the write failed on the coordinating replica: {error}"
            self._feed(cid, ABORT_EVENT, self.me, error, now)
            return
        pending.clock = clock
        for target in pending.targets:
            if target.node != self.me:
                self._ask(cid, pending, target.node,
                          ["rput", pending.key, clock, target.hint], now, pending.attempt)
        self._feed(cid, OK_EVENT, self.me, ctx, now)

    def on_got(self, now: float, ref: int, found: list[bytes | None] | None,
               error: str | None, _incarnation: str) -> None:
        for i, cid in enumerate(self.inflight.read_answered(ref)):
            if cid not in self.requests:
                continue
            if found is None:
                self._feed(cid, FAIL_EVENT, self.me, error, now)
            else:
                self._feed(cid, OK_EVENT, self.me, found[i], now)

    def on_resp(self, now: float, node: str, cid: int, payload: list[Any]) -> None:
        self.placement.cleared(node)  # it answers: whatever it failed before, it serves now
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
                                  quorumreply.reply_error(reply))
        elif kind == "updated":
            self._feed(cid, FAIL_EVENT if payload[1] else OK_EVENT, node, payload[1], now)
        elif kind == "got":
            _, raw, error = payload
            self._feed(cid, FAIL_EVENT if error else OK_EVENT, node, raw, now)

    def on_unreachable(self, now: float, peer: str, cid: int) -> None:
        """The network stage could not send to ``peer``: that target has failed."""
        node = self.placement.nodes_by_peer.get(peer)
        if node is None:
            return
        self._suspect(node, now)
        if cid in self.requests:
            self._feed(cid, FAIL_EVENT, node, "unreachable", now)

    def undeliverable(self, dest: str, events: list[Event], now: float) -> None:
        """A stage of this node could not take a request's next step (its queue is
        full): that request is answered ``overloaded`` at once (SEDA's full-queue
        event), not left to time out. Read repairs and reports are only dropped."""
        why = f"the {stage_of(dest)} stage's queue is full"
        for event in events:
            kind = event[0]
            if kind == "update":  # to versioning
                self._overloaded(Update.from_wire(event).ref, why, now)
            elif kind == "get":  # to persistence: a batch of this node's reads
                for cid in self.inflight.read_answered(Get.from_wire(event).ref):
                    self._overloaded(cid, why, now)
            elif kind == "call":  # to network
                self._overloaded(Call.from_wire(event).ref, why, now)

    def _overloaded(self, cid: Any, why: str, now: float) -> None:
        pending = self.requests.pop(cid, None) if cid is not None else None
        if pending is None or pending.replied:
            return  # answered already (a read repair's step): nothing waits
        self.counts["overloaded"] += 1
        self._reply(pending.rid, error("overloaded", why))
        if pending.measured:
            self.metrics.answered(pending.op, now - pending.started, "overloaded")

    def _feed(self, cid: int, event: str, node: str, payload: Any, now: float) -> None:
        pending = self.requests[cid]
        decided = pending.quorum.on(event, node, payload)
        for spare, replaced in pending.quorum.take_asks():
            if self._replace(cid, pending, spare, replaced, now):
                return  # the request moved to another cid
        if decided is not None:
            self._finish(cid)
        elif pending.replied and pending.quorum.outstanding == 0:
            self._repair(cid)

    def _replace(self, cid: int, pending: Pending, node: str, replaced: str,
                 now: float) -> bool:
        """Ask spare ``node`` in place of ``replaced``; True if the request moved."""
        self.counts["replaced"] += 1
        old = next((t for t in pending.targets if t.node == replaced), Target(replaced))
        if pending.forward is not None:
            if node == self.me:  # every replica before us failed: we take the write
                self.requests.pop(cid)
                op, key, value, context, _r, w = pending.forward
                timeout = pending.attempt / FORWARD_SHARE
                self._write_here(pending.rid, op, key, value, context, w,
                                 pending.deadline - FORWARD_SLACK, timeout, pending.measured)
                return True
            pending.targets.append(Target(node))
            self._forward(cid, pending, node, now)
            return False
        target = stand_in(old, node)
        pending.targets.append(target)
        if pending.op == "get":
            self._ask_read(cid, pending, node, now)
        elif pending.clock is not None:
            self._ask(cid, pending, node, ["rput", pending.key, pending.clock, target.hint],
                      now, pending.attempt)
        return False

    # Deadlines, replies, read repair --------------------------------------------------
    def tick(self, now: float) -> None:
        self.now = now
        if now - self.reported_at >= FOREGROUND_WINDOW:
            # Paper 6.5: gossip runs background work in the slices the foreground leaves.
            self.reported_at = now
            self.emit("gossip", Foreground.wire(len(self.latencies), p99(self.latencies)))
            self.latencies = []
        self.placement.expire(now)
        for cid, node in self.inflight.slow(now):  # silent past its attempt's share
            self._suspect(node, now)
            self._feed(cid, SLOW_EVENT, node, None, now)
        for cid, pending in self.inflight.due(now):
            if pending.replied:
                self._repair(cid)
            elif pending.quorum.on(DEADLINE_EVENT) is not None:
                self._finish(cid)

    def _finish(self, cid: int) -> None:
        pending = self.requests[cid]
        quorum = pending.quorum
        if quorum.outcome is Outcome.OK:
            try:
                reply, read = quorumreply.ok_reply(pending.op, quorum.replies, self.me,
                                                   self.ring.epoch if self.ring else 0)
                if read is not None:
                    self.metrics.read(read)
            except ValueError as exc:
                reply = error("internal", f"a replica returned unreadable versions: {exc}")
        else:
            self.counts["timeouts" if quorum.outcome is Outcome.TIMEOUT
                        else "unavailable"] += 1
            reply = quorumreply.failed_reply(quorum, pending.why)
        self._reply(pending.rid, reply)
        self.latencies.append(self.now - pending.started)
        if pending.measured:
            self.metrics.answered(pending.op, self.now - pending.started,
                                  None if reply["ok"] else reply["error"])
        pending.replied = True
        if pending.op == "delete" and quorum.outcome is Outcome.OK:
            self.emit("gossip", Deleted.wire(pending.key))  # its tombstone may be reaped later
        if pending.op != "get" or quorum.outcome is not Outcome.OK or quorum.outstanding == 0:
            self._repair(cid)

    def _repair(self, cid: int) -> None:
        """Send the merged version to every replica that answered with less."""
        pending = self.requests.pop(cid)
        if pending.op != "get" or pending.quorum.outcome is not Outcome.OK:
            return
        encoded, behind = quorumreply.repairs(pending.quorum.replies, pending.targets)
        for target in behind:
            self.counts["read_repairs"] += 1
            assert encoded is not None
            if target.node == self.me:
                self.emit("versioning", Sync.wire(self.name, None, pending.key, encoded,
                                                  target.hint))
            else:
                self._call(target.node, None, ["rput", pending.key, encoded, target.hint])

    def _reply(self, rid: int, reply: dict[str, Any]) -> None:
        self.emit("network", Reply.wire(rid, reply))

    def gauges(self) -> dict[str, Any]:
        return {"requests_in_flight": len(self.requests), **self.counts,
                "ops": self.metrics.to_wire(),
                "epoch": self.ring.epoch if self.ring else 0,
                "down": sorted(self.placement.down)}
