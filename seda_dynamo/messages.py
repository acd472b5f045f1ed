"""The events that travel between a node's stages, one type per kind.

Welsh's SEDA stages meet only through queues; these are what the queues carry (Dynamo
paper section 4.1's system interface as it crosses stages: the request of 4.5, the
versions of 4.4, the hints of 4.6, the trees of 4.7, the membership of 4.8). On the
queue an event is a msgpack array ``[kind, *fields]``; here each kind is a frozen,
slotted type (a ``NamedTuple``) with named fields, whose ``to_wire()`` is exactly that
array and whose ``from_wire(array)`` checks the kind and the number of fields
(``seda_dynamo.messagewire``). ``Type.wire(...)`` builds an event from the same fields,
straight to the array (no object: the hot path). Who receives, handles and answers each
kind: ``seda_dynamo.messagetable``. Pure, no IO.

Names of the fields that say where something goes, one meaning each:

- ``reply_to``: the stage (or versioning worker) an answer goes to;
- ``ref``: the asker's own reference, handed back unchanged in the answer (a request
  id, an engine request, a transfer chunk);
- ``origin``: a peer's request that an answer goes back to, ``[peer, call_id]``;
- ``rid``: the network stage's id of a client request.
These never cross nodes; peer requests and answers do (``seda_dynamo.peerprotocol``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from seda_dynamo.messagewire import Event as Event  # re-exported: what the types make
from seda_dynamo.messagewire import MessageError as MessageError
from seda_dynamo.messagewire import kind


# To the network stage -------------------------------------------------------------------
@kind("call")
class Call(NamedTuple):
    """Ask another node: ``request`` (a peer request) to ``peer``; its answer comes back
    to ``reply_stage`` as ``resp`` (or ``unreachable``) carrying ``ref``."""

    peer: str
    reply_stage: str
    ref: Any
    request: list[Any]
    node: str | None = None  # the node called, when the caller knows it
    ttl: float | None = None  # seconds the answer is awaited (None: the default)


@kind("reply")
class Reply(NamedTuple):
    """The answer to client request ``rid`` (a client reply map)."""

    rid: int
    reply: dict[str, Any]


@kind("respond")
class Respond(NamedTuple):
    """The one reply envelope: ``payload`` (a peer answer) goes back to the peer request
    ``origin``; the network stage relays it without looking inside."""

    origin: list[Any]
    payload: list[Any]


@kind("stats")
class Stats(NamedTuple):
    """A stage's counters, once a second (from its runtime)."""

    stage: str
    counters: dict[str, Any]


@kind("pressure")
class Pressure(NamedTuple):
    """A stage's queue delay crossed its high-water mark, or is back under it."""

    stage: str
    delay: float


# To the coordination stage ------------------------------------------------------------
@kind("req")
class Request(NamedTuple):
    """A client request (or a write another node forwarded) to coordinate."""

    rid: int
    op: str
    key: bytes
    value: bytes | None
    context: Any
    r: int | None
    w: int | None
    timeout_ms: int | None
    forwarded: bool


@kind("ring")
class RingState(NamedTuple):
    """Gossip's ring (``Ring.to_state``), the members outside it, moves still planned."""

    state: dict[str, Any]
    others: list[list[str]]
    moves_left: int = 0


@kind("health")
class Health(NamedTuple):
    """The members gossip's failure detector holds down."""

    down: list[str]


@kind("resp")
class Resp(NamedTuple):
    """Another node's answer to a ``call``: ``node`` is whom this node called."""

    node: str
    ref: Any
    payload: list[Any]


@kind("unreachable")
class Unreachable(NamedTuple):
    """A ``call`` could not be sent: ``peer`` is not connected."""

    peer: str
    ref: Any


@kind("updated")
class Updated(NamedTuple):
    """A write applied (its new context and encoded versions), or the error that failed it."""

    ref: Any
    context: bytes | None
    clock: bytes | None
    error: str | None


@kind("got", trim=True)
class Got(NamedTuple):
    """What the engine holds for the keys read (None per missing key; ``found`` None on
    error), the data's incarnation, and for versioning the mint order of the read."""

    ref: Any
    found: list[bytes | None] | None
    error: str | None
    incarnation: str
    mint: list[int] | None = None


