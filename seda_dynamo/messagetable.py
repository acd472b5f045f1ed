"""The one table of a node's inter-stage events: who sends each, who handles it, what
answers it, and the field its events are spread over a stage's workers by.

Dynamo paper section 4.1's interface as it crosses SEDA stages (as Cassandra's ``Verb``
maps each message to its stage, handler and reply). The types are in
``seda_dynamo.messages``; the runtime shards by ``shard_index``; an answer to a peer's
request leaves its serving stage in the one reply envelope (``answer_to``). Pure, no IO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seda_dynamo import messages as m

#: Where a peer's request enters the node: an answer for this stage goes to a peer.
RELAY = "network"
#: Handled by the stage's ``handle_events`` itself: batched per key or per commit.
BATCHED = "handle_events"
#: The shard of an event that every worker of a stage gets (its own copy).
EVERY_WORKER = "*"


@dataclass(frozen=True, slots=True)
class Row:
    """One kind of event: its type, senders, receivers, handler, answer, shard field."""

    kind: str
    type: Any
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    handler: str
    reply: str | None = None  # the name (in ``TABLE``) of the event that answers it
    shard: str | None = None  # the field a stage with several workers spreads it by


def _row(kind: str, type_: Any, senders: str, receivers: str, handler: str | None = None,
         reply: str | None = None, shard: str | None = None) -> Row:
    return Row(kind, type_, tuple(senders.split()), tuple(receivers.split()),
               handler or f"on_{kind}", reply, shard)


#: Every event between stages, by its kind.
TABLE: dict[str, Row] = {
    # To the network stage
    "call": _row("call", m.Call, "coordination gossip", "network", reply="resp"),
    "reply": _row("reply", m.Reply, "coordination gossip", "network"),
    "respond": _row("respond", m.Respond, "gossip versioning persistence", "network"),
    "stats": _row("stats", m.Stats, "runtime", "network"),
    "pressure": _row("pressure", m.Pressure, "runtime", "network"),
    # To the coordination stage
    "req": _row("req", m.Request, "network", "coordination", reply="reply"),
    "ring": _row("ring", m.RingState, "gossip", "coordination"),
    "health": _row("health", m.Health, "gossip", "coordination"),
    "resp": _row("resp", m.Resp, "network", "coordination gossip"),
    "unreachable": _row("unreachable", m.Unreachable, "network", "coordination gossip"),
    "updated": _row("updated", m.Updated, "versioning", "coordination gossip"),
    "got": _row("got", m.Got, "persistence", "coordination versioning gossip"),
    # To the versioning stage
    "update": _row("update", m.Update, "coordination", "versioning", BATCHED, "updated",
                   shard="key"),
    "sync": _row("sync", m.Sync, "network coordination gossip", "versioning", BATCHED,
                 "updated", shard="key"),
    "written": _row("written", m.Written, "persistence", "versioning"),
    # To the persistence stage
    "get": _row("get", m.Get, "network coordination versioning gossip", "persistence",
                BATCHED, "got"),
    "write": _row("write", m.Write, "versioning", "persistence", BATCHED, "written"),
    "fold": _row("fold", m.Fold, "gossip", "persistence", reply="folded"),
    "tree": _row("tree", m.Tree, "network gossip", "persistence", reply="tree_answer"),
    "hints": _row("hints", m.Hints, "gossip", "persistence", reply="hints_found"),
    "hint_done": _row("hint_done", m.HintDone, "gossip", "persistence"),
    "check": _row("check", m.Check, "network gossip", "persistence", reply="checked"),
    "reap": _row("reap", m.Reap, "network gossip", "persistence"),
    "forget": _row("forget", m.Forget, "gossip", "persistence"),
    # To the gossip stage
    "ring_please": _row("ring_please", m.RingPlease, "coordination", "gossip",
                        reply="ring"),
    "gossip_in": _row("gossip_in", m.GossipIn, "network", "gossip", reply="respond"),
    "admin": _row("admin", m.Admin, "network", "gossip", reply="reply"),
    "foreground": _row("foreground", m.Foreground, "coordination", "gossip"),
    "deleted": _row("deleted", m.Deleted, "coordination", "gossip"),
    "folded": _row("folded", m.Folded, "persistence", "gossip"),
    "hints_found": _row("hints_found", m.HintsFound, "persistence", "gossip"),
    "tree_answer": _row("tree_answer", m.TreeAnswer, "persistence", "gossip"),
    "checked": _row("checked", m.Checked, "persistence", "gossip"),
    # To the stages that wait on the stage announced (each worker: each has its own)
    "started": _row("started", m.Started, "persistence", "versioning gossip",
                    shard=EVERY_WORKER),
}

#: kind -> position in the event of the field a stage's workers are chosen by.
_SHARD_AT: dict[str, int] = {row.kind: row.type._fields.index(row.shard) + 1
                             for row in TABLE.values() if row.shard not in (None, EVERY_WORKER)}
_TO_EVERY_WORKER = frozenset(row.kind for row in TABLE.values() if row.shard == EVERY_WORKER)


def shard_index(kind: Any) -> int | None:
    """Where in an event of ``kind`` its shard field is (None: not sharded; such events
    go to the worker they are addressed to)."""
    return _SHARD_AT.get(kind)


def to_every_worker(kind: Any) -> bool:
    """Whether each worker of the receiving stage gets its own copy of ``kind``."""
    return kind in _TO_EVERY_WORKER


# The reply envelope ---------------------------------------------------------------------
def _got_payload(got: m.Got) -> list[Any]:
    # A peer's ``rget`` reads one key.
    return ["got", got.found[0] if got.found is not None else None, got.error]


#: The answers a stage gives to a peer's request, and the peer answer each becomes
#: (docs/peer-protocol.md): the stage that served the request shapes it, so the
#: network stage relays every answer alike.
PEER_ANSWERS: dict[str, tuple[Any, Callable[[Any], list[Any]]]] = {
    "updated": (m.Updated, lambda u: ["updated", u.error]),
    "checked": (m.Checked, lambda c: ["checked", c.versions, c.hinted]),
    "tree_answer": (m.TreeAnswer, lambda t: ["tree", t.result]),
    "got": (m.Got, _got_payload),
}


def failed_answer(request: m.Event, error: str) -> m.Event:
    """The answer a stage gives a request it fails whole (``update``/``sync``, ``get``,
    ``tree``): what its caller gets when the request could not even be queued."""
    kind = request[0]
    if kind not in ("update", "sync", "get", "tree"):
        raise ValueError(f"no failed answer for {kind!r}")
    ref = TABLE[kind].type.from_wire(request).ref
    if kind in ("update", "sync"):
        return m.Updated.wire(ref, None, None, error)
    if kind == "get":
        return m.Got.wire(ref, None, error, "")
    return m.TreeAnswer.wire(ref, None)  # nil: as for a tree not built yet


def answer_to(reply_to: str, event: m.Event) -> tuple[str, m.Event]:
    """``(destination, event)`` of an answer: to ``reply_to`` as it is, or, when the
    request came from a peer through the network stage (its ``ref`` is then the peer's
    ``origin``), as a ``respond`` envelope with the peer answer inside."""
    if reply_to != RELAY:
        return reply_to, event
    type_, payload = PEER_ANSWERS[event[0]]
    message = type_.from_wire(event)
    return RELAY, m.Respond.wire(message.ref, payload(message))


# The table in docs/architecture.md --------------------------------------------------------
def fields_text(type_: Any) -> str:
    """The fields of a type as the docs show them: optional ones marked ``?``."""
    return ", ".join(f"{name}?" if name in type_._field_defaults else name
                     for name in type_._fields) or "-"


def markdown_table() -> str:
    """The "Messages" table of docs/architecture.md, made from ``TABLE``."""
    lines = ["| kind | from | to (handler) | fields | reply | shard |",
             "|---|---|---|---|---|---|"]
    for row in TABLE.values():
        reply = TABLE[row.reply].kind if row.reply else ""
        handler = f"`{row.handler}`" + (", batched" if row.handler == BATCHED else "")
        lines.append(f"| `{row.kind}` | {', '.join(row.senders)} | "
                     f"{', '.join(row.receivers)} ({handler}) | {fields_text(row.type)} | "
                     f"{f'`{reply}`' if reply else '-'} | {_shard_text(row.shard)} |")
    return "\n".join(lines) + "\n"


def _shard_text(shard: str | None) -> str:
    return "every worker" if shard == EVERY_WORKER else shard or "-"
