"""The load generator behind ``seda-dynamo bench``: throughput and latency percentiles.

It measures what the Dynamo paper reports in section 6 (average and 99.9th percentile
latency of reads and writes, Figures 4 and 6): a ``put`` phase over keys ``k{i % keys}``
with random values, then a ``get`` phase over the same keys, each summarised as ops/s and
p50 / p99 / p99.9 / max latency from an HdrHistogram (microsecond resolution).

Two drivers share one loop over one ZeroMQ DEALER socket per server per client process:

* closed loop (``rate=None``): exactly ``concurrency`` requests in flight; a reply lets
  the next request go. Latency is measured from the moment a request is sent.
* open loop (``rate=ops_per_sec``): requests are due on a fixed schedule and latency is
  measured from the *scheduled* time, so a server that stalls is charged for the requests
  it delayed (no coordinated omission). At most ``concurrency`` are in flight; a request
  that is due while that limit is reached waits and is counted as ``backlogged``.

Both are bounded by ``ops`` and by ``max_seconds`` of wall clock, after which nothing new
is sent and the requests in flight are drained (each waits at most ``timeout`` seconds;
one that gets no reply counts as the error ``no_reply``). With ``processes > 1`` that
many client processes share the load and their histograms are merged.

Several servers (a list, or ``"host:a,host:b"``) share the load of one phase; the
in-flight limit is the total over all of them. ``routing`` says who gets a request:

* ``"round-robin"``: request ``i`` goes to server ``i % len(servers)``.
* ``"owner"``: the ring is fetched once (a ``ring`` request to the first server that
  answers) and each request goes to the first live node of its key's preference list,
  ``owners[md5(key) * Q >> 128]`` -- the client-driven coordination of the Dynamo paper,
  section 6.4, which saves the hop from a random node to a coordinator. The servers
  given are only the seeds: the traffic goes to the ring's client addresses.

``local_cluster()`` starts a throw-away loopback cluster for ``seda-dynamo bench
--cluster`` and ``bench/``, and always stops it and removes its directory.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgpack
import zmq
from hdrh.histogram import HdrHistogram

from seda_dynamo.ring import partition_of

PR_SET_PDEATHSIG = 1
LOWEST_US, HIGHEST_US, DIGITS = 1, 60_000_000, 3
PHASES = ("put", "get")
ROUTINGS = ("round-robin", "owner")
START_TIMEOUT = 30.0
RING_TIMEOUT = 2.0
CLUSTER_ARGS = ("--engine", "bdb", "--durability", "fsync", "--n", "3", "--r", "2", "--w", "2")


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask Linux to SIGTERM this process when its parent dies (as seda_dynamo.runtime)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def merge_histograms(encoded: list[bytes]) -> HdrHistogram:
    """One histogram holding every value of the encoded ones (``HdrHistogram.encode()``)."""
    merged = new_histogram()
    for blob in encoded:
        merged.add(HdrHistogram.decode(blob))
    return merged


def _endpoint(server: str) -> str:
    return server if "://" in server else f"tcp://{server}"


def server_list(server: str | Sequence[str]) -> list[str]:
    """``"a:1"``, ``"a:1,b:2"`` or ``["a:1", "b:2"]`` as a list of servers (at least one)."""
    items = server.split(",") if isinstance(server, str) else list(server)
    servers = [s.strip() for s in items if s and s.strip()]
    if not servers:
        raise ValueError("no server given")
    return servers


def _wait(socks: list[zmq.Socket], seconds: float) -> list[zmq.Socket]:
    """The sockets with a reply to read, waiting up to ``seconds`` for one (sub-ms).

    zmq_poll counts whole milliseconds, so this selects on the sockets' FDs. An FD only
    signals that the socket's state may have changed, so ZMQ_EVENTS is checked before
    and after the select (the documented edge-triggered pattern).
    """
    ready = [s for s in socks if s.getsockopt(zmq.EVENTS) & zmq.POLLIN]
    if ready or seconds <= 0:
        return ready
    select.select([s.getsockopt(zmq.FD) for s in socks], [], [], seconds)
    return [s for s in socks if s.getsockopt(zmq.EVENTS) & zmq.POLLIN]


def fetch_ring(servers: str | Sequence[str], timeout: float = RING_TIMEOUT) -> dict[str, Any]:
    """The ``ring`` reply of the first server that answers within ``timeout`` seconds."""
    tried = []
    for server in server_list(servers):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(_endpoint(server))
            sock.send_multipart([b"", msgpack.packb({"op": "ring", "id": 0})])
            deadline = time.monotonic() + timeout
            while sock.poll(max(0.0, deadline - time.monotonic()) * 1000):
                reply = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
                if isinstance(reply, dict) and reply.get("id") == 0:
                    if reply.get("ok"):
                        return reply
                    tried.append(f"{server}: {reply.get('error')}: {reply.get('message')}")
                    break
            else:
                tried.append(f"{server}: no reply in {timeout:.1f} s")
        finally:
            sock.close(linger=0)
            ctx.term()
    raise RuntimeError("no ring to route by: " + "; ".join(tried))


def owner_routes(ring: dict[str, Any], seed: str) -> tuple[list[str], list[int]]:
    """``(targets, route)``: the live nodes' client addresses, and for each partition the
    index in ``targets`` of the first live node of its preference list (``seed`` when
    none of them is up)."""
    q, owners = ring.get("partitions"), ring.get("owners")
    if not isinstance(q, int) or q < 1 or not isinstance(owners, list) or len(owners) != q:
        raise RuntimeError(f"a malformed ring: partitions={q!r}, "
                           f"{len(owners) if isinstance(owners, list) else owners!r} owners")
    clients = {n["id"]: n["client"] for n in ring.get("nodes", []) if n.get("status") == "up"}
    targets: list[str] = []
    index: dict[str, int] = {}

    def slot(address: str) -> int:
        if address not in index:
            index[address] = len(targets)
            targets.append(address)
        return index[address]

    route = []
    for prefs in owners:
        live = next((clients[node] for node in prefs if node in clients), None)
        route.append(slot(live if live is not None else seed))
    return targets, route


def _drive(servers: list[str], route: list[int] | None, op: str, first: int, ops: int,
           concurrency: int, value_size: int, keys: int, rate: float | None,
           max_seconds: float, timeout: float) -> dict[str, Any]:
    """Run ``ops`` requests (global indices ``first..first+ops-1``), one DEALER per server.

    Request ``i`` goes to ``servers[i % len(servers)]``, or with a ``route`` (one server
    index per partition) to ``servers[route[partition_of(key, len(route))]]``.
    """
    hist = new_histogram()
    errors: dict[str, int] = {}
    pad = 4096
    blob = os.urandom(value_size + pad)
    # id -> (latency start, send time) in ns; the start is the scheduled time in open loop
    pending: dict[int, tuple[int, int]] = {}
    sent = n_ok = backlogged = 0
    timeout_ns = int(timeout * 1e9)
    interval_ns = int(1e9 / rate) if rate else 0
    per_server = [0] * len(servers)
    q = len(route) if route else 0
    ctx = zmq.Context()
    socks: list[zmq.Socket] = []
    try:
        for server in servers:
            sock = ctx.socket(zmq.DEALER)
            socks.append(sock)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.connect(_endpoint(server))
        t0 = last_reply = time.perf_counter_ns()
        stop_sending = t0 + int(max_seconds * 1e9)
        last_full = t0 - 1  # the last time a due request found no free slot
        while True:
            now = time.perf_counter_ns()
            sending = sent < ops and now < stop_sending
            if not sending and not pending:
                break
            while sending and sent < ops:
                due = t0 + sent * interval_ns
                if rate and due > now:
                    break
                if len(pending) >= concurrency:
                    last_full = now
                    break
                i = first + sent
                key = b"k%d" % (i % keys)
                target = route[partition_of(key, q)] if route else i % len(socks)
                body: dict[str, Any] = {"op": op, "id": i, "key": key}
                if op == "put":
                    body["value"] = blob[i % pad:i % pad + value_size]
                socks[target].send_multipart([b"", msgpack.packb(body, use_bin_type=True)],
                                             copy=False)
                per_server[target] += 1
                send_ns = time.perf_counter_ns()
                pending[i] = (due if rate else send_ns, send_ns)
                backlogged += bool(rate) and due <= last_full
                sent += 1
            # Sleep until a reply, the next scheduled send or the oldest request's deadline.
            wake = now + 100_000_000
            if pending:
                wake = min(wake, next(iter(pending.values()))[1] + timeout_ns)
            if rate and sending and sent < ops and len(pending) < concurrency:
                wake = min(wake, t0 + sent * interval_ns)
            for sock in _wait(socks, max(0, wake - time.perf_counter_ns()) / 1e9):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    end = time.perf_counter_ns()
                    reply = msgpack.unpackb(frames[-1], raw=False)
                    if not isinstance(reply, dict):
                        continue
                    started = pending.pop(reply.get("id"), None)
                    if started is None:
                        continue  # a late reply to a request already counted as no_reply
                    last_reply = end
                    if reply.get("ok"):
                        n_ok += 1
                        us = (end - started[0]) // 1000
                        hist.record_value(min(max(us, LOWEST_US), HIGHEST_US))
                    else:
                        code = str(reply.get("error", "internal"))
                        errors[code] = errors.get(code, 0) + 1
            now = time.perf_counter_ns()
            while pending:  # the dict is in send order: expire from the oldest
                rid, (_, send_ns) = next(iter(pending.items()))
                if now - send_ns < timeout_ns:
                    break
                del pending[rid]
                errors["no_reply"] = errors.get("no_reply", 0) + 1
        end_ns = last_reply if last_reply > t0 else time.perf_counter_ns()
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.term()
    return {"hist": hist.encode(), "ok": n_ok, "errors": errors, "sent": sent,
            "per_server": per_server, "backlogged": backlogged, "t0": t0,
            "end": max(end_ns, t0 + 1)}


def _child_main(argv: list[str]) -> int:
    """``python -m seda_dynamo.loadgen --child PARENT_PID ARGS_JSON``: one client process.

    Says ``ready`` on stdout, waits for ``go`` on stdin (so all start together), runs its
    share and writes its msgpack-encoded part of the result to stdout.
    """
    die_with_parent(int(argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = json.loads(argv[2])
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()
    if sys.stdin.buffer.readline().strip() != b"go":
        return 1
    sys.stdout.buffer.write(msgpack.packb(_drive(*args), use_bin_type=True))
    sys.stdout.buffer.flush()
    return 0


def _split(total: int, parts: int, index: int) -> tuple[int, int]:
    """The (first, count) share of ``total`` for part ``index`` of ``parts``."""
    base, extra = divmod(total, parts)
    return index * base + min(index, extra), base + (index < extra)


def _run_processes(args: list[tuple[Any, ...]], max_seconds: float,
                   timeout: float) -> list[dict[str, Any]]:
    """Run each share in its own client process; they die with this one (PDEATHSIG)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for a in args:
            cmd = [sys.executable, "-m", "seda_dynamo.loadgen", "--child", str(os.getpid()),
                   json.dumps(a)]
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          env=env))
        deadline = time.monotonic() + START_TIMEOUT
        for proc in procs:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            if not ready or proc.stdout.readline() != b"ready\n":
                raise RuntimeError(f"load generator pid {proc.pid} did not start")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        parts = []
        limit = time.monotonic() + max_seconds + timeout + 10.0
        for proc in procs:
            out, _ = proc.communicate(timeout=max(0.1, limit - time.monotonic()))
            if proc.returncode != 0 or not out:
                raise RuntimeError(f"load generator pid {proc.pid} failed "
                                   f"(exit code {proc.returncode})")
            parts.append(msgpack.unpackb(out, raw=False, strict_map_key=False))
        return parts
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


