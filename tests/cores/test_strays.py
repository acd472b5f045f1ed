"""Stray keys (``seda_dynamo.strays``, paper 4.6 and 4.9): a node's keys for partitions
it is not a replica of, handed to every replica and forgotten only after each one
acknowledged, under a fake clock."""

from __future__ import annotations

from dataclasses import replace

from duties import FakeCluster, Q, Sent, entry, planned_view
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.background import BackgroundShare
from seda_dynamo.claim import claim
from seda_dynamo.duty import Route
from seda_dynamo.membership import View
from seda_dynamo.ring import Member, Ring, partition_range
from seda_dynamo.strays import DEADLINE, RETRY_EVERY, SWEEP_EVERY, Strays, stray_partitions

N = 3


def four(me: str = "n1", epoch: int = 1, members: int = 4) -> View:
    """A settled ring of ``members`` nodes: each partition has N replicas of them."""
    nodes = {f"n{i}": entry(i) for i in range(1, members + 1)}
    owners = claim(None, {node: 1 for node in nodes}, Q, N)
    ring = Ring(Q, epoch, tuple(Member(node, e.client, e.peer, "valid")
                                for node, e in sorted(nodes.items())), owners)
    return View(me, Q, N, nodes, ring)


def duty(view: View | None = None, keys_per_sec: int = 0, busy: bool = False
         ) -> tuple[Strays, Sent, FakeCluster]:
    sent, cluster = Sent(), FakeCluster(view or four())
    strays = Strays(sent, cluster, BackgroundShare(0.1), n=N, keys_per_sec=keys_per_sec,
                    busy=lambda: busy, entropy=lambda bits: 7)
    return strays, sent, cluster


def folds(sent: Sent) -> list[list]:
    """The reads sent, taken."""
    out = [e for d, e in sent.events if e[0] == "fold"]
    sent.events = [(d, e) for d, e in sent.events if e[0] != "fold"]
    return out


def forgets(sent: Sent) -> list[list]:
    """The forgets sent, taken (the rest is left for the test)."""
    out = [e for d, e in sent.events if e[0] == "forget"]
    sent.events = [(d, e) for d, e in sent.events if e[0] != "forget"]
    return out


def fold_answer(strays: Strays, fold: list, pairs: list[list[bytes]], next_lo=None) -> None:
    strays.local(0.0, Route.parse(fold[2]), ["folded", pairs, next_lo, len(pairs)])


def test_only_partitions_whose_preference_list_lacks_this_node_are_stray():
    view = four()
    strays = stray_partitions(view, N)
    assert strays, "with four members some partitions are not n1's"
    for replicas in strays.values():
        assert "n1" not in replicas and len(replicas) == N
    assert stray_partitions(four(members=3), N) == {}, "three nodes hold every partition"
    assert stray_partitions(planned_view(), N) is None, "moves pending: nothing is stray"


def test_a_stray_key_is_forgotten_only_after_every_replica_acknowledged_its_bytes():
    strays, sent, cluster = duty()
    strays.tick(0.0)
    (fold,) = folds(sent)
    p = min(stray_partitions(cluster.view, N))
    assert int(fold[3], 16) == partition_range(p, Q)[0]
    fold_answer(strays, fold, [[b"k", b"v"]])
    calls = sent.calls()
    replicas = stray_partitions(cluster.view, N)[p]
    assert sorted(c[5] for c in calls) == sorted(replicas)
    assert all(c[4] == ["rput", b"k", b"v", None] for c in calls)
    for call in calls[:-1]:
        strays.answer(0.1, call[5], Route.parse(call[3]), ["updated", None])
    strays.answer(0.1, "n1", Route.parse(calls[-1][3]), ["updated", None])  # not a replica
    assert sent.to("persistence") == [], "one replica has not acknowledged yet"
    strays.answer(0.2, calls[-1][5], Route.parse(calls[-1][3]), ["updated", None])
    forget, fold = sent.to("persistence")
    assert forget == ["forget", b"k", b"v"] and strays.handed == 1
    assert fold[0] == "fold", "the next partition is read at once"


