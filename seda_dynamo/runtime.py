"""The stage runtime: the only code that moves a stage's events through ZeroMQ sockets.

Every stage process runs ``python -m seda_dynamo.runtime STAGE NODE_JSON``: bind the
stage's inbound PULL queue, drain whatever has arrived into one batch, hand the batch to
the stage's pure handler, and send what it emitted on as one message per destination
(SEDA, Welsh et al. 2001; every hop costs a serialization and an IPC, so batch).
The runtime keeps the counters, reports them to the network stage once a second, and
exits by itself when its supervisor dies.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import logging.handlers
import math
import os
import signal
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import msgpack
import psutil
import zmq

from seda_dynamo import address, peerprotocol, security
from seda_dynamo.background import percentile
from seda_dynamo.config import NodeConfig
from seda_dynamo.controllers import BatchController, QueueDelay, should_grow
from seda_dynamo.messagetable import shard_index
from seda_dynamo.stage import (
    PEER_PREFIX,
    Stage,
    is_stage,
    spec,
    stage_of,
    worker_name,
)
from seda_dynamo.stage import workers as stage_workers

PR_SET_PDEATHSIG = 1
STATS_INTERVAL = 1.0
BLOCK_SEND_MS = 1000
STATS_SINK = "network"
GC_THRESHOLD = 50_000
PEER_HWM = 10_000
PROFILE_ENV = "SEDA_PROFILE_DIR"  # set: each stage writes cProfile stats there on exit
TRACEMALLOC_ENV = "SEDA_TRACEMALLOC_DIR"  # set: each stage writes a heap snapshot a minute
PRESSURE_EVERY = 0.05  # seconds between queue-delay reports to admission control
WORKERS_FILE = "workers.json"  # stage -> worker processes running, kept by the supervisor
WORKERS_CHECK = 0.5  # seconds between looks at it
GROW_WINDOW = 5.0  # seconds of load over which a stage judges whether it needs a worker
SERVICE_SAMPLES = 4096  # batch service times kept per report for its p50/p99
TRIM_EVERY = 30.0  # seconds between handing freed heap pages back to the OS (malloc_trim)
# Sockets to other nodes: peer addresses arrive from the network (gossip, the address a
# peer asks its reply at), so the DEALERs are bounded: one unused this long is closed
# (a live member is pinged twice a second), and past this many the least recently used.
PEER_IDLE = 60.0
MAX_PEER_SOCKETS = 512
BAD_LOG_EVERY = 60.0  # seconds between log lines about one destination that cannot be used


def endpoint(run_dir: str, stage: str) -> str:
    """The ``ipc://`` address of a stage's inbound queue (paths stay under ~100 bytes)."""
    return f"ipc://{run_dir}/{stage}.q"


