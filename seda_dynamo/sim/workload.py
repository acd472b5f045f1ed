"""The simulated clients and the history of what they asked and were told.

Clients do blind puts, read-modify-write puts (a get, then a put with its context),
deletes with the context of a get, and gets, each a frame on some node's client port
with its own id. The history keeps, per request: the key, the value written, the values
the context it wrote with was read from (what the write supersedes, paper section 4.4),
the node, that node's network stage generation when sent (a crash of it excuses a
missing reply), and the reply. Clients keep the contexts of earlier gets and may replay
an old one later in a put or a delete (``stale``), after the key was deleted, its
tombstone reaped and the key written again too: such a write supersedes only the values
that context was read with. Every value written is unique, so a value read names
the write it came from. Pure (it drives a ``Cluster``, which does the IO).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from seda_dynamo.sim.cluster import Cluster


@dataclass(slots=True)
class Op:
    """One client request and what came of it."""

    rid: int
    op: str  # get, put, delete
    key: bytes
    node: str
    generation: int  # the node's network stage generation when sent
    value: bytes | None = None  # a put's value
    supersedes: tuple[bytes, ...] = ()  # values read with the context it carries
    with_context: bool = False
    reply: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def acked(self) -> bool:
        return bool(self.reply and self.reply.get("ok"))


class Workload:
    """Clients against ``cluster``, drawing what they do from ``rng``."""

    def __init__(self, cluster: Cluster, rng: random.Random, keys: int = 6,
                 stale: float = 0.0) -> None:
        self.cluster = cluster
        self.rng = rng
        self.stale = stale  # probability a write replays an old context
        #: Every context a get returned, with the values read with it, by key.
        self.contexts: dict[bytes, list[tuple[bytes, tuple[bytes, ...]]]] = {}
        self.replayed = 0  # writes sent with an old context
        self.keys = [b"key%d" % i for i in range(keys)]
        self.ops: dict[int, Op] = {}
        self.written = 0
        # Nodes started but not yet in the cluster's ring: clients know only members
        # (a node is its own one-node cluster until its join takes: see run.py).
        self.outsiders: set[str] = set()

    def _node(self) -> str:
        ring = self.cluster.ring
        self.outsiders = {n for n in self.outsiders if n not in self.cluster.nodes
                          or (r := ring(n)) is None or len(r.members) < 2}
        return self.rng.choice([n for n in self.cluster.members() if n not in self.outsiders])

    def send(self, op: str, key: bytes, node: str | None = None, value: bytes | None = None,
             context: bytes | None = None, supersedes: tuple[bytes, ...] = (),
             then: Any = None, **fields: Any) -> Op:
        if node is None or node in self.cluster.departed():  # clients know who left
            node = self._node()
        body: dict[str, Any] = {"op": op, "key": key, **fields}
        if value is not None:
            body["value"] = value
        if context is not None:
            body["context"] = context
        generation = self.cluster.nodes[node].generation["network"]
        rid = self.cluster.request(node, body)
        entry = Op(rid, op, key, node, generation, value, supersedes, context is not None)
        self.ops[rid] = entry

        def replied(reply: dict[str, Any]) -> None:
            entry.reply = reply
            if op == "get" and reply.get("ok") and reply.get("context") is not None:
                self.contexts.setdefault(key, []).append(
                    (reply["context"], tuple(reply.get("values", ()))))
            if then is not None:
                then(reply)
        if rid in self.cluster.replies:  # answered at once (refused by validation, say)
            replied(self.cluster.replies[rid])
        else:
            self.cluster.on_reply[rid] = replied
        return entry

    def _value(self) -> bytes:
        self.written += 1
        return b"v%d" % self.written

    def one(self) -> None:
        """One client action, drawn: a blind put, a read-modify-write, a delete with
        context, or a get."""
        kind = self.rng.choice(("put", "rmw", "delete", "get", "rmw"))
        key = self.rng.choice(self.keys)
        if kind == "put":
            self.send("put", key, value=self._value())
            return
        if kind == "get":
            self.send("get", key)
            return
        old = self.contexts.get(key)
        if old and self.stale and self.rng.random() < self.stale:  # an old context, replayed
            context, supersedes = self.rng.choice(old)
            self.replayed += 1
            if kind == "rmw":
                self.send("put", key, value=self._value(), context=context,
                          supersedes=supersedes)
            else:
                self.send("delete", key, context=context, supersedes=supersedes)
            return
        writer = self._node()

        def then(reply: dict[str, Any]) -> None:
            if not reply.get("ok") or reply.get("context") is None:
                return
            supersedes = tuple(reply.get("values", ()))
            if kind == "rmw":
                self.send("put", key, writer, value=self._value(),
                          context=reply["context"], supersedes=supersedes)
            else:
                self.send("delete", key, writer, context=reply["context"],
                          supersedes=supersedes)
        self.send("get", key, then=then)

    def settled(self) -> bool:
        """Every request has its reply, or can have none (refused, or its node's network
        stage crashed since it was sent)."""
        return all(self.done(op) for op in self.ops.values())

    def done(self, op: Op) -> bool:
        if op.reply is not None or op.rid in self.cluster.refused:
            return True
        return self.cluster.nodes[op.node].generation["network"] != op.generation
