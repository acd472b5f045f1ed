"""What the network stage waits on: client requests awaiting coordination's reply, and
calls to other nodes awaiting their answer, each until a deadline.

Dynamo paper sections 4.1 (every client request is answered, once: by its reply or by
a timeout) and 4.5 (a coordinator's requests to other replicas, whose answers count
only if they are answers to those requests). Pure, no IO: ids come from the caller's
entropy, times are passed in.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

from seda_dynamo import ids

#: How long past a request's own deadline we wait for coordination before answering.
GRACE = 2.0
#: How long a call to another node waits for its answer when its caller gave no time.
CALL_TTL = 30.0
#: Most calls awaiting answers; past it the oldest are forgotten (their callers time out).
MAX_CALLS = 200_000


class Requests:
    """Requests handed to coordination, by request id (``rid``): where the reply goes
    and, for requests the admission gate let in, when (their latency steers the gate)."""

    def __init__(self, first_rid: int) -> None:
        self.pending: dict[int, tuple[Any, float | None]] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.next_rid = first_rid

    def __len__(self) -> int:
        return len(self.pending)

    def open(self, origin: Any, now: float, timeout: float, measured: bool = True) -> int:
        """A new request's id; it is waited on for ``timeout`` seconds and ``GRACE``."""
        self.next_rid += 1
        rid = self.next_rid
        self.pending[rid] = (origin, now if measured else None)
        heapq.heappush(self.deadlines, (now + timeout + GRACE, rid))
        return rid

    def close(self, rid: Any) -> tuple[Any, float | None] | None:
        """``(origin, admitted at or None)`` of an open request, which is then closed;
        None for one already answered, expired or never opened."""
        return self.pending.pop(rid, None)

    def expired(self, now: float) -> list[Any]:
        """The origins of the requests past their deadline, now closed."""
        late = []
        while self.deadlines and self.deadlines[0][0] <= now:
            _, rid = heapq.heappop(self.deadlines)
            entry = self.pending.pop(rid, None)
            if entry is not None:
                late.append(entry[0])
        return late


@dataclass(slots=True)
class Call:
    """A request this node sent to ``peer``: where its answer goes, and until when."""

    peer: str
    stage: str
    ref: Any  # the caller's, handed back with the answer
    node: str | None  # the node called, when the caller named it
    expects: str  # the kind of answer (peerprotocol.REQUESTS)
    deadline: float


class Calls:
    """Calls to other nodes awaiting an answer, by a call id no sender can guess."""

    def __init__(self, entropy: ids.Entropy, max_calls: int = MAX_CALLS) -> None:
        self.entropy = entropy
        self.max_calls = max_calls
        self.calls: dict[int, Call] = {}
        self.deadlines: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Any:
        return iter(self.calls)

    def values(self) -> Any:
        return self.calls.values()

    def open(self, now: float, peer: str, stage: str, ref: Any, node: str | None,
             expects: str | None, ttl: Any = None) -> int:
        """The id of a new call, kept ``ttl`` seconds (else ``CALL_TTL``) and ``GRACE``;
        0 for a request that expects no answer (nothing is kept)."""
        if expects is None:
            return 0
        call_id = ids.call_id(self.entropy)
        while call_id in self.calls:
            call_id = ids.call_id(self.entropy)
        wait = ttl if isinstance(ttl, (int, float)) and ttl > 0 else CALL_TTL
        deadline = now + wait + GRACE
        if len(self.calls) >= self.max_calls:
            self.expire(math.inf, limit=len(self.calls) - self.max_calls + 1)
        self.calls[call_id] = Call(peer, stage, ref, node, expects, deadline)
        heapq.heappush(self.deadlines, (deadline, call_id))
        return call_id

    def answered(self, call_id: int, kind: Any) -> Call | None:
        """The call an answer of ``kind`` completes, once, and only if that is the kind
        it expects (None: no such call, or a wrong kind, which leaves the call open)."""
        call = self.calls.get(call_id)
        if call is None or call.expects != kind:
            return None
        del self.calls[call_id]
        return call

    def lost(self, call_id: Any) -> Call | None:
        """A call that could not be sent, now forgotten (None: none such)."""
        return self.calls.pop(call_id, None)

    def expire(self, now: float, limit: int | None = None) -> None:
        """Forget calls past their deadline (or, ``limit``, the oldest ones): their
        callers keep deadlines of their own."""
        while self.deadlines and self.deadlines[0][0] <= now and limit != 0:
            _, call_id = heapq.heappop(self.deadlines)
            if self.calls.pop(call_id, None) is not None and limit is not None:
                limit -= 1


class Taken:
    """Peer requests that must not be served twice (a ``fwd``: the node it reaches stamps
    the write), by ``(peer, call_id)``, until their deadline and ``GRACE``: a repeat of
    one, a frame the network delivered twice, is dropped. The caller forgets its call by
    then, so a copy later than that would find no one to answer."""

    def __init__(self, max_kept: int = MAX_CALLS) -> None:
        self.max_kept = max_kept
        self.until: dict[tuple[str, Any], float] = {}
        self.deadlines: list[tuple[float, tuple[str, Any]]] = []

    def __len__(self) -> int:
        return len(self.until)

    def first(self, origin: Remote, now: float, timeout_ms: int) -> bool:
        """Whether this is the first copy of ``origin``'s call (then kept for
        ``timeout_ms`` and ``GRACE``). Call id 0 (no answer expected) is never kept."""
        while self.deadlines and (self.deadlines[0][0] <= now
                                  or len(self.deadlines) >= self.max_kept):
            _, old = heapq.heappop(self.deadlines)
            self.until.pop(old, None)
        key = (origin.peer, origin.call_id)
        if not origin.call_id or key in self.until:
            return not origin.call_id
        self.until[key] = now + timeout_ms / 1000.0 + GRACE
        heapq.heappush(self.deadlines, (self.until[key], key))
        return True


class Remote:
    """A peer's request, where its answer goes: the peer's address and its call id (on
    the queues, the ``origin`` ``[peer, call_id]``)."""

    __slots__ = ("peer", "call_id")

    def __init__(self, peer: str, call_id: Any) -> None:
        self.peer = peer
        self.call_id = call_id

    def as_wire(self) -> list[Any]:
        return [self.peer, self.call_id]

    @classmethod
    def from_wire(cls, origin: list[Any]) -> Remote:
        return cls(str(origin[0]), origin[1])
