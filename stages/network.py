"""The network stage: the client ROUTER and the peer ROUTER, framing, limits, decoding.

Dynamo paper section 4.1 (the get/put interface) and the wire protocol of
docs/protocol.md. Every frame is validated here (``seda_dynamo.protocol``); a bad one
gets its error reply at once and never travels further. Valid requests go on to the
coordination stage and their replies come back here to be matched to their client.

Between nodes (docs/peer-protocol.md) a stage asks another node with
``["call", peer, reply_stage, tag, request]``; this stage sends
``["req", my_peer, [reply_stage, tag], request]`` in the batch for that peer, the other
node's network stage hands the request to its stage and sends back
``["resp", node_id, [reply_stage, tag], payload]``, which arrives at ``reply_stage`` as
``["resp", node_id, tag, payload]``.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import msgpack

from seda_dynamo import ids, metrics, peerprotocol, protocol, security
from seda_dynamo.config import NodeConfig
from seda_dynamo.controllers import Gate
from seda_dynamo.protocol import Limits, ProtocolError
from seda_dynamo.security import CLIENT_DOMAIN, PEER_DOMAIN
from seda_dynamo.stage import PEER_PREFIX, Port, Stage, stage_of

#: How long past a request's own deadline we wait for coordination before answering.
GRACE = 2.0
#: How long a call to another node waits for its answer when its caller gave no time.
CALL_TTL = 30.0
#: Most calls awaiting answers; past it the oldest are forgotten (their callers time out).
MAX_CALLS = 200_000
#: How long a peer's read waits for persistence before it is forgotten.
REMOTE_READ_TTL = 30.0


@dataclass(slots=True)
class Call:
    """A request this node sent to ``peer``: where its answer goes, and until when."""

    peer: str
    stage: str
    tag: Any
    node: str | None  # the node called, when the caller named it
    expects: str  # the kind of answer (peerprotocol.REQUESTS)
    deadline: float


class Handler(Stage):
    name = "network"
    tick_interval = 0.05

    def __init__(self, config: NodeConfig, entropy: ids.Entropy | None = None) -> None:
        super().__init__(config, entropy)
        self.limits = Limits(config.max_key_bytes, config.max_value_bytes, config.n)
        # rid -> (where the reply goes, when a coordinated request was admitted or None)
        self.pending: dict[int, tuple[Any, float | None]] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.next_rid = self.id_base
        self.stage_stats: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.bad_requests = 0
        self.peer_events = 0
        self.bad_peer_events = 0
        self.remote_reads: dict[int, tuple[Remote, float]] = {}  # tag -> (asker, deadline)
        self.next_tag = self.id_base
        # Calls to other nodes awaiting an answer, by an id no sender can guess.
        self.calls: dict[int, Call] = {}
        self.call_deadlines: list[tuple[float, int]] = []
        self.peer_limits = peerprotocol.PeerLimits(config.n)
        # The largest record the store holds fits one peer message, and no more.
        self.peer_max_bytes = peerprotocol.max_message_bytes(
            config.max_key_bytes, config.max_record_bytes)
        self.me = config.peer
        # Who may run admin join and leave (protocol.admin_refusal): None without CURVE
        # (loopback clients only), else the public keys of curve_admin_keys.
        self.admin_keys: frozenset[bytes] | None = None
        if config.curve_server_key:
            self.admin_keys = frozenset(security.allowed(
                config.curve_admin_keys, "curve_admin_keys") if config.curve_admin_keys
                else ())
        self.http: dict[bytes, bytes] = {}  # metrics connections: the request so far
        # SEDA admission control: shed at the door rather than queue without bound.
        self.gate = Gate(config.overload_delay_ms / 1000.0, config.max_in_flight,
                         config.latency_target_ms / 1000.0)

    def ports(self) -> list[Port]:
        max_msg = 2 * self.limits.max_body_bytes
        # Peers carry repairs, handoff and transfers, which no size limit may refuse.
        curve = bool(self.config.curve_server_key)
        ports = [Port("client", "router", f"tcp://{self.config.client}", max_msg,
                      CLIENT_DOMAIN if curve else "", callers=True),
                 Port("peer", "router", f"tcp://{self.config.peer}", self.peer_max_bytes,
                      curve=PEER_DOMAIN if curve else "")]
        if self.config.metrics:  # Prometheus scrapes plain HTTP
            ports.append(Port("metrics", "stream", f"tcp://{self.config.metrics}"))
        return ports

    # Client frames ---------------------------------------------------------------------
    def handle_frames(self, port: str, messages: list[list[bytes]], now: float,
                      callers: list[protocol.Caller] | None = None) -> None:
        if port == "peer":
            self._peer_frames(messages, now)
            return
        if port == "metrics":
            self._scrapes(messages)
            return
        for i, frames in enumerate(messages):
            self.requests += 1
            try:
                self._request(frames, now, callers[i] if callers else None)
            except Exception:  # noqa: BLE001 - a node never dies from what a client sends
                self.errors += 1
                self.log.exception("request handling failed")
                envelope, _ = _split(frames)
                self._reply(envelope, protocol.error_reply("internal", "the node failed to "
                                                           "handle this request"))

    def _request(self, frames: list[bytes], now: float, caller: protocol.Caller | None
                 ) -> None:
        envelope, body = _split(frames)
        if body is None:
            self.bad_requests += 1
            self._reply(envelope, protocol.error_reply(
                "bad_request", "expected one body frame after the empty delimiter"))
            return
        try:
            req = protocol.parse_request(body, self.limits)
        except ProtocolError as exc:
            self.bad_requests += 1
            self._reply(envelope, protocol.error_reply(exc.code, exc.message, exc.request_id))
            return
        if req.op == "ping":
            self._reply(envelope, _with_id({"ok": True, "node": self.config.node_id}, req.id))
        elif req.op == "stats":
            self._reply(envelope, _with_id({"ok": True, "node": self.config.node_id,
                                            "stages": self._stats()}, req.id))
        elif req.op == "admin":
            refused = protocol.admin_refusal(req.command, caller, self.admin_keys)
            if refused is not None:
                self.bad_requests += 1
                self.log.debug("%s", refused)
                self._reply(envelope, protocol.error_reply("bad_request", refused, req.id))
                return
            rid = self._pending((envelope, req.id), now, None, measured=False)
            self.emit("gossip", ["admin", rid, req.command, req.seed])
        else:
            shed = self.gate.admit(len(self.pending), now)
            if shed is not None:
                self._reply(envelope, protocol.error_reply("overloaded", shed, req.id))
                return
            self._coordinate((envelope, req.id), now, req.op, req.key, req.value, req.context,
                             req.r, req.w, req.timeout_ms, False)

    def _coordinate(self, origin: Any, now: float, op: str, key: bytes, value: bytes | None,
                    context: Any, r: int | None, w: int | None, timeout_ms: int | None,
                    forwarded: bool) -> None:
        """Hand a request to coordination; ``origin`` says where its reply goes."""
        rid = self._pending(origin, now, timeout_ms)
        self.emit("coordination", ["req", rid, op, key, value, context, r, w, timeout_ms,
                                   forwarded])

    def _pending(self, origin: Any, now: float, timeout_ms: int | None,
                 measured: bool = True) -> int:
        """Remember where the reply to a new request goes, until its deadline (and, for
        requests the gate admitted, since when: their latency steers it)."""
        deadline = now + (timeout_ms or self.config.timeout_ms) / 1000.0 + GRACE
        self.next_rid += 1
        rid = self.next_rid
        self.pending[rid] = (origin, now if measured else None)
        heapq.heappush(self.deadlines, (deadline, rid))
        return rid

    def _reply(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        self.emit("client", [*envelope, protocol.pack(reply)])

    def _answer(self, origin: Any, reply: dict[str, Any]) -> None:
        if isinstance(origin, Remote):
            self._respond(origin.peer, origin.rtag, ["reply", reply])
        else:
            self._reply(origin[0], _with_id(reply, origin[1]))

    # The metrics listener ------------------------------------------------------------
    def _scrapes(self, messages: list[list[bytes]]) -> None:
        """HTTP on a raw TCP port: gather each connection's bytes until its request head
        is complete, answer, close. An empty message is a connect or a disconnect."""
        for frames in messages:
            if len(frames) != 2:
                continue
            conn, data = frames
            if not data:
                self.http.pop(conn, None)
                continue
            if conn not in self.http and len(self.http) >= metrics.MAX_CONNECTIONS:
                # Half-sent requests are held until complete; this many is no scraper.
                response = metrics.response(503, "Service Unavailable",
                                            "too many open metrics connections\n")
            else:
                request = self.http.pop(conn, b"") + data
                try:
                    response = metrics.http_reply(request, lambda: metrics.render(
                        self.config.node_id, self._stats()))
                except Exception:  # noqa: BLE001 - a scrape never stops the node
                    self.errors += 1
                    self.log.exception("metrics page failed")
                    response = metrics.response(500, "Internal Server Error",
                                                "the metrics page failed; see the node's log\n")
                if response is None:
                    self.http[conn] = request
                    continue
            self.emit("metrics", [conn, response])
            self.emit("metrics", [conn, b""])  # close the connection

    # Between nodes ---------------------------------------------------------------------
    def on_call(self, now: float, peer: str, reply_stage: str, tag: Any, request: list,
                node: str | None = None, ttl: float | None = None) -> None:
        """Ask ``peer`` (node ``node``, when the caller knows it) and remember the call
        until ``ttl`` seconds from now: only an answer naming this call's id is taken."""
        expects = peerprotocol.answer_kind(request)
        call_id = 0  # nothing comes back (rreap)
        if expects is not None:
            call_id = self._new_call_id()
            deadline = now + (ttl if isinstance(ttl, (int, float)) and ttl > 0
                              else CALL_TTL) + GRACE
            if len(self.calls) >= MAX_CALLS:
                self._expire_calls(math.inf, limit=len(self.calls) - MAX_CALLS + 1)
            self.calls[call_id] = Call(peer, reply_stage, tag, node, expects, deadline)
            heapq.heappush(self.call_deadlines, (deadline, call_id))
        self.emit(PEER_PREFIX + peer, ["req", self.me, call_id, request])

    def _new_call_id(self) -> int:
        call_id = ids.call_id(self.entropy)
        while call_id in self.calls:
            call_id = ids.call_id(self.entropy)
        return call_id

    def _expire_calls(self, now: float, limit: int | None = None) -> None:
        """Forget calls past their deadline (or, ``limit``, the oldest ones): their
        callers keep deadlines of their own."""
        while self.call_deadlines and self.call_deadlines[0][0] <= now and limit != 0:
            _, call_id = heapq.heappop(self.call_deadlines)
            if self.calls.pop(call_id, None) is not None and limit is not None:
                limit -= 1

    def undeliverable(self, dest: str, events: list, now: float) -> None:
        """Events that could not be queued: each waiting caller hears at once instead of
        waiting for its deadline. To a node we are not connected to, a call's stage
        hears ``unreachable``; to a stage of ours with a full queue, a client's request
        (or another node's forwarded one) is answered ``overloaded``, and another node's
        replica request gets an error answer so its coordinator asks a spare now."""
        if dest.startswith(PEER_PREFIX):
            peer = dest.removeprefix(PEER_PREFIX)
            for event in events:
                if event[0] == "req":
                    call = self.calls.pop(event[2], None)
                    if call is not None:
                        self.emit(call.stage, ["unreachable", peer, call.tag])
            return
        why = f"the {stage_of(dest)} stage's queue is full"
        for event in events:
            kind = event[0]
            if kind in ("req", "admin"):  # to coordination, to gossip: [kind, rid, ...]
                entry = self.pending.pop(event[1], None)
                if entry is not None:
                    self._answer(entry[0], protocol.error_reply("overloaded", why))
            elif kind == "sync" and event[2] is not None:  # a peer's rput, to versioning
                origin = Remote.from_tag(event[2])
                self._respond(origin.peer, origin.rtag, ["updated", f"overloaded: {why}"])
            elif kind == "get" and event[1] == self.name:  # a peer's rget, to persistence
                entry = self.remote_reads.pop(event[2], None)
                if entry is not None:
                    self._respond(entry[0].peer, entry[0].rtag,
                                  ["got", None, f"overloaded: {why}"])
            elif kind == "tree" and event[1] == self.name:  # a peer's anti-entropy question
                origin = Remote.from_tag(event[2])
                self._respond(origin.peer, origin.rtag, ["tree", None])
            # Anything else (a gossip round, a tombstone check, answers and reports to
            # other stages) has a deadline of its own, or none that anyone waits on.

    def _respond(self, peer: str, call_id: int, payload: list) -> None:
        if call_id:  # 0: the caller expects no answer
            self.emit(PEER_PREFIX + peer, ["resp", self.config.node_id, call_id, payload])

    def _peer_frames(self, messages: list[list[bytes]], now: float) -> None:
        for frames in messages:
            try:
                events = msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)
                if not isinstance(events, list):
                    raise ValueError("a peer batch must be a list of events")
            except Exception as exc:  # noqa: BLE001 - a peer never stops the node
                self.bad_peer_events += 1
                self.log.warning("undecodable peer frame dropped: %s", exc)
                continue
            for event in events:
                self.peer_events += 1
                try:
                    # Checked whole before anything is stored or emitted.
                    parsed = peerprotocol.parse_event(event, self.peer_limits)
                except ValueError as exc:
                    self.bad_peer_events += 1
                    self.log.warning("bad peer event dropped: %.200r (%s)", event, exc)
                    continue
                try:
                    if isinstance(parsed, peerprotocol.Resp):
                        self._peer_answer(parsed)
                    else:
                        self._peer_request(parsed, now)
                except Exception:  # noqa: BLE001 - a peer never stops the node
                    self.errors += 1
                    self.log.exception("peer event %.200r failed", event)

    def _peer_answer(self, resp: peerprotocol.Resp) -> None:
        """An answer counts only for a call this node made, once, and of the kind that
        call expects; whom it came from is what this node recorded, not what it says."""
        call = self.calls.get(resp.call_id)
        if call is None or call.expects != resp.payload[0]:
            self.bad_peer_events += 1
            self.log.warning("answer to no call of ours dropped: %s from %.60r",
                             resp.payload[0], resp.node)
            return
        del self.calls[resp.call_id]
        self.emit(call.stage, ["resp", call.node or resp.node, call.tag, resp.payload])

    def _peer_request(self, req: peerprotocol.Req, now: float) -> None:
        origin = Remote(req.peer, req.call_id)
        args = req.args
        if req.op == "ping":
            self._respond(origin.peer, origin.rtag, ["pong"])
        elif req.op == "gossip":
            self.emit("gossip", ["gossip_in", origin.as_tag(), args[0]])
        elif req.op == "rput":  # key, clock, hint
            self.emit("versioning", ["sync", self.name, origin.as_tag(), *args])
        elif req.op == "rget":  # key
            self.next_tag += 1
            self.remote_reads[self.next_tag] = (origin, now + REMOTE_READ_TTL)
            self.emit("persistence", ["get", self.name, self.next_tag, [args[0]]])
        elif req.op == "rcheck":  # key, members: may this tombstone be reaped?
            self.emit("persistence", ["check", self.name, origin.as_tag(), *args])
        elif req.op == "rreap":  # key, tombstone: compare-and-delete
            self.emit("persistence", ["reap", *args])
        elif req.op == "tree":  # partition, question: anti-entropy
            self.emit("persistence", ["tree", self.name, origin.as_tag(), *args])
        elif req.op == "fwd":  # op, key, value, context, r, w, timeout_ms
            shed = self.gate.admit(len(self.pending), now)
            if shed is not None:  # a client request of another node's: shed it too
                self._answer(origin, protocol.error_reply("overloaded", shed))
                return
            self._coordinate(origin, now, *args, True)

    # Events from other stages ----------------------------------------------------------
    def on_reply(self, now: float, rid: int, reply: dict[str, Any]) -> None:
        entry = self.pending.pop(rid, None)
        if entry is None:
            return
        origin, admitted = entry
        self._answer(origin, reply)
        if admitted is not None:
            self.gate.answered(now - admitted, now)

    def on_respond(self, now: float, tag: list, payload: list) -> None:
        """A stage's answer to a peer's request (the gossip stage's view, say)."""
        origin = Remote.from_tag(tag)
        self._respond(origin.peer, origin.rtag, payload)

    def on_updated(self, now: float, tag: list, _ctx: Any, _clock: Any,
                   error: str | None) -> None:
        origin = Remote.from_tag(tag)
        self._respond(origin.peer, origin.rtag, ["updated", error])

    def on_checked(self, now: float, tag: list, raw: bytes | None, hinted: bool) -> None:
        origin = Remote.from_tag(tag)
        self._respond(origin.peer, origin.rtag, ["checked", raw, hinted])

    def on_tree_answer(self, now: float, tag: list, result: Any) -> None:
        origin = Remote.from_tag(tag)
        self._respond(origin.peer, origin.rtag, ["tree", result])

    def on_got(self, now: float, tag: int, found: list | None, error: str | None,
               _incarnation: str) -> None:
        entry = self.remote_reads.pop(tag, None)
        if entry is not None:
            origin = entry[0]
            self._respond(origin.peer, origin.rtag,
                          ["got", found[0] if found is not None else None, error])

    def on_stats(self, now: float, stage: str, counters: dict[str, Any]) -> None:
        self.stage_stats[stage] = counters

    def on_pressure(self, now: float, stage: str, delay: float) -> None:
        """A stage's queue delay crossed the high-water mark (or is back under it)."""
        self.gate.report(stage, delay, now)

    def tick(self, now: float) -> None:
        self._expire_calls(now)
        for tag in [t for t, (_, deadline) in self.remote_reads.items() if deadline <= now]:
            del self.remote_reads[tag]  # persistence did not answer: the caller times out
        while self.deadlines and self.deadlines[0][0] <= now:
            _, rid = heapq.heappop(self.deadlines)
            entry = self.pending.pop(rid, None)
            if entry is not None:
                self._answer(entry[0], {"ok": False, "error": "timeout",
                                      "message": "the coordinator did not answer in time"})

    def gauges(self) -> dict[str, Any]:
        return {"requests": self.requests, "bad_requests": self.bad_requests,
                "requests_in_flight": len(self.pending), "peer_events": self.peer_events,
                "bad_peer_events": self.bad_peer_events, "shed": self.gate.shed,
                "shed_by": dict(self.gate.shed_by),
                "in_flight_limit": round(self.gate.limit)}

    def _stats(self) -> dict[str, Any]:
        """The stages' last reports (once a second), with this stage's own gauges live."""
        stats = dict(self.stage_stats)
        stats[self.name] = {**stats.get(self.name, {}), **self.gauges(), "errors": self.errors}
        return stats


def _split(frames: list[bytes]) -> tuple[list[bytes], bytes | None]:
    """``[identity, b"", body]`` -> (envelope, body); body is None when the shape is wrong."""
    for i in range(1, len(frames)):
        if frames[i] == b"":
            envelope, rest = frames[: i + 1], frames[i + 1:]
            return envelope, rest[0] if len(rest) == 1 else None
    envelope = frames[:1]
    rest = frames[1:]
    return envelope, rest[0] if len(rest) == 1 else None


class Remote:
    """Where a peer's request came from: its peer address and its reply tag."""

    __slots__ = ("peer", "rtag")

    def __init__(self, peer: str, rtag: Any) -> None:
        self.peer = peer
        self.rtag = rtag

    def as_tag(self) -> list[Any]:
        return [self.peer, self.rtag]

    @classmethod
    def from_tag(cls, tag: list[Any]) -> Remote:
        return cls(str(tag[0]), tag[1])


def _with_id(reply: dict[str, Any], request_id: Any) -> dict[str, Any]:
    if request_id is not None:
        reply = {**reply, "id": request_id}
    return reply
