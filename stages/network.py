"""The network stage: the client ROUTER and the peer ROUTER, framing, limits, decoding.

Dynamo paper section 4.1 (the get/put interface) and the wire protocol of
docs/protocol.md. Every frame is validated here (``seda_dynamo.protocol``); a bad one
gets its error reply at once and never travels further. Valid requests go on to the
coordination stage and their replies come back here to be matched to their client.

Between nodes (docs/peer-protocol.md) a stage asks another node with a ``call``
(``seda_dynamo.messages``); this stage sends ``["req", my_peer, call_id, request]`` in
the batch for that peer and remembers the call. The other node's network stage hands
the request to the stage that serves it, naming the request's ``origin``
(``[peer, call_id]``) as the ``ref`` to answer with; that stage's answer comes back in
the one reply envelope, ``respond`` (``messagetable.answer_to``), which this stage
relays as ``["resp", node_id, call_id, payload]`` without looking inside. The answer
arrives at the caller's ``reply_stage`` as a ``resp`` carrying the caller's ``ref``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from seda_dynamo import ids, metrics, peerprotocol, protocol, security
from seda_dynamo.brief import brief
from seda_dynamo.config import NodeConfig
from seda_dynamo.controllers import Gate
from seda_dynamo.messages import (
    Admin,
    Check,
    Get,
    GossipIn,
    Reap,
    Request,
    Resp,
    Respond,
    Sync,
    Tree,
    Unreachable,
)
from seda_dynamo.messagetable import RELAY, answer_to, failed_answer
from seda_dynamo.outstanding import Calls, Remote, Requests, Taken
from seda_dynamo.protocol import Limits, ProtocolError, split_envelope, with_id
from seda_dynamo.security import CLIENT_DOMAIN, PEER_DOMAIN
from seda_dynamo.stage import PEER_PREFIX, Port, Stage, stage_of


class Handler(Stage):
    name = "network"
    tick_interval = 0.05

    def __init__(self, config: NodeConfig, entropy: ids.Entropy | None = None) -> None:
        super().__init__(config, entropy)
        self.limits = Limits(config.max_key_bytes, config.max_value_bytes, config.n)
        # Requests handed to coordination: where each reply goes, until when.
        self.waiting = Requests(self.id_base)
        self.stage_stats: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.bad_requests = 0
        self.peer_events = 0
        self.bad_peer_events = 0
        # Calls to other nodes awaiting an answer, by an id no sender can guess.
        self.calls = Calls(self.entropy)
        self.forwards = Taken()  # forwarded writes taken, by call: each is stamped once
        self.peer_limits = peerprotocol.PeerLimits(config.n)
        # The largest record the store holds fits one peer message, and no more.
        self.peer_max_bytes = peerprotocol.max_message_bytes(
            config.max_key_bytes, config.max_record_bytes)
        self.me = config.peer
        # Who may run admin join and leave (protocol.admin_refusal): None without CURVE
        # (loopback clients only), else the public keys of curve_admin_keys.
        self.admin_keys: frozenset[bytes] | None = None if not config.curve_server_key \
            else frozenset(security.allowed(config.curve_admin_keys, "curve_admin_keys")
                           if config.curve_admin_keys else ())
        self.http = metrics.Scrapes()  # metrics connections with their requests so far
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
        if port != "client":  # the peer port, or the metrics listener's plain HTTP
            return self._peer_frames(messages, now) if port == "peer" else \
                self._scrapes(messages)
        for i, frames in enumerate(messages):
            self.requests += 1
            try:
                self._request(frames, now, callers[i] if callers else None)
            except Exception:  # noqa: BLE001 - a node never dies from what a client sends
                self.errors += 1
                self.log.exception("request handling failed")
                envelope, _ = split_envelope(frames)
                self._reply(envelope, protocol.error_reply("internal", "the node failed to "
                                                           "handle this request"))

    def _request(self, frames: list[bytes], now: float, caller: protocol.Caller | None
                 ) -> None:
        envelope, body = split_envelope(frames)
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
            self._reply(envelope, with_id({"ok": True, "node": self.config.node_id}, req.id))
        elif req.op == "stats":
            self._reply(envelope, with_id({"ok": True, "node": self.config.node_id,
                                            "stages": self._stats()}, req.id))
        elif req.op == "admin":
            refused = protocol.admin_refusal(req.command, caller, self.admin_keys)
            if refused is not None:
                self.bad_requests += 1
                self.log.debug("%s", refused)
                self._reply(envelope, protocol.error_reply("bad_request", refused, req.id))
                return
            rid = self._pending((envelope, req.id), now, None, measured=False)
            self.emit("gossip", Admin.wire(rid, req.command, req.seed))
        else:
            shed = self.gate.admit(len(self.waiting), now)
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
        self.emit("coordination", Request.wire(rid, op, key, value, context, r, w, timeout_ms,
                                               forwarded))

    def _pending(self, origin: Any, now: float, timeout_ms: int | None,
                 measured: bool = True) -> int:
        """Remember where the reply to a new request goes, until its deadline (and, for
        requests the gate admitted, since when: their latency steers it)."""
        timeout = (timeout_ms or self.config.timeout_ms) / 1000.0
        return self.waiting.open(origin, now, timeout, measured)

    def _reply(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        self.emit("client", [*envelope, protocol.pack(reply)])

    def _answer(self, origin: Any, reply: dict[str, Any]) -> None:
        if isinstance(origin, Remote):
            self._respond(origin.peer, origin.call_id, ["reply", reply])
        else:
            self._reply(origin[0], with_id(reply, origin[1]))

    # The metrics listener ------------------------------------------------------------
    def _scrapes(self, messages: list[list[bytes]]) -> None:
        """HTTP on a raw TCP port (``metrics.Scrapes``): each complete request answered,
        then its connection closed."""
        for frames in messages:
            if len(frames) != 2:
                continue
            conn, data = frames
            try:
                response = self.http.feed(conn, data, lambda: metrics.render(
                    self.config.node_id, self._stats()))
            except Exception:  # noqa: BLE001 - a scrape never stops the node
                self.errors += 1
                self.log.exception("metrics page failed")
                response = metrics.response(500, "Internal Server Error",
                                            "the metrics page failed; see the node's log\n")
            if response is not None:
                self.emit("metrics", [conn, response])
                self.emit("metrics", [conn, b""])  # close the connection

    # Between nodes ---------------------------------------------------------------------
    def on_call(self, now: float, peer: str, reply_stage: str, ref: Any, request: list,
                node: str | None = None, ttl: float | None = None) -> None:
        """Ask ``peer`` (node ``node``, when the caller knows it) and remember the call
        until ``ttl`` seconds from now: only an answer naming this call's id is taken."""
        # Call id 0: nothing comes back (rreap).
        call_id = self.calls.open(now, peer, reply_stage, ref, node,
                                  peerprotocol.answer_kind(request), ttl)
        self.emit(PEER_PREFIX + peer, ["req", self.me, call_id, request])

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
                    call = self.calls.lost(event[2])
                    if call is not None:
                        self.emit(call.stage, Unreachable.wire(peer, call.ref))
            return
        why = f"the {stage_of(dest)} stage's queue is full"
        for event in events:
            kind = event[0]
            if kind in ("req", "admin"):  # to coordination, to gossip: [kind, rid, ...]
                entry = self.waiting.close(event[1])
                if entry is not None:
                    self._answer(entry[0], protocol.error_reply("overloaded", why))
            elif kind in ("sync", "get", "tree") and event[1] == self.name:  # a peer's
                # rput, rget or anti-entropy question: the serving stage's failed answer
                _, envelope = answer_to(RELAY, failed_answer(event, f"overloaded: {why}"))
                self.on_respond(now, *Respond.from_wire(envelope))
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
                    self.log.warning("bad peer event dropped: %s (%s)", brief(event, 200), exc)
                    continue
                try:
                    if isinstance(parsed, peerprotocol.Resp):
                        self._peer_answer(parsed)
                    else:
                        self._peer_request(parsed, now)
                except Exception:  # noqa: BLE001 - a peer never stops the node
                    self.errors += 1
                    self.log.exception("peer event %s failed", brief(event, 200))

    def _peer_answer(self, resp: peerprotocol.Resp) -> None:
        """An answer counts only for a call this node made, once, and of the kind that
        call expects; whom it came from is what this node recorded, not what it says."""
        call = self.calls.answered(resp.call_id, resp.payload[0])
        if call is None:
            self.bad_peer_events += 1
            self.log.warning("answer to no call of ours dropped: %s from %.60r",
                             resp.payload[0], resp.node)
            return
        self.emit(call.stage, Resp.wire(call.node or resp.node, call.ref, resp.payload))

    def _peer_request(self, req: peerprotocol.Req, now: float) -> None:
        """Hand a peer's request to the stage that serves it (``peerprotocol.REQUESTS``
        names it; ``_serve_<op>`` sends it there, the fields as docs/peer-protocol.md
        lists them); its answer comes back as a ``respond`` naming the request's origin
        (``on_respond``)."""
        getattr(self, f"_serve_{req.op}")(Remote(req.peer, req.call_id), req.args, now)

    def _serve_ping(self, origin: Remote, _args: tuple[Any, ...], _now: float) -> None:
        self._respond(origin.peer, origin.call_id, ["pong"])

    def _serve_gossip(self, origin: Remote, args: tuple[Any, ...], _now: float) -> None:
        self.emit("gossip", GossipIn.wire(origin.as_wire(), args[0]))

    def _serve_rput(self, origin: Remote, args: tuple[Any, ...], _now: float) -> None:
        self.emit("versioning", Sync.wire(self.name, origin.as_wire(), *args))

    def _serve_rget(self, origin: Remote, args: tuple[Any, ...], _now: float) -> None:
        self.emit("persistence", Get.wire(self.name, origin.as_wire(), [args[0]]))

    def _serve_rcheck(self, origin: Remote, args: tuple[Any, ...], _now: float) -> None:
        self.emit("persistence", Check.wire(self.name, origin.as_wire(), *args))

    def _serve_rreap(self, _origin: Remote, args: tuple[Any, ...], _now: float) -> None:
        self.emit("persistence", Reap.wire(*args))

    def _serve_tree(self, origin: Remote, args: tuple[Any, ...], _now: float) -> None:
        self.emit("persistence", Tree.wire(self.name, origin.as_wire(), *args))

    def _serve_fwd(self, origin: Remote, args: tuple[Any, ...], now: float) -> None:
        """A write forwarded here (op, key, value, context, r, w, timeout_ms), once."""
        if not self.forwards.first(origin, now, args[6] or self.config.timeout_ms):
            return  # a copy of one taken already: it would be stamped twice (``Taken``)
        shed = self.gate.admit(len(self.waiting), now)
        if shed is not None:  # a client request of another node's: shed it too
            self._answer(origin, protocol.error_reply("overloaded", shed))
            return
        self._coordinate(origin, now, *args, True)

    # Events from other stages ----------------------------------------------------------
    def on_reply(self, now: float, rid: int, reply: dict[str, Any]) -> None:
        entry = self.waiting.close(rid)
        if entry is None:
            return
        origin, admitted = entry
        self._answer(origin, reply)
        if admitted is not None:
            self.gate.answered(now - admitted, now)

    def on_respond(self, now: float, origin: list, payload: list) -> None:
        """The one reply envelope: a stage's answer to a peer's request (a merged write,
        a read, a tree answer, a reaping check, the gossip stage's view), relayed as the
        serving stage shaped it."""
        remote = Remote.from_wire(origin)
        self._respond(remote.peer, remote.call_id, payload)

    def on_stats(self, now: float, stage: str, counters: dict[str, Any]) -> None:
        self.stage_stats[stage] = counters

    def on_pressure(self, now: float, stage: str, delay: float) -> None:
        """A stage's queue delay crossed the high-water mark (or is back under it)."""
        self.gate.report(stage, delay, now)

    def tick(self, now: float) -> None:
        self.calls.expire(now)
        for origin in self.waiting.expired(now):
            self._answer(origin, {"ok": False, "error": "timeout",
                                  "message": "the coordinator did not answer in time"})

    def gauges(self) -> dict[str, Any]:
        return {"requests": self.requests, "bad_requests": self.bad_requests,
                "requests_in_flight": len(self.waiting), "peer_events": self.peer_events,
                "bad_peer_events": self.bad_peer_events, "shed": self.gate.shed,
                "shed_by": dict(self.gate.shed_by),
                "in_flight_limit": round(self.gate.limit)}

    def _stats(self) -> dict[str, Any]:
        """The stages' last reports (once a second), with this stage's own gauges live."""
        stats = dict(self.stage_stats)
        stats[self.name] = {**stats.get(self.name, {}), **self.gauges(), "errors": self.errors}
        return stats

