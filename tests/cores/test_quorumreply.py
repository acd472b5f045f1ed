"""The client's answer to a finished quorum and its read repair
(``seda_dynamo.quorumreply``, paper 4.5 and 5): a get answers every concurrent version
its replicas returned, and read repair sends the merge to exactly the replicas that
answered with less.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo import causality
from seda_dynamo.quorumreply import (
    error,
    failed_reply,
    final_reply,
    ok_reply,
    refusal,
    repairs,
    replica_answer,
    reply_error,
)
from seda_dynamo.requests import (
    ABORT_EVENT,
    DEADLINE_EVENT,
    FAIL_EVENT,
    OK_EVENT,
    QuorumRequest,
)
from seda_dynamo.routing import Target


def version(value: bytes, actor: str, base: causality.DVVSet = causality.EMPTY) -> bytes:
    return causality.encode(causality.update(causality.new(value), base, actor))


def test_a_write_error_is_the_request_s_own_only_with_a_refusal_code():
    assert refusal("bad_request: a context too large") == "bad_request"
    assert refusal("too_large: 70 MB") == "too_large"
    assert refusal("internal: boom") is None and refusal("bad_request") is None
    assert reply_error({"ok": True}) is None
    assert reply_error({"ok": False, "error": "timeout"}) == "timeout"
    assert reply_error(error("unavailable", "x")) == "unavailable"


@given(st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=4, unique=True))
def test_a_get_answers_every_concurrent_version_its_replicas_returned(values):
    replies = {f"n{i}": version(v, f"actor{i}#1") for i, v in enumerate(values)}
    replies["empty"] = None
    reply, read = ok_reply("get", replies, "n0", 7)
    assert reply["ok"] and reply["epoch"] == 7
    assert sorted(reply["values"]) == sorted(values) and read == len(values)
    assert reply["context"] is not None


def test_a_write_answers_the_context_this_node_stamped_and_a_get_of_nothing_is_empty():
    assert ok_reply("put", {"a": b"ctx", "b": b"other"}, "a", 1) == (
        {"ok": True, "context": b"ctx", "epoch": 1}, None)
    assert ok_reply("get", {"a": None, "b": None}, "a", 1) == (
        {"ok": True, "values": [], "context": None, "epoch": 1}, 0)


def test_a_failed_quorum_says_how_many_replicas_could_answer():
    late = QuorumRequest(2, ("a", "b", "c"), ())
    late.on(DEADLINE_EVENT)
    assert failed_reply(late)["error"] == "timeout"
    assert "0 of 2" in failed_reply(late)["message"]
    gone = QuorumRequest(2, ("a", "b", "c"), ())
    for node in "ab":
        gone.on(FAIL_EVENT, node)
    assert failed_reply(gone) == error("unavailable", "2 replicas needed, 1 could answer")
    aborted = QuorumRequest(1, ("a",), ())
    aborted.on(ABORT_EVENT, "a", "disk full")
    assert failed_reply(aborted, "the write failed")["message"] == "the write failed"


@given(st.lists(st.sampled_from(["old", "new", "none", "sibling"]), min_size=1, max_size=5))
def test_read_repair_reaches_exactly_the_replicas_that_answered_with_less(holds):
    old = causality.update(causality.new(b"v1"), causality.EMPTY, "a#1")
    new = causality.update(causality.new(b"v2"), old, "a#1")
    sibling = causality.update(causality.new(b"s"), old, "b#1")
    clocks = {"old": old, "new": new, "sibling": sibling}
    replies = {f"n{i}": causality.encode(clocks[h]) if h != "none" else None
               for i, h in enumerate(holds)}
    targets = [Target(node) for node in replies] + [Target("silent")]
    encoded, behind = repairs(replies, targets)
    merged = causality.sync_all([clocks[h] for h in holds if h != "none"]) \
        if any(h != "none" for h in holds) else causality.EMPTY
    expected = [Target(node) for node, raw in replies.items()
                if not causality.equal(causality.decode(raw) if raw else causality.EMPTY,
                                       merged)]
    assert behind == expected, "a silent target is never repaired"
    if behind:
        assert causality.equal(causality.decode(encoded), merged)
    else:
        assert encoded is None


def test_unreadable_answers_repair_nothing():
    assert repairs({"a": b"\x00garbage", "b": version(b"v", "a#1")},
                   [Target("a"), Target("b")]) == (None, [])


def test_a_finished_quorum_is_answered_and_counted_by_its_outcome():
    ok = QuorumRequest(1, ("a",), ())
    ok.start()
    ok.on(OK_EVENT, "a", version(b"v", "a#1"))
    reply, read, counted = final_reply("get", ok, "", "a", 3)
    assert reply["values"] == [b"v"] and (read, counted) == (1, None)
    bad = QuorumRequest(1, ("a",), ())
    bad.start()
    bad.on(OK_EVENT, "a", b"\x00garbage")
    reply, read, counted = final_reply("get", bad, "", "a", 3)
    assert reply["error"] == "internal" and "unreadable" in reply["message"]
    assert (read, counted) == (None, None), "a bug, not a timeout or an unavailable"
    late = QuorumRequest(2, ("a", "b"), ())
    late.on(DEADLINE_EVENT)
    assert final_reply("put", late, "", "a", 3) == (failed_reply(late), None, "timeouts")
    gone = QuorumRequest(1, ("a",), ())
    gone.on(ABORT_EVENT, "a", "disk full")
    assert final_reply("put", gone, "why", "a", 3) == (error("unavailable", "why"), None,
                                                      "unavailable")


def test_a_replica_s_answer_is_an_ok_unless_it_carries_an_error():
    assert replica_answer(["updated", None]) == (OK_EVENT, None)
    assert replica_answer(["updated", "disk full"]) == (FAIL_EVENT, "disk full")
    assert replica_answer(["got", b"raw", None]) == (OK_EVENT, b"raw")
    assert replica_answer(["got", None, "boom"]) == (FAIL_EVENT, None)
