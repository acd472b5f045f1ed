"""The simulated network between nodes' peer ports: each directed link has its own
latency, and the faults the seed turns on: loss, duplication, reordering (a jitter
larger than the gap between messages), and partitions, one-way or both.

Dynamo's failure handling (paper sections 4.6 and 4.8) must hold under exactly these: a
message lost, late, twice, or a node that hears but cannot answer. Every draw comes from
the one ``random.Random`` the run was seeded with; pure, no IO.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Link:
    """One direction between two nodes."""

    latency: float  # seconds, the usual one-way delay
    jitter: float = 0.0  # up to this much more, drawn per message (reorders when large)
    loss: float = 0.0  # probability a message is lost
    duplicate: float = 0.0  # probability a message arrives twice


@dataclass(slots=True)
class Faults:
    """How unkind the network is while faults are on (the seed picks within these)."""

    loss: float = 0.05
    duplicate: float = 0.05
    jitter: float = 0.020


class Network:
    """The links between ``nodes`` (their ids), and which directions are cut."""

    def __init__(self, rng: random.Random, nodes: list[str]) -> None:
        self.rng = rng
        self.links: dict[tuple[str, str], Link] = {}
        self.cut: set[tuple[str, str]] = set()  # (from, to): nothing from `from` reaches `to`
        self.changed: Callable[[], None] = lambda: None  # told of every cut or loss change
        for a in nodes:
            self.add(a, nodes)

    def add(self, node: str, nodes: list[str]) -> None:
        for other in nodes:
            if other != node:
                for pair in ((node, other), (other, node)):
                    if pair not in self.links:
                        self.links[pair] = Link(latency=self.rng.uniform(0.0002, 0.002))

    def faulty(self, faults: Faults) -> None:
        """Turn faults on: each link draws its own share of the given worst case."""
        for pair in sorted(self.links):
            link = self.links[pair]
            link.loss = self.rng.uniform(0, faults.loss)
            link.duplicate = self.rng.uniform(0, faults.duplicate)
            link.jitter = self.rng.uniform(0, faults.jitter)
        self.changed()

    def calm(self) -> None:
        """Faults off: no loss, no duplicates, no reordering; partitions healed."""
        for link in self.links.values():
            link.loss = link.duplicate = link.jitter = 0.0
        self.cut.clear()
        self.changed()

    def partition(self, side: list[str], others: list[str], one_way: bool = False) -> None:
        """Cut ``side`` off from ``others`` (one way: only what ``side`` sends is lost)."""
        for a in side:
            for b in others:
                self.cut.add((a, b))
                if not one_way:
                    self.cut.add((b, a))
        self.changed()

    def heal(self) -> None:
        self.cut.clear()
        self.changed()

    def lossy(self) -> frozenset[tuple[str, str]]:
        """The directions that may lose a message now."""
        return frozenset(pair for pair, link in self.links.items() if link.loss)

    def delays(self, src: str, dst: str) -> list[float]:
        """When a message sent now from ``src`` reaches ``dst``, as delays: none (lost),
        one, or two (duplicated)."""
        if (src, dst) in self.cut:
            return []
        link = self.links[(src, dst)]
        if link.loss and self.rng.random() < link.loss:
            return []
        copies = 2 if link.duplicate and self.rng.random() < link.duplicate else 1
        return [link.latency + (self.rng.uniform(0, link.jitter) if link.jitter else 0.0)
                for _ in range(copies)]
