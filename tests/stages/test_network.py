"""The network stage's handler: the client and peer ports, without sockets.

Where addresses and admin commands enter a node, at the stage handlers (no sockets).

Issue 11, items 4 and 7: a peer frame's reply address and an ``admin join`` seed pass the
one address check (``seda_dynamo.address``) before any socket sees them; ``admin join``
and ``leave`` are taken only from loopback (no CURVE) or from a key on
``curve_admin_keys`` (CURVE), judged from the connection the runtime describes.

The client port (paper section 4.1's get/put interface, docs/protocol.md): every frame
gets exactly one reply, whatever it holds; a request past its deadline is answered
``timeout`` and leaves nothing behind; ping and stats are answered by this stage.
The peer port is tested in test_network_peers.py.
"""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pipeline import CONFIG
from test_peer_trust import ANY

from seda_dynamo import protocol, tpstats
from seda_dynamo.outstanding import GRACE
from stages import network


class _AnyText(str):
    """Equal to any non-empty str (a reply's ``message`` is for people, not tests)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_TEXT = _AnyText()


def test_a_peer_frame_asking_its_reply_at_a_bad_address_is_dropped_and_counted():
    """A peer frame is one of the places an address enters (docs/peer-protocol.md: the
    answer goes to ``from_peer``): a bad one is refused before any socket sees it."""
    h = network.Handler(CONFIG)
    bad = ["x:y", "127.0.0.1:0", "ho st:1", 7101, None, ["127.0.0.1", 7101]]
    events = [["req", peer, 1, ["ping"]] for peer in bad]
    events.append(["req", "127.0.0.1:7101", 2, ["ping"]])
    h.handle_frames("peer", [[b"id", msgpack.packb(events)]], 0.0)
    out = h.take_outbox()
    assert out == [("peer:127.0.0.1:7101", ["resp", "t", 2, ["pong"]])]
    assert h.bad_peer_events == len(bad)


class Conn:
    """A client connection as the runtime describes it (ZeroMQ's message properties)."""

    def __init__(self, address: str | None, user_id: str | None = None) -> None:
        self.address = address
        self.user_id = user_id


def admin(h: network.Handler, caller: Conn | None, command: str, rid: int) -> list:
    body = msgpack.packb({"op": "admin", "command": command, "seed": "127.0.0.1:7999",
                          "id": rid})
    h.handle_frames("client", [[b"c", b"", body]], 0.0,
                    None if caller is None else [caller])
    return h.take_outbox()


def test_admin_join_and_leave_without_curve_only_from_loopback():
    """Issue 11, item 7: join and leave change the cluster; without CURVE a node takes
    them only from a loopback connection. status and transfers stay open."""
    h = network.Handler(CONFIG)
    for command in ("join", "leave"):
        for caller in (Conn("10.1.2.3"), Conn("::ffff:192.168.0.9"), Conn(None), None):
            out = admin(h, caller, command, 5)
            assert [d for d, _ in out] == ["client"], (command, caller)
            reply = msgpack.unpackb(out[0][1][-1])
            assert (reply["ok"], reply["error"], reply["id"]) == (False, "bad_request", 5)
            assert "loopback" in reply["message"]
        for caller in (Conn("127.0.0.1"), Conn("::1")):
            out = admin(h, caller, command, 6)
            assert [(d, e[0], e[2]) for d, e in out] == [("gossip", "admin", command)]
    for command in ("status", "transfers"):
        out = admin(h, Conn("10.1.2.3"), command, 7)
        assert [(d, e[0], e[2]) for d, e in out] == [("gossip", "admin", command)]


def test_admin_join_and_leave_with_curve_only_from_a_key_on_the_admin_list():
    h = network.Handler(CONFIG)
    h.admin_keys = frozenset({b"R" * 40})  # what curve_admin_keys holds, with CURVE on
    assert admin(h, Conn("10.1.2.3", "R" * 40), "leave", 1)[0][0] == "gossip"
    for caller in (Conn("127.0.0.1", "M" * 40), Conn("127.0.0.1"), None):
        out = admin(h, caller, "join", 2)
        reply = msgpack.unpackb(out[0][1][-1])
        assert reply["error"] == "bad_request" and "curve_admin_keys" in reply["message"]


def test_what_a_full_stage_queue_cannot_take_is_answered_at_once():
    """Events for a stage of ours that the runtime could not queue (its queue full): a
    client request hears ``overloaded``, and another node's replica request an error
    answer of the kind it awaits (its coordinator asks a spare now); the state kept for
    them is forgotten. A gossip round has its own timer: nothing is sent for it."""
    h = network.Handler(CONFIG)
    body = msgpack.packb({"op": "get", "key": b"k", "id": 3})
    h.handle_frames("client", [[b"c", b"", body]], 0.0)
    out = h.take_outbox()
    assert [(d, e[0]) for d, e in out] == [("coordination", "req")]
    peer = "127.0.0.1:7101"
    asks = [["req", peer, 11, ["rput", b"k", b"clock", None]],
            ["req", peer, 12, ["rget", b"k"]],
            ["req", peer, 13, ["tree", 0, {"level": 0}]],
            ["req", peer, 14, ["gossip", {}]]]
    h.handle_frames("peer", [[b"p", msgpack.packb(asks)]], 0.0)
    out += h.take_outbox()
    assert len(out) == 5
    for dest, event in out:
        h.undeliverable(dest, [event], 0.0)
    answers = h.take_outbox()
    client = [msgpack.unpackb(e[-1]) for d, e in answers if d == "client"]
    assert [(r["ok"], r["error"], r["id"]) for r in client] == [(False, "overloaded", 3)]
    assert "coordination" in client[0]["message"]
    to_peer = {e[2]: e[3] for d, e in answers if d == "peer:" + peer}
    assert to_peer[11][0] == "updated" and to_peer[11][1].startswith("overloaded: ")
    assert to_peer[12][:2] == ["got", None] and to_peer[12][2].startswith("overloaded: ")
    assert to_peer[13] == ["tree", None]
    assert len(answers) == 4  # nothing for the gossip round
    assert not h.waiting


# Every client frame gets exactly one reply (docs/protocol.md) --------------------------
# Small limits, so sizes past them and admission control (shedding) come up often.
SMALL = dataclasses.replace(CONFIG, max_key_bytes=16, max_value_bytes=64, max_in_flight=4)
EXTREME = st.sampled_from([0, 1, 3, 4, -1, 600_000, 600_001, 2**62, 2**63 - 1, 2**63,
                           2**64 - 1, -2**63])
INT = st.one_of(EXTREME, st.integers(-2**63, 2**64 - 1))
FIELD = st.one_of(INT, ANY, st.floats(), st.binary(max_size=80), st.text(max_size=20))
BODY = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(sorted(protocol.OPS)),
                     st.sampled_from(["", "GET", "tpstats", "nope"]), ANY)},
    optional={"id": st.one_of(INT, FIELD),
              "key": st.one_of(st.binary(max_size=17), st.text(max_size=17), FIELD),
              "value": st.one_of(st.binary(max_size=65), FIELD),
              "context": st.one_of(st.none(), st.binary(max_size=12), FIELD),
              "r": st.one_of(st.integers(0, 4), INT, FIELD),
              "w": st.one_of(st.integers(0, 4), INT, FIELD),
              "timeout_ms": st.one_of(st.integers(1, 3000), INT, FIELD),
              "command": st.one_of(st.sampled_from(sorted(protocol.ADMIN_COMMANDS)), FIELD),
              "seed": st.one_of(st.sampled_from(["127.0.0.1:7999", "x:y", ""]), FIELD),
              "extra": FIELD})
