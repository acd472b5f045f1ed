"""Test support: free ports, and a real node (supervisor + stage processes) run by pid
through ``seda_dynamo.launcher``."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from seda_dynamo.client import Client, DynamoError
from seda_dynamo.launcher import NodeProcess, NotReady
from seda_dynamo.launcher import wait_for_ring as _wait_for_ring
from seda_dynamo.ports import free_port
from seda_dynamo.security import ClientKeys

READY_SECONDS = 30.0


def wait_until(predicate, seconds: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds} s waiting for {what} (last: {last_exc!r})")


class Node:
    """One ``seda-dynamo serve`` process tree in its own session, stopped by pid: a
    test's view of ``seda_dynamo.launcher.NodeProcess`` (which does the starting,
    waiting and stopping), with ports below the ephemeral range and assertion errors."""

    def __init__(self, data_dir: Path, node_id: str = "n1", engine: str = "bdb",
                 durability: str = "fsync", extra: tuple[str, ...] = (),
                 join: Node | None = None, keys: ClientKeys | None = None) -> None:
        self.data_dir = data_dir
        self.keys = keys  # CURVE: the key pair this test's clients present
        self.node_id = node_id
        self.engine = engine
        self.durability = durability
        self.extra = extra
        self.join = join
        self.client_port = free_port()
        self.peer_port = free_port()
        self.log_path = data_dir.parent / f"{node_id}.log"
        self.process: NodeProcess | None = None  # made at the first start

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc if self.process is not None else None

    @property
    def known_pids(self) -> set[int]:
        return self.process.known_pids if self.process is not None else set()

    def start(self) -> Node:
        self.start_joining()
        self.wait_ready()
        return self

    launcher: tuple[str, ...] = ()  # a prefix such as ("ip", "netns", "exec", NS)

    def start_joining(self) -> Node:
        """Spawn the node without waiting for it (several nodes boot in parallel); again
        after a kill, with the same ports and data."""
        if self.process is None:
            self.process = NodeProcess(
                self.node_id, self.server, self.peer, self.data_dir, self.log_path,
                ["--engine", self.engine, "--durability", self.durability, *self.extra],
                join=self.join.peer if self.join is not None else None,
                prefix=self.launcher, keys=self.keys)
        self.process.spawn()
        return self

    def wait_ready(self) -> None:
        """Until the node serves (``NodeProcess.wait_ready``): it answers ping, every
        stage has reported, and coordination has a ring."""
        assert self.process is not None, "never started"
        try:
            self.process.wait_ready(READY_SECONDS)
        except NotReady as exc:
            raise AssertionError(f"node {self.node_id} to serve: {exc}\n{self.log()}") \
                from None

    def client(self, timeout: float = 5.0) -> Client:
        return Client(self.server, timeout=timeout, keys=self.keys)

    def stage_pids(self) -> dict[str, int]:
        """Stage name -> pid, read from the process titles."""
        assert self.process is not None
        return self.process.stage_pids()

    def all_pids(self) -> list[int]:
        assert self.process is not None
        return self.process.all_pids()

    def kill9(self) -> None:
        """SIGKILL every process of the node at once, as a power cut would."""
        assert self.process is not None
        self.process.kill9()

    def pause(self) -> None:
        assert self.process is not None
        self.process.signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.resume()

    def ring(self) -> dict:
        with self.client(timeout=2.0) as c:
            return c.ring()

    def stats(self) -> dict:
        """Every stage's counters (stages report once a second, so wait for all five)."""
        with self.client(timeout=2.0) as c:
            return wait_until(lambda: (s := c.stats()) and len(s) == 5 and s, 10,
                              f"{self.node_id} stats from every stage")

    def stop(self) -> None:
        """SIGTERM the supervisor; SIGKILL whatever of ours is left after 15 s."""
        if self.process is not None:
            self.process.stop()

    def leftovers(self) -> list[int]:
        return self.process.leftovers() if self.process is not None else []

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""


def retry(fn, seconds: float = 20.0):
    """Call ``fn`` until it stops raising a store error (a stage is coming back)."""
    return wait_until(lambda: _ok(fn), seconds, "the node to serve again", interval=0.1)[1]


def _ok(fn):
    try:
        return (True, fn())
    except DynamoError:
        return None


def wait_for_ring(nodes: list[Node], members: int, seconds: float = 30.0) -> dict:
    """Until the cluster is what a client needs (``launcher.wait_for_ring``: one settled
    ring of ``members``, all up, every node having heard from every other)."""
    try:
        return _wait_for_ring(nodes, members, seconds)
    except NotReady as exc:
        raise AssertionError(str(exc)) from None


def wait_for_status(observer: Node, node_id: str, status: str, seconds: float = 15.0) -> None:
    def seen():
        return any(x["id"] == node_id and x["status"] == status
                   for x in observer.ring()["nodes"])

    wait_until(seen, seconds, f"{observer.node_id} to see {node_id} {status}", interval=0.2)


def build_cluster(factory, size: int, **kwargs) -> list:
    """``size`` nodes from ``factory``, n1 founding and the others joining it, once every
    node serves the same settled ring."""
    founder = factory("n1", **kwargs).start()
    nodes = [founder]
    for i in range(2, size + 1):
        nodes.append(factory(f"n{i}", join=founder, **kwargs).start_joining())
    for n in nodes[1:]:
        n.wait_ready()
    wait_for_ring(nodes, size)
    return nodes


def stop_all(nodes: list) -> None:
    """Stop every node by pid; fail the test if any of their processes is left."""
    for node in nodes:
        node.stop()
    left = [pid for node in nodes for pid in node.leftovers()]
    assert not left, f"processes left behind: {left}"
