"""A coordinator's requests in flight (``seda_dynamo.inflight``, paper 4.5 and 4.6):
every request falls due at its deadline, once; a target counts as slow only while its
request still waits on it, judged when it is taken; no attempt outlives its request's
deadline.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo.inflight import InFlight
from seda_dynamo.messages import Call, Foreground, Get, Sync, Update
from seda_dynamo.requests import FAIL_EVENT, OK_EVENT
from seda_dynamo.routing import Route, Target

ROUTE = Route((Target("a"), Target("b"), Target("c")), ("d",))


def test_a_request_falls_due_at_its_deadline_once_unless_it_is_done():
    f = InFlight(first_cid=10)
    one, pending = f.track(1, "get", b"k", 2, ROUTE, 3.0, now=0.5)
    two, _ = f.track(2, "put", b"k", 2, ROUTE, 4.0, now=0.5)
    assert one != two and min(one, two) > 10
    assert pending.started == 0.5 and [t.node for t in pending.targets] == ["a", "b", "c"]
    assert pending.quorum.needed == 2 and pending.quorum.spare == ("d",)
    del f.requests[two]  # answered before its deadline
    assert [cid for cid, _ in f.due(2.9)] == []
    assert [cid for cid, _ in f.due(5.0)] == [one]
    assert list(f.due(9.0)) == []


def test_a_target_is_slow_only_while_its_request_still_waits_on_it():
    f = InFlight(0)
    cid, pending = f.track(1, "get", b"k", 2, ROUTE, 3.0, now=0.0)
    pending.quorum.start()
    for node in "abc":
        f.attempt(cid, pending.deadline, node, 0.0, 0.75)
    f.attempt(cid, pending.deadline, "x", 0.0, 5.0)  # past the deadline: never slow
    f.attempt(cid, pending.deadline, "y", 0.0, 0.0)  # no attempt share: never slow
    pending.quorum.on(OK_EVENT, "a", b"v")
    assert list(f.slow(0.5)) == []
    assert list(f.slow(1.0)) == [(cid, "b"), (cid, "c")]
    assert not f.attempts


def test_acting_on_one_slow_target_can_spare_the_next():
    f = InFlight(0)
    cid, pending = f.track(1, "put", b"k", 1, ROUTE, 3.0, now=0.0)
    for node in "ab":
        f.attempt(cid, pending.deadline, node, 0.0, 0.5)
    taken = []
    for slow_cid, node in f.slow(1.0):
        taken.append(node)
        del f.requests[slow_cid]  # the request moved on (say, to a stand-in)
    assert taken == ["a"]


@given(st.lists(st.tuples(st.sampled_from(["track", "done", "tick"]), st.floats(0, 5),
                          st.integers(0, 9)), max_size=50))
def test_every_request_in_flight_falls_due_exactly_once(ops):
    f = InFlight(0)
    now, made, ended = 0.0, [], []
    for op, x, i in ops:
        if op == "track":
            made.append(f.track(len(made), "get", b"k", 1, ROUTE, now + x, now)[0])
        elif op == "done" and made:
            if f.requests.pop(made[i % len(made)], None) is not None:
                ended.append(made[i % len(made)])
        else:
            now += x
            for cid, _ in f.due(now):
                del f.requests[cid]  # answered at its deadline
                ended.append(cid)
        assert set(f.requests) <= {cid for _, cid in f.deadlines}
    for cid, _ in f.due(1e9):
        del f.requests[cid]
        ended.append(cid)
    assert sorted(ended) == sorted(made) and not f.requests


def test_local_reads_of_one_batch_are_one_engine_read_answered_once():
    f = InFlight(0)
    assert f.take_reads() is None
    f.read_here(5, b"k1")
    f.read_here(6, b"k2")
    ref, keys = f.take_reads()
    assert keys == [b"k1", b"k2"] and f.take_reads() is None
    assert f.read_answered(ref) == [5, 6]
    assert f.read_answered(ref) == [], "answered twice"


def test_a_local_read_answers_the_requests_still_waiting_in_key_order_once():
    f = InFlight(0)
    cids = [f.track(i, "get", b"k%d" % i, 1, ROUTE, 3.0, 0.0, attempt=0.75)[0]
            for i in range(3)]
    assert all(f.requests[cid].attempt == 0.75 for cid in cids)
    for cid in cids:
        f.read_here(cid, f.requests[cid].key)
    ref, keys = f.take_reads()
    assert keys == [b"k0", b"k1", b"k2"] and f.take_reads() is None
    del f.requests[cids[1]]  # answered meanwhile
    assert list(f.local_answers(ref, [b"v0", b"v1", None], None)) == [
        (cids[0], OK_EVENT, b"v0"), (cids[2], OK_EVENT, None)]
    assert list(f.local_answers(ref, [b"v0", b"v1", None], None)) == [], "once"
    f.read_here(cids[0], b"k0")
    ref, _ = f.take_reads()
    assert list(f.local_answers(ref, None, "bad sector")) == [
        (cids[0], FAIL_EVENT, "bad sector")]


def test_a_step_that_could_not_be_queued_names_the_requests_it_belonged_to():
    f = InFlight(0)
    one, _ = f.track(1, "get", b"a", 1, ROUTE, 3.0, 0.0)
    two, _ = f.track(2, "get", b"b", 1, ROUTE, 3.0, 0.0)
    f.read_here(one, b"a")
    f.read_here(two, b"b")
    ref, keys = f.take_reads()
    assert f.stranded(Get.wire("coordination", ref, keys)) == [one, two]
    assert f.stranded(Get.wire("coordination", ref, keys)) == [], "a read batch once"
    assert f.stranded(Update.wire("coordination", 7, b"k", b"v", None, False, None)) == [7]
    assert f.stranded(Call.wire("p", "coordination", 8, ["rget", b"k"], "b", 1.0)) == [8]
    assert f.stranded(Sync.wire("coordination", None, b"k", b"x", None)) == []
    assert f.stranded(Foreground.wire(3, 0.1)) == [], "reports are only dropped"
