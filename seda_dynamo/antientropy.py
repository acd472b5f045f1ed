"""Anti-entropy between two replicas whose trees both live elsewhere (sans-IO).

Dynamo paper section 4.7: replicas of a key range compare Merkle trees and repair only
the keys that differ. ``merkle.Exchange`` compares a local tree object with a remote
one's answers; here neither tree is in this process (each replica's persistence stage
keeps its trees), so every request is put to both sides and the exchange is fed both
answers. ``Round`` is that driver: a value with no IO, advanced by answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seda_dynamo.merkle import Exchange, HashTree, Question

#: Every partition's tree on every replica: 1,024 segments under a root of fan-out 32.
TREE_SEGMENTS = 1024
TREE_WIDTH = 32
TREE_LEVELS = 3  # root, 32 inner nodes, 1,024 segments


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
