"""Benchmarks of seda-dynamo: the echo-chain ceiling, a real single node, a 3-node
cluster, and a report.

Not part of ``make test``. Run them with::

    /tmp/v/bin/python -m pytest bench -q -p no:cacheprovider --benchmark-enable
    /tmp/v/bin/python -m bench.report          # the markdown tables (``make bench``)

This package also holds the helpers both use: free ports and a single node that leaves
no process behind (``seda_dynamo.launcher`` starts and stops it). The cluster comes from
``seda_dynamo.loadgen.local_cluster`` (a temp dir, ``launcher.start_cluster`` on a free
range of ports, always stopped by pid), which ``seda-dynamo bench --cluster`` uses too;
``cluster_servers`` turns its members into the ``server`` argument of
``loadgen.run_phase``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import psutil
import zmq

from seda_dynamo.launcher import NodeProcess, NotReady
from seda_dynamo.ports import free_base_port

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
NODE_READY_TIMEOUT = 20.0
NODE_STOP_GRACE = 10.0


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a stopped benchmark still runs its ``with`` blocks
    and stops the nodes and peers it started (they run in their own sessions)."""

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def call(server: str, body: dict[str, Any], timeout: float = 0.5) -> dict[str, Any] | None:
    """One protocol request on a fresh DEALER socket: the reply, or None after ``timeout``."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"tcp://{server}")
        sock.send_multipart([b"", msgpack.packb({**body, "id": 1}, use_bin_type=True)])
        if sock.poll(timeout * 1000):
            reply = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
            return reply if isinstance(reply, dict) else None
        return None
    finally:
        sock.close(linger=0)
        ctx.term()


def ping(server: str, timeout: float = 0.5) -> bool:
    """True when ``server`` answers a protocol ``ping`` within ``timeout`` seconds."""
    reply = call(server, {"op": "ping"}, timeout)
    return bool(reply and reply.get("ok"))


class SingleNode:
    """One real seda-dynamo node (n = r = w = 1) in its own session, for benchmarks: a
    ``seda_dynamo.launcher.NodeProcess`` on free ports below the ephemeral range.

    ``extra`` are more ``seda-dynamo serve`` arguments, e.g. ``("--latency-target-ms",
    "20")``; given after the defaults, they override them.
    """

    def __init__(self, data_dir: str, engine: str = "bdb", durability: str = "fsync",
                 node_id: str = "bench1", extra: Sequence[str] = ()) -> None:
        base = free_base_port(1)
        self.port, self.peer_port = base, base + 100
        self.log_path = os.path.join(data_dir, "node.log")
        self.process = NodeProcess(
            node_id, f"127.0.0.1:{self.port}", f"127.0.0.1:{self.peer_port}",
            os.path.join(data_dir, "data"), self.log_path,
            ["--engine", engine, "--durability", durability, "--n", "1", "--r", "1",
             "--w", "1", *extra], cwd=REPO_ROOT).spawn()

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.process.proc is not None
        return self.process.proc

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = NODE_READY_TIMEOUT) -> None:
        """Until the node serves (``NodeProcess.wait_ready``) and then accepts one
        ``put`` (fail fast if not)."""
        try:
            self.process.wait_ready(timeout)
        except NotReady as exc:
            raise RuntimeError(f"node not ready: {exc}\n{self.log()}") from None
        answered = call(self.server, {"op": "put", "key": b"bench-probe", "value": b"x"}, 2.0)
        if not (answered and answered.get("ok")):
            raise RuntimeError(f"node not ready: its probe put got {answered}\n{self.log()}")

    def log(self, tail: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-tail:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the supervisor, then SIGKILL whatever of the node is left after 10 s."""
        self.process.stop(NODE_STOP_GRACE)

    @contextlib.contextmanager
    def cpus_apart(self) -> Iterator[bool]:
        """While inside: the node's processes on the first CPU, this process (and the
        load-generator processes it starts) on the others; True if it could. On a small
        machine the load generator otherwise takes CPU from the node exactly when it
        offers the most, so an overload run would measure the two fighting."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            yield False
            return
        try:
            root = psutil.Process(self.process.pid)
            procs = [root, *root.children(recursive=True)]
            was = {p.pid: p.cpu_affinity() for p in procs}
            for p in procs:
                p.cpu_affinity(cpus[:1])
        except psutil.Error:
            yield False
            return
        os.sched_setaffinity(0, set(cpus[1:]))
        try:
            yield True
        finally:
            os.sched_setaffinity(0, set(cpus))
            for p in procs:
                try:
                    p.cpu_affinity(was[p.pid])
                except psutil.Error:
                    pass

    def __enter__(self) -> SingleNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cluster_servers(members: list[dict[str, Any]]) -> str:
    """``"host:a,host:b,..."``: the client endpoints of ``local_cluster``'s members."""
    return ",".join(m["client"] for m in members)


def start_node(data_dir: str, **kwargs: Any) -> SingleNode:
    """Start a node and wait until it answers ``ping``; stop it on any failure.

    ``kwargs`` are ``SingleNode``'s: ``engine``, ``durability``, ``node_id``, ``extra``.
    """
    node = SingleNode(data_dir, **kwargs)
    try:
        node.wait_ready()
    except BaseException:
        node.stop()
        raise
    return node
