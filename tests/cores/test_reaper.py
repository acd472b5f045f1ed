"""The tombstone-reaping rule, without sockets."""

from __future__ import annotations

from seda_dynamo import causality
from seda_dynamo.reaper import verdict, worth_retrying

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
