"""The pipeline's physical ceiling: a bare chain of 5 ZeroMQ processes that only echo.

Stage 1 plays the network stage: it binds a ROUTER on ``tcp://127.0.0.1:PORT`` and a PULL
on ``ipc://RUN_DIR/1.q``, msgpack-decodes each client body to get its ``id`` (as the node
must), keeps the client's envelope and pushes the request (with its body) through stages
2 -> 3 -> 4 -> 5 over PUSH/PULL ``ipc://`` sockets. Each stage drains up to 512 queued
messages per wake-up, unpacks them and forwards the whole batch as ONE msgpack message,
exactly as ``seda_dynamo.runtime`` does. Stage 5 sends back to stage 1, which replies
``{"ok": True, "id": id}`` to each client. Whatever the real node does on top of this
costs throughput; the ratio node/echo says how much.

Run by hand (starts the chain, benchmarks it, stops it)::

    /tmp/v/bin/python -m bench.echo_chain --ops 20000 --concurrency 64
    /tmp/v/bin/python -m bench.echo_chain --port 7400 --hold 60   # serve for 60 s
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import msgpack
import zmq

from bench import REPO_ROOT
from seda_dynamo.ports import free_port

PR_SET_PDEATHSIG = 1

STAGES = 5  # the stage processes import no more than zmq and msgpack: they start fast
BATCH_MAX = 512
QUEUE_HWM = 10_000
BLOCK_SEND_MS = 1000
STOP_GRACE = 5.0


def _die_with_parent(parent: int | None) -> None:
    """SIGTERM when the parent dies (as seda_dynamo.runtime); exit if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != parent:
        sys.exit(1)


def _ipc(run_dir: str, stage: int) -> str:
    return f"ipc://{run_dir}/{stage}.q"


def _send(sock: zmq.Socket, events: list[Any]) -> None:
    """One message for the whole batch; wait up to 1 s for room (the node's "block")."""
    frame = msgpack.packb(events, use_bin_type=True)
    try:
        sock.send(frame, zmq.NOBLOCK)
    except zmq.Again:
        if sock.poll(BLOCK_SEND_MS, zmq.POLLOUT):
            sock.send(frame, zmq.NOBLOCK)


def _drain(sock: zmq.Socket) -> list[Any]:
    events: list[Any] = []
    for _ in range(BATCH_MAX):
        try:
            frame = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            break
        events.extend(msgpack.unpackb(frame, raw=False))
    return events


def run_stage(stage: int, run_dir: str, port: int) -> None:
    """The loop of one stage process, until SIGTERM."""
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = zmq.Context()
    inbound = ctx.socket(zmq.PULL)
    inbound.setsockopt(zmq.RCVHWM, QUEUE_HWM)
    inbound.bind(_ipc(run_dir, stage))
    out = ctx.socket(zmq.PUSH)
    out.setsockopt(zmq.SNDHWM, QUEUE_HWM)
    out.connect(_ipc(run_dir, stage % STAGES + 1))
    sockets = [inbound, out]
    poller = zmq.Poller()
    poller.register(inbound, zmq.POLLIN)
    router = None
    if stage == 1:
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.SNDHWM, 100_000)
        router.setsockopt(zmq.RCVHWM, 100_000)
        router.bind(f"tcp://127.0.0.1:{port}")
        sockets.append(router)
        poller.register(router, zmq.POLLIN)
    envelopes: dict[int, tuple[list[bytes], Any]] = {}
    seq = 0
    try:
        while not stopping:
            ready = dict(poller.poll(100))
            if router is not None and router in ready:
                batch = []
                for _ in range(BATCH_MAX):
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        rid = msgpack.unpackb(frames[-1], raw=False).get("id")
                    except Exception:  # noqa: BLE001 - like the node, answer and go on
                        router.send_multipart([*frames[:-1], msgpack.packb(
                            {"ok": False, "error": "bad_request", "message": "not msgpack"})])
                        continue
                    seq += 1
                    envelopes[seq] = (frames[:-1], rid)
                    batch.append([seq, frames[-1]])
                if batch:
                    _send(out, batch)
            if inbound in ready:
                events = _drain(inbound)
                if router is None:
                    if events:
                        _send(out, events)
                    continue
                for seq_no, _body in events:
                    envelope, rid = envelopes.pop(seq_no, (None, None))
                    if envelope is not None:
                        router.send_multipart([*envelope, msgpack.packb(
                            {"ok": True, "id": rid}, use_bin_type=True)], zmq.NOBLOCK)
    finally:
        for sock in sockets:
            sock.close(linger=0)
        ctx.term()
        # Tidy up even when the parent was SIGKILLed: the last stage out removes the dir.
        for remove, path in ((os.unlink, _ipc(run_dir, stage)[len("ipc://"):]),
                             (os.rmdir, run_dir)):
            try:
                remove(path)
            except OSError:
                pass


class EchoChain:
    """The handle of a running chain: ``server`` to load it, ``stop()`` to end it."""

    def __init__(self, port: int, run_dir: str) -> None:
        self.port = port
        self.run_dir = run_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        """SIGTERM every stage by pid, SIGKILL the ones alive after 5 s, wait for all."""
        try:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.terminate()
            deadline = time.monotonic() + STOP_GRACE
            for proc in self.procs:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until a request makes the whole round trip (every stage is up and connected)."""
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(f"tcp://{self.server}")
            deadline = time.monotonic() + timeout
            n = 0
            while time.monotonic() < deadline:
                dead = [p for p in self.procs if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"echo stage pid {dead[0].pid} exited with "
                                       f"{dead[0].returncode}")
                n += 1
                sock.send_multipart([b"", msgpack.packb({"op": "ping", "id": n})])
                if sock.poll(200):
                    sock.recv_multipart()
                    return
            raise RuntimeError(f"echo chain on port {self.port} not ready in {timeout} s")
        finally:
            sock.close(linger=0)
            ctx.term()

    def __enter__(self) -> EchoChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_echo_chain(port: int, ready_timeout: float = 10.0) -> EchoChain:
    """Start the 5 stage processes (they die with this process) and wait until ready."""
    chain = EchoChain(port, tempfile.mkdtemp(prefix="echo-", dir="/tmp"))
    try:
        for stage in range(STAGES, 0, -1):
            cmd = [sys.executable, "-m", "bench.echo_chain", "--stage", str(stage),
                   "--dir", chain.run_dir, "--port", str(port), "--parent", str(os.getpid())]
            chain.procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL))
        chain.wait_ready(ready_timeout)
    except BaseException:
        chain.stop()
        raise
    return chain


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", type=int, help="(internal) run this stage, 1..5")
    p.add_argument("--dir", help="(internal) the run directory of the ipc:// sockets")
    p.add_argument("--parent", type=int, help="(internal) the pid to die with")
    p.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    p.add_argument("--ops", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--hold", type=float, help="only serve, for this many seconds")
    args = p.parse_args(argv)
    if args.stage is not None:
        _die_with_parent(args.parent)
        run_stage(args.stage, args.dir, args.port)
        return 0
    from seda_dynamo.loadgen import format_result, run_phase

    with start_echo_chain(args.port or free_port()) as chain:
        if args.hold:
            print(f"echo chain on {chain.server} (pids {chain.pids}) for {args.hold:.0f} s",
                  flush=True)
            try:
                time.sleep(args.hold)
            except KeyboardInterrupt:
                pass
            return 0
        print(format_result(run_phase(chain.server, "put", args.ops, args.concurrency,
                                      args.value_size, processes=args.processes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
