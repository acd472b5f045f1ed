"""Anti-entropy between two replicas whose trees both live elsewhere (sans-IO).

Dynamo paper section 4.7: replicas of a key range compare Merkle trees and repair only
the keys that differ. ``merkle.Exchange`` compares a local tree object with a remote
one's answers; here neither tree is in this process (each replica's persistence stage
keeps its trees), so every request is put to both sides and the exchange is fed both
answers. ``Round`` is that driver: a value with no IO, advanced by answers.

``Exchanges`` is the gossip stage's anti-entropy duty that runs the rounds: every
``anti_entropy_every`` seconds (while the foreground leaves room, paper 6.5) it takes the
next partition of the sweep that this node replicates and compares it with one other
live replica, one exchange at a time and each within ``EXCHANGE_DEADLINE`` (a question
unanswered for ``QUESTION_DEADLINE``, or lost with a restarted persistence stage, is
asked again); then it repairs at most ``REPAIRS_PER_EXCHANGE`` differing keys both ways
by merging versions (pull: the peer's versions synced here; push: ours sent there), never
overwriting. The pause before the next exchange grows with the keys repaired, so repairs
yield to clients in proportion.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from seda_dynamo.background import BackgroundShare
from seda_dynamo.duty import Cluster, Component, Duty, Emit, Route, Timer
from seda_dynamo.merkle import Exchange, HashTree, Question
from seda_dynamo.messages import Get, Sync, Tree

#: Every partition's tree on every replica: 1,024 segments under a root of fan-out 32.
TREE_SEGMENTS = 1024
TREE_WIDTH = 32
TREE_LEVELS = 3  # root, 32 inner nodes, 1,024 segments
EXCHANGE_DEADLINE = 10.0
#: Seconds a tree question waits for both answers before it is asked again, of both
#: sides, under a new ref (a question or answer lost on a lossy link, or with a crashed
#: persistence stage, would otherwise hold the sweep until ``EXCHANGE_DEADLINE``).
QUESTION_DEADLINE = 2.0
REPAIRS_PER_EXCHANGE = 1000
REPAIR_PACE = 100  # keys repaired per anti_entropy_every of pause


def new_tree() -> HashTree:
    return HashTree(TREE_SEGMENTS, TREE_WIDTH)


class _Answered:
    """A stand-in for the local tree that knows only its answer to one request."""

    def __init__(self, levels: int, width: int, request: Question, answer: Any) -> None:
        self._levels, self.width = levels, width
        self._request, self._answer = request, answer

    def levels(self) -> int:
        return self._levels

    def hashes(self, level: int, indices: list[int]) -> list[bytes]:
        assert (level, tuple(indices)) == (self._request.level, self._request.indices)
        if not isinstance(self._answer, list) or len(self._answer) != len(indices):
            raise ValueError("local hashes answer does not match its request")
        return self._answer

    def segment_keys(self, segment: int) -> dict[bytes, bytes]:
        if not isinstance(self._answer, dict):
            raise ValueError("local segments answer must be a map")
        return dict(self._answer.get(segment) or {})


@dataclass(slots=True)
class Round:
    """One exchange of partition ``partition`` with replica ``peer``."""

    partition: int
    peer: str
    started: float
    asked: float = 0.0  # when the question in ``request`` was last put to both sides
    levels: int = TREE_LEVELS
    width: int = TREE_WIDTH
    request: Question | None = None
    answers: dict[str, Any] = field(default_factory=dict)
    exchange: Exchange | None = None

    def start(self) -> Question:
        self.exchange = Exchange(_Answered(self.levels, self.width, Question("hashes", 0, (0,)),
                                           []))
        self.request = self.exchange.start()
        return self.request

    def feed(self, side: str, answer: Any) -> Question | None:
        """One side's ("local" or "remote") answer; the next request once both are in."""
        self.answers[side] = answer
        if len(self.answers) < 2:
            return None
        assert self.exchange is not None and self.request is not None
        local, remote = self.answers.pop("local"), self.answers.pop("remote")
        self.exchange.local = _Answered(self.levels, self.width, self.request, local)
        self.request = self.exchange.feed(remote)
        return self.request

    @property
    def done(self) -> bool:
        return self.exchange is not None and self.request is None

    @property
    def differences(self) -> dict[bytes, str]:
        """Key -> "missing_local" | "missing_remote" | "different"."""
        return dict(self.exchange.kinds) if self.exchange else {}