def run_phase(server: str | Sequence[str], op: str, ops: int, concurrency: int = 64,
              value_size: int = 100, keys: int = 10_000, processes: int = 1,
              max_seconds: float = 60.0, rate: float | None = None, timeout: float = 5.0,
              routing: str = "round-robin", ring: dict[str, Any] | None = None,
              first_key: int = 0) -> dict[str, Any]:
    """Run one phase (``put`` or ``get``) and return its result dict (see ``run_phases``).

    ``server`` is one server, a list or a comma-separated string; ``routing`` is
    ``"round-robin"`` or ``"owner"`` (which uses ``ring``, a ``ring`` reply, or fetches
    one from the servers). Request ``i`` uses key ``k{(first_key + i) % keys}``.
    """
    if op not in PHASES:
        raise ValueError(f"unknown phase {op!r}; expected one of {', '.join(PHASES)}")
    if routing not in ROUTINGS:
        raise ValueError(f"unknown routing {routing!r}; expected one of {', '.join(ROUTINGS)}")
    if ops < 1 or concurrency < 1 or keys < 1 or value_size < 0 or processes < 1:
        raise ValueError("ops, concurrency, keys, processes must be >= 1, value_size >= 0")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 ops/s")
    servers = server_list(server)
    route: list[int] | None = None
    if routing == "owner":
        targets, route = owner_routes(ring or fetch_ring(servers), servers[0])
    else:
        targets = servers
    processes = min(processes, concurrency, ops)
    args = []
    for p in range(processes):
        first, count = _split(ops, processes, p)
        c = _split(concurrency, processes, p)[1]
        args.append((targets, route, op, first_key + first, count, c, value_size, keys,
                     rate / processes if rate else None, max_seconds, timeout))
    if processes == 1:
        parts = [_drive(*args[0])]
    else:
        parts = _run_processes(args, max_seconds, timeout)
    hist = merge_histograms([p["hist"] for p in parts])
    errors: dict[str, int] = {}
    for part in parts:
        for code, n in part["errors"].items():
            errors[code] = errors.get(code, 0) + n
    n_ok = sum(p["ok"] for p in parts)
    # perf_counter is CLOCK_MONOTONIC on Linux: comparable across the client processes
    seconds = (max(p["end"] for p in parts) - min(p["t0"] for p in parts)) / 1e9

    def ms(percentile: float) -> float:
        return round(hist.get_value_at_percentile(percentile) / 1000.0, 3) if n_ok else 0.0

    return {"phase": op, "ops": n_ok, "errors": errors, "seconds": round(seconds, 6),
            "ops_per_sec": round(n_ok / seconds, 1), "p50_ms": ms(50.0), "p99_ms": ms(99.0),
            "p999_ms": ms(99.9),
            "max_ms": round(hist.get_max_value() / 1000.0, 3) if n_ok else 0.0,
            "concurrency": concurrency, "processes": processes, "rate": rate,
            "sent": sum(p["sent"] for p in parts),
            "backlogged": sum(p["backlogged"] for p in parts),
            "servers": len(targets), "routing": routing,
            "per_server": {t: sum(p["per_server"][j] for p in parts)
                           for j, t in enumerate(targets)}}


