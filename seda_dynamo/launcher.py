"""Starting and stopping seda-dynamo nodes on this machine, always by pid.

The one module that runs ``seda-dynamo serve`` processes for something else: the CLI's
``cluster start|stop`` (``localcluster``), the load generator's throw-away cluster
(``loadgen.local_cluster``), the benchmarks' single node (``bench.SingleNode``) and the
integration tests' ``Node`` (``tests/support.py``) are thin users of it.

A node is a supervisor in its own session and one process per stage (the SEDA pipeline),
each titled ``seda-dynamo[NODE] stages.NAME``. ``NodeProcess`` starts one, waits until it
serves, knows every pid it has seen, and stops it by pid: SIGTERM to the supervisor
(which stops its stages), then SIGKILL to whatever of it is left after a grace period;
never a process group or a name, and never a pid whose process is no longer one of ours
(pid numbers are reused). ``start_cluster`` starts N nodes joined into one ring the way
Dynamo's membership does it (paper section 4.8): the first node founds the ring, every
other node joins it through a seed (``--join``), and gossip spreads the view.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import psutil

from seda_dynamo.client import Client, DynamoError
from seda_dynamo.security import ClientKeys

STAGE_NAMES = ("network", "coordination", "versioning", "persistence", "gossip")
READY_SECONDS = 30.0
STOP_GRACE = 15.0  # seconds a supervisor has to stop its stages before SIGKILL
KILL_WAIT = 10.0


class NotReady(RuntimeError):
    """A node (or a cluster) did not come to serve in time, or its supervisor exited."""


def serve_command(node_id: str, client: str, peer: str, data_dir: str | Path,
                  args: Sequence[str] = (), join: str | None = None,
                  prefix: Sequence[str] = ()) -> list[str]:
    """The command line of one node: ``prefix`` (e.g. ``ip netns exec NS``), then
    ``python -m seda_dynamo.cli serve`` with its addresses, ``args`` and ``--join``."""
    cmd = [*prefix, sys.executable, "-m", "seda_dynamo.cli", "serve", "--node-id", node_id,
           "--client", client, "--peer", peer, "--data-dir", str(data_dir), *args]
    return cmd + ["--join", join] if join is not None else cmd


def is_ours(pid: int, node_id: str | None = None) -> bool:
    """``pid`` runs seda-dynamo code (and names ``node_id``, if given) and is not a zombie:
    after the process it was ended, the number may belong to anyone."""
    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    if not any("seda" in part or "stages." in part for part in cmdline):
        return False
    return node_id is None or node_id in cmdline


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class NodeProcess:
    """One ``seda-dynamo serve`` process tree: its supervisor and stage processes.

    ``spawn()`` starts it (again, after a kill, keeping the same addresses and data);
    ``attach(pid)`` takes over a node another process started (``cluster stop``).
    ``known_pids`` holds every pid of it seen so far, so a stage outliving its
    supervisor is still stopped.
    """

    def __init__(self, node_id: str, client: str, peer: str, data_dir: str | Path,
                 log: str | Path, args: Sequence[str] = (), join: str | None = None,
                 prefix: Sequence[str] = (), keys: ClientKeys | None = None,
                 cwd: str | None = None) -> None:
        self.node_id, self.server, self.peer = node_id, client, peer
        self.data_dir, self.log_path = Path(data_dir), Path(log)
        self.args, self.join, self.prefix = tuple(args), join, tuple(prefix)
        self.keys = keys  # CURVE: the key pair our own requests present
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.known_pids: set[int] = set()

    def command(self) -> list[str]:
        return serve_command(self.node_id, self.server, self.peer, self.data_dir, self.args,
                             self.join, self.prefix)

    def spawn(self) -> NodeProcess:
        """Start the node in its own session, its output appended to its log; no wait."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.known_pids.add(self.pid)
        return self

    def attach(self, pid: int) -> bool:
        """Take over the running supervisor ``pid`` (not our child); False if that pid
        no longer runs this node."""
        if not is_ours(pid, self.node_id):
            return False
        self.proc, self.pid = None, pid
        self.known_pids.add(pid)
        self.stage_pids()
        return True

    # What it is -------------------------------------------------------------------------
    def running(self) -> bool:
        """The supervisor is alive (and still ours)."""
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and is_ours(self.pid)

    def stage_pids(self) -> dict[str, int]:
        """Stage name -> pid, read from the process titles (remembered in known_pids)."""
        found: dict[str, int] = {}
        for pid, name in self._stages():
            found[name] = pid
        return found

    def _stages(self) -> list[tuple[int, str]]:
        if self.pid is None:
            return []
        try:
            children = psutil.Process(self.pid).children()
        except psutil.Error:
            return []
        found = []
        for child in children:
            try:
                parts = " ".join(child.cmdline()).split()
            except psutil.Error:
                continue
            found += [(child.pid, part.removeprefix("stages.")) for part in parts
                      if part.startswith("stages.")]
        self.known_pids.update(pid for pid, _ in found)
        return found

    def all_pids(self) -> list[int]:
        """The supervisor and every stage process (each versioning worker included)."""
        if self.pid is None:
            return []
        return [self.pid, *dict.fromkeys(pid for pid, _ in self._stages())]

    def leftovers(self) -> list[int]:
        """Known pids still running seda-dynamo code."""
        return [pid for pid in self.known_pids if is_ours(pid)]

    def client(self, timeout: float = 5.0) -> Client:
        return Client(self.server, timeout=timeout, keys=self.keys)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # Waiting ----------------------------------------------------------------------------
    def wait_ready(self, seconds: float = READY_SECONDS) -> None:
        """Until the node serves: it answers ``ping``, every stage has reported and
        coordination has a ring. Asked through ``stats``, which admission control never
        sheds (a ``ring`` request may be answered ``overloaded`` while a loaded node
        starts). NotReady at once if the supervisor exits."""
        deadline = time.monotonic() + seconds
        missing = ["no answer"]
        with self.client(timeout=2.0) as c:
            while time.monotonic() < deadline:
                if not self.running():
                    raise NotReady(f"{self.node_id} exited (see {self.log_path}):\n"
                                   f"{self.log_tail()}")
                try:
                    c.ping()
                    stages = c.stats()
                except DynamoError as exc:
                    missing = [f"{exc.code}: {exc}"]
                    time.sleep(0.05)
                    continue
                missing = [f"no report from {name}" for name in STAGE_NAMES
                           if name not in stages]
                if not missing and not stages["coordination"].get("epoch"):
                    missing = ["coordination has no ring yet"]
                if not missing and len(self.stage_pids()) < len(STAGE_NAMES):
                    missing = [f"stage processes: {sorted(self.stage_pids())}"]
                if not missing:
                    return
                time.sleep(0.05)
        raise NotReady(f"{self.node_id} did not serve within {seconds:.0f} s: "
                       f"{', '.join(missing)}")

    def _wait_exit(self, seconds: float) -> bool:
        """Until the supervisor has exited (reaped, if our child); False on timeout."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=seconds)
                return True
            except subprocess.TimeoutExpired:
                return False
        if self.pid is None:
            return True
        try:
            psutil.Process(self.pid).wait(timeout=seconds)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            return not is_ours(self.pid)
        return True

    # Signals ----------------------------------------------------------------------------
    def signal_all(self, sig: int) -> None:
        """``sig`` to the supervisor and every stage (e.g. SIGSTOP, SIGCONT)."""
        for pid in self.all_pids():
            _signal(pid, sig)

    def resume(self) -> None:
        """SIGCONT every known pid still ours (a paused node, even a stage paused alone)."""
        for pid in self.known_pids:
            if is_ours(pid):
                _signal(pid, signal.SIGCONT)

    def kill9(self) -> None:
        """SIGKILL every process of the node at once, as a power cut would; wait until
        they are gone and forget their pids (the numbers may be reused by others)."""
        pids = self.all_pids()
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        self._wait_exit(KILL_WAIT)
        deadline = time.monotonic() + KILL_WAIT
        while any(is_ours(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.node_id}: killed processes still running: "
                                   f"{[p for p in pids if is_ours(p)]}")
            time.sleep(0.05)
        self.known_pids -= set(pids)

    def stop(self, grace: float = STOP_GRACE) -> list[int]:
        """SIGTERM the supervisor (it stops its stages); SIGKILL whatever of ours is left
        after ``grace`` seconds. Returns the pids it signalled."""
        if self.pid is None:
            return []
        self.stage_pids()
        self.resume()  # a paused node cannot act on SIGTERM
        signalled = []
        if self.running():
            _signal(self.pid, signal.SIGTERM)
            signalled.append(self.pid)
            self._wait_exit(grace)
        for pid in self.leftovers():
            _signal(pid, signal.SIGKILL)
            signalled.append(pid)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.wait(timeout=KILL_WAIT)
        self._wait_exit(KILL_WAIT)
        return signalled


# A cluster ------------------------------------------------------------------------------
class Serving(Protocol):
    """What ``wait_for_ring`` asks a node through: its id and a client to it."""

    node_id: str

    def client(self, timeout: float = 5.0) -> Client: ...


def wait_for_ring(nodes: Sequence[Serving], members: int, seconds: float = 30.0) -> dict:
    """Until the cluster is what a client needs: every node reports the same settled ring
    (no pending transfers) of ``members`` members, all up, and in every node's ``stats``
    gossip and coordination see no member down, coordination routes by that ring's epoch
    and gossip holds the same planned ring as the others' (a node that has not yet heard
    from a peer counts it down, so this waits for every node to hear from every other).
    Returns the ring; NotReady with what was last seen after ``seconds``."""
    deadline = time.monotonic() + seconds
    seen: list[Any] = []
    while time.monotonic() < deadline:
        try:
            rings, stats = [], []
            for n in nodes:
                with n.client(timeout=2.0) as c:
                    rings.append(c.ring())
                    stats.append(c.stats())
            seen[:] = [(n.node_id, r["epoch"], [(x["id"], x["status"]) for x in r["nodes"]],
                        {stage: (s.get(stage, {}).get("epoch"), s.get(stage, {}).get("down"))
                         for stage in ("gossip", "coordination")})
                       for n, r, s in zip(nodes, rings, stats, strict=True)]
            first = rings[0]
            if all(len(r["nodes"]) == members and r["epoch"] == first["epoch"]
                   and r["pending_transfers"] == 0 and r["owners"] == first["owners"]
                   and all(x["status"] == "up" for x in r["nodes"])
                   and s["coordination"].get("epoch") == first["epoch"]
                   and s["gossip"].get("epoch") == stats[0]["gossip"].get("epoch")
                   and s["coordination"].get("down") == s["gossip"].get("down") == []
                   for r, s in zip(rings, stats, strict=True)):
                return first
        except (DynamoError, KeyError) as exc:
            seen[:] = [repr(exc)]
        time.sleep(0.2)
    raise NotReady(f"{len(nodes)} nodes did not agree on a ring of {members} within "
                   f"{seconds:.0f} s; last seen: {seen}")


def start_cluster(root: str | Path, nodes: int, base_port: int, args: Sequence[str] = (),
                  host: str = "127.0.0.1", seconds: float = 60.0,
                  spawned: Callable[[list[NodeProcess]], None] | None = None
                  ) -> list[NodeProcess]:
    """``nodes`` nodes ``node1..`` on ``host``, clients on ``base_port..`` and peers on
    ``base_port + 100..``, data in ``root/nodeI`` and logs in ``root/nodeI.log``; node1
    founds the ring and the others join it. Returns once they serve one settled ring.
    ``spawned`` is told the nodes each time one more was started (to record them). On
    any failure every node started is stopped before the error is raised."""
    root = Path(root).resolve()
    started: list[NodeProcess] = []
    try:
        for i in range(1, nodes + 1):
            node = NodeProcess(f"node{i}", f"{host}:{base_port + i - 1}",
                               f"{host}:{base_port + 100 + i - 1}", root / f"node{i}",
                               root / f"node{i}.log", args,
                               join=started[0].peer if started else None)
            started.append(node.spawn())
            if spawned is not None:
                spawned(started)
            if i == 1:
                node.wait_ready(seconds)
        for node in started[1:]:
            node.wait_ready(seconds)
        wait_for_ring(started, nodes, seconds)
    except BaseException:
        for node in started:
            node.stop()
        raise
    return started
