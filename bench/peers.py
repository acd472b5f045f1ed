"""Peers to benchmark seda-dynamo against, on loopback: a Redis server and an etcd cluster.

``redis_server()`` and ``etcd_cluster(members=3)`` are context managers that start the
Debian packages' binaries (``redis-server``, ``etcd`` from ``etcd-server``) on free
127.0.0.1 ports in a fresh temp dir, wait until they serve, and on exit stop every
process they started by pid (SIGTERM, then SIGKILL after ``STOP_GRACE`` seconds) and
remove the dir -- also when the body raises. A missing binary raises ``MissingBinary``,
which names the Debian package to install (``make bench`` installs both).

What they yield is what ``seda_dynamo.loadgen`` takes as a target::

    with redis_server() as url:                  # "redis://127.0.0.1:PORT"
        run_mix(url, 1000)
    with etcd_cluster(3) as urls:                # ["http://127.0.0.1:PORT", ...]
        run_mix(urls.target, 1000)               # "etcd://127.0.0.1:P1,P2,P3"

Both also carry ``pids`` (the processes started) and ``data_dir``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from seda_dynamo.ports import free_port

READY_TIMEOUT = 30.0
STOP_GRACE = 10.0
PACKAGES = {"redis-server": "redis-server", "etcd": "etcd-server"}


class MissingBinary(RuntimeError):
    """A peer's binary is not installed; ``package`` is the Debian package that has it."""

    def __init__(self, binary: str) -> None:
        self.binary, self.package = binary, PACKAGES[binary]
        super().__init__(f"{binary} not found: install the Debian package {self.package} "
                         f"(apt-get install -y {self.package}, or make bench)")


class RedisURL(str):
    """``redis://127.0.0.1:PORT``, with ``pids``, ``port`` and ``data_dir``."""

    pids: list[int]
    port: int
    data_dir: str

    @property
    def target(self) -> str:
        return str(self)


class EtcdURLs(list[str]):
    """The members' client URLs (``http://127.0.0.1:PORT``), with ``target`` (the
    load generator's ``etcd://127.0.0.1:P1,P2,...``), ``pids`` and ``data_dir``."""

    pids: list[int]
    data_dir: str

    @property
    def target(self) -> str:
        return "etcd://127.0.0.1:" + ",".join(u.rsplit(":", 1)[1] for u in self)


def binary(name: str) -> str:
    """The path of ``name``, or MissingBinary naming its Debian package."""
    path = shutil.which(name)
    if path is None:
        raise MissingBinary(name)
    return path


def _spawn(cmd: list[str], log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def stop(procs: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE) -> None:
    """SIGTERM each process (and any child it forked), SIGKILL what is left after
    ``grace`` seconds, and reap them: all by pid."""
    children: list[psutil.Process] = []
    for proc in procs:
        try:
            children += psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for child in children:  # e.g. a redis child forked for a rewrite
        try:
            child.kill()
            child.wait(5)
        except psutil.Error:
            pass


def _wait_ready(procs: list[subprocess.Popen[bytes]], logs: list[str], probe,
                what: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"{what} (pid {proc.pid}) exited with {proc.returncode}:"
                                   f"\n{_tail(log)}")
        try:
            if probe():
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready in {timeout:.0f} s (last: {last!r}):\n"
                       + "\n".join(_tail(log) for log in logs))


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        return s.recv(64).startswith(b"+PONG")


