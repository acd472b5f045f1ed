"""One group commit (``seda_dynamo.groupcommit``, paper section 5 and 4.6): a write or
get event is taken whole or refused whole with ``ValueError``; a compare-and-set item is
written only if the key still holds what its writer read, this batch's earlier writes
included; hint keys read back as the owner and key they were made of.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo.groupcommit import (
    NO_EXPECTATION,
    GroupCommit,
    get_event,
    hint_key,
    hint_record,
    holds,
    write_event,
)
from seda_dynamo.merkle import object_hash
from seda_dynamo.messages import Get, Write

junk = st.recursive(st.none() | st.booleans() | st.integers() | st.binary(max_size=4)
                    | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=4), max_leaves=12)
keys = st.sampled_from([b"a", b"b", b"c"])
values = st.one_of(st.none(), st.sampled_from([b"1", b"2", b"3"]))


def test_a_well_formed_write_is_taken_apart_with_its_expectations():
    event = Write.wire("versioning", 7, [[b"k", b"v"], [b"j", None, b"h"], [b"i", b"w", None]],
                       [["n2", b"k"]])
    reply_to, ref, items, hinted = write_event(event)
    assert (reply_to, ref, hinted) == ("versioning", 7, [("n2", b"k")])
    assert items == [(b"k", b"v", NO_EXPECTATION), (b"j", None, b"h"), (b"i", b"w", None)]


def test_a_well_formed_get_is_taken_apart_with_its_mint_wish():
    assert get_event(Get.wire("versioning", 3, [b"a", b"b"], mint=True)) == \
        ("versioning", 3, [b"a", b"b"], True)
    assert get_event(["get", "coordination", 4, [b"a"]]) == ("coordination", 4, [b"a"], False)


@given(junk)
def test_any_malformed_write_or_get_is_refused_whole_with_a_value_error(body):
    for kind, check in (("write", write_event), ("get", get_event)):
        event = [kind, *body] if isinstance(body, list) else [kind, body]
        try:
            parsed = check(event)
        except ValueError:
            continue
        assert isinstance(parsed[0], str)
        if kind == "get":
            assert all(isinstance(key, bytes) for key in parsed[2])
        else:
            assert all(isinstance(key, bytes) for key, _, _ in parsed[2])


@given(st.text(max_size=8), st.binary(max_size=8))
def test_a_hint_key_reads_back_as_its_owner_and_key(owner, key):
    assert hint_record(hint_key(owner, key)) == (owner, key)


@given(st.binary(max_size=12))
def test_a_malformed_hint_record_is_skipped_never_raised(raw):
    owner, key = hint_record(raw)
    assert owner is None or (isinstance(owner, str) and isinstance(key, bytes))


def test_the_compare_and_set_rule():
    assert holds(b"h", b"h") and not holds(b"h", b"g") and not holds(b"h", None)
    assert holds(None, None) and holds(b"", None), "nothing read, nothing there"
    assert not holds(None, b"h"), "nothing read, something written since"


@given(st.dictionaries(keys, st.sampled_from([b"1", b"2"])),
       st.lists(st.lists(st.tuples(keys, values, st.booleans(), st.booleans()), max_size=4),
                max_size=6))
def test_a_batch_writes_exactly_the_items_whose_expectation_holds_in_order(stored, writes):
    """Model: a dict of what each key holds, updated item by item; an item that expects
    the model's hash (``fresh``) or expects nothing is written, any other conflicts."""
    model = {k: object_hash(v) for k, v in stored.items()}
    commit = GroupCommit()
    asked: list[bytes] = []

    def current(key: bytes) -> bytes | None:
        asked.append(key)
        return commit.hashes[key] if key in commit.hashes else model.get(key)

    want_writes, want_acks = [], []
    held = dict(model)  # what each key holds as the items so far leave it
    for ref, items in enumerate(writes):
        event_items, conflicts = [], []
        for key, value, cas, fresh in items:
            if not cas:
                event_items.append((key, value, NO_EXPECTATION))
            else:
                expected = held.get(key) if fresh else b"stale"
                event_items.append((key, value, expected))
                if expected != held.get(key):
                    conflicts.append(key)
                    continue
            want_writes.append((key, value))
            held[key] = object_hash(value) if value is not None else None
        got = commit.take("versioning", ref, event_items, [("n9", b"a")], current,
                          token=lambda: b"t")
        assert got == conflicts
        want_acks.append(("versioning", ref, conflicts))
    assert commit.writes == want_writes and commit.acks == want_acks
    assert len(asked) == sum(cas for items in writes for _, _, cas, _ in items), \
        "the store is asked only about items that compare and set"
    assert commit.hints == [(hint_key("n9", b"a"), b"t")] * len(writes)
    last = dict(want_writes)  # the batch's hashes: its last write of each key
    assert commit.hashes == {k: object_hash(v) if v is not None else None
                             for k, v in last.items()}
