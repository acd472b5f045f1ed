"""An event of the wrong shape fails alone at the persistence stage (paper section 5's
engine behind one stage process): the batch behind it goes on, and every well-formed
event of the batch is answered exactly once; a write's failure is its own, never its
batch-mates' (the group commit is shared, its failures must not be).
"""

from __future__ import annotations

import pytest
from frames import hex_range, live, tomb
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from test_peer_trust import ANY, CONFIG, store

from seda_dynamo.ring import partition_of

ROOT = {"kind": "hashes", "level": 0, "indices": [0]}
KEYS = [b"k%d" % i for i in range(4)]
#: What each answering kind is answered with.
ANSWER = {"write": "written", "get": "got", "fold": "folded", "tree": "tree_answer",
          "hints": "hints_found", "check": "checked"}


def well_formed(kind: str, reply_to, tag, key: bytes) -> list:
    """An event of ``kind`` as the other stages send it (docs/architecture.md)."""
    lo, hi = hex_range(partition_of(key, CONFIG.partitions), CONFIG.partitions)
    return {
        "write": ["write", reply_to, tag, [[key, live(key)]], [["b", key]]],
        "get": ["get", reply_to, tag, [key], True],
        "fold": ["fold", reply_to, tag, lo, hi, 3],
        "tree": ["tree", reply_to, tag, partition_of(key, CONFIG.partitions), ROOT],
        "hints": ["hints", reply_to, tag, ["b"], 3],
        "check": ["check", reply_to, tag, key, ["b"]],
        "hint_done": ["hint_done", [["b", key, b"token"]]],
        "reap": ["reap", key, tomb()],
    }[kind]


DISPATCHED = ["fold", "tree", "hints", "check", "hint_done", "reap"]
GOOD = st.tuples(st.sampled_from(["write", "get", *DISPATCHED]), st.sampled_from(KEYS))


def mangled(kinds: list[str], whole: bool) -> st.SearchStrategy:
    """A well-formed event of one of ``kinds`` cut short, lengthened or with one field
    replaced by anything; ``whole``: also events that are not a list of a known kind."""
    def mangle(kind: str, key: bytes, how: str, at: int, junk) -> object:
        event = well_formed(kind, "bad", ["bad"], key)
        at %= len(event)
        if how == "cut":
            return event[:max(at, 1)]
        if how == "extra":
            return [*event, junk]
        return [*event[:max(at, 1)], junk, *event[max(at, 1) + 1:]]

    shaped = st.builds(mangle, st.sampled_from(kinds), st.sampled_from(KEYS),
                       st.sampled_from(["cut", "extra", "replace"]), st.integers(0, 9), ANY)
    if not whole:
        return st.one_of(shaped, st.builds(lambda x: ["no_such_kind", x], ANY))
    return st.one_of(shaped, ANY.filter(lambda x: not isinstance(x, list)),
                     st.builds(lambda x: [x], ANY))


def check_batches(batches: list) -> None:
    h, _ = store()
    for batch in batches:
        events, expected = [], {}
        for i, (good, item) in enumerate(batch):
            if good:
                kind, key = item
                events.append(well_formed(kind, "ok", ["ok", i], key))
                if kind in ANSWER:
                    expected[i] = ANSWER[kind]
            else:
                events.append(item)
        h.handle_events(events, 0.0)
        h.tick(0.0)  # the tree build goes on between batches
        answers: dict[int, list] = {}
        for dest, event in h.take_outbox():
            if dest == "ok" and event[1][:1] == ["ok"]:
                assert event[1][1] not in answers, f"answered twice: {event}"
                answers[event[1][1]] = event
        assert {i: e[0] for i, e in answers.items()} == expected
        for event in answers.values():
            if event[0] == "written":
                assert event[2] is None, f"a well-formed write failed: {event[2]}"
    h.handle_events([["get", "ok", "last", [KEYS[0]]]], 0.0)
    assert [e[1] for _, e in h.take_outbox()] == ["last"], "the stage goes on"


def batches(malformed: st.SearchStrategy) -> st.SearchStrategy:
    event = st.one_of(st.tuples(st.just(True), GOOD), st.tuples(st.just(False), malformed))
    return st.lists(st.lists(event, max_size=8), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(batches(mangled(DISPATCHED, whole=False)))
def test_a_malformed_event_fails_alone_and_every_well_formed_one_is_answered_once(events):
    """Malformed events of the kinds the stage dispatches (``on_<kind>``)."""
    check_batches(events)


@settings(max_examples=80, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate])
@given(batches(mangled(["write", "get", *DISPATCHED], whole=True)))
def test_a_malformed_write_or_get_fails_alone_too(events):
    """The same property with every kind malformed, and events that are no list of a
    known kind at all (derandomized: the same examples every run)."""
    check_batches(events)


# The shapes that once stopped a batch (the stage took write and get apart outside
# dispatch's per-event guard), one each.
@pytest.mark.parametrize("bad", [
    pytest.param(["write", "versioning", 1, [[b"k", b"v"]]], id="write-without-hints"),
    pytest.param(["write", "versioning", 1, [[b"k", 5]], []], id="write-int-value"),
    pytest.param(["write", "versioning", 1, [[5, b"v"]], []], id="write-int-key"),
    pytest.param(["get", "coordination", 1], id="get-without-keys"),
    pytest.param(["get", "coordination", 1, None], id="get-keys-nil"),
    pytest.param(7, id="not-a-list"),
    pytest.param([], id="empty"),
])
def test_one_bad_write_or_get_stops_nothing_else(bad):
    h, engine = store()
    before = ["write", "versioning", "w0", [[b"a", live(b"a")]], []]
    after = ["write", "versioning", "w2", [[b"b", live(b"b")]], []]
    h.handle_events([before, bad, after, ["get", "coordination", "g3", [b"a"]]], 0.0)
    answers = {e[1]: e for _, e in h.take_outbox() if e[1] in ("w0", "w2", "g3")}
    assert answers["w0"][2] is None and answers["w2"][2] is None
    assert set(answers) == {"w0", "w2", "g3"}
    assert engine.get(b"a") == live(b"a") and engine.get(b"b") == live(b"b")
