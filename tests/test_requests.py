"""The coordinator's quorum state machine, driven event by event."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo.requests import DONE, TRANSITIONS, Outcome, QuorumRequest


def test_every_state_event_pair_has_a_transition():
    assert set(TRANSITIONS) == {(s, e) for s in ("waiting", "done")
                                for e in ("ok", "fail", "deadline")}


def test_quorum_reached_after_needed_oks():
    q = QuorumRequest(2, ("a", "b", "c"))
    assert q.start() is None
    assert q.on("ok", "a", 1) is None
    assert q.on("ok", "a", 1) is None, "a duplicate reply does not count twice"
    assert q.on("ok", "b", 2) is Outcome.OK
    assert q.state == DONE
    assert q.on("ok", "c", 3) is None and q.replies == {"a": 1, "b": 2, "c": 3}
    assert q.on("deadline") is None


def test_unavailable_as_soon_as_the_quorum_cannot_be_reached():
    q = QuorumRequest(2, ("a", "b", "c"))
    assert q.on("fail", "a") is None
    assert q.on("fail", "b") is Outcome.UNAVAILABLE


def test_too_few_replicas_is_unavailable_at_once():
    assert QuorumRequest(2, ("a",)).start() is Outcome.UNAVAILABLE


def test_deadline_times_out():
    q = QuorumRequest(2, ("a", "b"))
    q.on("ok", "a")
    assert q.on("deadline") is Outcome.TIMEOUT


def test_replies_from_unknown_nodes_are_ignored():
    q = QuorumRequest(1, ("a",))
    assert q.on("ok", "zz") is None and q.on("fail", "zz") is None


@given(st.integers(1, 5), st.lists(st.tuples(st.sampled_from(["ok", "fail"]),
                                             st.integers(0, 4)), max_size=12))
def test_the_outcome_is_decided_once_and_matches_the_counts(n_needed, events):
    nodes = tuple("abcde")
    q = QuorumRequest(n_needed, nodes)
    outcomes = [q.start()]
    for kind, i in events:
        outcomes.append(q.on(kind, nodes[i]))
    decided = [o for o in outcomes if o is not None]
    assert len(decided) <= 1
    if decided == [Outcome.OK]:
        assert len(q.replies) >= n_needed
    if decided == [Outcome.UNAVAILABLE]:
        assert len(q.failed) > len(nodes) - n_needed
    if not decided:
        assert len(q.replies) < n_needed
        assert len(q.failed) <= len(nodes) - n_needed
