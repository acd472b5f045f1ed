"""Every kind of bad input gets its documented error code, and the node keeps serving."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq

pytestmark = pytest.mark.integration

KEY_LIMIT = 64 * 1024
VALUE_LIMIT = 1024 * 1024

CASES = [
    ("not msgpack", b"\xc1\xc1\xc1", "bad_request"),
    ("truncated", msgpack.packb({"op": "get", "key": b"k"})[:-1], "bad_request"),
    ("not a map", msgpack.packb([1, 2, 3]), "bad_request"),
    ("a bare int", msgpack.packb(42), "bad_request"),
    ("two objects", msgpack.packb({"op": "ping"}) * 2, "bad_request"),
    ("unknown op", msgpack.packb({"op": "frobnicate", "id": 1}), "bad_request"),
    ("op not a str", msgpack.packb({"op": 5}), "bad_request"),
    ("no op", msgpack.packb({"key": b"k"}), "bad_request"),
    ("missing key", msgpack.packb({"op": "get"}), "bad_request"),
    ("key an int", msgpack.packb({"op": "get", "key": 5}), "bad_request"),
    ("missing value", msgpack.packb({"op": "put", "key": b"k"}), "bad_request"),
    ("value a list", msgpack.packb({"op": "put", "key": b"k", "value": [1]}), "bad_request"),
    ("context not bin", msgpack.packb({"op": "put", "key": b"k", "value": b"v",
                                       "context": 7}), "bad_request"),
    ("forged context", msgpack.packb({"op": "put", "key": b"k", "value": b"v",
                                      "context": b"\x01\xff\x00"}), "bad_request"),
    ("r out of range", msgpack.packb({"op": "get", "key": b"k", "r": 99}), "bad_request"),
    ("w not an int", msgpack.packb({"op": "put", "key": b"k", "value": b"v", "w": "2"}),
     "bad_request"),
    ("timeout negative", msgpack.packb({"op": "get", "key": b"k", "timeout_ms": -1}),
     "bad_request"),
    ("id a bool", msgpack.packb({"op": "ping", "id": True}), "bad_request"),
    ("map keys not str", msgpack.packb({1: 2}), "bad_request"),
    ("oversized key", msgpack.packb({"op": "get", "key": b"k" * (KEY_LIMIT + 1)}),
     "too_large"),
    ("oversized value", msgpack.packb({"op": "put", "key": b"k",
                                       "value": b"v" * (VALUE_LIMIT + 1)}), "too_large"),
    ("deep nesting", b"\x91" * 100_000 + b"\x00", "bad_request"),
    ("huge declared array", b"\xdd\xff\xff\xff\xff", "bad_request"),
    ("huge declared map", b"\xdf\xff\xff\xff\xff", "bad_request"),
    ("huge declared bin", b"\x81\xa3key\xc6\xff\xff\xff\xff", "bad_request"),
    ("huge declared str", b"\xdb\x7f\xff\xff\xff", "bad_request"),
    ("ext type", b"\xd4\x01\x00", "bad_request"),
]


@pytest.fixture
def dealer(node):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{node.server}")
    yield sock
    sock.close(linger=0)
    ctx.term()


def ask(sock, frames):
    sock.send_multipart(frames)
    assert sock.poll(5000), "no reply: the node must answer bad input"
    return msgpack.unpackb(sock.recv_multipart()[-1])


def test_every_bad_input_gets_its_code_and_nothing_is_lost(node, dealer):
    assert ask(dealer, [b"", msgpack.packb({"op": "put", "key": b"keep", "value": b"safe"})])["ok"]
    for name, body, code in CASES:
        reply = ask(dealer, [b"", body])
        assert reply["ok"] is False, name
        assert reply["error"] == code, (name, reply)
        assert isinstance(reply["message"], str) and reply["message"], name
    reply = ask(dealer, [b"", msgpack.packb({"op": "unknown", "id": 41})])
    assert reply["id"] == 41, "the id of a bad request is echoed when it is an int"
    reply = ask(dealer, [b"", b"body", b"extra frame"])
    assert reply["error"] == "bad_request"
    reply = ask(dealer, [b"", msgpack.packb({"op": "get", "key": b"keep", "id": 9})])
    assert (reply["ok"], reply["values"], reply["id"]) == (True, [b"safe"], 9)
    with node.client() as c:
        stages = c.stats()
        assert c.ping() == "n1"
    assert stages["network"]["bad_requests"] >= len(CASES)
    assert node.proc.poll() is None


def test_limits_are_inclusive_and_a_dealer_without_delimiter_is_answered(node, dealer):
    body = msgpack.packb({"op": "put", "key": b"k" * KEY_LIMIT, "value": b"v" * VALUE_LIMIT,
                          "id": 3})
    assert ask(dealer, [b"", body])["ok"] is True
    reply = ask(dealer, [msgpack.packb({"op": "ping", "id": 5})])
    assert reply == {"ok": True, "node": "n1", "id": 5}


def test_a_frame_far_over_the_limit_never_stops_the_node(node, dealer):
    dealer.send_multipart([b"", b"\x00" * (8 * VALUE_LIMIT)])
    other = zmq.Context()
    try:
        with node.client() as c:
            assert c.ping() == "n1"
    finally:
        other.term()


def test_a_bad_address_from_a_client_or_a_peer_never_makes_the_node_deaf(node, dealer):
    """Issue 11, item 4: 'admin join' with seed 'x:y' was accepted and the network stage
    then died at every gossip round (zmq connect raised), so the node answered nothing.
    Now the seed is a bad_request, and a peer frame asking its reply at a bad address is
    dropped; either way the node keeps answering and its network stage keeps its pid."""
    pid = node.stage_pids()["network"]
    reply = ask(dealer, [b"", msgpack.packb({"op": "admin", "command": "join", "seed": "x:y",
                                             "id": 7})])
    assert (reply["ok"], reply["error"], reply["id"]) == (False, "bad_request", 7)
    assert "seed" in reply["message"] and "HOST:PORT" in reply["message"]
    ctx = zmq.Context()
    peer = ctx.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(f"tcp://{node.peer}")
    try:
        for bad in ("x:y", "127.0.0.1:0", "ho st:1"):
            peer.send(msgpack.packb([["req", bad, ["gossip", 1], ["ping"]]]))
        time.sleep(2.5)  # more than two gossip rounds: the old code died at each
    finally:
        peer.close(linger=0)
        ctx.term()
    reply = ask(dealer, [b"", msgpack.packb({"op": "ping", "id": 8})])
    assert reply == {"ok": True, "node": "n1", "id": 8}
    assert node.stage_pids()["network"] == pid, "the network stage died and was restarted"
    assert node.stats()["network"]["bad_peer_events"] >= 3