def test_a_refused_or_unsent_merge_keeps_the_key_and_its_partition_is_swept_again():
    for failure in ("error", "unreachable"):
        strays, sent, cluster = duty()
        strays.tick(0.0)
        (fold,) = folds(sent)
        p = Route.parse(fold[2])
        fold_answer(strays, fold, [[b"k", b"v"]])
        calls = sent.calls()
        if failure == "error":
            strays.answer(0.1, calls[0][5], Route.parse(calls[0][3]), ["updated", "boom"])
        else:
            strays.unreachable(0.1, calls[0][1], Route.parse(calls[0][3]))
        for call in calls[1:]:
            strays.answer(0.1, call[5], Route.parse(call[3]), ["updated", None])
        assert forgets(sent) == [] and strays.handed == 0
        first = min(stray_partitions(cluster.view, N))
        assert first in strays.retry and p is not None
        _finish_sweep(strays, sent, 0.2)
        strays.tick(0.3)
        assert folds(sent) == [], "not before the retry is due"
        strays.tick(0.3 + RETRY_EVERY)
        (again,) = folds(sent)
        assert int(again[3], 16) == partition_range(first, Q)[0], failure


def _finish_sweep(strays: Strays, sent: Sent, now: float) -> None:
    """Answer every read of the sweep with nothing, until it ends."""
    for _ in range(4 * Q):
        strays.tick(now)
        reads = folds(sent)
        if not reads:
            return
        for fold in reads:
            fold_answer(strays, fold, [])
    raise AssertionError("the sweep never ended")


def test_a_chunk_past_its_deadline_is_given_up_and_its_late_acks_forget_nothing():
    strays, sent, _ = duty()
    strays.tick(0.0)
    (fold,) = folds(sent)
    fold_answer(strays, fold, [[b"k", b"v"]])
    calls = sent.calls()
    strays.tick(DEADLINE / 2)
    assert folds(sent) == [], "waiting for the acks"
    strays.tick(DEADLINE + 1)
    assert folds(sent), "given up: the sweep goes on"
    for call in calls:
        strays.answer(DEADLINE + 2, call[5], Route.parse(call[3]), ["updated", None])
    assert forgets(sent) == [] and strays.retry


def test_a_read_that_persistence_could_not_take_or_never_answered_is_retried():
    strays, sent, _ = duty()
    strays.tick(0.0)
    (fold,) = folds(sent)
    strays.lost(0.0, Route.parse(fold[2]))
    assert strays.retry
    strays, sent, _ = duty()
    strays.tick(0.0)
    (fold,) = folds(sent)
    strays.tick(DEADLINE + 1)
    assert strays.retry and folds(sent)


def test_nothing_is_read_while_moves_are_pending_or_a_hand_over_runs():
    strays, sent, _ = duty(planned_view())
    strays.tick(0.0)
    assert sent.take() == []
    strays, sent, _ = duty(busy=True)
    strays.tick(0.0)
    assert sent.take() == []


def test_a_ring_change_ends_the_sweep_and_a_merge_acked_after_it_forgets_nothing():
    strays, sent, cluster = duty()
    strays.tick(0.0)
    fold_answer(strays, folds(sent)[0], [[b"k", b"v"]])
    calls = sent.calls()
    cluster.view = replace(cluster.view, ring=replace(cluster.view.ring, epoch=2))
    strays.tick(0.1)
    for call in calls:
        strays.answer(0.2, call[5], Route.parse(call[3]), ["updated", None])
    assert sent.to("persistence") == [], "those replicas may not be the new ring's"
    # A read asked for under the old ring and answered under the new one sends nothing.
    strays.tick(0.3)
    (fold,) = folds(sent)
    cluster.view = replace(cluster.view, ring=replace(cluster.view.ring, epoch=3))
    fold_answer(strays, fold, [[b"k", b"v"]])
    assert sent.calls() == []


def test_a_partition_with_a_replica_down_is_skipped_and_swept_again_later():
    strays, sent, cluster = duty()
    first = min(stray_partitions(cluster.view, N))
    cluster.down = frozenset({stray_partitions(cluster.view, N)[first][0]})
    _finish_sweep(strays, sent, 0.0)
    assert first in strays.retry and strays.swept_epoch is None
    cluster.down = frozenset()
    strays.tick(RETRY_EVERY + 1)
    assert any(int(f[3], 16) == partition_range(first, Q)[0] for f in folds(sent))