# To the versioning stage --------------------------------------------------------------
@kind("update")
class Update(NamedTuple):
    """A client write to stamp and merge (``value`` None: a delete)."""

    reply_to: str
    ref: Any
    key: bytes
    value: bytes | None
    context: Any
    cover_stored: bool  # a delete without context covers what is stored
    hint: str | None  # the owner this replica stands in for (hinted handoff)


@kind("sync")
class Sync(NamedTuple):
    """Another replica's encoded versions of ``key``, to merge into what is stored."""

    reply_to: str | None
    ref: Any
    key: bytes
    clock: bytes
    hint: str | None


@kind("written")
class Written(NamedTuple):
    """A group commit done (or its error); the keys refused by compare-and-set."""

    ref: Any
    error: str | None
    conflicts: list[bytes]


# To the persistence stage -------------------------------------------------------------
@kind("get", trim=True)
class Get(NamedTuple):
    """Read ``keys`` (``mint``: also hand out a mint order, for versioning)."""

    reply_to: str
    ref: Any
    keys: list[bytes]
    mint: bool = False


@kind("write")
class Write(NamedTuple):
    """Items ``[key, value or None, expected object hash?]`` and hints ``[owner, key]``,
    committed in one group commit."""

    reply_to: str
    ref: Any
    items: list[list[Any]]
    hints: list[list[Any]]


@kind("fold")
class Fold(NamedTuple):
    """A hash range's records (hex), for a hand-over; ``seal``: departure.py's question."""

    reply_to: str
    ref: Any
    lo_hex: str
    hi_hex: str
    max_keys: int
    seal: bool = False


@kind("tree")
class Tree(NamedTuple):
    """A question (``Question.to_wire``) about one partition's Merkle tree."""

    reply_to: str
    ref: Any
    partition: int
    question: dict[str, Any]


@kind("hints")
class Hints(NamedTuple):
    """Up to ``limit`` hints for ``owners``, with the versions to hand them."""

    reply_to: str
    ref: Any
    owners: list[str]
    limit: int


@kind("hint_done")
class HintDone(NamedTuple):
    """Hints ``[owner, key, token]`` delivered: forget them if still unchanged."""

    delivered: list[list[Any]]


@kind("check")
class Check(NamedTuple):
    """For reaping: the versions held for ``key``, and whether a hint names it."""

    reply_to: str
    ref: Any
    key: bytes
    members: list[str]


@kind("reap")
class Reap(NamedTuple):
    """Delete ``key`` if it holds exactly ``tombstone`` (compare-and-delete)."""

    key: bytes
    tombstone: bytes


@kind("forget")
class Forget(NamedTuple):
    """Delete ``key`` if it holds exactly ``held``: versions handed to every replica."""

    key: bytes
    held: bytes


# To the stages that wait on the one announced -----------------------------------------
@kind("started")
class Started(NamedTuple):
    """``stage`` began process ``generation`` (never repeated): the last one's work is lost."""

    stage: str
    generation: int


# To the gossip stage ------------------------------------------------------------------
@kind("ring_please")
class RingPlease(NamedTuple):
    """Announce the ring now (coordination at its start)."""


@kind("gossip_in")
class GossipIn(NamedTuple):
    """A peer's view, to merge; ours goes back to ``origin``."""

    origin: list[Any]
    state: dict[str, Any]


@kind("admin")
class Admin(NamedTuple):
    """An operator's command (status, join, leave, transfers) for client request ``rid``."""

    rid: int
    command: str
    seed: str | None


@kind("foreground")
class Foreground(NamedTuple):
    """Client requests answered in the last window, and their p99 in seconds."""

    requests: int
    p99: float


@kind("deleted")
class Deleted(NamedTuple):
    """A delete succeeded: its tombstone may be reaped later."""

    key: bytes


@kind("folded")
class Folded(NamedTuple):
    """A chunk of a hand-over: the records, where to go on (hex), the tree's size."""

    ref: Any
    pairs: list[list[bytes]]
    next_lo: str | None
    total: int | None


@kind("hints_found")
class HintsFound(NamedTuple):
    """The answer to ``hints``: ``[owner, key, token, versions or None]`` each."""

    ref: Any
    found: list[list[Any]]


@kind("tree_answer")
class TreeAnswer(NamedTuple):
    """The answer to a tree question (None while that tree is being built)."""

    ref: Any
    result: Any


@kind("checked")
class Checked(NamedTuple):
    """The answer to ``check``: the versions held and whether a hint names the key."""

    ref: Any
    versions: bytes | None
    hinted: bool
