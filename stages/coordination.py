"""The coordination stage: one quorum state machine per client request.

Dynamo paper sections 4.5 (execution of get and put), 4.6 (sloppy quorum, hinted
handoff) and 5 (read repair). For each request: route to the first N healthy nodes of
the key's preference list (``routing.route``), answer once R (get) or W (put,
delete) replied, or with ``unavailable``/``timeout``. A write is stamped by a replica:
this node if it is one of the chosen replicas, else the request is forwarded to the
first that is. After a get has heard every replica (or its deadline), replicas that
returned stale or missing versions are sent the merged version, unless the reads are
``tombstone_reap_after`` seconds old: a delete acknowledged after the get began may have
been reaped by then, and the repair would write the deleted versions back (the reaper
checks a key no sooner than that after its delete; anti-entropy repairs what is left).

Failures within a request (section 4.6): a target that cannot be reached or is silent
past its attempt's share of the deadline is replaced by a spare (``failover``), and
*suspected* for ``placement.SUSPECT_SECONDS`` (later requests ask it last) unless it
answers first or gossip sees it come back. What is counted: ``tally``.
"""

from __future__ import annotations

from typing import Any

from seda_dynamo import failover, ids, quorumreply
from seda_dynamo.config import NodeConfig
from seda_dynamo.failover import ATTEMPT_SHARE, FORWARD_SHARE, FORWARD_SLACK
from seda_dynamo.inflight import InFlight, Pending
from seda_dynamo.messages import Call, Deleted, Foreground, Get, Reply, RingPlease, Sync, Update
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
from seda_dynamo.stage import Event, Stage, stage_of
from seda_dynamo.tally import Tally


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
        self.tally = Tally()  # counts, metrics, the foreground latency report
        self.counts, self.metrics = self.tally.counts, self.tally.metrics
        self.now = 0.0

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
        found = self.placement.route(partition_of(key, self.ring.partitions))
        timeout = (timeout_ms or self.config.timeout_ms) / 1000.0
        if op == "get":
            needed = min(r or self.config.r, self.placement.n)
            cid, pending = self.inflight.track(rid, op, key, needed, found, now + timeout,
                                               self.now, ATTEMPT_SHARE * timeout)
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
                                               now + timeout + FORWARD_SLACK, self.now,
                                               FORWARD_SHARE * timeout,
                                               forward=[op, key, value, context, r, w])
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
                                           found, deadline, self.now, ATTEMPT_SHARE * timeout)
        pending.measured = measured
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
        """Send the write to ``node`` with what is left of its deadline (none left: the
        request's own deadline answers it)."""
        forward = failover.forward_request(pending, now)
        if forward is not None:
            self._ask(cid, pending, node, forward[0], now, forward[1])

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
                self.tally.answered(pending.op, now - pending.started, code,
                                    pending.measured, foreground=False)
                return
            self.log.warning("local write failed: %s", error)
            pending.why = f"the write failed on the coordinating replica: {error}"
            self._feed(cid, ABORT_EVENT, self.me, error, now)
            return
        pending.clock = clock
        for target in pending.targets:
            if target.node != self.me:
                self._ask(cid, pending, target.node,
                          failover.put_request(pending.key, clock, target), now,
                          pending.attempt)
        self._feed(cid, OK_EVENT, self.me, ctx, now)

    def on_got(self, now: float, ref: int, found: list[bytes | None] | None,
               error: str | None, _incarnation: str) -> None:
        for cid, event, carried in self.inflight.local_answers(ref, found, error):
            self._feed(cid, event, self.me, carried, now)

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
            self.tally.answered(pending.op, now - pending.started,
                                quorumreply.reply_error(reply))
        elif kind in ("updated", "got"):
            event, carried = quorumreply.replica_answer(payload)
            self._feed(cid, event, node, carried, now)

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
            for cid in self.inflight.stranded(event):
                self._overloaded(cid, why, now)

    def _overloaded(self, cid: Any, why: str, now: float) -> None:
        pending = self.requests.pop(cid, None) if cid is not None else None
        if pending is None or pending.replied:
            return  # answered already (a read repair's step): nothing waits
        self.counts["overloaded"] += 1
        self._reply(pending.rid, error("overloaded", why))
        self.tally.answered(pending.op, now - pending.started, "overloaded",
                            pending.measured, foreground=False)

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
        step, request = failover.replace(pending, node, replaced, self.me)
        if step == failover.STAMP_HERE:  # every replica before us failed
            self.requests.pop(cid)
            (op, key, value, context, _r, w), deadline, timeout = failover.taken_over(pending)
            self._write_here(pending.rid, op, key, value, context, w, deadline, timeout,
                             pending.measured)
            return True
        if step == failover.FORWARD:
            self._forward(cid, pending, node, now)
        elif step == failover.READ:
            self._ask_read(cid, pending, node, now)
        elif step == failover.PUT:
            self._ask(cid, pending, node, request, now, pending.attempt)
        return False

    # Deadlines, replies, read repair --------------------------------------------------
    def tick(self, now: float) -> None:
        self.now = now
        report = self.tally.report(now)
        if report is not None:
            # Paper 6.5: gossip runs background work in the slices the foreground leaves.
            self.emit("gossip", Foreground.wire(*report))
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
        reply, read, counted = quorumreply.final_reply(pending.op, quorum, pending.why,
                                                       self.me,
                                                       self.ring.epoch if self.ring else 0)
        self._reply(pending.rid, reply)
        self.tally.finished(pending.op, self.now - pending.started, reply, read, counted,
                            pending.measured)
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
        reap_after = self.config.tombstone_reap_after
        if reap_after > 0 and self.now - pending.started >= reap_after:
            return  # read before a delete that may be reaped now: never undo it
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