# Requests that pass validation, so coordination and gossip have work to answer or not.
VALID = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(["get", "put", "delete", "ring"]),
                           "key": st.binary(min_size=1, max_size=16),
                           "value": st.binary(max_size=64)},
                          optional={"id": INT, "timeout_ms": st.integers(1, 3000)}),
    st.fixed_dictionaries({"op": st.just("admin"),
                           "command": st.sampled_from(sorted(protocol.ADMIN_COMMANDS)),
                           "seed": st.just("127.0.0.1:7999")}, optional={"id": INT}))
# (how the frames are laid out, the body): every envelope a ROUTER may hand over.
FRAME = st.one_of(
    st.tuples(st.just("map"), VALID.map(lambda b: msgpack.packb(b, use_bin_type=True))),
    st.tuples(st.just("map"), BODY.map(lambda b: msgpack.packb(b, use_bin_type=True))),
    st.tuples(st.sampled_from(["dealer", "bare", "two bodies", "no body", "proxied"]),
              st.one_of(ANY.map(lambda x: msgpack.packb(x, use_bin_type=True)),
                        st.binary(max_size=24))))
LAYOUT = {"map": lambda i, b: [i, b"", b], "dealer": lambda i, b: [i, b"", b],
          "bare": lambda i, b: [i, b], "two bodies": lambda i, b: [i, b"", b, b],
          "no body": lambda i, b: [i, b""],
          "proxied": lambda i, b: [i, b"hop", b"", b]}
