"""Fault injection for real seda-dynamo clusters: a seeded schedule of process faults and,
where the machine allows network namespaces, network partitions.

Faults (each applied, held for a while, then healed; one at a time):

- ``kill_node``: SIGKILL every process of a node at once, then start it again;
- ``kill_stage``: SIGKILL one stage process of a node (its supervisor restarts it);
- ``pause``: SIGSTOP every process of a node, then SIGCONT;
- ``partition``: cut one node off from the others (blackhole routes inside the nodes'
  network namespaces, both directions), then delete the routes.

Partitions need nodes that talk over addresses that can be cut. ``NetLab`` builds them:
a "hub" namespace holding a bridge, one namespace per node joined to the bridge by a veth
pair, and one veth pair from the root namespace to the bridge so the test process (the
clients) reaches every node. Every address is in one private /24 chosen so that it
collides with no route of the machine; every namespace and link is named after this
process and deleted by ``NetLab.close()``. ``NsNode`` is ``support.Node`` started with
``ip netns exec`` (which execs, so the supervisor's pid is the Popen pid and the
stop-by-pid discipline of ``support.Node`` holds unchanged).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from support import Node, wait_until

#: ``SEDA_SOAK=1`` (``make soak``): longer schedules, more keys, more rounds.
SOAK = os.environ.get("SEDA_SOAK", "") not in ("", "0")

CLIENT_PORT = 7000
PEER_PORT = 7100
#: Every namespace and link this suite creates starts with this (then the owner's pid).
PREFIX = "sdf"


class LabUnavailable(RuntimeError):
    """Network namespaces cannot be set up here; the message says why."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20,
                          check=check)


