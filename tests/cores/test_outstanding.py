"""What the network stage waits on (``seda_dynamo.outstanding``): every client request is
closed once, by its reply or its deadline; an answer completes only a call this node
made, once, of the kind it expects; a forwarded write is taken once per call; nothing
is kept without a deadline, and the calls kept are bounded.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo.outstanding import CALL_TTL, GRACE, Calls, Remote, Requests, Taken


def test_a_request_is_closed_once_by_its_reply_or_its_deadline():
    r = Requests(first_rid=100)
    a = r.open("client a", 0.0, 1.0)
    b = r.open("client b", 0.0, 5.0, measured=False)
    assert a != b and min(a, b) > 100
    assert r.close(a) == ("client a", 0.0)
    assert r.close(a) is None, "answered twice"
    assert r.expired(1.0 + GRACE) == [], "a's deadline passed, but a was answered"
    assert r.expired(5.0 + GRACE - 0.01) == []
    assert r.expired(5.0 + GRACE) == ["client b"]
    assert r.close(b) is None and len(r) == 0


@given(st.lists(st.tuples(st.sampled_from(["open", "close", "tick"]),
                          st.floats(0, 10), st.integers(0, 20)), max_size=60))
def test_every_open_request_has_a_deadline_and_each_is_closed_once(ops):
    r = Requests(first_rid=0)
    now, opened, closed = 0.0, [], []
    for op, x, i in ops:
        if op == "open":
            opened.append(r.open(len(opened), now, x))
        elif op == "close" and opened:
            if r.close(opened[i % len(opened)]) is not None:
                closed.append(opened[i % len(opened)])
        else:
            now += x
            closed += [opened[origin] for origin in r.expired(now)]
        assert set(r.pending) <= {rid for _, rid in r.deadlines}
    closed += [opened[origin] for origin in r.expired(1e9)]
    assert sorted(closed) == sorted(opened) and len(r) == 0


def calls(seed: int = 1, max_calls: int = 100) -> Calls:
    return Calls(random.Random(seed).getrandbits, max_calls)


def test_an_answer_completes_only_an_open_call_of_the_kind_it_expects_once():
    c = calls()
    cid = c.open(0.0, "p:1", "coordination", 7, "b", "updated", 3.0)
    assert cid > 0 and list(c) == [cid]
    assert c.answered(cid, "got") is None, "a forged kind"
    assert c.answered(cid + 1, "updated") is None, "no such call"
    call = c.answered(cid, "updated")
    assert (call.peer, call.stage, call.ref, call.node) == ("p:1", "coordination", 7, "b")
    assert c.answered(cid, "updated") is None, "taken twice"


def test_a_request_that_expects_no_answer_keeps_nothing():
    c = calls()
    assert c.open(0.0, "p:1", "gossip", None, None, None) == 0
    assert len(c) == 0 and not c.deadlines


def test_calls_are_forgotten_at_their_deadline_or_when_lost():
    c = calls()
    short = c.open(0.0, "p:1", "gossip", 1, None, "pong", 1.0)
    default = c.open(0.0, "p:1", "gossip", 2, None, "pong", "not a number")
    lost = c.open(0.0, "p:2", "gossip", 3, None, "pong", -5)
    assert c.lost(lost).ref == 3 and c.lost(lost) is None
    c.expire(1.0 + GRACE)
    assert list(c) == [default]
    c.expire(CALL_TTL + GRACE)
    assert len(c) == 0 and c.answered(short, "pong") is None


@given(st.lists(st.floats(0.1, 100), min_size=1, max_size=40), st.integers(1, 10))
def test_the_calls_kept_are_bounded_and_a_new_call_is_always_kept(ttls, bound):
    c = calls(max_calls=bound)
    made = [(c.open(0.0, "p:1", "gossip", i, None, "pong", ttl), ttl)
            for i, ttl in enumerate(ttls)]
    assert len(c) == min(bound, len(ttls))
    assert len(set(cid for cid, _ in made)) == len(made), "a call id reused"
    assert set(c) <= {cid for _, cid in c.deadlines}
    # The last call made is always kept: room is made by forgetting others.
    assert made[-1][0] in set(c)


def test_a_remote_origin_round_trips():
    origin = Remote("10.0.0.1:7100", 99).as_wire()
    back = Remote.from_wire(origin)
    assert (back.peer, back.call_id) == ("10.0.0.1:7100", 99)


def test_a_forwarded_call_is_taken_once_until_its_deadline_and_what_is_kept_is_bounded():
    t = Taken(max_kept=3)
    b7, c7 = Remote("b", 7), Remote("c", 7)
    assert t.first(b7, 0.0, 1000) and not t.first(b7, 0.5, 1000), "a copy"
    assert t.first(c7, 0.5, 1000), "another caller's call 7 is another call"
    assert not t.first(b7, 1.0 + GRACE - 0.01, 1000)
    assert t.first(Remote("b", 0), 0.0, 1000) and t.first(Remote("b", 0), 0.0, 1000), \
        "call id 0 (no answer expected) is never kept"
    assert t.first(b7, 1.0 + GRACE, 1000), "past its deadline the call is forgotten"
    for i in range(10):
        t.first(Remote("d", i + 1), 2.0, 60_000)
    assert len(t) <= 3
