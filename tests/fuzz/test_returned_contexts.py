"""Fuzzing what a hostile client does with the contexts a node hands it: it decodes the
token (docs/protocol.md: a version byte, then msgpack pairs of actor and counter), changes
it, and writes with it. The actors it names are the node's own, which no strategy of
``strategies.py`` can know in advance: docs/protocol.md's "What a context may hold" says
what must happen (a counter beyond 2^62 or an actor the node has not minted is refused
with ``bad_request``; a context claiming one of the node's counters is high moves the
write to a fresh actor; no context the store returned is ever refused), and the other
judges are ``test_handlers.fuzz``'s: every request one reply naming what was wrong, no
handler fails, nothing outlives its deadline, every key still works.

Dynamo paper section 4.4 (the context a client carries from a read to its write).
``SEDA_SOAK=1`` (``make soak``) runs ten times as many examples.
"""

from __future__ import annotations

import re
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st
from strategies import MAX_ACTORS, MAX_COUNTER, check_reply, packed
from target import HandlerNode, stage_stack
from test_handlers import EXAMPLES, FUZZ, still_works

__all__ = ["EXAMPLES"]  # the README's count of cases reads it (tests/tooling)

COUNTERS = st.sampled_from([0, 1, 2, MAX_COUNTER - 1, MAX_COUNTER, MAX_COUNTER + 1,
                            2**63, 2**64 - 1])
BUMPS = st.sampled_from([1, 2, 15, 16, 255, 256, 2**32])
#: One change to a decoded context: (what, which pair, ...).
MUTATION = st.one_of(
    st.tuples(st.just("counter"), st.integers(0, 7), COUNTERS),
    st.tuples(st.just("drop"), st.integers(0, 7)),
    # A number inside an actor's name moved on: an actor of the same node, maybe unminted.
    st.tuples(st.just("rename"), st.integers(0, 7), st.integers(0, 5), BUMPS),
    # Many actors of the node's family: around the count a context may name.
    st.tuples(st.just("copies"), st.integers(0, 7),
              st.sampled_from([1, 2, MAX_ACTORS - 1, MAX_ACTORS, MAX_ACTORS + 1])),
)
#: (op, which key, how old a context of it to start from, the changes to make).
STEP = st.tuples(st.sampled_from(["put", "delete", "get"]), st.integers(0, 2),
                 st.integers(0, 3), st.lists(MUTATION, max_size=3))
KEYS = [b"a", b"b", b"c"]


def decode(context: bytes) -> list[list[Any]]:
    assert context[:1] == b"\x01", context[:8]
    return [list(pair) for pair in msgpack.unpackb(context[1:], raw=False)]


def renamed(actor: str, which: int, bump: int) -> str:
    """``actor`` with its ``which``-th run of hex digits (cyclically) moved on by ``bump``."""
    runs = list(re.finditer(r"[0-9a-f]+", actor))
    if not runs:
        return actor + "0"
    run = runs[which % len(runs)]
    return f"{actor[:run.start()]}{int(run.group(), 16) + bump:x}{actor[run.end():]}"


def mutate(context: bytes, mutations: list[tuple[Any, ...]]) -> bytes:
    pairs = decode(context)
    for kind, index, *rest in mutations:
        if not pairs:
            break
        pair = pairs[index % len(pairs)]
        if kind == "counter":
            pair[1] = rest[0]
        elif kind == "drop":
            pairs.remove(pair)
        elif kind == "rename":
            pair[0] = renamed(pair[0], *rest)
        else:
            pairs += [[renamed(pair[0], -1, i + 1), pair[1]] for i in range(rest[0])]
    return b"\x01" + packed(pairs)


def run(steps: list[tuple[str, int, int, list[tuple[Any, ...]]]]) -> None:
    with stage_stack():
        node = HandlerNode()
        given_out: dict[bytes, list[bytes]] = {key: [] for key in KEYS}  # contexts, in order

        def send(body: dict[str, Any]) -> dict[str, Any]:
            frames = [b"", packed({**body, "id": node.sent})]
            number = node.client(frames)
            (reply,) = node.replies[number]
            check_reply(reply, frames)
            if reply["ok"] and reply.get("context") is not None:
                given_out[body["key"]].append(reply["context"])
            return reply

        for op, which, age, mutations in steps:
            key = KEYS[which]
            if not given_out[key]:
                assert send({"op": "put", "key": key, "value": b"first", "w": 1})["ok"]
            if op == "get":
                send({"op": "get", "key": key, "r": 1})
                continue
            held = given_out[key]
            context = mutate(held[max(0, len(held) - 1 - age)], mutations)
            body = {"op": op, "key": key, "w": 1, "context": context}
            reply = send({**body, "value": b"v"} if op == "put" else body)
            if not mutations:  # a context the store returned is never refused
                assert reply["ok"], reply
        assert not any(node.errors().values()), f"a handler failed on input: {node.errors()}"
        node.settle()
        assert node.tables() == dict.fromkeys(node.tables(), 0), "an entry outlived its deadline"
        assert not any(node.errors().values()), f"a handler failed on input: {node.errors()}"
        still_works(node, KEYS)


@FUZZ
@given(st.lists(STEP, min_size=1, max_size=8))
def test_a_client_writing_with_contexts_it_changed_gets_an_error_and_nothing_else(steps):
    run(steps)


def test_a_context_naming_a_counter_of_the_node_at_the_limit_moves_the_write_on():
    # docs/protocol.md: a context claiming one of this node's counters is that high moves
    # the write to a fresh actor; one beyond the limit is refused at the door.
    run([("put", 0, 0, [("counter", 0, MAX_COUNTER)]),
         ("put", 0, 0, [("counter", 0, 2**64 - 1)]),
         ("put", 0, 0, [])])
