"""When a tombstone may be forgotten: the reaping rule, as a pure function.

Dynamo paper section 4.4 keeps deletes as versions; kept forever, tombstones grow the
store without bound. A tombstone may be reaped only when no node could bring a covered
value back: every member of the cluster, fallbacks included, was asked what it holds
for the key, every answer is either nothing or exactly the same tombstone, and no node
holds a hint for the key (a hint could still carry an older, covered value). Then each
holder deletes the key *if it still holds exactly that tombstone*, so a write that
arrives meanwhile is never lost, and a stale tombstone never hides a later write.
"Every member" is every node whose status is not ``left``: a leaving node is asked too,
and a node departs (becomes ``left``) only once its store holds no key
(``departure.py``), so no node the check skips holds a copy a reap could miss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seda_dynamo import causality
from seda_dynamo.duty import Cluster, Component, Duty, Emit, Route
from seda_dynamo.messages import Check, Reap

#: Rechecks after a failed check, with the delay doubling each time.
MAX_ATTEMPTS = 8
CHECK_DEADLINE = 5.0
REAPS_PER_TICK = 64


@dataclass(slots=True)
class ReapCheck:
    """One check before a reap: what each member holds for ``key``, as they answer."""

    key: bytes
    members: tuple[str, ...]
    started: float
    answers: dict[str, tuple[bytes | None, bool]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.answers) == len(self.members)


def verdict(answers: dict[str, tuple[bytes | None, bool]]) -> bytes | None:
    """The tombstone every holder may delete, or None if the key must be kept for now."""
    held = {raw for raw, _ in answers.values() if raw is not None}
    if any(hinted for _, hinted in answers.values()) or len(held) != 1:
        return None
    (tombstone,) = held
    return tombstone if only_tombstones(tombstone) else None


def only_tombstones(raw: bytes) -> bool:
    """Whether encoded versions hold at least one version and every one is a tombstone
    (a holder deletes a key only then, whatever bytes it is asked to compare with)."""
    try:
        values = causality.values(causality.decode(raw))
    except ValueError:
        return False
    return bool(values) and all(v is None for v in values)


def worth_retrying(answers: dict[str, tuple[bytes | None, bool]]) -> bool:
    """After a negative verdict: do tombstones remain that a later check may reap?
    Not when nothing is held any more, nor when the key holds a live value again."""
    held = [raw for raw, _ in answers.values() if raw is not None]
    for raw in held:
        try:
            if any(v is not None for v in causality.values(causality.decode(raw))):
                return False
        except ValueError:
            return False
    return bool(held)


class Reaper(Component):
    """The reap queue (key -> (when due, attempts so far)) and the checks in flight."""

    def __init__(self, emit: Emit, cluster: Cluster, reap_after: float, first_id: int,
                 stage: str = "gossip") -> None:
        super().__init__(emit, stage)
        self.cluster = cluster
        self.reap_after = reap_after  # seconds after a delete; 0: tombstones are kept
        self.queue: dict[bytes, tuple[float, int]] = {}
        self.checks: dict[int, ReapCheck] = {}
        self.check_id = first_id  # ids never repeat across restarts (ids.py)
        self.reaped = 0

    def deleted(self, now: float, key: bytes) -> None:
        """A tombstone was written for ``key``: check it ``reap_after`` seconds on."""
        if self.reap_after > 0:
            self.queue[key] = (now + self.reap_after, 0)

    def tick(self, now: float) -> None:
        """Give up checks past their deadline; start the checks that are due."""
        for check_id, check in list(self.checks.items()):
            if now - check.started > CHECK_DEADLINE:
                del self.checks[check_id]
                self._later(check.key, now)
        view, down = self.cluster.view, self.cluster.down
        ring = view.ring
        due = [k for k, (at, _) in self.queue.items() if at <= now][:REAPS_PER_TICK]
        members = tuple(node for node, e in view.members.items() if e.status != "left")
        for key in due:
            if ring is None or down or ring.pending():
                self._later(key, now)  # everyone must be up and the ring settled
                continue
            self.check_id += 1
            self.checks[self.check_id] = ReapCheck(key, members, now)
            attempts = self.queue[key][1]
            self.queue[key] = (now + 2 * CHECK_DEADLINE, attempts)  # not while asking
            route = Route(Duty.CHECK, (self.check_id,))
            for node in members:
                if node == view.me:
                    self.emit("persistence", Check.wire(self.stage, route.ref(), key,
                                                        list(members)))
                else:
                    self.call(view.members[node].peer, route, ["rcheck", key, list(members)],
                              node)

    def _later(self, key: bytes, now: float) -> None:
        _, attempts = self.queue.get(key, (0.0, 0))
        if attempts + 1 >= MAX_ATTEMPTS:
            self.queue.pop(key, None)  # kept: a tombstone is never wrong, only big
            return
        delay = self.reap_after * (2 ** (attempts + 1))
        self.queue[key] = (now + delay, attempts + 1)

    def answer(self, now: float, node: str, route: Route, payload: list[Any]) -> None:
        if route.duty is Duty.CHECK and payload[0] == "checked":
            self._checked(route.ident[0], node, payload[1], bool(payload[2]), now)

    def local(self, now: float, route: Route, answer: list[Any]) -> None:
        if route.duty is Duty.CHECK and answer[0] == "checked":
            self._checked(route.ident[0], self.cluster.view.me, answer[1], answer[2], now)

    def lost(self, now: float, route: Route) -> None:
        """Persistence refused the local check: the check ends now, tried again later."""
        check = self.checks.pop(route.ident[0], None) if route.duty is Duty.CHECK else None
        if check is not None:
            self._later(check.key, now)

    def _checked(self, check_id: int, node: str, raw: bytes | None, hinted: bool,
                 now: float) -> None:
        check = self.checks.get(check_id)
        if check is None or node not in check.members:
            return
        check.answers[node] = (raw, hinted)
        if not check.complete:
            return
        del self.checks[check_id]
        tombstone = verdict(check.answers)
        if tombstone is None:
            if worth_retrying(check.answers):
                self._later(check.key, now)
            else:
                self.queue.pop(check.key, None)
            return
        self.queue.pop(check.key, None)
        self.reaped += 1
        me, members = self.cluster.view.me, self.cluster.view.members
        for holder, (held, _) in check.answers.items():
            if held is None:
                continue
            if holder == me:
                self.emit("persistence", Reap.wire(check.key, tombstone))
            else:
                self.call(members[holder].peer, Route(Duty.REAPED), ["rreap", check.key,
                                                                     tombstone], holder)