class Exchanges(Component):
    """The sweep over this node's partitions, the exchange in progress (at most one) and
    the repairs it started; ``stats`` are the stage's anti-entropy gauges."""

    def __init__(self, emit: Emit, cluster: Cluster, share: BackgroundShare, timer: Timer,
                 rng: random.Random, *, first_id: int, n: int, partitions: int,
                 every: float, tick_interval: float, swept: Callable[[], None],
                 log: logging.Logger, stage: str = "gossip") -> None:
        super().__init__(emit, stage)
        self.cluster, self.share, self.timer, self.rng = cluster, share, timer, rng
        self.n, self.partitions, self.every = n, partitions, every
        self.tick_interval = tick_interval  # a pause shorter than this is no pause
        self.swept = swept  # called when a sweep over every partition is over
        self.log = log
        self.exchange: Round | None = None
        self.exchange_id = first_id  # ids never repeat across restarts (ids.py)
        self.next_partition = 0
        self.pushes: dict[int, tuple[str, list[bytes]]] = {}
        self.stats: dict[str, int] = {"exchanges": 0, "aborted": 0, "keys_pushed": 0,
                                      "keys_pulled": 0, "sweeps": 0}

    @property
    def sweep_position(self) -> int:
        return min(self.next_partition, self.partitions)

    def tick(self, now: float) -> None:
        """Give up an exchange past its deadline, ask again a question past its own;
        start the next exchange when it is time."""
        if self.exchange is not None and now - self.exchange.started > EXCHANGE_DEADLINE:
            self._abort("it took too long")
        elif self.exchange is not None and now - self.exchange.asked > QUESTION_DEADLINE:
            self._ask_again(now)
        if self.every and self.exchange is None and self.share.allows(now) \
                and self.timer.due(now, self.every):
            self._start(now)

    def _start(self, now: float) -> None:
        ring = self.cluster.view.effective_ring()
        if ring is None:
            return
        me, down = self.cluster.view.me, self.cluster.down
        n = min(self.n, len(ring.members))
        q = ring.partitions
        if self.next_partition >= q:
            if self.next_partition != 0:
                self.stats["sweeps"] += 1
                self.swept()
            self.next_partition = 0  # a new sweep
        for step in range(q - self.next_partition):
            p = self.next_partition + step
            replicas = ring.preference_list(p, n)
            others = [x for x in replicas if x != me and x not in down]
            if me in replicas and others:
                self.next_partition = p + 1
                self.exchange_id += 1
                self.exchange = Round(p, self.rng.choice(others), now)
                self._ask(self.exchange.start(), now)
                return
        self.next_partition = q  # nothing more to compare in this sweep
        self.timer.at = now + self.every

    def _ask(self, request: Question, now: float) -> None:
        """Put the same question to both replicas' trees."""
        assert self.exchange is not None
        self.exchange.asked = now
        wire, p = request.to_wire(), self.exchange.partition
        route = Route(Duty.TREE, (self.exchange_id,))
        self.emit("persistence", Tree.wire(self.stage, route.ref(), p, wire))
        self.call(self.cluster.view.members[self.exchange.peer].peer, route, ["tree", p, wire],
                  self.exchange.peer)

    def answer(self, now: float, node: str, route: Route, payload: list[Any]) -> None:
        if route.duty is Duty.TREE and payload[0] == "tree":
            self._fed("remote", route.ident[0], payload[1], now)
        elif route.duty is Duty.PULL and payload[0] == "got" and payload[1] is not None:
            self.stats["keys_pulled"] += 1
            self.emit("versioning", Sync.wire(reply_to=self.stage, ref=None, key=route.ident[0],
                                              clock=payload[1], hint=None))

    def local(self, now: float, route: Route, answer: list[Any]) -> None:
        if route.duty is Duty.TREE and answer[0] == "tree_answer":
            self._fed("local", route.ident[0], answer[1], now)
        elif route.duty is Duty.PUSH and answer[0] == "got":
            self._push(route.ident[0], answer[1])

    def unreachable(self, now: float, peer: str, route: Route) -> None:
        if route.duty is Duty.TREE and self.exchange is not None \
                and route.ident[0] == self.exchange_id:
            self._abort(f"{peer} is not connected")

    def lost(self, now: float, route: Route) -> None:
        """Persistence refused a tree question (the exchange ends now) or a push read (the
        push is forgotten)."""
        if route.duty is Duty.TREE and self.exchange is not None \
                and route.ident[0] == self.exchange_id:
            self._abort("the persistence stage's queue is full")
        elif route.duty is Duty.PUSH:
            self.pushes.pop(route.ident[0], None)

    def restarted(self, now: float, stage: str) -> None:
        """The local tree question went down with the persistence stage: ask again."""
        if stage == "persistence" and self.exchange is not None:
            self._ask_again(now)

    def _ask_again(self, now: float) -> None:
        """The question in progress, to both sides again under a ref of its own: what
        comes late for the earlier ask is then not taken for a later question."""
        assert self.exchange is not None and self.exchange.request is not None
        self.exchange_id += 1
        self.exchange.answers.clear()
        self._ask(self.exchange.request, now)

    def _fed(self, side: str, exchange_id: int, result: Any, now: float) -> None:
        if self.exchange is None or exchange_id != self.exchange_id:
            return
        if result is None:
            self._abort(f"the {side} tree is not built yet")
            return
        try:
            request = self.exchange.feed(side, result)
        except (ValueError, TypeError, AssertionError) as exc:
            self._abort(f"bad tree answer: {exc}")
            return
        if request is not None:
            self._ask(request, now)
        elif self.exchange.done:
            repaired = self._repair(self.exchange)
            self.exchange = None
            # The pause after an exchange grows with the keys it repaired (a full batch
            # waits anti_entropy_every), so repairs yield to clients in proportion.
            if self.next_partition >= self.partitions:
                self.timer.at = now + self.every  # the sweep is over
                return
            pause = self.every * min(1.0, repaired / REPAIR_PACE)
            self.timer.at = now + pause
            if pause < self.tick_interval and self.share.allows(now):
                self._start(now)  # straight on to the next partition

    def _repair(self, done: Round) -> int:
        """Pull what the peer has that we lack, push what we have that it lacks; the
        number of keys repaired."""
        self.stats["exchanges"] += 1
        diffs = list(done.differences.items())[:REPAIRS_PER_EXCHANGE]
        if not diffs:
            return 0
        peer = self.cluster.view.members[done.peer].peer
        self.log.info("anti-entropy: partition %d differs from %s in %d keys",
                      done.partition, done.peer, len(diffs))
        self.share.spend(len(diffs))
        push = [key for key, kind in diffs if kind != "missing_local"]
        for key, kind in diffs:
            if kind != "missing_remote":
                self.call(peer, Route(Duty.PULL, (key,)), ["rget", key], done.peer)
        if push:
            # An earlier push whose read never came back (its answer dropped on the way)
            # is given up: one waits at most until the next exchange's repairs.
            self.pushes = {self.exchange_id: (done.peer, push)}
            ref = Route(Duty.PUSH, (self.exchange_id,)).ref()
            self.emit("persistence", Get.wire(self.stage, ref, push))
        return len(diffs)

    def _push(self, exchange_id: int, found: list[Any] | None) -> None:
        """Our versions of the keys the peer lacks: send each to it, to be merged."""
        pending = self.pushes.pop(exchange_id, None)
        if pending is None or found is None:
            return
        node, keys = pending
        member = self.cluster.view.members.get(node)
        if member is None:
            return
        for key, raw in zip(keys, found, strict=True):
            if raw is not None:
                self.stats["keys_pushed"] += 1
                self.call(member.peer, Route(Duty.PUSHED), ["rput", key, raw, None], node)

    def _abort(self, why: str) -> None:
        assert self.exchange is not None
        self.log.debug("anti-entropy with %s on partition %d stopped: %s",
                       self.exchange.peer, self.exchange.partition, why)
        self.stats["aborted"] += 1
        self.exchange = None
