"""The network stage's handler: the client and peer ports, without sockets.

Where addresses and admin commands enter a node, at the stage handlers (no sockets).

Issue 11, items 4 and 7: a peer frame's reply address and an ``admin join`` seed pass the
one address check (``seda_dynamo.address``) before any socket sees them; ``admin join``
and ``leave`` are taken only from loopback (no CURVE) or from a key on
``curve_admin_keys`` (CURVE), judged from the connection the runtime describes.
"""

from __future__ import annotations

import msgpack
from pipeline import CONFIG

from stages import network


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