class NetLab:
    """Private network namespaces for the nodes of one test, joined by a bridge."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.hub = f"{self.tag}-hub"
        self.root_link = f"{self.tag}r"  # interface names have at most 15 characters
        self.namespaces: list[str] = []
        self.subnet: str | None = None  # "10.213.K" (the /24 without its last byte)
        self.cuts: set[tuple[str, str]] = set()  # (namespace, address) blackholed
        self.nodes = 0

    # Building and tearing down ------------------------------------------------------
    def open(self) -> NetLab:
        """Build the hub and the root link; raise LabUnavailable if the host refuses."""
        if os.geteuid() != 0:
            raise LabUnavailable("network namespaces need root (ip netns add)")
        try:
            _ip("-V")
        except (OSError, subprocess.SubprocessError) as exc:
            raise LabUnavailable(f"the ip command (iproute2) is not usable: {exc}") from None
        try:
            reap_stale_labs()
            self.subnet = self._free_subnet()
            self._add_ns(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "up0",
                "netns", self.hub)
            _ip("-n", self.hub, "link", "set", "up0", "master", "br0", "up")
            _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.root_link)
            _ip("link", "set", self.root_link, "up")
        except subprocess.CalledProcessError as exc:
            self.close()
            raise LabUnavailable(f"cannot build network namespaces: {' '.join(exc.cmd)}: "
                                 f"{(exc.stderr or '').strip()}") from None
        except (OSError, subprocess.SubprocessError) as exc:
            self.close()
            raise LabUnavailable(f"cannot build network namespaces: {exc}") from None
        return self

    def _free_subnet(self) -> str:
        """A 10.213.K.0/24 that no route and no address of this machine touches."""
        used = _ip("-4", "route", "show", "table", "all").stdout + \
            _ip("-4", "addr", "show").stdout
        start = os.getpid() % 250
        for i in range(250):
            k = (start + i) % 250 + 1
            if f"10.213.{k}." not in used:
                return f"10.213.{k}"
        raise LabUnavailable("no free 10.213.K.0/24 for the namespaces")

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_node(self) -> tuple[str, str]:
        """A namespace for one more node, on the bridge: (namespace, its address)."""
        assert self.subnet is not None, "open() first"
        self.nodes += 1
        i = self.nodes
        ns = f"{self.tag}-n{i}"
        self._add_ns(ns)
        hub_end, node_end = f"{self.tag}h{i}", f"{self.tag}e{i}"
        _ip("link", "add", hub_end, "netns", self.hub, "type", "veth",
            "peer", "name", node_end, "netns", ns)
        _ip("-n", self.hub, "link", "set", hub_end, "master", "br0", "up")
        address = f"{self.subnet}.{i}"
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", node_end)
        _ip("-n", ns, "link", "set", node_end, "up")
        return ns, address

    def close(self) -> None:
        """Delete every namespace and link of this lab (also after a failure)."""
        self.heal()
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        _ip("link", "del", self.root_link, check=False)  # gone with the hub, normally

    def leftovers(self) -> list[str]:
        """Namespaces or root links of this lab that still exist."""
        names = _ip("netns", "list", check=False).stdout.split()
        links = _ip("-o", "link", "show", check=False).stdout
        return [n for n in names if n.startswith(f"{self.tag}-")] + \
            ([self.root_link] if f" {self.root_link}@" in links
             or f" {self.root_link}:" in links else [])

    # Partitions ----------------------------------------------------------------------
    def cut(self, side_a: list[NsNode], side_b: list[NsNode]) -> None:
        """Nothing passes between the two sides, in either direction, until heal()."""
        for a in side_a:
            for b in side_b:
                for src, dst in ((a, b), (b, a)):
                    if (src.netns, dst.ip) not in self.cuts:
                        _ip("-n", src.netns, "route", "add", "blackhole", f"{dst.ip}/32")
                        self.cuts.add((src.netns, dst.ip))

    def heal(self) -> None:
        for ns, address in sorted(self.cuts):
            _ip("-n", ns, "route", "del", "blackhole", f"{address}/32", check=False)
        self.cuts.clear()


def reap_stale_labs() -> None:
    """Delete namespaces this suite left behind in runs whose process no longer exists."""
    try:
        names = _ip("netns", "list", check=False).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return
    for name in names:
        owner = name.removeprefix(PREFIX).split("-")[0]
        if name.startswith(PREFIX) and "-" in name and owner.isdigit() \
                and not psutil.pid_exists(int(owner)):
            _ip("netns", "del", name, check=False)


class NsNode(Node):
    """A ``support.Node`` living in its own network namespace at ``ip``."""

    def __init__(self, data_dir: Path, node_id: str, netns: str, ip: str, **kwargs) -> None:
        super().__init__(data_dir, node_id, **kwargs)
        self.netns = netns
        self.ip = ip
        self.client_port = CLIENT_PORT  # ports are per namespace: fixed ones are free
        self.peer_port = PEER_PORT

    @property
    def server(self) -> str:
        return f"{self.ip}:{self.client_port}"

    @property
    def peer(self) -> str:
        return f"{self.ip}:{self.peer_port}"

    @property
    def launcher(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("ip", "netns", "exec", self.netns)


# Killing by pid, and forgetting the pids killed -------------------------------------------
def kill9(node: Node) -> None:
    """``node.kill9()``, then forget the dead pids: pid numbers are reused (pid_max may be
    32768), and ``Node.stop()`` SIGKILLs every remembered pid that is alive, which after
    many kills and restarts could be some other program's process."""
    pids = node.all_pids()
    node.kill9()
    node.known_pids.difference_update(pids)


def kill_stage(node: Node, stage: str, seconds: float = 20.0) -> int | None:
    """SIGKILL one stage process; wait until the supervisor has started a new one (so it
    has reaped the old one) and forget the old pid. Returns the old pid."""
    old = node.stage_pids().get(stage)
    if old is None:
        return None
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: node.stage_pids().get(stage) not in (None, old), seconds,
               f"{node.node_id}'s {stage} stage to be restarted")
    node.known_pids.discard(old)
    return old


# The nemesis ------------------------------------------------------------------------------
STAGES = ("network", "coordination", "versioning", "persistence", "gossip")
#: The last fault of a schedule lasts until stop(), but never longer than this.
LAST_FAULT_MAX = 60.0


@dataclass
class Event:
    at: float  # seconds since the nemesis started
    fault: str
    target: str
    healed_at: float | None = None
    note: str = ""


@dataclass
class Schedule:
    """How the nemesis acts: which faults, how long each lasts, the pause between them."""

    faults: tuple[str, ...] = ("kill_node", "kill_stage", "pause")
    rounds: int = 8  # at most this many faults ...
    seconds: float = 30.0  # ... and the last one starts once this long has passed
    hold: tuple[float, float] = (0.5, 2.5)  # a fault lasts this long (uniform)
    gap: tuple[float, float] = (0.5, 2.0)  # quiet time between faults (uniform)