def read_workers(run_dir: str) -> dict[str, int]:
    """How many worker processes each stage runs now (the supervisor writes it)."""
    try:
        with open(os.path.join(run_dir, WORKERS_FILE), "rb") as fh:
            raw = msgpack.unpackb(fh.read(), raw=False)
        return {str(k): int(v) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def write_workers(run_dir: str, workers: dict[str, int]) -> None:
    path = os.path.join(run_dir, WORKERS_FILE)
    with open(path + ".tmp", "wb") as fh:
        fh.write(msgpack.packb(workers))
    os.replace(path + ".tmp", path)


def shard(key: Any, workers: int) -> int:
    """The worker of ``workers`` that handles ``key`` (the same in every process)."""
    return zlib.crc32(key) % workers if isinstance(key, bytes) else 0


_SEND_MORE = zmq.SNDMORE | zmq.NOBLOCK


def send_parts(sock: zmq.Socket, parts: list[bytes]) -> None:
    """``send_multipart`` without its per-call checks: a third of its cost, and the
    network stage sends one message per client reply (bench/NOTES.md)."""
    send = sock.send
    for part in parts[:-1]:
        send(part, _SEND_MORE)
    send(parts[-1], zmq.NOBLOCK)


def setup_logging(config: NodeConfig, stage: str) -> None:
    """One line per event, naming the node and the stage, to stderr or ``log_file``
    (every process of the node appends whole lines to the same file)."""
    fmt = f"%(asctime)s %(levelname)s [{config.node_id} {stage}] %(name)s: %(message)s"
    if config.log_file:
        Path(config.log_file).parent.mkdir(parents=True, exist_ok=True)
        # Reopened when logrotate moves the file away, so rotation needs no restart.
        handler: logging.Handler = logging.handlers.WatchedFileHandler(config.log_file,
                                                                        encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.log_level.upper())


def _libc_trim() -> Any:
    """glibc's ``malloc_trim``, or None elsewhere. A stage frees and reallocates message
    buffers all day; without a trim now and then, freed pages in the middle of the heap
    stay in the process and its RSS creeps up although its live data does not."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the supervisor dies (also checked by polling)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class FrameCaller:
    """The connection a message came on, read from its first frame's ZeroMQ properties
    when the handler asks (``protocol.Caller``): ``Peer-Address``, the remote IP, and
    ``User-Id``, the Z85 public key the ZAP handler let in (CURVE only)."""

    __slots__ = ("_frame",)

    def __init__(self, frame: zmq.Frame) -> None:
        self._frame = frame

    def _get(self, name: str) -> str | None:
        try:
            value = self._frame.get(name)
        except zmq.ZMQError:  # not set on this connection (no CURVE, not TCP)
            return None
        return value if isinstance(value, str) else None

    @property
    def address(self) -> str | None:
        return self._get("Peer-Address")

    @property
    def user_id(self) -> str | None:
        return self._get("User-Id")


class Runtime:
    """Runs one stage handler in this process until SIGTERM or the supervisor's death."""

    def __init__(self, handler: Stage, config: NodeConfig, run_dir: str) -> None:
        self.handler = handler
        self.config = config
        self.run_dir = run_dir
        self.spec = spec(handler.name)
        self.ctx = zmq.Context()
        self.stopping = False
        self.parent = os.getppid()
        self.inbound = self.ctx.socket(zmq.PULL)
        self.inbound.setsockopt(zmq.RCVHWM, self.spec.queue_hwm)
        self.inbound.setsockopt(zmq.LINGER, 0)
        self.inbound.bind(endpoint(run_dir, handler.name))
        self.outbound: dict[str, zmq.Socket] = {}
        self.peer_used: dict[str, float] = {}  # peer destination -> when last sent to
        self.bad_logged: dict[str, float] = {}  # bad destination -> when last logged
        self.ports: dict[str, zmq.Socket] = {}
        self.peer_max_bytes = peerprotocol.max_message_bytes(
            config.max_key_bytes, config.max_record_bytes)
        self.auth = None
        self.curve_server: security.KeyPair | None = None
        self.curve_node: security.KeyPair | None = None
        if config.curve_server_key:  # validated at start-up: the files are there
            self.curve_server = security.load(config.curve_server_key, True,
                                              "curve_server_key")
            self.curve_node = security.load(config.curve_node_key, True, "curve_node_key")
        ports = handler.ports()
        if any(port.curve for port in ports):  # the ZAP handler first, or all get in
            self.auth = security.start_authenticator(self.ctx, {
                security.CLIENT_DOMAIN: config.curve_client_keys,
                security.PEER_DOMAIN: config.curve_peer_keys})
        for port in ports:
            if port.kind == "stream":  # raw TCP (the metrics listener's HTTP)
                sock = self.ctx.socket(zmq.STREAM)
                sock.setsockopt(zmq.LINGER, 0)
            else:
                sock = self.ctx.socket(zmq.ROUTER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
                sock.setsockopt(zmq.SNDHWM, 100_000)
                sock.setsockopt(zmq.RCVHWM, 100_000)
                if port.max_msg_bytes > 0:
                    sock.setsockopt(zmq.MAXMSGSIZE, port.max_msg_bytes)
                if port.name == "peer":  # what we send a peer fits what its port takes
                    self.peer_max_bytes = port.max_msg_bytes
                if port.curve:
                    assert self.curve_server is not None
                    security.serve(sock, self.curve_server, port.curve)
            if port.bind.startswith("tcp://["):  # an IPv6 literal (libzmq: off by default)
                sock.setsockopt(zmq.IPV6, 1)
            sock.bind(port.bind)
            self.ports[port.name] = sock
        self.poller = zmq.Poller()
        self.poller.register(self.inbound, zmq.POLLIN)
        self.port_by_socket = {sock: name for name, sock in self.ports.items()}
        self.with_callers = {port.name for port in ports if port.callers}
        for sock in self.ports.values():
            self.poller.register(sock, zmq.POLLIN)
        self.proc = psutil.Process()
        self.proc.cpu_percent()
        self.counters: dict[str, Any] = {
            "processed": 0, "batches": 0, "dropped": 0, "sent": 0, "queue_depth": 0,
            "batch_size": 0.0, "service_time_ms": 0.0, "pid": os.getpid(),
            "started": time.time(), "batch_limit": 0, "queue_delay_ms": 0.0,
            "queue_delay_max_ms": 0.0, "service_p50_ms": 0.0, "service_p99_ms": 0.0,
            "bad_destinations": 0, "peer_sockets": 0,
        }
        self.service_times: list[float] = []  # of the batches handled since the last report
        self.batch = BatchController(self.spec.batch_target, high=max(config.batch_max * 8, 16),
                                     limit=min(256, config.batch_max * 8))
        self.counters["batch_limit"] = self.batch.limit
        self.delay = QueueDelay()
        self.high_water = config.overload_delay_ms / 1000.0 if self.spec.foreground else 0.0
        self.pressure_at = 0.0
        self.pressed = False
        self.workers = read_workers(run_dir)
        self.workers_checked = time.monotonic()
        self.busy = 0.0  # seconds spent handling batches since busy_since
        self.busy_since = time.monotonic()
        self.grow_asked = -math.inf
        self.max_workers = stage_workers(config, stage_of(handler.name))[1]
        self.trim = _libc_trim()
        self.trimmed_at = time.monotonic()
        psutil.cpu_percent()  # the first call only starts the measurement

    # Sending ------------------------------------------------------------------------
    def _socket_to(self, dest: str) -> zmq.Socket | None:
        """The socket to ``dest``, made on first use; None for a node address that
        cannot be connected to (its events are undeliverable, as a dead node's are)."""
        sock = self.outbound.get(dest)
        if sock is None:
            if dest.startswith(PEER_PREFIX):
                return self._peer_socket(dest)
            else:
                sock = self.ctx.socket(zmq.PUSH)
                sock.setsockopt(zmq.SNDHWM, spec(dest).queue_hwm)
                sock.setsockopt(zmq.LINGER, 2000)
                sock.connect(endpoint(self.run_dir, dest))
            self.outbound[dest] = sock
        return sock

    def _peer_socket(self, dest: str) -> zmq.Socket | None:
        """A new DEALER to another node, which queues only on a live connection, so
        events for a dead node are dropped at once instead of piling up."""
        peer = dest.removeprefix(PEER_PREFIX)
        try:
            address.check(peer, "peer")
        except address.AddressError as exc:
            self._bad_destination(dest, str(exc))
            return None
        if len(self.peer_used) >= MAX_PEER_SOCKETS:
            self._close_peer(min(self.peer_used, key=self.peer_used.__getitem__))
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.SNDHWM, PEER_HWM)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        if peer.startswith("["):  # an IPv6 literal: libzmq connects over IPv4 unless told
            sock.setsockopt(zmq.IPV6, 1)
        if self.curve_node is not None and self.curve_server is not None:
            security.connect_as(sock, self.curve_node, self.curve_server.public)
        try:
            sock.connect(address.endpoint(peer))
        except zmq.ZMQError as exc:  # what libzmq refuses that the address check took
            sock.close(linger=0)
            self._bad_destination(dest, str(exc))
            return None
        self.outbound[dest] = sock
        self.peer_used[dest] = time.monotonic()
        self.counters["peer_sockets"] = len(self.peer_used)
        return sock

    def _bad_destination(self, dest: str, why: str) -> None:
        self.counters["bad_destinations"] += 1
        now = time.monotonic()
        if now - self.bad_logged.get(dest, -math.inf) >= BAD_LOG_EVERY:
            if len(self.bad_logged) >= MAX_PEER_SOCKETS:
                self.bad_logged.clear()
            self.bad_logged[dest] = now
            self.handler.log.warning("cannot send to %r (%s): its events are undeliverable",
                                     dest, why)

    def _close_peer(self, dest: str) -> None:
        sock = self.outbound.pop(dest, None)
        self.peer_used.pop(dest, None)
        if sock is not None:
            sock.close(linger=0)
        self.counters["peer_sockets"] = len(self.peer_used)

    def close_idle_peers(self, now: float) -> None:
        """Close the sockets to nodes nothing was sent to for ``PEER_IDLE`` seconds (a
        member that left, a peer's one-off reply address); made again when needed."""
        for dest in [d for d, used in self.peer_used.items() if now - used > PEER_IDLE]:
            self._close_peer(dest)

    def flush(self) -> None:
        out = self.handler.take_outbox()
        if not out:
            return
        batches: dict[str, list[Any]] = {}
        for dest, event in out:
            port = self.ports.get(dest)
            if port is not None:
                try:
                    send_parts(port, event)
                except zmq.ZMQError:
                    self.counters["dropped"] += 1
                continue
            batches.setdefault(dest, []).append(event)
        for dest, events in list(batches.items()):
            count = self.workers.get(dest, 1)
            if count > 1:
                del batches[dest]
                for event in events:
                    at = shard_index(event[0])  # None: not sharded, to worker 0
                    key = event[at] if at is not None and len(event) > at else None
                    batches.setdefault(worker_name(dest, shard(key, count)), []).append(event)
        for dest, events in batches.items():
            if dest == self.handler.name:
                self.handler.handle_events(events, time.monotonic())
                continue
            if not is_stage(dest) and not dest.startswith(PEER_PREFIX):
                self.handler.log.error("emit to unknown destination %r dropped", dest)
                self.counters["dropped"] += len(events)
                continue
            try:
                # To another node: the events (docs/peer-protocol.md), in messages no
                # larger than its peer port takes. To a stage of ours: with the time
                # sent, for the receiver's queue delay.
                if dest.startswith(PEER_PREFIX):
                    frames, oversize = peerprotocol.pack_events(events, self.peer_max_bytes)
                else:
                    frames, oversize = [(msgpack.packb([time.monotonic(), events],
                                                       use_bin_type=True), events)], []
            except (TypeError, ValueError, OverflowError) as exc:  # a handler bug: log it
                self.handler.errors += 1
                self.counters["dropped"] += len(events)
                self.handler.log.error("events for %s cannot be encoded (%s): dropped", dest,
                                       exc)
                continue
            if oversize:
                self.handler.errors += len(oversize)
                self.counters["dropped"] += len(oversize)
                self.handler.log.error("%d events for %s exceed the peer message limit of %d "
                                       "bytes: not sent", len(oversize), dest,
                                       self.peer_max_bytes)
                self.handler.undeliverable(dest, oversize, time.monotonic())
            for frame, sent in frames:
                if not self._send(dest, frame, len(sent)):
                    self.handler.undeliverable(dest, sent, time.monotonic())
        if self.handler.outbox:
            self.flush()

    def _send(self, dest: str, frame: bytes, count: int) -> bool:
        """Queue one batch for ``dest``; False when it had to be dropped."""
        sock = self._socket_to(dest)
        if sock is None:
            self.counters["dropped"] += count
            return False
        if dest in self.peer_used:
            self.peer_used[dest] = time.monotonic()
        try:
            sock.send(frame, zmq.NOBLOCK, copy=len(frame) < 65536)
        except zmq.ZMQError as exc:
            if not isinstance(exc, zmq.Again) and not dest.startswith(PEER_PREFIX):
                raise
            if dest.startswith(PEER_PREFIX) or spec(dest).when_full != "block":
                self.counters["dropped"] += count
                return False
            if not sock.poll(BLOCK_SEND_MS, zmq.POLLOUT):
                self.handler.log.warning("queue of %s full for %d ms: %d events dropped",
                                         dest, BLOCK_SEND_MS, count)
                self.counters["dropped"] += count
                return False
            sock.send(frame, zmq.NOBLOCK, copy=False)
        self.counters["sent"] += count
        return True

    # Receiving ----------------------------------------------------------------------
    def _drain_inbound(self) -> tuple[list[Any], float | None, bool]:
        """Up to the batch controller's limit of events: (events, when the oldest was
        sent, whether the limit stopped us while more may wait)."""
        events: list[Any] = []
        oldest: float | None = None
        limit = self.batch.limit
        while len(events) < limit:
            try:
                frame = self.inbound.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return events, oldest, False
            try:
                sent_at, batch = msgpack.unpackb(frame, raw=False, use_list=True,
                                                 strict_map_key=False)
                sent_at = float(sent_at)
                if not isinstance(batch, list):
                    raise ValueError("a batch must be a list of events")
            except Exception:  # noqa: BLE001 - a torn frame must not stop the stage
                self.handler.log.exception("undecodable inbound frame dropped")
                self.handler.errors += 1
                continue
            if oldest is None or sent_at < oldest:
                oldest = sent_at
            events.extend(batch)
        return events, oldest, True

    def _drain_port(self, name: str, sock: zmq.Socket
                    ) -> tuple[list[list[bytes]], list[FrameCaller] | None]:
        """Up to ``batch_max`` messages, and for a port with ``callers`` the connection
        of each (its first frame kept uncopied: the properties are read only if asked)."""
        messages: list[list[bytes]] = []
        callers: list[FrameCaller] | None = [] if name in self.with_callers else None
        recv, more = sock.recv, sock.getsockopt
        for _ in range(self.config.batch_max):
            try:
                if callers is None:
                    parts = [recv(zmq.NOBLOCK)]
                else:
                    first = recv(zmq.NOBLOCK, copy=False)
                    parts = [first.bytes]
                    callers.append(FrameCaller(first))
            except zmq.Again:
                break
            while more(zmq.RCVMORE):  # the rest of a message is there once its first is
                parts.append(recv())
            messages.append(parts)
        return messages, callers

    # The loop -----------------------------------------------------------------------
    def _report(self) -> None:
        c = self.counters
        c["errors"] = self.handler.errors
        c["cpu_percent"] = self.proc.cpu_percent()
        c["rss_bytes"] = self.proc.memory_info().rss
        if self.service_times:
            c["service_p50_ms"] = round(1000.0 * percentile(self.service_times, 0.5), 3)
            c["service_p99_ms"] = round(1000.0 * percentile(self.service_times, 0.99), 3)
            self.service_times = []
        c.update(self.handler.gauges())
        self.handler.emit(STATS_SINK, ["stats", self.handler.name, dict(c)])
        c["queue_delay_max_ms"] = 0.0  # the worst wait since the last report

    def _account(self, count: int, started: float) -> float:
        c = self.counters
        c["processed"] += count
        c["batches"] += 1
        c["batch_size"] = 0.9 * c["batch_size"] + 0.1 * count
        elapsed = time.monotonic() - started
        c["service_time_ms"] = 0.9 * c["service_time_ms"] + 0.1 * elapsed * 1000.0
        if len(self.service_times) < SERVICE_SAMPLES:
            self.service_times.append(elapsed)
        self.busy += elapsed
        return elapsed

    def _maybe_grow(self, now: float) -> None:
        """Ask the supervisor for one more worker (a file naming the stage, then SIGUSR1)
        when ``controllers.should_grow`` says so for the last window."""
        window = now - self.busy_since
        if window < GROW_WINDOW:
            return
        busy, self.busy, self.busy_since = self.busy / window, 0.0, now
        self.counters["busy_percent"] = round(100.0 * busy, 1)
        stage = stage_of(self.handler.name)
        running = self.workers.get(stage, 1)
        idle = 100.0 - psutil.cpu_percent()
        if not should_grow(busy, self.delay.standing, running, self.max_workers, idle,
                           now - self.grow_asked):
            return
        self.grow_asked = now
        self.handler.log.warning("busy %.0f%% of the time with %.0f%% CPU idle: asking for "
                                 "worker %d", 100 * busy, idle, running + 1)
        Path(self.run_dir, f"grow.{stage}").touch()
        os.kill(self.parent, signal.SIGUSR1)

    def _queue(self, count: int, oldest: float | None, more: bool, elapsed: float,
               started: float) -> None:
        """Feed the batch controller and the queue delay; tell admission control when
        the delay passes the high-water mark (and once when it is back under)."""
        c = self.counters
        c["batch_limit"] = self.batch.observe(count, more, elapsed)
        if oldest is None:
            return
        delay = self.delay.observe(oldest, started)
        c["queue_delay_ms"] = round(self.delay.smoothed * 1000.0, 3)
        c["queue_delay_max_ms"] = max(c["queue_delay_max_ms"], round(delay * 1000.0, 3))
        # Drained: nothing waits. Else Little's law: the arrival rate times the wait.
        c["queue_depth"] = 0 if not more else max(count, int(
            delay * count / max(elapsed, 1e-6)))
        standing = self.delay.standing
        pressed = self.high_water > 0 and standing > self.high_water
        if pressed or self.pressed:
            if pressed != self.pressed or started - self.pressure_at >= PRESSURE_EVERY:
                self.pressed, self.pressure_at = pressed, started
                self.handler.emit(STATS_SINK, ["pressure", self.handler.name, standing])

    def run(self) -> None:
        h = self.handler
        now = time.monotonic()
        h.start(now)
        self.flush()
        next_tick = now + h.tick_interval
        next_report = now
        while not self.stopping:
            timeout = max(0.0, next_tick - time.monotonic())
            ready = dict(self.poller.poll(timeout * 1000.0))
            if self.inbound in ready:
                events, oldest, more = self._drain_inbound()
                if events:
                    started = time.monotonic()
                    h.handle_events(events, started)
                    self.flush()
                    elapsed = self._account(len(events), started)
                    self._queue(len(events), oldest, more, elapsed, started)
                    self.flush()  # a pressure report, if any
            for sock in ready:
                name = self.port_by_socket.get(sock)
                if name is not None:
                    messages, callers = self._drain_port(name, sock)
                    if messages:
                        started = time.monotonic()
                        h.handle_frames(name, messages, started, callers)
                        self.flush()
                        self._account(len(messages), started)
            now = time.monotonic()
            if now - self.workers_checked >= WORKERS_CHECK:
                self.workers_checked = now
                self.workers = read_workers(self.run_dir)
                self._maybe_grow(now)
            if now >= next_tick:
                next_tick = now + h.tick_interval
                h.tick(now)
                if now >= next_report:
                    next_report = now + STATS_INTERVAL
                    self.close_idle_peers(now)
                    self._report()
                    self._snapshot(now)
                    if self.trim is not None and now - self.trimmed_at >= TRIM_EVERY:
                        self.trimmed_at = now
                        self.trim(0)
                    if os.getppid() != self.parent:
                        h.log.warning("supervisor is gone: exiting")
                        self.stopping = True
                self.flush()

    def _snapshot(self, now: float) -> None:
        """With SEDA_TRACEMALLOC_DIR set: a tracemalloc snapshot each minute (a leak hunt:
        compare two with ``Snapshot.compare_to``)."""
        out = os.environ.get(TRACEMALLOC_ENV)
        if not out:
            return
        import tracemalloc

        if not tracemalloc.is_tracing():
            tracemalloc.start(8)
            self.snapshot_at = now
            return
        if now - getattr(self, "snapshot_at", now) >= 60.0:
            self.snapshot_at = now
            path = os.path.join(out, f"{self.handler.name}-{int(now)}.snap")
            tracemalloc.take_snapshot().dump(path)

    def close(self) -> None:
        try:
            self.handler.close()
        finally:
            for sock in [self.inbound, *self.outbound.values(), *self.ports.values()]:
                sock.close(linger=0)
            if self.auth is not None:
                self.auth.stop()
            self.ctx.term()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stage_name, node_json = argv[0], argv[1]
    config = NodeConfig.from_json(Path(node_json).read_text())
    run_dir = str(Path(node_json).parent)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us in order
    setup_logging(config, stage_name)
    try:
        from setproctitle import setproctitle

        setproctitle(f"seda-dynamo[{config.node_id}] stages.{stage_name}")
    except ImportError:
        pass
    module = importlib.import_module(spec(stage_name).module)
    handler: Stage = module.Handler(config)
    handler.name = stage_name  # a worker: "versioning.1" (its replies come back to it)
    runtime = Runtime(handler, config, run_dir)

    def stop(_signum: int, _frame: Any) -> None:
        runtime.stopping = True

    signal.signal(signal.SIGTERM, stop)
    # The stage's long-lived objects are made now; keep the cyclic collector off them and
    # let it run rarely, so a full collection does not stall a batch (a tail-latency spike).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    profile_dir = os.environ.get(PROFILE_ENV)
    profiler = None
    if profile_dir:  # bench/profile.py: where this stage's time goes
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        runtime.run()
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"{stage_name}.prof"))
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