FATE = st.sampled_from(["answer", "answer twice", "late", "never"])


@settings(max_examples=120, deadline=None)
@given(st.lists(FRAME, max_size=12), st.data())
@example([("map", msgpack.packb({"op": "get", "key": b"k", "id": 2**64 - 1}))], None)
def test_every_client_frame_gets_exactly_one_reply(frames, data):
    net = network.Handler(SMALL)
    callers = [Conn("127.0.0.1") for _ in frames]
    net.handle_frames("client", [LAYOUT[how](b"c%d" % i, body)
                                 for i, (how, body) in enumerate(frames)], 0.0, callers)
    fates, out = {}, []
    for dest, event in net.take_outbox():
        if dest == "client":  # answered at once
            out.append(event)
            continue
        assert (dest, event[0]) in {("coordination", "req"), ("gossip", "admin")}
        fates[event[1]] = data.draw(FATE) if data is not None else "never"
    rid_of = {origin[0][0]: rid for rid, (origin, _) in net.waiting.pending.items()}
    answers = [["reply", rid, {"ok": True, "rid": rid}] for rid, f in fates.items()
               if f.startswith("answer")]
    net.handle_events(answers + [a for a in answers if fates[a[1]] == "answer twice"], 1.0)
    net.tick(2.5)  # past the deadlines of the shortest timeouts
    net.handle_events([["reply", rid, {"ok": True, "rid": rid}] for rid, f in fates.items()
                       if f == "late"], 3.0)
    net.tick(1e6)
    out += [e for dest, e in net.take_outbox() if dest == "client"]
    got: dict[bytes, dict] = {}
    for event in out:
        assert event[0] not in got, f"two replies to frame {event[0]!r}"
        got[event[0]] = msgpack.unpackb(event[-1])
    assert set(got) == {b"c%d" % i for i in range(len(frames))}
    for i, (how, body) in enumerate(frames):
        reply = got[b"c%d" % i]
        assert isinstance(reply["ok"], bool), reply
        if not reply["ok"]:
            assert reply["error"] in protocol.ERROR_CODES and reply["message"], reply
        elif "rid" in reply:
            assert reply.pop("rid") == rid_of[b"c%d" % i], "a reply to another request"
            assert fates[rid_of[b"c%d" % i]] != "never"
        if how == "map" and len(body) <= net.limits.max_body_bytes:
            request = msgpack.unpackb(body)
            if isinstance(request.get("id"), (int, str, bytes)):
                assert reply["id"] == request["id"], (request, reply)
            else:
                assert "id" not in reply, (request, reply)
    assert not net.waiting.pending and not net.waiting.deadlines, "an entry outlived its deadline"
    assert net.requests == len(frames) and not net.errors


@pytest.mark.parametrize("command", [[], {}, ["status"]])
def test_an_admin_command_of_the_wrong_type_is_a_bad_request(command):
    net = network.Handler(CONFIG)
    body = msgpack.packb({"op": "admin", "command": command, "id": 4})
    net.handle_frames("client", [[b"c", b"", body]], 0.0, [Conn("127.0.0.1")])
    (dest, event), = net.take_outbox()
    reply = msgpack.unpackb(event[-1])
    assert (dest, reply["ok"], reply["error"]) == ("client", False, "bad_request"), reply
    assert reply.get("id") == 4 and net.errors == 0


