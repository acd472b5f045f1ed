"""Test support: free ports, and a real node (supervisor + stage processes) run by pid."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from seda_dynamo.client import Client, DynamoError
from seda_dynamo.security import ClientKeys

READY_SECONDS = 30.0
STAGE_NAMES = ("network", "coordination", "versioning", "persistence", "gossip")


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and that no outgoing connection can take before
    a node binds it: below the kernel's ephemeral range. (A port from ``bind(0)`` is an
    ephemeral one: while a cluster starts, another node's connection could take it as
    its source port first, and the node then failed to bind it forever: "Address
    already in use", a node that never answers ping.) Never the same port twice in a
    test run."""
    lo, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(10_000, max(lo, 10_001))
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


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
    """One ``seda-dynamo serve`` process tree in its own session, stopped by pid."""

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
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{node_id}.log"
        self.known_pids: set[int] = set()

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    def start(self) -> Node:
        self.start_joining()
        self.wait_ready()
        return self

    launcher: tuple[str, ...] = ()  # a prefix such as ("ip", "netns", "exec", NS)

    def start_joining(self) -> Node:
        """Spawn the node without waiting for it (several nodes boot in parallel)."""
        cmd = [*self.launcher, sys.executable, "-m", "seda_dynamo.cli", "serve",
               "--node-id", self.node_id, "--client", self.server, "--peer", self.peer,
               "--data-dir", str(self.data_dir), "--engine", self.engine,
               "--durability", self.durability, *self.extra]
        if self.join is not None:
            cmd += ["--join", self.join.peer]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        self.known_pids.add(self.proc.pid)
        return self

    def wait_ready(self) -> None:
        """Until the node serves: it answers ping, every stage has reported, and
        coordination has a ring. Asked through ``stats``, which admission control never
        sheds (a ``ring`` request can be answered ``overloaded`` while a loaded node
        starts)."""
        missing: list[str] = ["no answer"]

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            with self.client(timeout=2.0) as c:
                c.ping()
                stages = c.stats()
            missing[:] = [f"no report from {name}" for name in STAGE_NAMES
                          if name not in stages]
            if not missing and not stages["coordination"].get("epoch"):
                missing[:] = ["coordination has no ring yet"]
            if not missing and len(self.stage_pids()) < 5:
                missing[:] = [f"stage processes: {sorted(self.stage_pids())}"]
            return not missing

        try:
            wait_until(ready, READY_SECONDS, f"node {self.node_id} to serve")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {', '.join(missing)}") from None

    def client(self, timeout: float = 5.0) -> Client:
        return Client(self.server, timeout=timeout, keys=self.keys)

    def stage_pids(self) -> dict[str, int]:
        """Stage name -> pid, read from the process titles."""
        assert self.proc is not None
        found: dict[str, int] = {}
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return found
        for child in children:
            try:
                title = " ".join(child.cmdline())
            except psutil.Error:
                continue
            for part in title.split():
                if part.startswith("stages."):
                    found[part.removeprefix("stages.")] = child.pid
        self.known_pids.update(found.values())
        return found

    def all_pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *self.stage_pids().values()]

    def kill9(self) -> None:
        """SIGKILL every process of the node at once, as a power cut would."""
        pids = self.all_pids()
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout=10)
        wait_until(lambda: not any(psutil.pid_exists(p) and _alive(p) for p in pids), 10,
                   "killed stage processes to go")
        self.known_pids -= set(pids)  # gone: their numbers may be reused by others

    def pause(self) -> None:
        for pid in self.all_pids():
            _signal(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.known_pids:
            _signal(pid, signal.SIGCONT)

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
        if self.proc is None:
            return
        self.stage_pids()
        self.resume()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.known_pids:
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)

    def leftovers(self) -> list[int]:
        return [pid for pid in self.known_pids if _alive(pid)]

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    """Alive and still one of ours (a reused pid number belongs to someone else)."""
    try:
        proc = psutil.Process(pid)
        ours = any("seda" in part or "stages." in part for part in proc.cmdline())
        return ours and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def retry(fn, seconds: float = 20.0):
    """Call ``fn`` until it stops raising a store error (a stage is coming back)."""
    return wait_until(lambda: _ok(fn), seconds, "the node to serve again", interval=0.1)[1]


def _ok(fn):
    try:
        return (True, fn())
    except DynamoError:
        return None


def wait_for_ring(nodes: list[Node], members: int, seconds: float = 30.0) -> dict:
    """Until the cluster is what a client needs: every node reports the same settled ring
    with ``members`` members, all up, and in every node's ``stats`` both gossip and
    coordination see no member down, coordination routes by that ring's epoch and gossip
    holds the same planned ring as every other node's (a node that has not
    yet heard from a peer counts it down, so this waits for every node to have heard
    from every other)."""

    seen: list = []

    def agreed():
        rings = [n.ring() for n in nodes]
        stats = []
        for n in nodes:
            with n.client(timeout=2.0) as c:
                stats.append(c.stats())
        seen[:] = [(n.node_id, r["epoch"], [(x["id"], x["status"]) for x in r["nodes"]],
                    {stage: (s.get(stage, {}).get("epoch"), s.get(stage, {}).get("down"))
                     for stage in ("gossip", "coordination")})
                   for n, r, s in zip(nodes, rings, stats, strict=True)]
        first = rings[0]
        return all(len(r["nodes"]) == members and r["epoch"] == first["epoch"]
                   and r["pending_transfers"] == 0
                   and r["owners"] == first["owners"]
                   and all(x["status"] == "up" for x in r["nodes"])
                   and s["coordination"].get("epoch") == first["epoch"]
                   and s["gossip"].get("epoch") == stats[0]["gossip"].get("epoch")
                   and s["coordination"].get("down") == s["gossip"].get("down") == []
                   for r, s in zip(rings, stats, strict=True)) and first

    try:
        return wait_until(agreed, seconds, f"{len(nodes)} nodes to agree on a ring of "
                          f"{members}", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen}") from None


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
