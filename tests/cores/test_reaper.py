"""The tombstone-reaping rule, without sockets; and the reaping duty (``Reaper``) that
queues deleted keys and checks every member, under a fake clock."""

from __future__ import annotations

from duties import FakeCluster, Sent, settled_view
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo import causality
from seda_dynamo.duty import Duty, Route
from seda_dynamo.reaper import CHECK_DEADLINE, MAX_ATTEMPTS, Reaper, verdict, worth_retrying

LIVE = causality.update(causality.new(b"v"), causality.EMPTY, "a#1")
TOMB = causality.update(causality.new(None, causality.join(LIVE)), LIVE, "a#1")
T = causality.encode(TOMB)
L = causality.encode(LIVE)


def test_reap_when_every_holder_has_exactly_the_tombstone_and_no_hint_exists():
    assert verdict({"a": (T, False), "b": (T, False), "c": (None, False)}) == T


def test_keep_while_a_hint_names_the_key_or_a_node_holds_something_else():
    assert verdict({"a": (T, False), "b": (T, True)}) is None
    assert worth_retrying({"a": (T, False), "b": (T, True)})
    assert verdict({"a": (T, False), "b": (L, False)}) is None, "b could bring v back"
    assert not worth_retrying({"a": (T, False), "b": (L, False)}), "the key lives"


def test_a_tombstone_with_a_live_sibling_is_not_a_tombstone():
    sibling = causality.update(causality.new(b"w"), TOMB, "b#1")
    raw = causality.encode(sibling)
    assert verdict({"a": (raw, False), "b": (raw, False)}) is None
    assert not worth_retrying({"a": (raw, False)})


def test_nothing_held_anywhere_needs_no_more_checks():
    assert verdict({"a": (None, False)}) is None and not worth_retrying({"a": (None, False)})


# The reaping duty (Reaper) under a fake clock ---------------------------------------------
AFTER = 10.0


def reaper(down: frozenset[str] = frozenset()) -> tuple[Reaper, Sent, FakeCluster]:
    sent, cluster = Sent(), FakeCluster(settled_view(), down)
    return Reaper(sent, cluster, AFTER, first_id=500), sent, cluster


def asked(r: Reaper, sent: Sent) -> tuple[list, list]:
    """(the local check, the rchecks to other members), taken."""
    return sent.to("persistence"), sent.calls()


def test_a_deleted_key_is_checked_on_every_member_after_the_delay_and_reaped_if_all_agree():
    r, sent, _ = reaper()
    r.deleted(0.0, b"k")
    r.tick(AFTER - 0.1)
    assert sent.take() == [] and len(r.queue) == 1
    r.tick(AFTER)
    (local,), calls = asked(r, sent)
    assert local == ["check", "gossip", ["reap", 501], b"k", ["n1", "n2", "n3"]]
    assert sorted((c[3], c[4], c[5]) for c in calls) == [
        (["reap", 501], ["rcheck", b"k", ["n1", "n2", "n3"]], node) for node in ("n2", "n3")]
    route = Route.parse(["reap", 501])
    r.local(AFTER, route, ["checked", T, False])
    r.answer(AFTER, "n2", route, ["checked", T, 0])
    assert sent.take() == [], "n3 has not answered"
    r.answer(AFTER, "n3", route, ["checked", None, 0])
    assert sent.to("persistence") == [["reap", b"k", T]]
    (rreap,) = sent.calls()  # n3 holds nothing: nothing to tell it
    assert rreap[3:] == [["reaped"], ["rreap", b"k", T], "n2", None]
    assert r.reaped == 1 and not r.queue and not r.checks


def test_no_check_while_a_member_is_down_and_each_retry_waits_twice_as_long():
    r, sent, cluster = reaper(down=frozenset({"n3"}))
    r.deleted(0.0, b"k")
    now, due = AFTER, []
    for _ in range(MAX_ATTEMPTS):
        r.tick(now)
        if b"k" not in r.queue:
            break
        due.append(r.queue[b"k"][0] - now)
        now = r.queue[b"k"][0]
    assert sent.take() == []
    assert due == [AFTER * 2 ** k for k in range(1, MAX_ATTEMPTS)]
    assert b"k" not in r.queue, "kept for good: a tombstone is never wrong, only big"


def test_a_check_unanswered_past_its_deadline_is_dropped_and_tried_again_later():
    r, sent, _ = reaper()
    r.deleted(0.0, b"k")
    r.tick(AFTER)
    assert len(r.checks) == 1
    r.tick(AFTER + CHECK_DEADLINE)
    assert len(r.checks) == 1
    r.tick(AFTER + CHECK_DEADLINE + 0.1)
    assert not r.checks and r.queue[b"k"] == (AFTER + CHECK_DEADLINE + 0.1 + 2 * AFTER, 1)


HELD = st.sampled_from([(T, False), (T, True), (L, False), (None, False), (None, True)])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["n1", "n2", "n3", "n9"]), HELD,
                          st.floats(0.0, 3.0)), max_size=12),
       st.sampled_from([0, 1, 2]))
def test_a_reap_is_issued_only_when_every_replica_s_check_agreed(answers, stale):
    """Whatever the members answer, in whatever order, late or from strangers: a reap
    is issued only when every member answered the current check, none holds a hint, and
    each holds the same tombstone or nothing."""
    r, sent, _ = reaper()
    r.deleted(0.0, b"k")
    now = AFTER
    r.tick(now)
    route = Route(Duty.CHECK, (r.check_id - stale,))  # stale: a check that is not this one
    sent.take()
    heard: dict[str, tuple] = {}
    for node, held, dt in answers:
        now += dt
        r.tick(now)
        if node == "n1":
            r.local(now, route, ["checked", *held])
        else:
            r.answer(now, node, route, ["checked", held[0], held[1]])
        if stale == 0 and now - AFTER <= CHECK_DEADLINE and node != "n9":
            heard[node] = held  # the latest answer counts, as in the check
        reaps = [e for e in sent.to("persistence") if e[0] == "reap"]
        reaps += [c for c in sent.calls() if c[4][0] == "rreap"]
        if reaps:
            assert stale == 0 and set(heard) == {"n1", "n2", "n3"}
            assert all(raw in (T, None) and not hint for raw, hint in heard.values())
            assert any(raw == T for raw, _ in heard.values())
            assert r.reaped == 1


def test_a_local_check_that_could_not_be_queued_ends_its_check_at_once_and_retries_later():
    """SEDA's full-queue event: persistence's queue refused the local check, so no answer
    will come; the check ends now, not at its deadline, and the key is tried again later."""
    r, sent, _ = reaper()
    r.deleted(0.0, b"k")
    r.tick(AFTER)
    (local,), _ = asked(r, sent)
    r.lost(AFTER + 0.1, Route.parse(local[2]))
    assert not r.checks and r.queue[b"k"] == (AFTER + 0.1 + 2 * AFTER, 1)
    r.lost(AFTER + 0.2, Route.parse(local[2]))  # twice, or for a check long gone: nothing
    assert r.queue[b"k"] == (AFTER + 0.1 + 2 * AFTER, 1)
