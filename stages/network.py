"""The network stage: the client ROUTER and the peer ROUTER, framing, limits, decoding.

Dynamo paper section 4.1 (the get/put interface) and the wire protocol of
docs/protocol.md. Every frame is validated here (``seda_dynamo.protocol``); a bad one
gets its error reply at once and never travels further. Valid requests go on to the
coordination stage and their replies come back here to be matched to their client.
"""

from __future__ import annotations

import heapq
from typing import Any

from seda_dynamo import protocol
from seda_dynamo.config import NodeConfig
from seda_dynamo.protocol import Limits, ProtocolError
from seda_dynamo.stage import Port, Stage

#: How long past a request's own deadline we wait for coordination before answering.
GRACE = 2.0


class Handler(Stage):
    name = "network"
    tick_interval = 0.05

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.limits = Limits(config.max_key_bytes, config.max_value_bytes, config.n)
        self.pending: dict[int, tuple[list[bytes], Any]] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.next_rid = 0
        self.stage_stats: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.bad_requests = 0

    def ports(self) -> list[Port]:
        max_msg = 2 * self.limits.max_body_bytes
        return [Port("client", "router", f"tcp://{self.config.client}", max_msg),
                Port("peer", "router", f"tcp://{self.config.peer}", max_msg)]

    # Client frames ---------------------------------------------------------------------
    def handle_frames(self, port: str, messages: list[list[bytes]], now: float) -> None:
        if port != "client":
            return  # the peer protocol arrives with the cluster
        for frames in messages:
            self.requests += 1
            try:
                self._request(frames, now)
            except Exception:  # noqa: BLE001 - a node never dies from what a client sends
                self.errors += 1
                self.log.exception("request handling failed")
                envelope, _ = _split(frames)
                self._reply(envelope, protocol.error_reply("internal", "the node failed to "
                                                           "handle this request"))

    def _request(self, frames: list[bytes], now: float) -> None:
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
        else:
            self.next_rid += 1
            rid = self.next_rid
            self.pending[rid] = (envelope, req.id)
            timeout = (req.timeout_ms or self.config.timeout_ms) / 1000.0
            heapq.heappush(self.deadlines, (now + timeout + GRACE, rid))
            self.emit("coordination", ["req", rid, req.op, req.key, req.value, req.context,
                                       req.r, req.w, req.timeout_ms])

    def _reply(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        self.emit("client", [*envelope, protocol.pack(reply)])

    # Events from other stages ----------------------------------------------------------
    def on_reply(self, now: float, rid: int, reply: dict[str, Any]) -> None:
        entry = self.pending.pop(rid, None)
        if entry is not None:
            self._reply(entry[0], _with_id(reply, entry[1]))

    def on_stats(self, now: float, stage: str, counters: dict[str, Any]) -> None:
        self.stage_stats[stage] = counters

    def tick(self, now: float) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            _, rid = heapq.heappop(self.deadlines)
            entry = self.pending.pop(rid, None)
            if entry is not None:
                self._reply(entry[0], protocol.error_reply(
                    "timeout", "the coordinator did not answer in time", entry[1]))

    def gauges(self) -> dict[str, Any]:
        return {"requests": self.requests, "bad_requests": self.bad_requests,
                "requests_in_flight": len(self.pending)}

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


def _with_id(reply: dict[str, Any], request_id: Any) -> dict[str, Any]:
    if request_id is not None:
        reply = {**reply, "id": request_id}
    return reply
