"""A request through every stage handler of one node, in memory: any interleaving.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline import Pipeline


def test_put_then_get_through_the_handlers():
    p = Pipeline()
    p.request({"op": "put", "key": b"k", "value": b"v", "id": 1})
    p.run()
    p.request({"op": "get", "key": b"k", "id": 2})
    p.run()
    assert [r["id"] for r in p.replies] == [1, 2]
    assert p.replies[1]["values"] == [b"v"]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.lists(st.integers(0, 3), max_size=60))
def test_concurrent_blind_puts_never_lose_a_sibling_in_any_interleaving(count, picks):
    p = Pipeline()
    for i in range(count):
        p.request({"op": "put", "key": b"hot", "value": b"%d" % i, "id": i})
        if picks:
            p.step(picks.pop())
    p.run(picks)
    assert sorted(r["id"] for r in p.replies) == list(range(count))
    assert all(r["ok"] for r in p.replies)
    p.request({"op": "get", "key": b"hot", "id": 99})
    p.run()
    assert sorted(p.replies[-1]["values"]) == sorted(b"%d" % i for i in range(count))


def test_a_write_waiting_on_persistence_fails_at_the_deadline_instead_of_hanging():
    p = Pipeline()
    p.request({"op": "put", "key": b"k", "value": b"v", "id": 1, "timeout_ms": 50})
    p.step()  # network -> coordination
    p.step()  # coordination -> versioning; persistence never answers
    p.queues["persistence"].clear()
    p.now = 1.0
    for handler in p.stages.values():
        handler.tick(p.now)
    p.collect()
    p.run()
    assert p.replies == [{"ok": False, "error": "timeout", "id": 1,
                          "message": "0 of 1 replicas answered before the deadline"}]


@pytest.mark.parametrize("op", ["put", "get"])
@pytest.mark.parametrize("full", ["coordination", "versioning", "persistence"])
def test_a_request_whose_next_queue_is_full_is_answered_overloaded_at_once(op, full):
    """SEDA's full queue as an event (Sandstorm's SinkFull): whichever stage on the
    request's path cannot take its next step, the client hears ``overloaded`` with no
    deadline passing (no tick), and no stage keeps state for the request."""
    p = Pipeline()
    p.full = {full}
    body = {"op": op, "key": b"k", "id": 4}
    if op == "put":
        body["value"] = b"v"
    p.request(body)
    p.run()
    if op == "get" and full == "versioning":  # a get never passes versioning
        assert p.replies[-1]["ok"] is True
        return
    assert [(r["id"], r["ok"], r["error"]) for r in p.replies] == [(4, False, "overloaded")]
    assert full in p.replies[0]["message"]
    assert not p.stages["network"].waiting
    assert not p.stages["coordination"].requests
    assert not p.stages["versioning"].inflight and not p.stages["versioning"].pending
    p.full = set()
    p.request(body)  # and the node serves again once there is room
    p.run()
    assert p.replies[-1]["ok"] is True
