"""Failures within one request (``seda_dynamo.failover``, paper 4.6): a forwarded write
goes on with what is left of its deadline, or not at all; a spare of a write holds it
for the owner the failed target held it for, however many replacements in a row; a
spare of a forwarded write that is this node takes the write over; a forwarded write
is sent to a second node only when the first certainly never got it (a silent one may
have stamped it: a second would stamp it again).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo.failover import (
    ATTEMPT_SHARE,
    FORWARD,
    FORWARD_SHARE,
    FORWARD_SLACK,
    NOTHING,
    PUT,
    READ,
    STAMP_HERE,
    forward_request,
    replace,
    taken_over,
)
from seda_dynamo.inflight import InFlight
from seda_dynamo.routing import Route, Target

ROUTE = Route((Target("a"), Target("b"), Target("c", "x")), ("d", "e", "f"))
#: A forwarded write's route (``placement.forwarding``): the first chosen, then the rest.
ONWARD = Route((Target("a"),), ("b", "c", "d", "e", "f"))


def pending(op: str = "put", deadline: float = 3.0, forward: bool = False):
    if forward:
        _, p = InFlight(0).track(1, op, b"k", 1, ONWARD, deadline, 0.0, FORWARD_SHARE * 3.0,
                                 forward=[op, b"k", b"v", None, None, 2])
        return p
    _, p = InFlight(0).track(1, op, b"k", 2, ROUTE, deadline, 0.0, ATTEMPT_SHARE * 3.0)
    return p


def test_the_attempt_shares_leave_a_forward_room_for_a_round_of_its_own():
    assert 0 < ATTEMPT_SHARE < FORWARD_SHARE < 1 and FORWARD_SLACK > 0


@given(st.floats(0, 5))
def test_a_forward_carries_what_is_left_of_its_deadline_or_is_not_sent(now):
    p = pending(deadline=3.0 + FORWARD_SLACK, forward=True)
    sent = forward_request(p, now)
    left = p.deadline - FORWARD_SLACK - now
    if left <= 0:
        assert sent is None
        return
    assert sent is not None
    request, attempt = sent
    assert request[:7] == ["fwd", "put", b"k", b"v", None, None, 2]
    assert 1 <= request[7] <= max(1, left * 1000) and attempt == min(p.attempt, left)


@given(st.lists(st.sampled_from("defghi"), min_size=1, max_size=6, unique=True))
def test_a_write_s_spares_hold_it_for_the_owner_of_the_place_they_take(chain):
    """Each spare (never one of the targets: the quorum asks each node once) replaces
    the last one asked, a chain of failures: the hint it carries is always the first
    owner's."""
    p = pending()
    p.clock = b"stamped"
    replaced, owner = "c", "x"  # c was already a fallback for x
    for spare in chain:
        step, request = replace(p, spare, replaced, "me")
        assert step == PUT and request == ["rput", b"k", b"stamped", owner]
        assert p.targets[-1] == Target(spare, owner)
        replaced = spare
    fresh = replace(p, "z", "a", "me")  # a primary replaced: held for a itself
    assert fresh == (PUT, ["rput", b"k", b"stamped", "a"])


def test_a_spare_is_asked_what_its_request_needs():
    get = pending("get")
    assert replace(get, "d", "a", "me") == (READ, []) and get.targets[-1] == Target("d", "a")
    unstamped = pending("put")  # the stamp's own answer will ask every target
    assert replace(unstamped, "d", "a", "me") == (NOTHING, [])
    assert unstamped.targets[-1] == Target("d", "a")


def test_a_forwarded_write_goes_to_the_next_node_or_is_taken_over_here():
    p = pending(deadline=3.0 + FORWARD_SLACK, forward=True)
    assert replace(p, "b", "a", "me") == (FORWARD, []) and p.targets[-1] == Target("b")
    before = list(p.targets)
    assert replace(p, "me", "b", "me") == (STAMP_HERE, []) and p.targets == before
    write, deadline, timeout = taken_over(p)
    assert write == ["put", b"k", b"v", None, None, 2] and deadline == 3.0
    assert abs(timeout - 3.0) < 1e-9, "the timeout the forward was given"


def test_a_forwarded_write_goes_on_only_from_a_target_it_certainly_never_reached():
    """The forward target was sent the write and is silent: it may have stamped it, so
    the next node is not asked (it would stamp it again, a second dot of one write that
    a later read-modify-write could miss). One the network stage could not send it to
    is replaced by the next node."""
    p = pending(deadline=3.0 + FORWARD_SLACK, forward=True)
    assert p.forward is not None and p.quorum.asked == ("a",)
    p.quorum.on("slow", "a")
    assert p.quorum.take_asks() == [], "a silent forward target stays the only one"
    p.quorum.on("fail", "a", "unreachable")
    [(spare, replaced)] = p.quorum.take_asks()
    assert (spare, replaced) == ("b", "a")
    assert replace(p, spare, replaced, "me") == (FORWARD, [])
    p.quorum.on("slow", "b")
    assert p.quorum.take_asks() == [] and p.quorum.on("deadline") is not None
    plain = pending()  # a replica's rput may be sent twice: a slow one is replaced
    plain.quorum.on("slow", "a")
    assert plain.quorum.take_asks() == [("d", "a")]
