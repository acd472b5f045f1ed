"""Tests for seda_dynamo.actors: which actor a replica stamps with, and forged actors."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo import actors
from seda_dynamo import causality as c
from seda_dynamo.causality import EMPTY, DVVSet


def write(stored: DVVSet, value: object, actor: str, ctx: c.VersionVector | None = None):
    return c.update(c.new(value, ctx), stored, actor)


def test_own_actor_is_the_newest_minted_actor_of_the_family_the_store_shows() -> None:
    old, new = actors.mint_actor("n1#ab", (0xE3,)), actors.mint_actor("n1#ab", (0x1DE,))
    assert (old, new) == ("n1#ab.me3", "n1#ab.m1de") and old > new  # text order misleads
    s = write(write(write(EMPTY, b"x", new), b"y", "n2#cd.m1.7"), b"z", old)
    assert actors.own_actor(s, "n1#ab") == new
    assert actors.own_actor(s, "n2#cd") == "n2#cd.m1.7"
    assert actors.own_actor(s, "n1#a") is None  # another incarnation, not a prefix match
    assert actors.own_actor(write(EMPTY, b"x", "n1#ab"), "n1#ab") is None  # older naming
    assert actors.own_actor(write(EMPTY, b"x", "n1#ab.3.ff"), "n1#ab") is None
    assert actors.own_actor(EMPTY, "n1#ab") is None
    assert actors.mint_order(actors.mint_actor("n1#ab", (3, 255, 1)), "n1#ab") == (3, 255, 1)
    for odd in ("n1#ab.m", "n1#ab.m0x1", "n1#ab.m01", "n1#ab.m1..2", "n1#ab.m-1", "n1#ab.mg"):
        assert actors.mint_order(odd, "n1#ab") is None, odd


FAMILY = "r#1"
#: One replica's life with one key: writes with any context handed out before (stale
#: ones replayed), blind writes, a reap (the key forgotten), a stale replica's copy from
#: before a reap merged back in, and restarts (a new epoch) with arbitrary, unpadded and
#: large sequence numbers.
replica_steps = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(0, 60)),
    st.tuples(st.just("blind"), st.just(0)),
    st.tuples(st.just("reap"), st.just(0)),
    st.tuples(st.just("stale_copy"), st.integers(0, 60)),
    st.tuples(st.just("restart"), st.integers(1, 2**40)),
    st.tuples(st.just("reads"), st.integers(1, 2**48)),
), max_size=60)


@settings(max_examples=400, deadline=None)
@given(replica_steps, st.integers(0, 2**40))
def test_a_replica_never_issues_a_dot_an_earlier_context_covers(script, first_seq) -> None:
    """The class of the lost blind write: a replica stamping through ``replica_update``
    and merging through ``replica_sync``, fresh actors minted in a growing order, never
    issues a dot that any context handed out before covers, nor a dot issued before,
    whatever the actors' names sort as."""
    stored, contexts, states = EMPTY, [{}], [EMPTY]
    epoch, seq, minted = 1, first_seq, [0]
    issued: set[tuple[str, int]] = set()

    def mint() -> str:
        minted[0] += 1
        return actors.mint_actor(FAMILY, (epoch, seq, minted[0]))

    for op, arg in script:
        if op == "reap":
            stored = EMPTY
            continue
        if op == "restart":
            epoch, seq = epoch + arg, arg  # a later epoch; its sequence starts anywhere
            continue
        if op == "reads":
            seq += arg  # other keys read meanwhile
            continue
        seq, minted[0] = seq + 1, 0  # this key's read
        if op == "stale_copy":  # anti-entropy brings back a copy from any earlier moment
            stored = actors.replica_sync(stored, states[arg % len(states)], FAMILY, mint)
            continue
        ctx = {} if op == "blind" else contexts[arg % len(contexts)]
        assert actors.unissued_actor(ctx, FAMILY, (epoch, seq)) is None
        before = c.join(stored)
        stored = actors.replica_update(stored, b"v", ctx, FAMILY, mint)
        after = c.join(stored)
        dots = [(a, n) for a, n in after.items()
                if n > max(before.get(a, 0), ctx.get(a, 0)) and c.values(stored)
                and any(a == x and vals for x, _, vals in stored.entries)]
        assert len(dots) == 1, (before, ctx, after)  # the new value's dot
        actor, n = dots[0]
        assert all(old.get(actor, 0) < n for old in contexts), dots
        assert dots[0] not in issued, dots
        issued.add(dots[0])
        contexts.append(after)
        states.append(stored)


def test_a_forged_actor_of_ours_is_recognised_as_never_minted() -> None:
    forged = actors.mint_actor(FAMILY, (9, 0))
    assert actors.unissued_actor({forged: 1, "x": 2}, FAMILY, (8, 2**40)) == forged
    assert actors.unissued_actor({forged: 1}, FAMILY, (9, 0)) is None
    assert actors.unissued_actor({actors.mint_actor(FAMILY, (9, 0, 5)): 1}, FAMILY, (9, 0)) is None
    assert actors.unissued_actor({"other#1.m99": 1}, FAMILY, (1, 1)) is None