# Deadlines: answered with timeout, and nothing is left behind ---------------------------
def test_a_request_past_its_deadline_is_answered_timeout_and_forgotten():
    net = network.Handler(CONFIG)
    net.handle_frames("client", [[b"c1", b"", msgpack.packb(
        {"op": "put", "key": b"k", "value": b"v", "timeout_ms": 500, "id": 1})],
        [b"c2", b"", msgpack.packb({"op": "get", "key": b"k"})]], 10.0)
    net.handle_frames("client", [[b"c3", b"", msgpack.packb(
        {"op": "admin", "command": "status", "id": 3})]], 10.0, [Conn("127.0.0.1")])
    rids = [e[1] for _, e in net.take_outbox()]
    assert len(rids) == 3 and len(net.waiting.pending) == 3
    deadline = 10.0 + 0.5 + GRACE
    net.tick(deadline - 0.01)
    assert net.take_outbox() == [] and len(net.waiting.pending) == 3, "no timeout before its time"
    net.tick(deadline)
    (dest, event), = net.take_outbox()
    assert (dest, event[0]) == ("client", b"c1")
    assert msgpack.unpackb(event[-1]) == {"ok": False, "error": "timeout", "id": 1,
                                          "message": "the coordinator did not answer in time"}
    net.handle_events([["reply", rids[0], {"ok": True}]], deadline + 1)
    assert net.take_outbox() == [], "a late answer is dropped"
    net.tick(10.0 + CONFIG.timeout_ms / 1000 + GRACE)  # the default deadline
    replies = {e[0]: msgpack.unpackb(e[-1]) for _, e in net.take_outbox()}
    assert replies == {b"c2": {"ok": False, "error": "timeout", "message": ANY_TEXT},
                       b"c3": {"ok": False, "error": "timeout", "id": 3,
                               "message": ANY_TEXT}}
    assert not net.waiting and not net.waiting.deadlines
    assert net.gauges()["requests_in_flight"] == 0


# ping, stats and what admin tpstats makes of them -------------------------------------
def test_ping_and_stats_answer_at_once_with_the_stages_last_reports():
    net = network.Handler(CONFIG)
    reports = {"versioning": {"processed": 5, "errors": 1, "queue_depth": 2},
               "versioning.1": {"processed": 7, "errors": 0, "queue_depth": 1},
               "persistence": {"processed": 3, "commits": 2, "keys": 9}}
    net.handle_events([["stats", stage, counters] for stage, counters in reports.items()], 0.0)
    net.handle_frames("client", [[b"c", b"", msgpack.packb({"op": "ping", "id": 1})],
                                 [b"d", b"", msgpack.packb({"op": "ping"})],
                                 [b"e", b"", msgpack.packb({"op": "stats", "id": 2})]], 1.0)
    out = net.take_outbox()
    assert [d for d, _ in out] == ["client"] * 3, "answered by the network stage itself"
    ping, bare, stats = (msgpack.unpackb(e[-1]) for _, e in out)
    assert ping == {"ok": True, "node": "t", "id": 1} and bare == {"ok": True, "node": "t"}
    assert stats["ok"] and stats["id"] == 2 and stats["node"] == "t"
    assert {k: stats["stages"][k] for k in reports} == reports
    mine = stats["stages"]["network"]
    assert mine["requests"] == 3 and mine["requests_in_flight"] == 0 and mine["errors"] == 0
    rows = {row.stage: row for row in tpstats.rows(stats["stages"])}
    assert [r.stage for r in tpstats.rows(stats["stages"])] == ["persistence", "versioning",
                                                                "network"]
    assert (rows["versioning"].processes, rows["versioning"].processed,
            rows["versioning"].errors, rows["versioning"].queue_depth) == (2, 12, 1, 3)
    assert "versioning" in tpstats.text("t", stats["stages"])
