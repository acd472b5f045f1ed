"""A key's read-merge-write (``seda_dynamo.reconciliation``, paper 4.4): every operation
gets exactly one result and one that cannot be applied fails alone; concurrent blind
writes all survive as siblings; a key gives up after ``MAX_CAS_RETRIES`` conflicts; the
work that follows a write starts from what it wrote; fresh actors are minted in order.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo import actors, causality, contexts
from seda_dynamo.merkle import object_hash
from seda_dynamo.reconciliation import (
    BAD_REQUEST,
    MAX_CAS_RETRIES,
    TOO_LARGE,
    KeyQueue,
    KeyWork,
    Op,
    TooLarge,
    apply,
    check_size,
    follow,
    hinted,
    mint,
    read_again,
    retry,
    write_hints,
)

FAMILY = "n1#ab"
LIMIT = 1 << 20


def update(value: bytes | None, context: dict | None = None, hint: str | None = None) -> Op:
    return Op("coordination", None, "update", value, context, hint=hint)


def test_an_operation_that_cannot_be_applied_fails_alone():
    forged = {actors.mint_actor(FAMILY, (9, 9, 1)): 1}  # minted after this read
    work = KeyWork([update(b"a"), update(b"b", forged), update(b"c")], mint=(1, 5))
    encoded, bugs = apply(work, causality.EMPTY, FAMILY, LIMIT)
    assert not bugs and len(work.results) == 3
    assert work.results[1][2].startswith(BAD_REQUEST) and "not minted" in work.results[1][2]
    assert work.results[0][2] is None and work.results[2][2] is None
    assert sorted(causality.values(causality.decode(encoded))) == [b"a", b"c"]
    assert work.encoded == encoded and work.state is not None


def test_an_operation_without_a_mint_order_is_a_bug_reported_not_raised():
    work = KeyWork([update(b"a")])  # no mint order: persistence did not give one
    encoded, bugs = apply(work, causality.EMPTY, FAMILY, LIMIT)
    assert encoded is None and [kind for kind, _ in bugs] == ["update"]
    assert work.results[0][2].startswith("internal: update failed")


@given(st.lists(st.binary(min_size=1, max_size=3), min_size=1, max_size=8))
def test_blind_writes_applied_together_all_survive_as_siblings(values):
    work = KeyWork([update(v) for v in values], mint=(1, 1))
    encoded, bugs = apply(work, causality.EMPTY, FAMILY, LIMIT)
    assert not bugs and all(err is None for _, _, err in work.results)
    assert sorted(causality.values(causality.decode(encoded))) == sorted(values)
    for context, clock, _ in work.results:  # each answer's context covers its own write
        assert contexts.decode_context(context) == causality.join(causality.decode(clock))


def test_a_write_past_the_record_limit_is_refused_unless_it_resolves_siblings():
    two = causality.sync(causality.new(b"x" * 50), causality.new(b"y" * 50))
    one = causality.new(b"z" * 50)
    with pytest.raises(TooLarge):
        check_size(b"." * 101, two, one, 100)
    check_size(b"." * 101, one, two, 100)  # fewer siblings: always taken
    check_size(b"." * 100, two, one, 100)  # within the limit
    work = KeyWork([update(b"v" * 200)], mint=(1, 1))
    assert apply(work, causality.EMPTY, FAMILY, 100)[0] is None
    assert work.results[0][2].startswith(TOO_LARGE)


@given(st.integers(0, 3 * MAX_CAS_RETRIES))
def test_a_key_gives_up_after_max_cas_retries_conflicts(conflicts):
    work = KeyWork([update(b"v")], since=4.0)
    for met in range(1, conflicts + 1):
        again = retry(work)
        if met > MAX_CAS_RETRIES:
            assert again is None
            return
        assert again is not None and again.attempts == met
        assert again.ops is work.ops and again.since == 4.0 and not again.results
        work = again
    assert conflicts <= MAX_CAS_RETRIES


def test_the_work_that_follows_starts_from_what_was_written_under_the_same_order():
    done = KeyWork([update(b"a")], base=b"old", mint=(2, 7), since=1.0)
    apply(done, causality.EMPTY, FAMILY, LIMIT)
    waiting = [update(b"b")]
    nxt = follow(done, waiting)
    assert nxt.ops is waiting and nxt.base == object_hash(done.encoded)
    assert (nxt.mint, nxt.minted, nxt.since) == ((2, 7), done.minted, 1.0)
    nothing = KeyWork([], base=b"old", mint=(2, 7))
    assert follow(nothing, waiting).base == b"old", "nothing written: the base stands"


@given(st.integers(2, 40), st.integers(0, 2**40))
def test_actors_minted_under_one_order_sort_later_each_time(count, sequence):
    work = KeyWork([], mint=(3, sequence))
    minted = [mint(work, FAMILY) for _ in range(count)]
    orders = [actors.mint_order(a, FAMILY) for a in minted]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    assert all(order[:2] == (3, sequence) for order in orders)


def test_an_actor_minted_after_the_read_asks_for_one_more_read_only_once():
    later = {actors.mint_actor(FAMILY, (1, 9, 1)): 1}
    work = KeyWork([update(b"a", later)], mint=(1, 5))
    assert read_again(work, FAMILY) and work.attempts == 1
    assert not read_again(work, FAMILY), "once: the next read is judged as it is"
    assert not read_again(KeyWork([update(b"a")], mint=(1, 5)), FAMILY)
    assert not read_again(KeyWork([update(b"a", later)], mint=(1, 5)), ""), "no family yet"


def test_hints_follow_the_operations_applied():
    work = KeyWork([update(b"a", hint="n3"), update(b"b"), update(b"c", hint="n4")],
                   mint=(1, 1))
    assert write_hints(b"k", work) == [["n3", b"k"], ["n4", b"k"]]
    work.results = [(None, None, "bad_request: x"), (b"", b"", None), (None, None, "x")]
    assert not hinted(work), "only an applied stand-in's hint is kept"
    work.results[0] = (b"", b"", None)
    assert hinted(work)


@given(st.lists(st.tuples(st.sampled_from(["take", "take", "start", "done", "drop"]),
                          st.sampled_from([b"a", b"b"])), max_size=40))
def test_every_operation_taken_ends_once_in_its_key_s_arrival_order(script):
    q, serial, ended = KeyQueue(), 0, {b"a": [], b"b": []}
    taken = {b"a": [], b"b": []}
    for step_, key in script:
        if step_ == "take":
            serial += 1
            q.take(key, Op("versioning", serial, "update", b"v"))
            taken[key].append(serial)
        elif step_ == "start":
            assert set(q.start(float(serial))) <= {b"a", b"b"} and not q.fresh
        elif step_ == "done" and key in q.inflight:
            work, nxt = q.done(key)
            ended[key] += [op.ref for op in work.ops]
            assert (nxt is None) == (key not in q.inflight)
        elif step_ == "drop":
            ended[key] += [op.ref for op in q.drop(key)]
        assert not set(q.fresh) & set(q.inflight), "one read-merge-write per key at a time"
        assert all(ops for ops in q.queued.values())
    for key in (b"a", b"b"):
        q.start(0.0)
        while key in q.inflight:
            ended[key] += [op.ref for op in q.done(key)[0].ops]
        assert ended[key] == taken[key]


def test_work_past_its_deadline_is_stale():
    q = KeyQueue()
    q.take(b"a", update(b"1"))
    q.start(1.0)
    q.take(b"b", update(b"2"))
    q.start(5.0)
    assert q.stale(12.0, 10.0) == [b"a"] and q.stale(12.0, 20.0) == []
