"""The stage runtime's sending side, on real ZeroMQ sockets in this process (no node).

A destination that cannot be connected to must be undeliverable, as a dead peer is,
never the end of the stage; and the sockets to other nodes must stay bounded whatever
peer addresses arrive. A stage queue that cannot take events is an explicit event too
(SEDA's full queue): the emitting handler hears it and fails what they belonged to.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from seda_dynamo import contract
from seda_dynamo import sockets as sockets_module
from seda_dynamo.config import NodeConfig
from seda_dynamo.messages import Got, Started, Sync, Update
from seda_dynamo.ring import Member, Ring
from seda_dynamo.runtime import Runtime
from seda_dynamo.runtime import shard as runtime_shard
from seda_dynamo.stage import PEER_PREFIX, Stage, spec, worker_name
from stages import coordination

CONFIG = NodeConfig(node_id="t", engine="memory")


class Probe(Stage):
    """A stage that only records what the runtime could not deliver."""

    name = "gossip"

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.lost: list[tuple[str, list[Any]]] = []

    def undeliverable(self, dest: str, events: list, now: float) -> None:
        self.lost.append((dest, events))


@pytest.fixture
def run_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # ipc paths stay short
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def runtime(run_dir) -> Iterator[Runtime]:
    rt = Runtime(Probe(CONFIG), CONFIG, run_dir)
    try:
        yield rt
    finally:
        rt.close()


def fill(rt: Runtime, dest: str) -> int:
    """Queue messages for stage ``dest`` (no process reads them) until its queue is
    full; how many it took."""
    sock = rt.sockets.socket_to(dest)
    assert sock is not None
    taken = 0
    while True:
        try:
            sock.send(msgpack.packb([0.0, []]), zmq.NOBLOCK)
        except zmq.Again:
            return taken
        taken += 1


BAD = ["x:y", "ho st:7100", "127.0.0.1:0", "127.0.0.1:99999", "tcp://a:1", "a:b:c", "",
       "[::1:7100", "*:7100"]


def test_a_destination_that_cannot_be_connected_to_is_undeliverable_not_fatal(runtime):
    """Any string can reach an emit (a handler bug, a peer's frame, an old saved view):
    the runtime treats it as an unreachable node and the stage goes on."""
    h = runtime.handler
    for bad in BAD:
        h.emit(PEER_PREFIX + bad, ["req", "me", ["gossip", 1], ["ping"]])
    h.emit(PEER_PREFIX + "127.0.0.1:1", ["req", "me", ["gossip", 2], ["ping"]])  # nobody
    runtime.send_outbox()  # raised ZMQError on "x:y" before: the stage died, and again at restart
    assert sorted(dest for dest, _ in h.lost) == sorted(PEER_PREFIX + a for a in
                                                          [*BAD, "127.0.0.1:1"])
    assert runtime.counters["bad_destinations"] == len(BAD)
    assert runtime.counters["dropped"] == len(BAD) + 1
    assert set(runtime.sockets.outbound) == {PEER_PREFIX + "127.0.0.1:1"}  # no socket for the bad
    for _ in range(3):  # and again: still not fatal, still no socket
        h.emit(PEER_PREFIX + "x:y", ["req", "me", ["gossip", 3], ["ping"]])
        runtime.send_outbox()
    assert runtime.counters["bad_destinations"] == len(BAD) + 3


def test_sockets_to_other_nodes_are_bounded_and_closed_when_idle(runtime, monkeypatch):
    """Peer addresses come from the network (gossip, a peer's 'reply to' address): the
    runtime's DEALERs are capped, least recently used closed first, and idle ones are
    closed, so the outbound sockets never grow without bound."""
    monkeypatch.setattr(sockets_module, "MAX_PEER_SOCKETS", 8)
    h = runtime.handler
    for port in range(20_001, 20_041):
        h.emit(f"{PEER_PREFIX}127.0.0.1:{port}", ["req", "me", ["gossip", port], ["ping"]])
        runtime.send_outbox()
        assert runtime.counters["peer_sockets"] <= 8
    peers = [d for d in runtime.sockets.outbound if d.startswith(PEER_PREFIX)]
    assert len(peers) == 8
    assert sorted(peers) == [f"{PEER_PREFIX}127.0.0.1:{p}" for p in range(20_033, 20_041)]
    # A stage's own queues are not peers: never closed by this.
    h.emit("network", ["stats", "gossip", {}])
    runtime.send_outbox()
    runtime.sockets.close_idle_peers(now=time.monotonic() + sockets_module.PEER_IDLE + 1)
    assert not [d for d in runtime.sockets.outbound if d.startswith(PEER_PREFIX)]
    assert "network" in runtime.sockets.outbound and runtime.counters["peer_sockets"] == 0
    # A closed peer's socket is made again when it is needed again.
    h.emit(f"{PEER_PREFIX}127.0.0.1:20001", ["req", "me", ["gossip", 9], ["ping"]])
    runtime.send_outbox()
    assert runtime.counters["peer_sockets"] == 1


def test_a_node_at_an_ipv6_literal_is_reached(runtime):
    """The address core takes [ADDR]:PORT, so the runtime must be able to connect to it."""
    import zmq

    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.IPV6, 1)
    try:
        port = router.bind_to_random_port("tcp://[::1]")
    except zmq.ZMQError:
        router.close()
        pytest.skip("no IPv6 loopback here")
    try:
        runtime.handler.emit(f"{PEER_PREFIX}[::1]:{port}", ["req", "me", ["gossip", 1],
                                                           ["ping"]])
        for _ in range(50):  # IMMEDIATE: sends are dropped until the connection is up
            runtime.send_outbox()
            if router.poll(100):
                break
            runtime.handler.emit(f"{PEER_PREFIX}[::1]:{port}", ["req", "me", ["gossip", 1],
                                                               ["ping"]])
        assert router.poll(1000), "nothing arrived over IPv6"
    finally:
        router.close(linger=0)


def test_versioning_events_go_to_the_worker_their_key_names(runtime, monkeypatch):
    """Sharding by the field the message table names (``key``), not by a position: one
    key's operations meet in one worker; answers to a worker's own requests (``got``,
    ``written``) go to the worker they are addressed to."""
    sent: list[tuple[str, list]] = []
    monkeypatch.setattr(runtime.sender, "send",
                        lambda dest, events: sent.append((dest, list(events))))
    runtime.workers = {"versioning": 3}
    keys = [b"k%d" % i for i in range(12)]
    for key in keys:
        runtime.handler.emit("versioning", Update.wire("coordination", 1, key, b"v", None,
                                                       False, None))
        runtime.handler.emit("versioning", Sync.wire("gossip", None, key, b"c", None))
    runtime.handler.emit("versioning", Got.wire(5, [None], None, "inc"))
    runtime.send_outbox()
    where = {(event[0], event[3]): dest for dest, events in sent for event in events
             if event[0] != "got"}
    for key in keys:
        worker = worker_name("versioning", runtime_shard(key, 3))
        assert where[("update", key)] == where[("sync", key)] == worker
    assert len(set(where.values())) > 1, "twelve keys, all on one worker"
    assert [dest for dest, events in sent for event in events
            if event[0] == "got"] == ["versioning"]


def test_a_full_drop_queue_to_a_stage_reaches_the_handlers_undeliverable(run_dir):
    """Gossip's queue drops when full: the stage that emitted to it hears which events
    were lost, at once, and each counts as dropped, never as sent."""
    probe = Probe(CONFIG)
    probe.name = "coordination"
    rt = Runtime(probe, CONFIG, run_dir)
    try:
        assert spec("gossip").when_full == "drop"
        assert fill(rt, "gossip") == spec("gossip").queue_hwm
        sent = rt.counters["sent"]
        probe.emit("gossip", ["foreground", 3, 0.01])
        probe.emit("gossip", ["deleted", b"k"])
        rt.send_outbox()
        assert probe.lost == [("gossip", [["foreground", 3, 0.01], ["deleted", b"k"]])]
        assert rt.counters["dropped"] == 2 and rt.counters["sent"] == sent
        # An emit to no stage and no node is undeliverable as well, not silently lost.
        probe.emit("nowhere", ["x"])
        rt.send_outbox()
        assert probe.lost[-1] == ("nowhere", [["x"]])
    finally:
        rt.close()


def test_coordination_answers_overloaded_at_once_when_its_event_cannot_be_queued(run_dir):
    """A put whose stamp cannot be queued (versioning's queue full, its process gone or
    wedged) is answered ``overloaded`` by coordination after the runtime's bounded
    wait, without a tick: not left to its deadline, with the request forgotten."""
    config = NodeConfig(node_id="t", engine="memory", n=1, r=1, w=1)
    h = coordination.Handler(config)
    ring = Ring.single(Member("t", config.client, config.peer), config.partitions)
    h.on_ring(0.0, ring.to_state(), [])
    rt = Runtime(h, config, run_dir)
    network = rt.sockets.ctx.socket(zmq.PULL)  # stands where the network stage's queue is
    network.setsockopt(zmq.LINGER, 0)
    network.bind(contract.endpoint(run_dir, "network"))
    try:
        assert spec("versioning").when_full == "block"
        assert fill(rt, "versioning") == spec("versioning").queue_hwm
        h.handle_events([["req", 7, "put", b"k", b"v", None, None, None, 60_000, False]],
                        0.0)
        rt.send_outbox()
        assert h.requests == {}
        assert network.poll(5000), "no reply reached the network stage's queue"
        _, events = msgpack.unpackb(network.recv(), raw=False)
        reply = next(e for e in events if e[0] == "reply")
        assert reply[1] == 7
        assert reply[2]["ok"] is False and reply[2]["error"] == "overloaded"
        assert "versioning" in reply[2]["message"]
        assert h.counts["overloaded"] == 1 and rt.counters["dropped"] == 1
    finally:
        network.close(linger=0)
        rt.close()


class Brittle(Probe):
    """A handler with a bug: a batch holding ``"boom"`` raises out of ``handle_events``."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.handled: list[Any] = []

    def handle_events(self, events: list, now: float) -> None:
        if "boom" in events:
            raise RuntimeError("a handler bug")
        self.handled.extend(events)

    def tick(self, now: float) -> None:
        raise RuntimeError("a timer bug")


def test_a_handler_that_raises_costs_its_batch_never_the_stage_process(run_dir):
    """The backstop behind each handler's per-event guard: what a batch or a tick raises
    is logged and counted; the loop goes on to the next batch (a stage process that died
    would drop every request it holds, and be restarted into the same input)."""
    rt = Runtime(Brittle(CONFIG), CONFIG, run_dir)
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    try:
        push.connect(contract.endpoint(run_dir, "gossip"))
        push.send(msgpack.packb([0.0, ["boom"]]))
        for _ in range(200):
            rt._handle_inbound()
            if rt.handler.errors:
                break
            time.sleep(0.01)
        rt._tick_guarded(0.0)
        push.send(msgpack.packb([0.0, [["fine"]]]))
        for _ in range(200):
            rt._handle_inbound()
            if rt.handler.handled:
                break
            time.sleep(0.01)
        assert rt.handler.handled == [["fine"]]
        assert rt.handler.errors >= 2  # the batch, and the tick
    finally:
        push.close(linger=0)
        rt.close()


def test_an_emitted_event_whose_kind_is_no_name_goes_to_worker_0_never_raises(runtime):
    """Spreading over workers reads each event's kind: one that is no string (a bug in a
    handler's emit) goes to worker 0 like any event without a shard field."""
    runtime.workers = {"versioning": 2}
    spread = runtime._spread({"versioning": [[["update"]], [{}], 7, []]})
    assert spread == {"versioning": [[["update"]], [{}], 7, []]}


def test_an_announcement_reaches_every_worker_of_the_stage(runtime):
    """A restarted persistence stage's ``started`` goes to each versioning worker: each
    has its own reads and writes waiting on the process that is gone."""
    runtime.workers = {"versioning": 3}
    spread = runtime._spread({"versioning": [Started.wire("persistence", 9)],
                              "gossip": [Started.wire("persistence", 9)]})
    assert spread == {"versioning": [["started", "persistence", 9]],
                      "versioning.1": [["started", "persistence", 9]],
                      "versioning.2": [["started", "persistence", 9]],
                      "gossip": [["started", "persistence", 9]]}