def run_phases(server: str | Sequence[str], ops: int, concurrency: int = 64,
               value_size: int = 100, keys: int = 10_000, processes: int = 1,
               max_seconds: float = 60.0, rate: float | None = None, timeout: float = 5.0,
               routing: str = "round-robin") -> list[dict[str, Any]]:
    """A ``put`` phase then a ``get`` phase over the same keys.

    Each result: ``{"phase", "ops" (successful), "errors" ({code: n}, with "no_reply"),
    "seconds", "ops_per_sec", "p50_ms", "p99_ms", "p999_ms", "max_ms", "concurrency"}``
    plus ``processes``, ``rate``, ``sent``, ``backlogged``, ``servers`` (how many got
    traffic), ``routing`` and ``per_server`` (requests sent to each). With owner routing
    the ring is fetched once, before the put phase.
    """
    ring = fetch_ring(server) if routing == "owner" else None
    return [run_phase(server, op, ops, concurrency, value_size, keys, processes, max_seconds,
                      rate, timeout, routing, ring) for op in PHASES]


# A throw-away local cluster --------------------------------------------------------------
def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_base_port(nodes: int, low: int = 10_000, high: int = 32_000,
                   attempts: int = 200) -> int:
    """A base port whose cluster ports (``base..``, peers ``base+100..``) are all free.

    Drawn at random below the kernel's ephemeral range (32768..), so that clients'
    outgoing connections do not take them while the cluster starts.
    """
    if not 1 <= nodes <= 100:
        raise ValueError("nodes must be in 1..100")
    for _ in range(attempts):
        base = random.randrange(low, high - 100 - nodes)
        ports = [*range(base, base + nodes), *range(base + 100, base + 100 + nodes)]
        if all(_port_free(p) for p in ports):
            return base
    raise RuntimeError(f"no free range of ports for {nodes} nodes in {low}..{high}")


