"""The claim: which node owns which partition of the ring, by weight.

Dynamo paper section 6.2, partitioning strategy 3 (Q equal partitions, each node owning
whole ones; nodes of unequal capacity own shares in proportion to their weight), on the
ring of section 4.2 (``seda_dynamo.ring``).

``claim`` decides who owns what when nodes join, leave or change weight, in priority
order: (1) every partition gets a live owner, deterministically; (2) each node owns
``Q * w / sum(w)`` partitions rounded down or up (section 6.2's heterogeneity); (3) only
the partitions that must change hands move; (4) softly, no node owns two partitions
within N of each other, so the next N partitions are N distinct nodes (Riak's target_n).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from seda_dynamo.ring import key_hash


def quotas(weights: Mapping[str, int], partitions: int,
            current: Mapping[str, int] | None = None,
            prefer: Mapping[str, int] | None = None) -> dict[str, int]:
    """How many partitions each node should own: ``partitions * w / sum(w)`` rounded so the
    quotas sum to ``partitions``. Round-ups go to the largest remainders, but first to
    nodes that ``current``-ly own more than the rounded-down share (fewer moves); ties go
    to the lowest ``prefer`` rank, then to the lowest id."""
    total = sum(weights.values())
    share = {k: partitions * w // total for k, w in weights.items()}
    have, rank = current or {}, prefer or {}
    ups = sorted((k for k, w in weights.items() if partitions * w % total),
                 key=lambda k: (have.get(k, 0) <= share[k], -(partitions * weights[k] % total),
                                rank.get(k, 0), k))
    for k in ups[:partitions - sum(share.values())]:
        share[k] += 1
    return share


def spread_violations(owners: Sequence[str], n: int) -> int:
    """How many windows of ``n`` consecutive partitions (wrapping) repeat an owner."""
    q, span = len(owners), min(n, len(owners))
    return sum(len({owners[(s + i) % q] for i in range(span)}) < span for s in range(q))


def moved(old: Sequence[str | None], new: Sequence[str]) -> list[tuple[int, str, str]]:
    """The transfers from ``old`` owners to ``new`` ones: ``(partition, old, new)``."""
    if len(old) != len(new):
        raise ValueError("rings of different sizes")
    return [(p, o, w) for p, (o, w) in enumerate(zip(old, new, strict=True)) if o and o != w]


def claim(owners: Sequence[str | None] | None, weights: Mapping[str, int], partitions: int,
          n: int, *, slack: int | None = None) -> tuple[str, ...]:
    """New owners (length Q) for the nodes in ``weights`` (node id -> weight >= 1), starting
    from ``owners`` (None or all-empty for a fresh ring). Nodes absent from ``weights``
    (they left) give up all their partitions.

    Each node ends with its share of Q rounded down or up (see ``quotas``). Only the
    partitions that must change hands move: a leaver's go to nodes under target, nodes
    under target take from nodes over it, each picking partitions at least N from its
    own. Then at most ``slack`` more transfers (default N) mend windows of N partitions
    that repeat an owner. Up to N + 1 nodes follow a fixed layout of N + 1 slots, so the
    node that makes N + 1 takes a whole slot and the ring meets the spread rule with no
    extra moves. A ring that already meets its quotas comes back unchanged.
    """
    if partitions < 1 or n < 1 or not weights or min(weights.values()) < 1:
        raise ValueError("claim needs partitions >= 1, n >= 1 and weights >= 1")
    owners = [None] * partitions if owners is None else list(owners)
    if len(owners) != partitions:
        raise ValueError(f"{len(owners)} owners for {partitions} partitions")
    work = _Claim(owners, weights, partitions, n)
    if None not in work.own and not any(work.need.values()):
        return tuple(owners)  # type: ignore[arg-type]
    fresh = not any(work.orig)
    if fresh and len(weights) > n and len(set(weights.values())) == 1 and (
            stripes := _stripes(work.nodes, partitions, n)):
        return tuple(stripes)
    work.place_orphans()
    work.transfer()
    work.mend(partitions if fresh else n if slack is None else slack)
    return tuple(work.own)  # type: ignore[arg-type]


class _Claim:
    """One claim in progress: the owners so far and how many more each node needs."""

    def __init__(self, owners: Sequence[str | None], weights: Mapping[str, int], q: int,
                 n: int) -> None:
        self.q, self.n, self.nodes = q, n, sorted(weights)
        self.orig: list[str | None] = [o if o in weights else None for o in owners]
        self.own = list(self.orig)
        self.near = sorted({d % q for d in range(1 - n, n)} - {0})
        self.plan: dict[str, int] = {}  # node -> its slot, while there are <= N + 1 nodes
        self.slot: Sequence[int] = [0] * q
        self.held: Counter[tuple[str | None, int]] = Counter()  # (node, slot) -> partitions
        if 1 < n < q - 1 and len(self.nodes) <= n + 1 and (layout := _template(q, n)):
            self._plan_slots(*layout)
        count = {k: self.own.count(k) for k in self.nodes}
        bigger = {x: -self.slot.count(j) for x, j in self.plan.items()}
        self.target = quotas(weights, q, count, bigger)
        self.need = {k: self.target[k] - count[k] for k in self.nodes}
        total = sum(weights.values())  # every count stays within low..high
        self.low = {k: q * w // total for k, w in weights.items()}
        self.high = {k: -(-q * w // total) for k, w in weights.items()}

    def _plan_slots(self, slot: tuple[int, ...], spread: tuple[int, ...]) -> None:
        """Each node's slot: one it wholly owns, else the first slot nobody does."""
        self.slot, self.spread = slot, spread
        holders: list[set[str | None]] = [set() for _ in range(self.n + 1)]
        for p, o in enumerate(self.own):
            holders[self.slot[p]].add(o)
            self.held[o, self.slot[p]] += 1
        for j, held in enumerate(holders):
            if len(held) == 1 and (x := held.pop()) is not None and x not in self.plan:
                self.plan[x] = j
        free = [j for j in range(self.n + 1) if j not in self.plan.values()]
        for x in self.nodes:
            if x not in self.plan:
                self.plan[x] = free.pop(0)
        self.shared = set(free)  # slots of nodes yet to come, shared meanwhile

    def clash(self, node: str | None, p: int, skip: int = -1) -> bool:
        """Would ``node`` at ``p`` own another partition within N of it?"""
        own, q = self.own, self.q
        return any(own[j] == node and j != skip for j in ((p + d) % q for d in self.near))

    def give(self, p: int, node: str) -> None:
        if (old := self.own[p]) is not None:
            self.need[old] += 1
            self.held[old, self.slot[p]] -= 1
        self.own[p] = node
        self.need[node] -= 1
        self.held[node, self.slot[p]] += 1

    def rank(self, node: str, p: int) -> tuple[int, ...]:
        """Lower is better: no clash, and (up to N + 1 nodes) the node's slot, then a shared
        one; with N nodes or fewer the spread rule cannot hold, so the slot comes first."""
        if not self.plan:
            return (self.clash(node, p),)
        if len(self.nodes) <= self.n:  # and split each shared slot evenly
            tier = self._tier(node, p)
            return tier, self.held[node, self.slot[p]] if tier == 1 else 0, self.clash(node, p)
        return self.clash(node, p), self._tier(node, p)

    def _tier(self, node: str, p: int) -> int:
        j = self.slot[p]
        return 0 if self.plan[node] == j else 1 if j in self.shared else 2

    def place_orphans(self) -> None:
        """Partitions with no live owner go to nodes under target (slots of nodes first)."""
        for p in sorted(range(self.q), key=lambda p: (self.slot[p] in self.shared,
                                                     self.spread[p]) if self.plan else p):
            if self.own[p] is None:
                takers = [k for k in self.nodes if self.need[k] > 0]
                self.give(p, min(takers, key=lambda k: (
                    self.rank(k, p), -self.need[k] / self.target[k], k)))

    def transfer(self) -> None:
        """Nodes under target take partitions from nodes over it."""
        for r in sorted((k for k in self.nodes if self.need[k] > 0),
                        key=lambda k: (-self.need[k], k)):
            if self.plan:  # by slot: first its own, then shared ones spread evenly
                order = sorted(range(self.q), key=lambda p: (self._tier(r, p), self.spread[p]))
                for avoid in (True, False) if len(self.nodes) > self.n else (False,):
                    for p in order:
                        if self.need[r] > 0 and self._donor(p, r) and not (
                                avoid and self.clash(r, p)):
                            self.give(p, r)
            else:  # near k evenly spaced places, from a point set by its id
                k, start = self.need[r], key_hash(r.encode())
                for spot in range(k):
                    self.give(self._nearest(r, (start + spot * self.q // k) % self.q,
                                            max(1, self.q // (2 * k))), r)

    def _donor(self, p: int, r: str) -> bool:
        o = self.own[p]
        return o is not None and o != r and self.need[o] < 0

    def _nearest(self, r: str, spot: int, radius: int) -> int:
        """A donor's partition near ``spot``: one ``r`` can own without a clash if any, best
        one that ends a clash of its owner, else within ``radius`` from the donor with the
        most to give, else the nearest."""
        best, best_key = -1, (True, True, True, 0, 0)
        fits = self.target[r] * self.n <= self.q  # else r cannot keep N apart anyway
        for d in range(self.q // 2 + 1):
            if best >= 0 and not best_key[0] and (d > radius or not best_key[1]):
                break
            for p in ((spot + d) % self.q, (spot - d) % self.q):
                if self._donor(p, r):
                    o = self.own[p]
                    key = (fits and self.clash(r, p), not self.clash(o, p), d > radius,
                           self.need[o], d)
                    if best < 0 or key < best_key:  # type: ignore[operator]
                        best, best_key = p, key
        return best

    def mend(self, budget: int) -> None:
        """Spend up to ``budget`` extra transfers on windows of N that repeat an owner
        (and give up after 8N vain searches: not every layout can be mended by swaps)."""
        if len(self.nodes) <= self.n:
            return
        progress, vain = True, 8 * self.n
        while progress:
            progress = False
            for p, a in enumerate(self.own):
                if budget <= 0 or vain <= 0:
                    return
                if self.target[a] * self.n <= self.q and self.clash(a, p):  # type: ignore
                    if (cost := self._fix(p, budget)) is None:
                        vain -= 1
                    else:
                        budget, progress = budget - cost, True

    def _cost(self, p: int, node: str | None) -> int:
        """The change in the number of transfers if ``p`` went to ``node``."""
        return (node != self.orig[p]) - (self.own[p] != self.orig[p])

    def _bad(self, ps: Sequence[int]) -> int:
        """How many windows of N through ``ps`` repeat an owner."""
        q, n, own = self.q, self.n, self.own
        starts = {(x - i) % q for x in ps for i in range(n)}
        return sum(len({own[(s + i) % q] for i in range(n)}) < n for s in starts)

    def _fix(self, p: int, budget: int) -> int | None:
        """Hand ``p`` to a node with room for a round-up, or swap it with a partition
        elsewhere: apply the cheapest change that leaves fewer bad windows; its cost."""
        a, q = self.own[p], self.q
        assert a is not None
        have = {k: self.target[k] - self.need[k] for k in self.nodes}
        around = {self.own[(p + d) % q] for d in self.near}
        options = [(self._cost(p, b), 0, b, -1) for b in self.nodes if have[a] > self.low[a]
                   and b not in around and b != a and have[b] < self.high[b]]
        for x, b in enumerate(self.own):
            if b != a and b not in around and b is not None:
                cost = self._cost(p, b) + self._cost(x, a)
                if cost <= budget and not self.clash(a, x, skip=p):
                    options.append((cost, min((x - p) % q, (p - x) % q), b, x))
        for cost, _, b, x in sorted(options):
            if cost > budget:
                break
            touched = [p] if x < 0 else [p, x]
            before = self._bad(touched)
            self.give(p, b)
            if x >= 0:
                self.give(x, a)
            if self._bad(touched) < before:
                return cost
            if x >= 0:
                self.give(x, b)
            self.give(p, a)
        return None


@lru_cache(maxsize=16)
def _template(q: int, n: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The N + 1 slot layout (N + 1 equal nodes dealt round-robin) and, for each partition,
    a rank that spreads the first partitions taken from each slot evenly (bit reversal)."""
    slot = _stripes(range(n + 1), q, n)
    if slot is None:
        return None
    seen, spread, bits = [0] * (n + 1), [], q.bit_length()
    for j in slot:
        spread.append(int(f"{seen[j]:0{bits}b}"[::-1], 2) * (n + 1) + j)
        seen[j] += 1
    return tuple(slot), tuple(spread)


def _stripes(nodes: Sequence[Any], q: int, n: int) -> list[Any] | None:
    """Equal nodes dealt round-robin (Riak's claim_rebalance_n): whole rounds, then a short
    round of the first nodes if at least N long, else enough rounds one node short (never
    two in a row) that no node repeats within N across the wrap. None if Q is too small."""
    s = len(nodes)
    m, r = divmod(q, s)
    if r == 0 or r >= n:
        return [nodes[p % s] for p in range(q)]
    short, rounds = s - r, m + 1  # each short round leaves out a node that gets m
    if s <= n or rounds < 2 * short:
        return None
    skip = {k * rounds // short: nodes[r + k] for k in range(short)}
    return [x for i in range(rounds) for x in nodes if x != skip.get(i)]
