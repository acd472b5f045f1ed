"""``brief``: a value from the network, shown in a log line without walking all of it."""

from __future__ import annotations

import sys

from seda_dynamo.brief import brief


def deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def test_a_value_deeper_than_the_recursion_limit_is_shown():
    value = deep(sys.getrecursionlimit() * 2)
    assert brief(value).startswith("[[[")
    assert len(brief({"a": value}, 20)) <= 20


def test_a_long_value_is_cut_before_it_is_shown():
    assert brief(b"x" * 50_000_000, 60).startswith("b'xxx")
    assert "(50000000 bytes)" in brief(b"x" * 50_000_000, 200)
    assert len(brief("y" * 10**6)) <= 80
    assert brief(b"short") == "b'short'" and brief(7) == "7" and brief(None) == "None"
