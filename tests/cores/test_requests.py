"""The coordinator's quorum state machine, driven event by event."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo.requests import DONE, TRANSITIONS, Outcome, QuorumRequest


def test_every_state_event_pair_has_a_transition():
    assert set(TRANSITIONS) == {(s, e) for s in ("waiting", "done")
                                for e in ("ok", "fail", "slow", "deadline", "abort")}


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
        assert len(q.replies) + q.outstanding + len(q.spare) < n_needed
    if not decided:
        assert len(q.replies) < n_needed
        assert len(q.failed) <= len(nodes) - n_needed


# Replacing failed targets (paper 4.6: the next node of the extended preference list) ------
def test_an_unreachable_target_is_replaced_by_the_next_spare_in_order():
    q = QuorumRequest(2, ("a", "b", "c"), ("d", "e"))
    assert q.start() is None
    assert q.on("fail", "a", "unreachable") is None
    assert q.take_asks() == [("d", "a")]
    assert q.on("fail", "b") is None
    assert q.take_asks() == [("e", "b")] and q.spare == ()
    assert q.on("ok", "d", 1) is None
    assert q.on("ok", "e", 2) is Outcome.OK
    assert q.replies == {"d": 1, "e": 2}


def test_a_slow_target_is_replaced_once_and_its_late_answer_still_counts():
    q = QuorumRequest(2, ("a", "b", "c"), ("d", "e"))
    q.on("slow", "a")
    assert q.take_asks() == [("d", "a")]
    q.on("slow", "a")
    q.on("fail", "a")  # slow, then proved down: it was replaced already
    assert q.take_asks() == [] and q.spare == ("e",)
    q2 = QuorumRequest(2, ("a", "b", "c"), ("d",))
    q2.on("slow", "a")
    assert q2.on("ok", "a", 1) is None, "the slow one answers after all"
    assert q2.on("ok", "d", 2) is Outcome.OK


def test_a_silent_target_of_a_write_sent_once_stays_asked_and_only_a_failed_one_is_replaced():
    """A forwarded write (``replace_slow=False``): a silent target may have applied it,
    so no spare is asked in its place (it would stamp the write a second time); the
    request ends by its deadline unless the silent one answers. A target the write
    certainly never reached (``fail``: the network stage could not send it) is replaced."""
    q = QuorumRequest(1, ("a",), ("b", "c"), replace_slow=False)
    assert q.start() is None
    assert q.on("slow", "a") is None and q.take_asks() == [] and q.spare == ("b", "c")
    assert "a" in q.slow and q.waiting_on("a")
    assert q.on("ok", "a", "reply") is Outcome.OK, "its late answer is the answer"
    q = QuorumRequest(1, ("a",), ("b", "c"), replace_slow=False)
    q.on("slow", "a")
    assert q.on("deadline") is Outcome.TIMEOUT
    q = QuorumRequest(1, ("a",), ("b", "c"), replace_slow=False)
    assert q.on("fail", "a", "unreachable") is None and q.take_asks() == [("b", "a")]
    q.on("slow", "b")
    assert q.take_asks() == [] and q.spare == ("c",)
    q.on("fail", "b", "unreachable")  # slow, then proved never sent: replaced now
    assert q.take_asks() == [("c", "b")]


@given(st.lists(st.tuples(st.sampled_from(["slow", "fail"]), st.integers(0, 5)),
                max_size=20))
def test_a_write_sent_once_is_never_with_two_targets_that_may_hold_it(schedule):
    """Whatever order silence and failed sends come in, at most one target of a
    request that must not be sent twice has not certainly failed."""
    nodes = tuple("abcdef")
    q = QuorumRequest(1, nodes[:1], nodes[1:], replace_slow=False)
    for kind, i in schedule:
        q.on(kind, nodes[i])
        q.take_asks()
        assert len([n for n in q.asked if n not in q.failed]) <= 1, (q.asked, q.failed)


def test_unavailable_only_once_the_spares_are_used_up():
    q = QuorumRequest(2, ("a", "b", "c"), ("d",))
    assert q.on("fail", "a") is None
    assert q.on("fail", "b") is None, "c and d are still asked"
    assert q.take_asks() == [("d", "a")]
    assert q.on("fail", "c") is Outcome.UNAVAILABLE


def test_spares_only_replace_targets():
    """The first N healthy nodes are asked: fewer than needed means there are no spares
    either (routing.route), so it is decided at once."""
    assert QuorumRequest(2, ("a",), ("b",)).start() is Outcome.UNAVAILABLE


def test_abort_ends_the_request_unavailable_and_the_deadline_still_bounds_it():
    q = QuorumRequest(2, ("a", "b"), ("c",))
    assert q.on("abort") is Outcome.UNAVAILABLE
    assert q.on("ok", "a") is None and q.on("abort") is None
    q = QuorumRequest(2, ("a", "b"), ("c", "d"))
    q.on("slow", "a")
    q.on("slow", "b")
    assert q.on("deadline") is Outcome.TIMEOUT
    assert q.on("slow", "c") is None and q.take_asks() == [("c", "a"), ("d", "b")]


@given(st.integers(1, 5), st.integers(1, 7), st.sets(st.integers(0, 6)),
       st.lists(st.tuples(st.sampled_from(["answer", "slow"]), st.integers(0, 6)),
                max_size=30))
def test_the_request_succeeds_exactly_when_enough_targets_are_alive(needed, first, dead,
                                                                   schedule):
    """Whatever order replies, failures and slowness come in, a request whose targets
    and spares hold at least ``needed`` live nodes succeeds; with fewer it is refused as
    unavailable (never a timeout while nothing is silent)."""
    nodes = tuple("abcdefg")
    first = max(first, needed)
    q = QuorumRequest(needed, nodes[:first], nodes[first:])
    assert q.start() is None
    alive = len(nodes) - len(dead)
    pending = list(q.asked)
    asked_once: list[str] = list(q.asked)

    def answer(node: str) -> None:
        q.on("fail" if nodes.index(node) in dead else "ok", node, node)

    for kind, i in schedule:  # some targets answer early, some are found slow
        node = nodes[i]
        if node in pending:
            if kind == "slow":
                q.on("slow", node)
            else:
                pending.remove(node)
                answer(node)
        for new, _old in q.take_asks():
            assert new not in asked_once, "a node is asked once"
            asked_once.append(new)
            pending.append(new)
    while pending and q.state == "waiting":
        answer(pending.pop(0))
        for new, _old in q.take_asks():
            assert new not in asked_once
            asked_once.append(new)
            pending.append(new)
    assert q.outcome is (Outcome.OK if alive >= needed else Outcome.UNAVAILABLE)
    assert asked_once == list(nodes[: len(asked_once)]), "spares are asked in order"
