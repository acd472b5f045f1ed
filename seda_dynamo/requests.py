"""The coordinator's request state machine: count replica replies against R or W.

Dynamo paper section 4.5 (the quorum-like system) and Voldemort's routed requests: one
small machine per client request, driven by three events (a replica answered, a replica
failed, the deadline passed), with the transitions written out as a table that can be
read top to bottom and tested without sockets.
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
OK_EVENT, FAIL_EVENT, DEADLINE_EVENT = "ok", "fail", "deadline"


@dataclass(slots=True)
class QuorumRequest:
    """Waits for ``needed`` successful replies from the replicas in ``asked``."""

    needed: int
    asked: tuple[str, ...]
    state: str = WAITING
    replies: dict[str, Any] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    outcome: Outcome | None = None

    def start(self) -> Outcome | None:
        """Decide at once when too few replicas can be asked at all."""
        if len(self.asked) < self.needed:
            return self._finish(Outcome.UNAVAILABLE)
        return None

    def on(self, event: str, node: str = "", payload: Any = None) -> Outcome | None:
        """Feed one event; return the outcome the moment the request is decided."""
        return TRANSITIONS[(self.state, event)](self, node, payload)

    @property
    def outstanding(self) -> int:
        return len(self.asked) - len(self.replies) - len(self.failed)

    def _finish(self, outcome: Outcome) -> Outcome:
        self.state, self.outcome = DONE, outcome
        return outcome

    def _ok(self, node: str, payload: Any) -> Outcome | None:
        if node in self.replies or node in self.failed or node not in self.asked:
            return None
        self.replies[node] = payload
        return self._finish(Outcome.OK) if len(self.replies) >= self.needed else None

    def _fail(self, node: str, _payload: Any) -> Outcome | None:
        if node in self.replies or node in self.failed or node not in self.asked:
            return None
        self.failed.add(node)
        if len(self.replies) + self.outstanding < self.needed:
            return self._finish(Outcome.UNAVAILABLE)
        return None

    def _deadline(self, _node: str, _payload: Any) -> Outcome:
        return self._finish(Outcome.TIMEOUT)

    def _late(self, node: str, payload: Any) -> None:
        """After the reply: keep late answers (read repair looks at them)."""
        if node in self.asked and node not in self.replies and node not in self.failed:
            self.replies[node] = payload

    def _ignore(self, _node: str, _payload: Any) -> None:
        return None


Transition = Callable[[QuorumRequest, str, Any], Outcome | None]

#: (state, event) -> what happens. Every pair is listed: nothing is implicit.
TRANSITIONS: dict[tuple[str, str], Transition] = {
    (WAITING, OK_EVENT): QuorumRequest._ok,
    (WAITING, FAIL_EVENT): QuorumRequest._fail,
    (WAITING, DEADLINE_EVENT): QuorumRequest._deadline,
    (DONE, OK_EVENT): QuorumRequest._late,
    (DONE, FAIL_EVENT): QuorumRequest._ignore,
    (DONE, DEADLINE_EVENT): QuorumRequest._ignore,
}
