"""Reply routes, timers and calls that the gossip stage's duties share (seda_dynamo.duty)."""

from __future__ import annotations

from duties import Sent
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.duty import _SHAPES, Component, Duty, Route, Timer

VALUES = {float: st.floats(allow_nan=False), int: st.integers(-2**63, 2**64 - 1),
          str: st.text(max_size=8), bytes: st.binary(max_size=8)}


@st.composite
def routes(draw) -> Route:
    duty = draw(st.sampled_from(list(Duty)))
    return Route(duty, tuple(draw(VALUES[t]) for t in _SHAPES[duty]))


@settings(max_examples=300, deadline=None)
@given(routes())
def test_every_route_comes_back_from_its_ref(route):
    ref = route.ref()
    assert ref[0] == route.duty.value
    assert Route.parse(ref) == route


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                              st.binary(max_size=4), st.text(max_size=6)),
                    lambda inner: st.lists(inner, max_size=4), max_leaves=8))
def test_a_ref_either_names_a_route_of_the_right_shape_or_none(ref):
    route = Route.parse(ref)
    if route is not None:
        assert route.ref() == ref
        assert all(type(v) is t for v, t in zip(route.ident, _SHAPES[route.duty], strict=True))


def test_refs_of_other_shapes_name_no_route():
    for ref in ("scan", [], [1], ["nope", 1], ["xfer", 1], ["xfer", 1, "2"], ["ae", True],
                ["ping", 1], ["hint", "n2", b"k"], ["view", 1], None, {"ae": 1}):
        assert Route.parse(ref) is None, ref


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 100), max_size=40), st.floats(0.01, 10))
def test_a_timer_is_due_at_most_once_per_period(times, every):
    timer, fired = Timer(), []
    for now in sorted(times):
        if timer.due(now, every):
            fired.append(now)
    assert all(b - a >= every for a, b in zip(fired, fired[1:], strict=False))
    assert not times or fired[0] == min(times)


def test_a_call_names_the_reply_stage_the_ref_and_the_node_when_known():
    """As every stage's calls: node and ttl always on the wire (nil: unknown, default)."""
    sent = Sent()
    duty = Component(sent, "gossip")
    duty.call("127.0.0.1:7102", Route(Duty.TRANSFER, (3, 9)), ["rput", b"k", b"v", None], "n2")
    duty.call("127.0.0.1:7103", Route(Duty.VIEW), ["gossip", {}])
    assert sent.take() == [
        ("network", ["call", "127.0.0.1:7102", "gossip", ["xfer", 3, 9],
                     ["rput", b"k", b"v", None], "n2", None]),
        ("network", ["call", "127.0.0.1:7103", "gossip", ["view"], ["gossip", {}], None,
                     None])]
