"""Every event the stages really send between them is one the message table knows
(``seda_dynamo.messagetable``): of a kind the receiving stage takes, from a stage the
table names as a sender, with the fields its type has. Checked on everything a mesh of
real handlers sends while it converges, serves writes and reads, and delivers a hint.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mesh import Mesh

from seda_dynamo.messagetable import TABLE
from seda_dynamo.ring import partition_of
from seda_dynamo.stage import PEER_PREFIX, Stage, stage_of

PORTS = ("client", "metrics")


def check(sender: str, dest: str, event: Any, seen: Counter) -> None:
    if dest.startswith(PEER_PREFIX) or dest in PORTS:
        return  # the peer wire (peerprotocol) and sockets, not the queues
    receiver = stage_of(dest)
    rows = [row for row in TABLE.values()
            if row.kind == event[0] and receiver in row.receivers]
    assert len(rows) == 1, f"{sender} sent {event[0]!r} to {receiver}: not in the table"
    row = rows[0]
    assert stage_of(sender) in row.senders, f"{sender} is no sender of {event[0]!r}"
    row.type.from_wire(event)  # the kind and the number of fields
    seen[(row.kind, receiver)] += 1


def test_every_event_between_stages_is_one_the_table_knows(tmp_path, monkeypatch):
    seen: Counter = Counter()
    take = Stage.take_outbox

    def take_checked(self: Stage) -> list[tuple[str, Any]]:
        out = take(self)
        for dest, event in out:
            check(self.name, dest, event, seen)
        return out

    monkeypatch.setattr(Stage, "take_outbox", take_checked)
    mesh = Mesh(tmp_path, nodes=4, seed=3)
    assert mesh.run_until(mesh.converged, 30.0)
    ring = mesh.ring("n1")
    key = next(k for k in (b"k%d" % i for i in range(1000)) if ring.preference_list(
        partition_of(k, ring.partitions), 3) == ["n1", "n2", "n3"])
    assert mesh.put("n1", b"other", b"v")["ok"]
    assert mesh.get("n2", b"other")["values"] == [b"v"]
    # A write while a replica is away: a stand-in holds it with a hint, handed over on
    # the replica's return (paper 4.6).
    mesh.cut("n3")
    gossip = mesh.nodes["n1"].gossip
    assert mesh.run_until(lambda: gossip.gauges()["down"] == ["n3"], 30.0)
    assert mesh.put("n1", key, b"v")["ok"]
    mesh.heal()
    assert mesh.run_until(lambda: mesh.nodes["n4"].hints.count() == 0, 30.0)
    assert mesh.nodes["n3"].values(key) == [b"v"]
    kinds = {kind for kind, _ in seen}
    assert {"req", "update", "get", "got", "write", "written", "updated", "reply", "call",
            "resp", "sync", "ring", "health", "gossip_in", "respond", "hints",
            "hints_found", "hint_done"} <= kinds, sorted(kinds)
