"""A stage that (re)starts announces it (``messages.Started``), and the stages waiting on
its last process stop waiting: what is safe to ask again is asked again, what is not
fails now (Dynamo paper section 4.4's read-merge-write; section 4.7's exchanges).

Found by the simulator (seed 21 of 3 nodes): n1's persistence stage crashed while
versioning had reads pending; versioning held those keys in flight for its whole engine
deadline (10 s), every later operation of them queued behind, anti-entropy's repairs
included, so n1 took no repair for 10 s.
"""

from __future__ import annotations

from pipeline import CONFIG
from test_gossip import handler

from seda_dynamo import causality
from seda_dynamo.antientropy import Round
from seda_dynamo.engines import open_engine
from seda_dynamo.messages import Started
from stages import persistence, versioning


def store() -> persistence.Handler:
    return persistence.Handler(CONFIG, engine=open_engine("memory", "", "data", "nosync"),
                               hints=open_engine("memory", "", "h", "nosync"))


def update(key: bytes, value: bytes, ref: int) -> list:
    return ["update", "coordination", ref, key, value, None, False, None]


def answered(h: versioning.Handler) -> dict[int, list]:
    """The ``updated`` answers ``h`` emitted, by the asker's ref."""
    return {event[1]: event for dest, event in h.take_outbox()
            if dest == "coordination" and event[0] == "updated"}


def deliver(src, dst, now: float) -> None:
    """What ``src`` emitted for ``dst``'s stage, handed to it (one batch)."""
    events = [event for dest, event in src.take_outbox() if dest == dst.name]
    dst.handle_events(events, now)


def test_a_persistence_stage_announces_each_start_to_the_stages_that_wait_on_it():
    first, second = store(), store()
    first.start(0.0)
    second.start(1.0)
    announced = [out for out in first.take_outbox() + second.take_outbox()
                 if out[1][0] == "started"]
    assert sorted(dest for dest, _ in announced) == ["gossip", "gossip",
                                                      "versioning", "versioning"]
    generations = {event[2] for _, event in announced}
    assert all(event[1] == "persistence" for _, event in announced)
    assert len(generations) == 2, "each start is told apart from the one before"


def sync(key: bytes, value: bytes, ref: int) -> list:
    """A merge of a version stamped elsewhere (an ``rput`` from a coordinator)."""
    clock = causality.update(causality.new(value), causality.EMPTY, "n9#1")
    return ["sync", "coordination", ref, key, causality.encode(clock), None]


def test_a_restart_announced_to_versioning_asks_its_reads_again_for_merges():
    """The read was lost with the crashed process: asked again of the new one, the
    merge goes through and the key is free at once, not after ENGINE_DEADLINE."""
    h = versioning.Handler(CONFIG)
    h.handle_events([sync(b"k", b"v1", 1)], 0.0)
    lost = h.take_outbox()
    assert [event[0] for _, event in lost] == ["get"]
    restarted = store()
    restarted.start(0.5)
    deliver(restarted, h, 0.5)  # its `started`
    deliver(h, restarted, 0.6)  # the read, asked again
    deliver(restarted, h, 0.7)  # got
    deliver(h, restarted, 0.8)  # write
    deliver(restarted, h, 0.9)  # written
    (reply,) = answered(h).values()
    assert reply[1] == 1 and reply[4] is None, reply
    assert h.inflight == {} and h.pending == {}
    assert causality.values(causality.decode(restarted.engine.get(b"k"))) == [b"v1"]


def test_a_client_write_whose_read_was_lost_fails_unstamped_and_its_merges_go_on():
    """A client write waiting on a lost read is not stamped late: its coordinator may
    have had another replica stamp it meanwhile (a second dot for one write: seed 100 of
    5 nodes). It fails, nothing written for it; a merge of the same key still goes on."""
    h = versioning.Handler(CONFIG)
    h.handle_events([update(b"k", b"v1", 1)], 0.0)
    h.take_outbox()
    h.handle_events([sync(b"k", b"v2", 2), update(b"k", b"v3", 3)], 0.2)  # queued
    restarted = store()
    restarted.start(0.5)
    deliver(restarted, h, 0.5)
    out = h.take_outbox()
    failed = {e[1]: e for dest, e in out if dest == "coordination"}
    assert sorted(failed) == [1, 3] and all("not made" in e[4] for e in failed.values())
    h.outbox = [(dest, e) for dest, e in out if dest != "coordination"]
    deliver(h, restarted, 0.6)
    deliver(restarted, h, 0.7)
    deliver(h, restarted, 0.8)
    deliver(restarted, h, 0.9)
    (merged,) = answered(h).values()
    assert merged[1] == 2 and merged[4] is None
    assert causality.values(causality.decode(restarted.engine.get(b"k"))) == [b"v2"]
    assert h.inflight == {} and h.pending == {}


def test_a_restart_announced_to_versioning_fails_its_writes_and_never_makes_them_again():
    """The write may have been made before the crash: made again it would stamp a second
    dot, so the operations waiting on it fail now (their coordinator answers or asks a
    spare) and the key takes new work at once."""
    old = store()
    h = versioning.Handler(CONFIG)
    h.handle_events([update(b"k", b"v1", 1)], 0.0)
    deliver(h, old, 0.1)
    deliver(old, h, 0.2)  # got: versioning now writes
    writes = [event for dest, event in h.take_outbox() if dest == "persistence"]
    assert [event[0] for event in writes] == ["write"]
    h.handle_events([update(b"k", b"v2", 2)], 0.3)  # queued behind the write
    restarted = store()
    restarted.start(0.5)
    deliver(restarted, h, 0.5)
    failed = answered(h)
    assert sorted(failed) == [1, 2] and all(event[4] for event in failed.values())
    assert [event for _, event in h.take_outbox()] == [], "nothing written again"
    assert h.inflight == {} and h.pending == {}
    h.handle_events([update(b"k", b"v3", 3)], 1.0)
    assert [event[0] for _, event in h.take_outbox()] == ["get"], "the key is free"


def test_an_announcement_seen_before_changes_nothing():
    h = versioning.Handler(CONFIG)
    h.handle_events([sync(b"k", b"v1", 1)], 0.0)
    h.take_outbox()
    h.handle_events([["started", "persistence", 7]], 0.1)
    assert [event[0] for _, event in h.take_outbox()] == ["get"]
    h.handle_events([["started", "persistence", 7]], 0.2)
    assert h.take_outbox() == [], "the same start, told twice"
    h.handle_events([["started", "gossip", 8]], 0.3)
    assert h.take_outbox() == [], "no stage versioning waits on"


def test_the_gossip_stage_hands_a_restart_to_its_duties(tmp_path):
    """An anti-entropy exchange whose local tree question went down with persistence
    asks it again at once (not at EXCHANGE_DEADLINE, nor at its question's deadline)."""
    h = handler(tmp_path)
    h.exchanges.exchange = Round(0, "n2", 0.0)
    h.exchanges._ask(h.exchanges.exchange.start(), 0.0)
    first = [event for dest, event in h.take_outbox() if dest == "persistence"]
    h.handle_events([Started.wire("persistence", 11)], 0.5)
    again = [event for dest, event in h.take_outbox() if dest == "persistence"]
    assert [event[0] for event in first] == [event[0] for event in again] == ["tree"]
    assert again[0][4] == first[0][4] and again[0][2] != first[0][2]
    assert h.exchanges.exchange.asked == 0.5 and h.errors == 0