def _log_tails(data_dir: str, lines: int = 15) -> str:
    out = []
    for name in sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []:
        if name.endswith(".log"):
            with open(os.path.join(data_dir, name), errors="replace") as f:
                out.append(f"--- {name}\n" + "".join(f.readlines()[-lines:]))
    return "\n".join(out)


@contextmanager
def local_cluster(nodes: int = 3, extra: Sequence[str] = CLUSTER_ARGS,
                  base_port: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """A loopback cluster in a fresh temp dir (``localcluster.start``), for benchmarks.

    Yields the members (``id``, ``client``, ``peer``, ``pid``, ...) once every node serves
    the same ring; always stops the nodes by pid and removes the directory on exit.
    """
    from seda_dynamo import localcluster

    data_dir = tempfile.mkdtemp(prefix="sd-bench-cluster-")
    try:
        base = base_port if base_port is not None else free_base_port(nodes)
        try:
            with warnings.catch_warnings():
                # start() keeps pids, not Popen objects: each one dropped while its node
                # runs warns "subprocess is still running"; stop() reaps them by pid.
                warnings.simplefilter("ignore", ResourceWarning)
                members = localcluster.start(data_dir, nodes, base, list(extra))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{_log_tails(data_dir)}") from exc
        yield members
    finally:
        try:
            localcluster.stop(data_dir)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


def format_result(d: dict[str, Any]) -> str:
    """One human line, e.g. ``put  20000 ok in 2.1 s  9500 ops/s  p50 6.1 ms ...``."""
    line = (f"{d['phase']:<4} {d['ops']:>7} ok in {d['seconds']:.2f} s "
            f"{d['ops_per_sec']:>9.0f} ops/s  p50 {d['p50_ms']:.2f} ms  "
            f"p99 {d['p99_ms']:.2f} ms  p99.9 {d['p999_ms']:.2f} ms  max {d['max_ms']:.2f} ms"
            f"  ({d['concurrency']} in flight")
    if d.get("rate"):
        line += f", {d['rate']:.0f}/s scheduled, {d.get('backlogged', 0)} backlogged"
    if d.get("servers", 1) > 1:
        line += f", {d['servers']} servers, {d.get('routing', 'round-robin')}"
    line += ")"
    if d.get("errors"):
        line += "  errors: " + ", ".join(f"{k}={v}" for k, v in sorted(d["errors"].items()))
    return line


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.exit(_child_main(sys.argv[1:]))