def test_a_swept_ring_is_swept_again_only_when_it_changes_or_after_sweep_every():
    strays, sent, cluster = duty()
    _finish_sweep(strays, sent, 0.0)
    assert strays.swept_epoch is not None and strays.sweeps == 1
    strays.tick(RETRY_EVERY + 1)
    assert folds(sent) == []
    strays.tick(SWEEP_EVERY + 1)
    assert folds(sent)
    strays, sent, cluster = duty()
    _finish_sweep(strays, sent, 0.0)
    cluster.view = four(epoch=2)
    strays.tick(0.1)
    assert folds(sent), "a new ring is swept at once"


def test_a_delivered_hint_calls_for_a_sweep_soon_the_fallback_s_copy_is_stray():
    delivered = [0]
    sent, cluster = Sent(), FakeCluster(four())
    strays = Strays(sent, cluster, BackgroundShare(0.1), n=N, keys_per_sec=0,
                    busy=lambda: False, entropy=lambda bits: 7,
                    hints_delivered=lambda: delivered[0])
    _finish_sweep(strays, sent, 0.0)
    assert strays.swept
    delivered[0] = 3
    strays.tick(1.0)
    assert not strays.swept and folds(sent) == []
    strays.tick(1.0 + RETRY_EVERY)
    assert folds(sent), "swept again, long before SWEEP_EVERY"
    # A hint delivered while a sweep runs: that sweep may have passed the key's
    # partition already, so another one follows it.
    _finish_sweep(strays, sent, 20.0)
    assert strays.swept
    strays.tick(30.0)
    assert strays.epoch is None and folds(sent) == []
    strays.sweep_at = 0.0  # a periodic sweep starts
    strays.tick(40.0)
    assert strays.epoch is not None
    delivered[0] = 4
    _finish_sweep(strays, sent, 40.1)
    assert not strays.swept, "the hint came after the sweep began"
    strays.tick(40.1 + RETRY_EVERY)
    assert folds(sent)


def test_reads_wait_for_the_keys_per_second_tokens():
    strays, sent, _ = duty(keys_per_sec=10)
    strays.tick(0.0)
    assert folds(sent) == [], "no tokens yet"
    strays.tick(1.0)
    (fold,) = folds(sent)
    fold_answer(strays, fold, [[b"k%d" % i, b"v"] for i in range(30)], next_lo="1")
    for call in sent.calls():
        strays.answer(1.0, call[5], Route.parse(call[3]), ["updated", None])
    strays.tick(2.0)
    assert folds(sent) == [], "30 keys sent against 10 tokens: wait"
    strays.tick(4.5)
    assert folds(sent)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["ok", "error", "gone"])),
                max_size=40))
def test_a_key_is_forgotten_exactly_when_every_replica_merged_it(acks):
    """Whatever the order and outcome of the answers, ``forget`` is sent for a key only
    once each of the partition's replicas answered it merged, and never twice."""
    strays, sent, cluster = duty()
    strays.tick(0.0)
    fold_answer(strays, folds(sent)[0], [[b"k", b"v"]])
    calls = sent.calls()
    merged, failed = set(), False
    for i, outcome in acks:
        call = calls[i]
        if outcome == "gone":
            strays.unreachable(0.1, call[1], Route.parse(call[3]))
        else:
            strays.answer(0.1, call[5], Route.parse(call[3]),
                          ["updated", None if outcome == "ok" else "no"])
        failed |= outcome != "ok" and len(merged) < len(calls)
        if outcome == "ok" and not failed:
            merged.add(call[5])
        if forgets(sent):
            assert len(merged) == len(calls) and not failed, (acks, merged)
    assert strays.handed == (1 if len(merged) == len(calls) and not failed else 0)


def test_a_read_lost_with_a_restarted_persistence_stage_is_asked_again_at_once():
    """Not at DEADLINE: the new process is asked for the same chunk, under a new ref,
    and the sweep goes on; what comes late for the earlier ref is not taken."""
    strays, sent, _ = duty()
    strays.tick(0.0)
    (fold,) = folds(sent)
    strays.restarted(0.5, "versioning")
    assert folds(sent) == [], "no read of ours was lost there"
    strays.restarted(0.5, "persistence")
    (again,) = folds(sent)
    assert again[3:] == fold[3:] and again[2] != fold[2]
    fold_answer(strays, fold, [[b"k", b"v"]])
    assert sent.calls() == [], "the earlier read's answer is not taken"
    fold_answer(strays, again, [[b"k", b"v"]])
    assert sent.calls() and not strays.retry
