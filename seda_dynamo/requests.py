"""The coordinator's request state machine: count replica replies against R or W.

Dynamo paper sections 4.5 (the quorum-like system) and 4.6 (sloppy quorum), and
Voldemort's routed requests: one small machine per client request, with the transitions
written out as a table that can be read top to bottom and tested without sockets.

Events: a target answered (``ok``), a target failed (``fail``: an error, or the network
stage could not reach it), a target did not answer within its attempt's share of the
deadline (``slow``), the request's deadline passed (``deadline``), the coordinator's own
part failed so nothing can be counted (``abort``). A target that fails or is slow is
replaced by the next *spare* (the rest of the extended preference list): the machine
records that in ``asks`` as ``(spare, replaced)`` for the coordinator to send. A slow
target stays asked: its late answer still counts. A request that must reach one target
at most once (``replace_slow`` False: a forwarded write, which its target stamps) replaces
only a target that certainly never got it (``fail``); a silent one may have acted, so
the request waits for it until its deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Outcome(Enum):
    OK = "ok"                   # enough replicas answered: reply now
    UNAVAILABLE = "unavailable"  # too few replicas could answer
    TIMEOUT = "timeout"         # the deadline passed while replicas were still asked


WAITING, DONE = "waiting", "done"
OK_EVENT, FAIL_EVENT, SLOW_EVENT = "ok", "fail", "slow"
DEADLINE_EVENT, ABORT_EVENT = "deadline", "abort"
EVENTS = (OK_EVENT, FAIL_EVENT, SLOW_EVENT, DEADLINE_EVENT, ABORT_EVENT)


@dataclass(slots=True)
class QuorumRequest:
    """Waits for ``needed`` successful replies from the replicas in ``asked``, replacing
    each one that fails or is slow by the next of ``spare``."""

    needed: int
    asked: tuple[str, ...]
    spare: tuple[str, ...] = ()
    state: str = WAITING
    replies: dict[str, Any] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    slow: set[str] = field(default_factory=set)  # asked, silent past their attempt's time
    asks: list[tuple[str, str]] = field(default_factory=list)  # (spare, replaced): to send
    outcome: Outcome | None = None
    replace_slow: bool = True  # False: a silent target may have acted; only ``fail`` replaces

    def start(self) -> Outcome | None:
        """Decide at once when too few replicas can be asked at all. ``asked`` is the
        first N healthy nodes: fewer than ``needed`` of them means no spares either."""
        if len(self.asked) < self.needed:
            return self._finish(Outcome.UNAVAILABLE)
        return None

    def on(self, event: str, node: str = "", payload: Any = None) -> Outcome | None:
        """Feed one event; return the outcome the moment the request is decided."""
        return TRANSITIONS[(self.state, event)](self, node, payload)

    def take_asks(self) -> list[tuple[str, str]]:
        """The replacements decided since the last call: ``(spare, replaced)`` pairs."""
        asks, self.asks = self.asks, []
        return asks

    @property
    def outstanding(self) -> int:
        return len(self.asked) - len(self.replies) - len(self.failed)

    def waiting_on(self, node: str) -> bool:
        """Whether ``node`` was asked and has neither answered nor failed."""
        return node in self.asked and node not in self.replies and node not in self.failed

    def _finish(self, outcome: Outcome) -> Outcome:
        self.state, self.outcome = DONE, outcome
        return outcome

    def _replace(self, node: str) -> None:
        if self.spare:
            spare, self.spare = self.spare[0], self.spare[1:]
            self.asked = (*self.asked, spare)
            self.asks.append((spare, node))

    def _ok(self, node: str, payload: Any) -> Outcome | None:
        if not self.waiting_on(node):
            return None
        self.replies[node] = payload
        return self._finish(Outcome.OK) if len(self.replies) >= self.needed else None

    def _fail(self, node: str, _payload: Any) -> Outcome | None:
        if not self.waiting_on(node):
            return None
        self.failed.add(node)
        if node not in self.slow or not self.replace_slow:  # else replaced when slow
            self._replace(node)
        if len(self.replies) + self.outstanding + len(self.spare) < self.needed:
            return self._finish(Outcome.UNAVAILABLE)
        return None

    def _slow(self, node: str, _payload: Any) -> None:
        if self.waiting_on(node) and node not in self.slow:
            self.slow.add(node)
            if self.replace_slow:
                self._replace(node)

    def _deadline(self, _node: str, _payload: Any) -> Outcome:
        return self._finish(Outcome.TIMEOUT)

    def _abort(self, _node: str, _payload: Any) -> Outcome:
        return self._finish(Outcome.UNAVAILABLE)

    def _late(self, node: str, payload: Any) -> None:
        """After the reply: keep late answers (read repair looks at them)."""
        if self.waiting_on(node):
            self.replies[node] = payload

    def _ignore(self, _node: str, _payload: Any) -> None:
        return None


Transition = Callable[[QuorumRequest, str, Any], Outcome | None]

#: (state, event) -> what happens. Every pair is listed: nothing is implicit.
TRANSITIONS: dict[tuple[str, str], Transition] = {
    (WAITING, OK_EVENT): QuorumRequest._ok,
    (WAITING, FAIL_EVENT): QuorumRequest._fail,
    (WAITING, SLOW_EVENT): QuorumRequest._slow,
    (WAITING, DEADLINE_EVENT): QuorumRequest._deadline,
    (WAITING, ABORT_EVENT): QuorumRequest._abort,
    (DONE, OK_EVENT): QuorumRequest._late,
    (DONE, FAIL_EVENT): QuorumRequest._ignore,
    (DONE, SLOW_EVENT): QuorumRequest._ignore,
    (DONE, DEADLINE_EVENT): QuorumRequest._ignore,
    (DONE, ABORT_EVENT): QuorumRequest._ignore,
}
