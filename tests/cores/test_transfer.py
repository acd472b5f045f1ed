"""A partition hand-over as a value: chunks, acknowledgements, retries, ranges."""

from __future__ import annotations

from seda_dynamo.membership import Entry, View
from seda_dynamo.transfer import CHUNK_DEADLINE, Transfer


def two_ranges() -> Transfer:
    return Transfer(7, "b", [(7, "b", 0, 100), (6, "c", 100, 200)], 0.0)


def test_a_transfer_streams_each_range_and_is_done_after_the_last_ack():
    t = two_ranges()
    assert t.due(0.0)
    seq, lo, hi, _ = t.read(0.0)
    assert (lo, hi, t.target) == (0, 100, "b")
    assert t.chunk(seq, [10, 10], next_cursor=50, total=4)
    assert not t.due(0.1), "acks outstanding"
    t.ack(seq, True)
    t.ack(seq, True)
    seq, lo, _, _ = t.read(0.2)
    assert lo == 50
    assert t.chunk(seq, [5], None, 4)
    t.ack(seq, True)
    assert not t.done and t.target == "c" and t.cursor == 100
    seq, _, _, _ = t.read(0.3)
    assert not t.chunk(seq, [], None, 0), "an empty range has nothing to send"
    assert t.done and t.keys_sent == 3


def test_a_failed_ack_or_a_stall_resends_the_same_chunk():
    t = two_ranges()
    seq, _, _, _ = t.read(0.0)
    t.chunk(seq, [1, 1], 50, None)
    t.ack(seq, False)
    t.ack(seq, True)
    assert t.due(0.1) and t.cursor == 0 and t.keys_sent == 0
    seq, _, _, _ = t.read(0.1)
    t.chunk(seq, [1, 1], 50, None)
    assert not t.due(0.2)
    assert t.due(0.2 + CHUNK_DEADLINE), "a stalled chunk is read again"
    t.ack(seq, True)  # a late ack of the abandoned chunk changes nothing
    assert t.cursor == 0


def test_answers_about_an_older_chunk_are_ignored():
    t = two_ranges()
    old, _, _, _ = t.read(0.0)
    t.due(CHUNK_DEADLINE + 1)
    new, _, _, _ = t.read(CHUNK_DEADLINE + 1)
    assert not t.chunk(old, [1], None, None)
    assert t.chunk(new, [1], None, None)


def test_a_handoff_streams_to_every_node_a_move_brings_into_a_preference_list():
    def entry(i):
        return Entry(f"127.0.0.1:{7000 + i}", f"127.0.0.1:{7100 + i}")

    a = View.fresh("n0", entry(0), 16, 3, founder=True)
    for i in (1, 2):
        a = a.merge_state(View.fresh(f"n{i}", entry(i), 16, 3, founder=False).to_state())
    moves = a.transfers_out()
    assert moves
    for partition, next_owner in moves:
        plan = a.transfer_plan(partition)
        assert (partition, next_owner) in plan
        assert all(node != "n0" for _, node in plan)


def test_a_finished_transfer_extended_with_more_ranges_streams_them_too():
    t = Transfer(1, "b", [(1, "b", 0, 10)], 0.0)
    seq, _, _, _ = t.read(0.0)
    t.chunk(seq, [], None, 0)
    assert t.done
    t.extend([(0, "c", 20, 30)])
    assert not t.done and t.due(0.1) and t.target == "c" and t.read(0.1)[1] == 20
