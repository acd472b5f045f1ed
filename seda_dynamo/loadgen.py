"""The load generator behind ``seda-dynamo bench``: throughput and latency percentiles.

It measures what the Dynamo paper reports in section 6 (average and 99.9th percentile
latency of reads and writes, Figures 4 and 6): a ``put`` phase over keys ``k{i % keys}``
with random values, then a ``get`` phase over the same keys, each summarised as ops/s and
p50 / p99 / p99.9 / max latency from an HdrHistogram (microsecond resolution).

Two drivers share one loop over a single ZeroMQ DEALER socket per client process:

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
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import msgpack
import zmq
from hdrh.histogram import HdrHistogram

PR_SET_PDEATHSIG = 1
LOWEST_US, HIGHEST_US, DIGITS = 1, 60_000_000, 3
PHASES = ("put", "get")
START_TIMEOUT = 30.0


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


def _wait(sock: zmq.Socket, seconds: float) -> bool:
    """Wait for a reply with sub-millisecond resolution (zmq_poll counts whole ms).

    The socket's FD only signals that its state may have changed, so ZMQ_EVENTS is
    checked before and after the select (the documented edge-triggered pattern).
    """
    if sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
        return True
    if seconds > 0:
        select.select([sock.getsockopt(zmq.FD)], [], [], seconds)
    return bool(sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)


def _drive(server: str, op: str, first: int, ops: int, concurrency: int, value_size: int,
           keys: int, rate: float | None, max_seconds: float, timeout: float) -> dict[str, Any]:
    """Run ``ops`` requests (global indices ``first..first+ops-1``) on one DEALER socket."""
    hist = new_histogram()
    errors: dict[str, int] = {}
    pad = 4096
    blob = os.urandom(value_size + pad)
    # id -> (latency start, send time) in ns; the start is the scheduled time in open loop
    pending: dict[int, tuple[int, int]] = {}
    sent = n_ok = backlogged = 0
    timeout_ns = int(timeout * 1e9)
    interval_ns = int(1e9 / rate) if rate else 0
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    try:
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
                body: dict[str, Any] = {"op": op, "id": i, "key": b"k%d" % (i % keys)}
                if op == "put":
                    body["value"] = blob[i % pad:i % pad + value_size]
                sock.send_multipart([b"", msgpack.packb(body, use_bin_type=True)], copy=False)
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
            if _wait(sock, max(0, wake - time.perf_counter_ns()) / 1e9):
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
        sock.close(linger=0)
        ctx.term()
    return {"hist": hist.encode(), "ok": n_ok, "errors": errors, "sent": sent,
            "backlogged": backlogged, "t0": t0, "end": max(end_ns, t0 + 1)}


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


def run_phase(server: str, op: str, ops: int, concurrency: int = 64, value_size: int = 100,
              keys: int = 10_000, processes: int = 1, max_seconds: float = 60.0,
              rate: float | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """Run one phase (``put`` or ``get``) and return its result dict (see ``run_phases``)."""
    if op not in PHASES:
        raise ValueError(f"unknown phase {op!r}; expected one of {', '.join(PHASES)}")
    if ops < 1 or concurrency < 1 or keys < 1 or value_size < 0 or processes < 1:
        raise ValueError("ops, concurrency, keys, processes must be >= 1, value_size >= 0")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 ops/s")
    processes = min(processes, concurrency, ops)
    args = []
    for p in range(processes):
        first, count = _split(ops, processes, p)
        c = _split(concurrency, processes, p)[1]
        args.append((server, op, first, count, c, value_size, keys,
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
            "backlogged": sum(p["backlogged"] for p in parts)}


def run_phases(server: str, ops: int, concurrency: int = 64, value_size: int = 100,
               keys: int = 10_000, processes: int = 1, max_seconds: float = 60.0,
               rate: float | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """A ``put`` phase then a ``get`` phase over the same keys.

    Each result: ``{"phase", "ops" (successful), "errors" ({code: n}, with "no_reply"),
    "seconds", "ops_per_sec", "p50_ms", "p99_ms", "p999_ms", "max_ms", "concurrency"}``
    plus ``processes``, ``rate``, ``sent`` and ``backlogged``.
    """
    return [run_phase(server, op, ops, concurrency, value_size, keys, processes, max_seconds,
                      rate, timeout) for op in PHASES]


def format_result(d: dict[str, Any]) -> str:
    """One human line, e.g. ``put  20000 ok in 2.1 s  9500 ops/s  p50 6.1 ms ...``."""
    line = (f"{d['phase']:<4} {d['ops']:>7} ok in {d['seconds']:.2f} s "
            f"{d['ops_per_sec']:>9.0f} ops/s  p50 {d['p50_ms']:.2f} ms  "
            f"p99 {d['p99_ms']:.2f} ms  p99.9 {d['p999_ms']:.2f} ms  max {d['max_ms']:.2f} ms"
            f"  ({d['concurrency']} in flight")
    if d.get("rate"):
        line += f", {d['rate']:.0f}/s scheduled, {d.get('backlogged', 0)} backlogged"
    line += ")"
    if d.get("errors"):
        line += "  errors: " + ", ".join(f"{k}={v}" for k, v in sorted(d["errors"].items()))
    return line


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.exit(_child_main(sys.argv[1:]))