@contextmanager
def redis_server(port: int | None = None) -> Iterator[RedisURL]:
    """A Redis server on 127.0.0.1 whose acknowledged writes are on disk.

    ``--appendonly yes --appendfsync always``: Redis appends every write to its log and
    fsyncs it before it replies (once per event-loop turn, so the writes of one turn
    share an fsync) -- like seda-dynamo's fsync group commit, an acknowledged write
    survives a crash. ``--save ""`` (no RDB snapshots) and no automatic log rewrite keep
    Redis from forking in the middle of a run. Yields ``redis://127.0.0.1:PORT``.
    """
    exe = binary("redis-server")
    data_dir = tempfile.mkdtemp(prefix="sd-peer-redis-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = port or free_port()
        log = os.path.join(data_dir, "redis.log")
        procs.append(_spawn([exe, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                             "--auto-aof-rewrite-percentage", "0", "--daemonize", "no",
                             "--dir", data_dir], log))
        _wait_ready(procs, [log], lambda: _redis_ping(port), "redis-server")
        url = RedisURL(f"redis://127.0.0.1:{port}")
        url.pids, url.port, url.data_dir = [p.pid for p in procs], port, data_dir
        yield url
    finally:
        try:
            stop(procs)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


def _etcd_post(port: int, path: str, body: dict[str, object]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if response.status == 200 else {}
    finally:
        conn.close()


def _etcd_leader(ports: list[int]) -> int | None:
    """The index in ``ports`` of the member that leads, or None if that cannot be told."""
    ids = []
    try:
        for port in ports:
            status, reply = _etcd_post(port, "/v3/maintenance/status", {})
            if status != 200:
                return None
            ids.append((reply.get("header", {}).get("member_id"), reply.get("leader")))
    except (OSError, ValueError):
        return None
    leaders = {leader for _, leader in ids}
    return next((i for i, (member, _) in enumerate(ids) if {member} == leaders), None)


def _etcd_put(port: int) -> bool:
    """True when the member's JSON gateway acknowledges a put (a leader was elected)."""
    body = {"key": base64.b64encode(b"peers-probe").decode(),
            "value": base64.b64encode(b"1").decode()}
    return _etcd_post(port, "/v3/kv/put", body)[0] == 200


@contextmanager
def etcd_cluster(members: int = 3) -> Iterator[EtcdURLs]:
    """An etcd (3.4) cluster of ``members`` on 127.0.0.1, each member its own process.

    etcd fsyncs its raft log before it acknowledges a write (its own group commit).
    Yields the client URLs once every member acknowledged a put through its JSON gateway.
    The followers are stopped before the leader: a leader asked to stop first hands its
    leadership to a follower, and waits 7 s for it if that follower is stopping too.
    """
    if members < 1:
        raise ValueError("an etcd cluster needs at least one member")
    exe = binary("etcd")
    data_dir = tempfile.mkdtemp(prefix="sd-peer-etcd-")
    procs: list[subprocess.Popen[bytes]] = []
    client: list[int] = []
    try:
        ports = []
        while len(ports) < 2 * members:  # distinct even if the kernel hands one out twice
            port = free_port()
            if port not in ports:
                ports.append(port)
        client, peer = ports[:members], ports[members:]
        names = [f"m{i + 1}" for i in range(members)]
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer, strict=True))
        token = f"sd-bench-{os.getpid()}-{time.monotonic_ns()}"
        logs = []
        for name, c, p in zip(names, client, peer, strict=True):
            logs.append(os.path.join(data_dir, f"{name}.log"))
            procs.append(_spawn(
                [exe, "--name", name, "--data-dir", os.path.join(data_dir, name),
                 "--listen-client-urls", f"http://127.0.0.1:{c}",
                 "--advertise-client-urls", f"http://127.0.0.1:{c}",
                 "--listen-peer-urls", f"http://127.0.0.1:{p}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
                 "--initial-cluster", initial, "--initial-cluster-token", token,
                 "--initial-cluster-state", "new", "--logger", "zap",
                 "--log-outputs", "stderr"], logs[-1]))
        _wait_ready(procs, logs, lambda: all(_etcd_put(c) for c in client),
                    f"etcd cluster of {members}")
        urls = EtcdURLs(f"http://127.0.0.1:{c}" for c in client)
        urls.pids, urls.data_dir = [p.pid for p in procs], data_dir
        yield urls
    finally:
        try:
            leader = _etcd_leader(client) if len(procs) == len(client) > 1 else None
            if leader is not None:
                stop(procs[:leader] + procs[leader + 1:])
            stop(procs)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
