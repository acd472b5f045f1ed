"""The claim core: which node owns which partition, by weight (section 6.2, strategy 3)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.claim import claim, moved, quotas, spread_violations
from seda_dynamo.ring import Member, Ring

N = 3
SLACK = N  # claim's default: extra transfers it may spend keeping replicas apart
QS = st.sampled_from([64, 256, 1024])
NAMES = st.lists(st.text("abcdxyz019", min_size=1, max_size=5), min_size=1, max_size=16,
                 unique=True)
FAST = settings(max_examples=15, deadline=None)


def quota(weights: dict[str, int], node: str, q: int) -> tuple[int, int]:
    """A node's share of ``q``, rounded down and up."""
    total = sum(weights.values())
    return q * weights[node] // total, -(-q * weights[node] // total)


def assert_sound(owners: tuple[str, ...], weights: dict[str, int], q: int, n: int = N) -> None:
    """Length Q, live owners, each node within its share rounded down or up, and
    preference lists of min(N, S) distinct nodes."""
    assert len(owners) == q and set(owners) <= set(weights)
    have = Counter(owners)
    for node in weights:
        lo, hi = quota(weights, node, q)
        assert lo <= have[node] <= hi, (node, have[node], lo, hi)
    ring = Ring(q, 1, tuple(Member(x, "", "") for x in weights), owners)
    for p in range(0, q, 1 + q // 128):
        prefs = ring.preference_list(p, n)
        assert len(prefs) == len(set(prefs)) == min(n, len(weights))


def joined(q: int, names: list[str], weights: list[int] | None = None, n: int = N):
    """Join ``names`` one at a time; yield (weights, old owners, new owners, joiner)."""
    current: dict[str, int] = {}
    owners = None
    for i, name in enumerate(names):
        current[name] = 1 if weights is None else weights[i]
        new = claim(owners, current, q, n)
        yield dict(current), owners, new, name
        owners = new


def extra(old: tuple[str, ...], new: tuple[str, ...]) -> int:
    """Transfers beyond what the new counts force: each partition a node gains is one."""
    live = set(new)
    gained = Counter(new) - Counter(o for o in old if o in live)
    return len(moved(old, new)) - sum(gained.values())


def test_quotas_round_by_largest_remainder_preferring_current_owners():
    assert quotas({"a": 1, "b": 1, "c": 1}, 64) == {"a": 22, "b": 21, "c": 21}
    assert quotas({"a": 1, "b": 1, "c": 1}, 64, {"c": 30}) == {"a": 21, "b": 21, "c": 22}
    assert quotas({"a": 1, "b": 3}, 64) == {"a": 16, "b": 48}
    assert quotas({"a": 1, "b": 2}, 64) == {"a": 21, "b": 43}


def test_spread_violations_and_moved():
    assert spread_violations(("a", "b", "a", "b"), 2) == 0
    assert spread_violations(("a", "b", "a", "b"), 3) == 4
    assert spread_violations(("a", "b", "c", "a"), 3) == 2
    assert moved(("a", "b", ""), ("a", "c", "c")) == [(1, "b", "c")]


@FAST
@given(st.sampled_from([64, 256, 1024]), st.integers(1, 16), st.booleans(), st.randoms())
def test_fresh_rings_are_balanced(q, s, equal, rnd):
    weights = {f"n{i}": 1 if equal else rnd.randint(1, 4) for i in range(s)}
    owners = claim(None, weights, q, N)
    assert owners == claim([""] * q, dict(reversed(weights.items())), q, N)
    assert_sound(owners, weights, q)
    have = Counter(owners)
    if equal and q // s >= 16:
        assert max(have.values()) <= 1.1 * q / s
        assert all(abs(have[k] - t) <= 1 for k, t in quotas(weights, q).items())
    if equal and s > N:
        assert spread_violations(owners, N) == 0


@FAST
@given(QS, NAMES)
def test_joins_move_only_the_joiners_share_and_keep_replicas_apart(q, names):
    """Equal weights, nodes joining one at a time: the joiner takes exactly its share,
    only from the others, and from N + 1 nodes on no node owns two partitions within N."""
    for weights, old, new, joiner in joined(q, names):
        s = len(weights)
        assert_sound(new, weights, q)
        have = Counter(new)
        if q // s >= 16:
            assert max(have.values()) <= 1.1 * q / s
            assert all(abs(have[k] - t) <= 1 for k, t in quotas(weights, q).items())
        if old is not None:
            transfers = moved(old, new)
            assert len(transfers) == have[joiner] <= quota(weights, joiner, q)[1]
            assert all(to == joiner for _, _, to in transfers)
        if s > N:
            assert spread_violations(new, N) == 0


@pytest.mark.parametrize("q", [64, 256, 1024])
@pytest.mark.parametrize("n", [2, 3])
def test_sixteen_joins_in_a_row(q, n):
    """Join order differs from id order (node-10 sorts before node-2)."""
    for weights, old, new, joiner in joined(q, [f"node-{i}" for i in range(16)], n=n):
        assert_sound(new, weights, q, n)
        if old is not None:
            assert len(moved(old, new)) == new.count(joiner)
            assert {to for _, _, to in moved(old, new)} == {joiner}
        assert spread_violations(new, n) == 0 or len(weights) <= n


@FAST
@given(st.sampled_from([256, 1024]), NAMES, st.lists(st.integers(1, 4), min_size=16,
                                                     max_size=16))
def test_weighted_joins_take_a_share_proportional_to_weight(q, names, weights):
    for current, old, new, joiner in joined(q, names, weights):
        assert_sound(new, current, q)
        if old is not None:
            transfers = moved(old, new)
            assert len(transfers) <= quota(current, joiner, q)[1] + SLACK
            assert sum(to != joiner for _, _, to in transfers) <= SLACK


@FAST
@given(QS, NAMES, st.booleans(), st.randoms())
def test_a_leavers_partitions_are_all_that_move(q, names, equal, rnd):
    weights = [1 if equal else rnd.randint(1, 4) for _ in names]
    *_, (current, _, owners, _) = joined(q, names, weights)
    while len(current) > 1:
        leaver = rnd.choice(sorted(current))
        del current[leaver]
        new = claim(owners, current, q, N)
        assert_sound(new, current, q)
        transfers = moved(owners, new)
        assert len(transfers) <= owners.count(leaver) + SLACK
        assert sum(was != leaver for _, was, _ in transfers) <= SLACK
        assert extra(owners, new) <= SLACK
        owners = new


@FAST
@given(QS, NAMES.filter(lambda x: len(x) > 1), st.randoms())
def test_a_weight_change_moves_little(q, names, rnd):
    *_, (current, _, owners, _) = joined(q, names)
    for _ in range(3):
        current[rnd.choice(sorted(current))] = rnd.randint(1, 4)
        new = claim(owners, current, q, N)
        assert_sound(new, current, q)
        assert extra(owners, new) <= SLACK
        owners = new


@FAST
@given(QS, NAMES, st.randoms())
def test_claim_is_deterministic_and_stable(q, names, rnd):
    *_, (current, old, owners, _) = joined(q, names, [rnd.randint(1, 3) for _ in names])
    shuffled = list(current.items())
    rnd.shuffle(shuffled)
    assert claim(old, dict(shuffled), q, N) == owners
    assert claim(owners, current, q, N) == owners  # nothing to do: nothing moves


def test_claim_grows_a_single_node_ring():
    ring = Ring.single(Member("a", "", ""), 64)
    owners = claim(ring.owners, {"a": 1, "b": 1}, 64, N)
    assert Counter(owners) == {"a": 32, "b": 32}
    assert len(moved(ring.owners, owners)) == 32
    with pytest.raises(ValueError):
        claim(ring.owners, {"a": 0}, 64, N)
    with pytest.raises(ValueError):
        claim(ring.owners, {"a": 1}, 32, N)
