"""The stage runtime's sending side, on real ZeroMQ sockets in this process (no node).

A destination that cannot be connected to must be undeliverable, as a dead peer is,
never the end of the stage; and the sockets to other nodes must stay bounded whatever
peer addresses arrive.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from seda_dynamo import sockets as sockets_module
from seda_dynamo.config import NodeConfig
from seda_dynamo.runtime import Runtime
from seda_dynamo.stage import PEER_PREFIX, Stage

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
def runtime() -> Iterator[Runtime]:
    run_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # ipc paths stay short
    rt = Runtime(Probe(CONFIG), CONFIG, run_dir)
    try:
        yield rt
    finally:
        rt.close()
        shutil.rmtree(run_dir, ignore_errors=True)


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