class Nemesis:
    """Applies and heals faults on ``nodes`` from a background thread, seeded."""

    def __init__(self, nodes: list[Node], seed: int, schedule: Schedule,
                 lab: NetLab | None = None) -> None:
        if "partition" in schedule.faults and lab is None:
            raise ValueError("partitions need nodes in a NetLab")
        self.nodes = nodes
        self.rng = random.Random(seed)
        self.seed = seed
        self.schedule = schedule
        self.lab = lab
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.done = threading.Event()  # set once the last fault is on (or none will come)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._lock = threading.Lock()  # held while a fault is being applied or healed
        self._bag: list[str] = []

    # Running ------------------------------------------------------------------------
    def start(self) -> Nemesis:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Event]:
        """Stop scheduling, heal every fault, wait until every node serves again.

        Re-raises what went wrong in the nemesis thread, if anything did.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            assert not self._thread.is_alive(), "the nemesis did not stop within 60 s"
        self.heal_all()
        if self.error is not None:
            raise AssertionError(f"nemesis failed: {self.error!r}") from self.error
        return self.events

    def _run(self) -> None:
        s = self.schedule
        try:
            for i in range(s.rounds):
                if self._stop.wait(self.rng.uniform(*s.gap)):
                    return
                last = i == s.rounds - 1 or time.monotonic() - self._started > s.seconds
                self.step(last=last)
                if last:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
        finally:
            self.done.set()

    def step(self, last: bool = False) -> Event:
        """Apply one fault, hold it (cut short by stop()), heal it.

        The ``last`` fault is held until stop(): halfway through its hold ``done`` is
        set, so a load waiting on it ends while the fault is still on, and what was
        written during the fault is left for the store to repair once stop() heals it.
        """
        s = self.schedule
        if not self._bag:  # every kind of fault once, in a seeded order, then again
            self._bag = self.rng.sample(s.faults, len(s.faults))
        fault = self._bag.pop()
        node = self.rng.choice(self.nodes)
        hold = self.rng.uniform(*s.hold)
        event = Event(round(time.monotonic() - self._started, 2), fault, node.node_id)
        self.events.append(event)
        heal = getattr(self, f"_{fault}")(node, event)
        if last:
            self._stop.wait(hold / 2)
            self.done.set()
            self._stop.wait(LAST_FAULT_MAX)
        else:
            self._stop.wait(hold)
        with self._lock:
            heal()
        event.healed_at = round(time.monotonic() - self._started, 2)
        return event

    # Faults: each applies itself and returns its healing -----------------------------
    def _kill_node(self, node: Node, event: Event):
        with self._lock:
            kill9(node)
        return node.start

    def _kill_stage(self, node: Node, event: Event):
        stage = self.rng.choice(STAGES)
        event.note = stage
        with self._lock:
            kill_stage(node, stage)  # the supervisor restarts it at once: nothing to heal

        return lambda: None

    def _pause(self, node: Node, event: Event):
        with self._lock:
            node.pause()
        return node.resume

    def _partition(self, node: Node, event: Event):
        assert self.lab is not None
        others = [n for n in self.nodes if n is not node]
        event.note = f"from {' '.join(n.node_id for n in others)}"
        with self._lock:
            self.lab.cut([node], others)  # type: ignore[list-item]
        return self.lab.heal

    # Healing everything --------------------------------------------------------------
    def heal_all(self) -> None:
        """Resume, reconnect and restart: every node up and answering."""
        with self._lock:
            if self.lab is not None:
                self.lab.heal()
            for node in self.nodes:
                node.resume()
            for node in self.nodes:
                if node.proc is None or node.proc.poll() is not None:
                    node.start()
            for node in self.nodes:
                node.wait_ready()

    def describe(self) -> str:
        return f"seed {self.seed}: " + "; ".join(
            f"{e.at:.1f}s {e.fault} {e.target}{' ' + e.note if e.note else ''}"
            f"{'' if e.healed_at is None else f' (healed {e.healed_at:.1f}s)'}"
            for e in self.events)
