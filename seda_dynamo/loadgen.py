"""The load generator behind ``seda-dynamo bench``: throughput and latency percentiles.

It measures what the Dynamo paper reports in section 6 (average and 99.9th percentile
latency of reads and writes, Figures 4 and 6), against seda-dynamo and, for side-by-side
numbers on the same machine, against Redis and etcd:

* ``run_phase`` / ``run_phases``: a ``put`` phase over keys ``k{i % keys}`` with random
  values, then a ``get`` phase over the same keys;
* ``run_mix``: gets and puts mixed at random (``get_ratio``), keys drawn uniformly or from
  a YCSB-style Zipfian distribution (``Zipfian``), with per-op summaries and a latency CDF.

Each is summarised as ops/s and p50 / p99 / p99.9 / max latency from an HdrHistogram
(microsecond resolution).

A *target* names what to load; each kind has a small driver (``seda_dynamo.loaddrivers``),
and one select-driven loop per client process runs any of them:

* ``seda://host:port[,host:port...]`` (or a bare ``host:port``, a list of them): one
  ZeroMQ DEALER socket per server, requests matched by ``id`` (docs/protocol.md);
* ``redis://127.0.0.1:PORT``: a minimal RESP client (``GET``/``SET``) on non-blocking TCP
  sockets, several connections each pipelining, replies matched in FIFO order;
* ``etcd://127.0.0.1:PORT[,PORT...]``: etcd v3's HTTP/JSON gateway (``/v3/kv/range``
  with ``serializable`` reads, ``/v3/kv/put``) over HTTP/1.1 keep-alive connections.

The redis and etcd drivers are our own, not a client library's: they sit in the load
generator's hot loop, where a general-purpose (async) client would cost more per request
than the servers under test. A target string may end in ``?connections=N`` (TCP targets:
the connections over all client processes). Every target gets the same concurrency, key
space and value size.

Two ways to pace requests, for every target:

* closed loop (``rate=None``): exactly ``concurrency`` requests in flight; a reply lets
  the next request go. Latency is measured from the moment a request is sent.
* open loop (``rate=ops_per_sec``): requests are due on a fixed schedule and latency is
  measured from the *scheduled* time, so a server that stalls is charged for the requests
  it delayed (no coordinated omission). At most ``concurrency`` are in flight; a request
  that is due while that limit is reached waits and is counted as ``backlogged``.

Both are bounded by ``ops`` and by ``max_seconds`` of wall clock, after which nothing new
is sent and the requests in flight are drained (each waits at most ``timeout`` seconds;
one that gets no reply counts as the error ``no_reply``). With ``processes > 1`` that
many client processes share the load and their histograms are merged; they report their
progress to the parent, which draws a progress bar on stderr when asked.

Several seda servers (a list, or ``"host:a,host:b"``) share the load of one run; the
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
import functools
import json
import math
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

import msgpack
import zmq
from hdrh.histogram import HdrHistogram

from seda_dynamo.loaddrivers import (
    REDIS_CONNECTIONS,
    make_driver,
    parse_target,
    server_list,
    zmq_endpoint,
)
from seda_dynamo.security import curve_from_env as curve

PR_SET_PDEATHSIG = 1
LOWEST_US, HIGHEST_US, DIGITS = 1, 60_000_000, 3
PHASES = ("put", "get")
ROUTINGS = ("round-robin", "owner")
DISTRIBUTIONS = ("uniform", "zipfian")
ZIPF_THETA = 0.99  # YCSB's default skew
START_TIMEOUT = 30.0
RING_TIMEOUT = 2.0
REPORT_EVERY = 0.5  # seconds between progress reports (children to parent, and the bar)
CDF_PERCENTILES = (0.0, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0,
                   95.0, 97.5, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0)
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


# Keys --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _zeta(n: int, theta: float) -> float:
    return math.fsum(i ** -theta for i in range(1, n + 1))


class Zipfian:
    """Ranks ``0..n-1`` drawn with ``P(rank k) ~ 1 / (k + 1) ** theta``; rank 0 is hottest.

    YCSB's ZipfianGenerator: the method of Gray et al., "Quickly generating billion-record
    synthetic databases" (SIGMOD 1994). ``zeta(n)`` is summed once (O(n), cached); every
    draw is then O(1): ranks 0 and 1 exactly, the rest by the closed-form inverse of the
    continuous approximation. Key ``k{rank}`` is then hashed onto the ring like any other,
    so the hot keys land on random partitions (what YCSB's scrambling is for).
    """

    def __init__(self, n: int, theta: float = ZIPF_THETA,
                 rng: random.Random | None = None) -> None:
        if n < 1:
            raise ValueError("a Zipfian needs at least one item")
        if not 0.0 < theta < 1.0:
            raise ValueError("theta must be in (0, 1)")
        self.n, self.theta = n, theta
        self.random = (rng or random.Random()).random
        self.zetan = _zeta(n, theta)
        zeta2 = 1.0 + 0.5 ** theta
        self.second = zeta2  # u * zetan below this: rank 1
        self.alpha = 1.0 / (1.0 - theta)
        # with n <= 2 every draw is rank 0 or 1, and eta (0 / 0 at n == 2) is unused
        self.eta = ((1.0 - (2.0 / n) ** (1.0 - theta)) / (1.0 - zeta2 / self.zetan)
                    if n > 2 else 0.0)

    def probability(self, rank: int) -> float:
        """The exact Zipf probability of ``rank`` (what the draws approximate)."""
        return 1.0 / ((rank + 1) ** self.theta * self.zetan)

    def __call__(self) -> int:
        u = self.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self.second:
            return 1
        return min(self.n - 1, int(self.n * (self.eta * u - self.eta + 1.0) ** self.alpha))


def key_chooser(distribution: str, keys: int, rng: random.Random) -> Callable[[], int]:
    """A function drawing key indices in ``0..keys-1``: ``uniform`` or ``zipfian``."""
    if distribution == "uniform":
        draw = rng.random
        return lambda: min(keys - 1, int(draw() * keys))
    if distribution == "zipfian":
        return Zipfian(keys, ZIPF_THETA, rng)
    raise ValueError(f"unknown distribution {distribution!r}; "
                     f"expected one of {', '.join(DISTRIBUTIONS)}")


# The loop ----------------------------------------------------------------------------------
Report = Callable[[int, int, int], None]  # (sent, ok, errors) so far


def _drive(spec: dict[str, Any], report: Report | None = None) -> dict[str, Any]:
    """Run ``spec["ops"]`` requests (ids ``first..first+ops-1``) against one target.

    ``spec["op"]`` is ``get``, ``put`` or ``mix`` (a get with probability ``get_ratio``);
    ``distribution`` is ``sequential`` (request ``i`` uses key ``k{i % keys}``),
    ``uniform`` or ``zipfian``. Returns this process's part of the result: one encoded
    histogram per op, counts, errors by code, and the first send and last reply times.
    """
    first, ops, concurrency = spec["first"], spec["ops"], spec["concurrency"]
    keys, value_size, rate = spec["keys"], spec["value_size"], spec["rate"]
    timeout, max_seconds = spec["timeout"], spec["max_seconds"]
    mode, get_ratio = spec["op"], spec.get("get_ratio", 0.0)
    rng = random.Random(spec.get("seed"))
    sequential = spec.get("distribution", "sequential") == "sequential"
    choose = None if sequential else key_chooser(spec["distribution"], keys, rng)
    draw = rng.random
    always_get = mode == "get"
    mixed = mode == "mix"
    hists = {True: new_histogram(), False: new_histogram()}  # is_get -> latencies
    err_hist = new_histogram()  # latency of the error replies (a shed request's, ...)
    n_ok = {True: 0, False: 0}
    errors: dict[str, int] = {}
    op_errors: dict[bool, dict[str, int]] = {True: {}, False: {}}
    pad = 4096
    blob = os.urandom(value_size + pad)
    # id -> (latency start, send time, is_get) in ns; the start is the scheduled time in
    # open loop. The dict is in send order, so the oldest is first.
    pending: dict[int, tuple[int, int, bool]] = {}
    done: list[tuple[int, str | None]] = []
    sent = backlogged = n_err = 0
    timeout_ns = int(timeout * 1e9)
    interval_ns = int(1e9 / rate) if rate else 0
    report_ns = int(REPORT_EVERY * 1e9)
    driver = make_driver(spec)
    per_server = [0] * len(driver.targets)
    try:
        t0 = last_reply = time.perf_counter_ns()
        next_report = t0 + report_ns
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
                rid = first + sent
                k = rid % keys if choose is None else choose()
                is_get = draw() < get_ratio if mixed else always_get
                key = b"k%d" % k
                value = b"" if is_get else blob[rid % pad:rid % pad + value_size]
                per_server[driver.send(rid, is_get, key, value)] += 1
                send_ns = time.perf_counter_ns()
                pending[rid] = (due if rate else send_ns, send_ns, is_get)
                backlogged += bool(rate) and due <= last_full
                sent += 1
            driver.flush()
            # Sleep until a reply, the next scheduled send or the oldest request's deadline.
            wake = now + 100_000_000
            if pending:
                wake = min(wake, next(iter(pending.values()))[1] + timeout_ns)
            if rate and sending and sent < ops and len(pending) < concurrency:
                wake = min(wake, t0 + sent * interval_ns)
            driver.wait(max(0, wake - time.perf_counter_ns()) / 1e9)
            end = time.perf_counter_ns()
            driver.collect(done)
            for rid, code in done:
                started = pending.pop(rid, None)
                if started is None:
                    continue  # a late reply to a request already counted as no_reply
                last_reply = end
                if code is None:
                    n_ok[started[2]] += 1
                    us = (end - started[0]) // 1000
                    hists[started[2]].record_value(min(max(us, LOWEST_US), HIGHEST_US))
                else:
                    n_err += 1
                    errors[code] = errors.get(code, 0) + 1
                    us = (end - started[0]) // 1000
                    err_hist.record_value(min(max(us, LOWEST_US), HIGHEST_US))
                    by_op = op_errors[started[2]]
                    by_op[code] = by_op.get(code, 0) + 1
            done.clear()
            now = time.perf_counter_ns()
            while pending:  # expire from the oldest
                rid, (_, send_ns, is_get) = next(iter(pending.items()))
                if now - send_ns < timeout_ns:
                    break
                del pending[rid]
                n_err += 1
                errors["no_reply"] = errors.get("no_reply", 0) + 1
                op_errors[is_get]["no_reply"] = op_errors[is_get].get("no_reply", 0) + 1
                driver.abandon(rid)
            if report is not None and now >= next_report:
                next_report = now + report_ns
                report(sent, n_ok[True] + n_ok[False], n_err)
        end_ns = last_reply if last_reply > t0 else time.perf_counter_ns()
    finally:
        driver.close()
    if report is not None:
        report(sent, n_ok[True] + n_ok[False], n_err)
    return {"hist": {"get": hists[True].encode(), "put": hists[False].encode()},
            "err_hist": err_hist.encode(),
            "ok": {"get": n_ok[True], "put": n_ok[False]}, "errors": errors,
            "op_errors": {"get": op_errors[True], "put": op_errors[False]}, "sent": sent,
            "per_server": per_server, "backlogged": backlogged, "t0": t0,
            "end": max(end_ns, t0 + 1)}


# Client processes and the progress bar -----------------------------------------------------
class Progress:
    """A one-line progress bar on a stream: requests done, ops/s, errors; redrawn at most
    every ``REPORT_EVERY`` seconds (``force`` redraws now). The bar fills with the requests
    done or the time gone of ``seconds``, whichever is further."""

    def __init__(self, label: str, total: int, seconds: float = math.inf,
                 stream: TextIO | None = None) -> None:
        self.label, self.total, self.seconds = label, max(1, total), seconds
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = self.last_t = time.monotonic()
        self.last_done = 0
        self.drawn = 0.0

    def update(self, sent: int, ok: int, errors: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.drawn < 0.8 * REPORT_EVERY:  # reports come ~0.5 s apart
            return
        done = ok + errors
        # the rate since the last redraw; the last line (forced) shows the whole run's
        since = (self.t0, 0) if force else (self.last_t, self.last_done)
        rate = (done - since[1]) / max(now - since[0], 1e-9)
        self.last_done, self.last_t, self.drawn = done, now, now
        filled = min(20, int(20 * max(done / self.total, (now - self.t0) / self.seconds)))
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (20 - filled)}] "
                          f"{done:,}/{self.total:,} ops  {rate:,.0f} ops/s  "
                          f"errors {errors:,}  {now - self.t0:.1f} s\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _child_main(argv: list[str]) -> int:
    """``python -m seda_dynamo.loadgen --child PARENT_PID SPEC_JSON``: one client process.

    A line protocol on stdout: ``ready`` once started, then (after ``go`` on stdin, so
    all start together) ``p SENT OK ERRORS`` every ``REPORT_EVERY`` seconds, and last
    ``r LENGTH`` followed by that many bytes, its msgpack-encoded part of the result.
    """
    die_with_parent(int(argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = json.loads(argv[2])
    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    if sys.stdin.buffer.readline().strip() != b"go":
        return 1

    def report(sent: int, ok: int, errors: int) -> None:
        out.write(b"p %d %d %d\n" % (sent, ok, errors))
        out.flush()

    blob = msgpack.packb(_drive(spec, report), use_bin_type=True)
    out.write(b"r %d\n" % len(blob) + blob)
    out.flush()
    return 0


class _Child:
    """The parent's side of one client process: its pipe buffer and what it said."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = bytearray()
        self.ready = False
        self.counts = (0, 0, 0)
        self.result: dict[str, Any] | None = None
        self.eof = False

    def read(self) -> None:
        data = os.read(self.fd, 1 << 16)
        if not data:
            self.eof = True
        self.buf += data
        while self.result is None:
            nl = self.buf.find(b"\n")
            if nl < 0:
                return
            line = bytes(self.buf[:nl])
            if line == b"ready":
                self.ready = True
            elif line.startswith(b"p "):
                sent, ok, errors = (int(x) for x in line.split()[1:4])
                self.counts = (sent, ok, errors)
            elif line.startswith(b"r "):
                size = int(line[2:])
                if len(self.buf) < nl + 1 + size:
                    return
                blob = bytes(self.buf[nl + 1:nl + 1 + size])
                self.result = msgpack.unpackb(blob, raw=False, strict_map_key=False)
            else:
                raise RuntimeError(f"load generator pid {self.proc.pid} said {line[:80]!r}")
            del self.buf[:nl + 1]


def _select_children(children: list[_Child], seconds: float) -> None:
    fds = [c.fd for c in children if not c.eof]
    if not fds:
        return
    ready, _, _ = select.select(fds, [], [], max(0.0, seconds))
    for child in children:
        if child.fd in ready:
            child.read()


def _run_processes(specs: list[dict[str, Any]], max_seconds: float, timeout: float,
                   progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run each spec in its own client process; they die with this one (PDEATHSIG)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    children: list[_Child] = []
    try:
        for spec in specs:
            cmd = [sys.executable, "-m", "seda_dynamo.loadgen", "--child", str(os.getpid()),
                   json.dumps(spec)]
            children.append(_Child(subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                                    stdout=subprocess.PIPE, env=env)))
        deadline = time.monotonic() + START_TIMEOUT
        while not all(c.ready for c in children) and time.monotonic() < deadline:
            _select_children([c for c in children if not c.ready],
                             deadline - time.monotonic())
        for child in children:
            if not child.ready:
                raise RuntimeError(f"load generator pid {child.proc.pid} did not start")
        for child in children:
            assert child.proc.stdin is not None
            child.proc.stdin.write(b"go\n")
            child.proc.stdin.flush()
        limit = time.monotonic() + max_seconds + timeout + 10.0
        while any(c.result is None and not c.eof for c in children):
            if time.monotonic() > limit:
                raise RuntimeError("load generator processes did not finish in time")
            _select_children([c for c in children if c.result is None], REPORT_EVERY / 2)
            if progress is not None:
                progress.update(*(sum(c.counts[i] for c in children) for i in range(3)))
        for child in children:
            if child.result is None:
                raise RuntimeError(f"load generator pid {child.proc.pid} failed (exit code "
                                   f"{child.proc.wait(timeout=5)})")
        return [c.result for c in children if c.result is not None]
    finally:
        for child in children:
            if child.proc.poll() is None and child.result is None:
                child.proc.kill()
            try:
                child.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            for pipe in (child.proc.stdin, child.proc.stdout):
                if pipe is not None:
                    pipe.close()


def _split(total: int, parts: int, index: int) -> tuple[int, int]:
    """The (first, count) share of ``total`` for part ``index`` of ``parts``."""
    base, extra = divmod(total, parts)
    return index * base + min(index, extra), base + (index < extra)


def _execute(specs: list[dict[str, Any]], max_seconds: float, timeout: float,
             label: str, progress: bool) -> list[dict[str, Any]]:
    """Every spec's part: in this process for one spec, else one client process each."""
    bar = Progress(label, sum(s["ops"] for s in specs), max_seconds) if progress else None
    try:
        if len(specs) == 1:
            parts = [_drive(specs[0], bar.update if bar is not None else None)]
        else:
            parts = _run_processes(specs, max_seconds, timeout, bar)
        if bar is not None:
            bar.update(sum(p["sent"] for p in parts), sum(sum(p["ok"].values()) for p in parts),
                       sum(sum(p["errors"].values()) for p in parts), force=True)
    finally:
        if bar is not None:
            bar.close()
    return parts


def _ms(hist: HdrHistogram, percentile: float) -> float:
    return round(hist.get_value_at_percentile(percentile) / 1000.0, 3)


def _latency(hist: HdrHistogram, n_ok: int) -> dict[str, float]:
    if not n_ok:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "p999_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    return {"p50_ms": _ms(hist, 50.0), "p99_ms": _ms(hist, 99.0), "p999_ms": _ms(hist, 99.9),
            "max_ms": round(hist.get_max_value() / 1000.0, 3),
            "mean_ms": round(hist.get_mean_value() / 1000.0, 3)}


def _summarise(parts: list[dict[str, Any]], phase: str, targets: list[str]
               ) -> tuple[dict[str, Any], dict[str, HdrHistogram]]:
    """The fields every result has, and the merged histogram of each op."""
    hists = {op: merge_histograms([p["hist"][op] for p in parts]) for op in PHASES}
    errors: dict[str, int] = {}
    for part in parts:
        for code, n in part["errors"].items():
            errors[code] = errors.get(code, 0) + n
    n_ok = sum(sum(p["ok"].values()) for p in parts)
    # perf_counter is CLOCK_MONOTONIC on Linux: comparable across the client processes
    seconds = (max(p["end"] for p in parts) - min(p["t0"] for p in parts)) / 1e9
    merged = new_histogram()
    for hist in hists.values():
        merged.add(hist)
    lat = _latency(merged, n_ok)
    result = {"phase": phase, "ops": n_ok, "errors": errors, "seconds": round(seconds, 6),
              "ops_per_sec": round(n_ok / seconds, 1), "p50_ms": lat["p50_ms"],
              "p99_ms": lat["p99_ms"], "p999_ms": lat["p999_ms"], "max_ms": lat["max_ms"],
              "sent": sum(p["sent"] for p in parts),
              "backlogged": sum(p["backlogged"] for p in parts),
              "servers": len(targets),
              "per_server": {t: sum(p["per_server"][j] for p in parts)
                             for j, t in enumerate(targets)},
              "cdf": [[pct, _ms(merged, pct) if n_ok else 0.0] for pct in CDF_PERCENTILES]}
    # error replies (not no_reply, which never came back): how long e.g. a shed took
    err_hist = merge_histograms([p["err_hist"] for p in parts if "err_hist" in p])
    n_replied = err_hist.get_total_count()
    result["error_ms"] = {"replies": n_replied, **_latency(err_hist, n_replied)}
    if phase == "mix":
        result["mean_ms"] = lat["mean_ms"]
        result["by_op"] = {}
        for op in ("get", "put"):
            ok = sum(p["ok"][op] for p in parts)
            op_errors: dict[str, int] = {}
            for part in parts:
                for code, n in part["op_errors"][op].items():
                    op_errors[code] = op_errors.get(code, 0) + n
            result["by_op"][op] = {"ops": ok, "errors": op_errors,
                                   "ops_per_sec": round(ok / seconds, 1),
                                   **_latency(hists[op], ok)}
    return result, hists


def _check_common(ops: int, concurrency: int, keys: int, value_size: int, processes: int,
                  rate: float | None, routing: str) -> None:
    if routing not in ROUTINGS:
        raise ValueError(f"unknown routing {routing!r}; expected one of {', '.join(ROUTINGS)}")
    if ops < 1 or concurrency < 1 or keys < 1 or value_size < 0 or processes < 1:
        raise ValueError("ops, concurrency, keys, processes must be >= 1, value_size >= 0")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 ops/s")


def _plan(target: str | Sequence[str], routing: str, ring: dict[str, Any] | None,
          connections: int | None, concurrency: int
          ) -> tuple[str, list[str], list[int] | None, int]:
    """``(kind, targets, route, connections)`` for a target string and routing."""
    kind, endpoints, options = parse_target(target)
    route: list[int] | None = None
    if routing == "owner":
        if kind != "seda":
            raise ValueError("owner routing needs a seda target (it routes by the ring)")
        targets, route = owner_routes(ring or fetch_ring(endpoints), endpoints[0])
    else:
        targets = endpoints
    if connections is None and "connections" in options:
        connections = int(options["connections"])
    if connections is None:
        connections = REDIS_CONNECTIONS if kind == "redis" else concurrency
    if connections < 1:
        raise ValueError("connections must be >= 1")
    return kind, targets, route, connections


def _specs(kind: str, targets: list[str], route: list[int] | None, connections: int,
           processes: int, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One spec per client process: its share of ops, concurrency, rate, connections."""
    specs = []
    for p in range(processes):
        first, count = _split(base["ops"], processes, p)
        c = _split(base["concurrency"], processes, p)[1]
        specs.append({**base, "kind": kind, "endpoints": targets, "route": route,
                      "first": base["first"] + first, "ops": count, "concurrency": c,
                      "connections": max(1, _split(connections, processes, p)[1]),
                      "rate": base["rate"] / processes if base["rate"] else None,
                      "seed": None if base.get("seed") is None else base["seed"] + p})
    return specs


def fetch_ring(servers: str | Sequence[str], timeout: float = RING_TIMEOUT) -> dict[str, Any]:
    """The ``ring`` reply of the first server that answers within ``timeout`` seconds."""
    tried = []
    for server in server_list(servers):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            curve(sock)
            sock.connect(zmq_endpoint(server))
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


# The runs ----------------------------------------------------------------------------------
def run_phase(server: str | Sequence[str], op: str, ops: int, concurrency: int = 64,
              value_size: int = 100, keys: int = 10_000, processes: int = 1,
              max_seconds: float = 60.0, rate: float | None = None, timeout: float = 5.0,
              routing: str = "round-robin", ring: dict[str, Any] | None = None,
              first_key: int = 0, progress: bool = False) -> dict[str, Any]:
    """Run one phase (``put`` or ``get``) and return its result dict (see ``run_phases``).

    ``server`` is a target (see ``parse_target``): one seda server, a list or a
    comma-separated string, or a ``redis://`` / ``etcd://`` URL; ``routing`` is
    ``"round-robin"`` or ``"owner"`` (seda only; it uses ``ring``, a ``ring`` reply, or
    fetches one from the servers). Request ``i`` uses key ``k{(first_key + i) % keys}``.
    """
    if op not in PHASES:
        raise ValueError(f"unknown phase {op!r}; expected one of {', '.join(PHASES)}")
    _check_common(ops, concurrency, keys, value_size, processes, rate, routing)
    kind, targets, route, connections = _plan(server, routing, ring, None, concurrency)
    processes = min(processes, concurrency, ops)
    base = {"op": op, "distribution": "sequential", "first": first_key, "ops": ops,
            "concurrency": concurrency, "value_size": value_size, "keys": keys, "rate": rate,
            "max_seconds": max_seconds, "timeout": timeout}
    specs = _specs(kind, targets, route, connections, processes, base)
    parts = _execute(specs, max_seconds, timeout, op, progress)
    result, _ = _summarise(parts, op, targets)
    result.update(concurrency=concurrency, processes=processes, rate=rate, routing=routing)
    return result


def run_phases(server: str | Sequence[str], ops: int, concurrency: int = 64,
               value_size: int = 100, keys: int = 10_000, processes: int = 1,
               max_seconds: float = 60.0, rate: float | None = None, timeout: float = 5.0,
               routing: str = "round-robin", progress: bool = False) -> list[dict[str, Any]]:
    """A ``put`` phase then a ``get`` phase over the same keys.

    Each result: ``{"phase", "ops" (successful), "errors" ({code: n}, with "no_reply"),
    "seconds", "ops_per_sec", "p50_ms", "p99_ms", "p999_ms", "max_ms", "concurrency"}``
    plus ``processes``, ``rate``, ``sent``, ``backlogged``, ``servers`` (how many got
    traffic), ``routing`` and ``per_server`` (requests sent to each); ``cdf``:
    ``[[percentile, ms], ...]`` at ``CDF_PERCENTILES`` over every successful request;
    ``error_ms``: ``{replies, p50_ms, p99_ms, p999_ms, max_ms, mean_ms}`` over the error
    replies that came back (e.g. how fast a shed ``overloaded`` was answered; ``no_reply``
    is not among them). With owner routing the ring is fetched once, before the put phase.
    """
    ring = fetch_ring(parse_target(server)[1]) if routing == "owner" else None
    return [run_phase(server, op, ops, concurrency, value_size, keys, processes, max_seconds,
                      rate, timeout, routing, ring, progress=progress) for op in PHASES]


def run_mix(target: str | Sequence[str], ops: int, concurrency: int = 64,
            get_ratio: float = 0.5, value_size: int = 100, keys: int = 10_000,
            distribution: str = "uniform", rate: float | None = None, processes: int = 1,
            max_seconds: float = 60.0, timeout: float = 5.0, progress: bool = False,
            routing: str = "round-robin", connections: int | None = None,
            prefill: bool = False, seed: int | None = None,
            ring: dict[str, Any] | None = None, contexts: bool = True) -> dict[str, Any]:
    """Gets and puts mixed at random, against any target; returns the result dict.

    Each request is a get with probability ``get_ratio`` (else a put of ``value_size``
    random bytes) of key ``k{i}``, ``i`` drawn from ``distribution`` over ``keys``
    (``uniform``, or ``zipfian``: YCSB's theta 0.99, key ``k0`` the hottest). ``rate``
    None is the closed loop, else the open loop at that many ops/s. ``connections``
    (TCP targets) overrides the target's ``?connections=``. ``prefill`` first writes every
    key once (closed loop, not measured) so that gets find values. ``seed`` makes the
    choice of ops and keys repeatable. ``contexts`` (seda targets): each put carries the
    context of the last reply for its key, as a read-modify-write client does, so the
    key space does not fill with siblings (Redis and etcd simply overwrite).

    The result has the keys of ``run_phase`` (``phase`` is ``"mix"``; ``ops``,
    ``errors``, ``seconds``, ``ops_per_sec``, ``p50_ms``, ``p99_ms``, ``p999_ms``,
    ``max_ms``, ``concurrency``, ``processes``, ``rate``, ``sent``, ``backlogged``,
    ``servers``, ``routing``, ``per_server``, ``cdf``, ``error_ms``) and ``mean_ms``;
    ``by_op``: for ``get`` and ``put`` each ``{ops, errors, ops_per_sec, p50_ms, p99_ms,
    p999_ms, max_ms, mean_ms}``; ``target``, ``kind``, ``get_ratio``, ``distribution``,
    ``keys``, ``value_size``, ``connections``, ``seed``; ``prefill`` (None, or the put run's
    ``{ops, errors, seconds, ops_per_sec}``).
    """
    if not 0.0 <= get_ratio <= 1.0:
        raise ValueError("get_ratio must be in 0..1")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; "
                         f"expected one of {', '.join(DISTRIBUTIONS)}")
    _check_common(ops, concurrency, keys, value_size, processes, rate, routing)
    kind, targets, route, connections = _plan(target, routing, ring, connections, concurrency)
    seed = seed if seed is not None else random.randrange(1 << 62)
    filled = None
    if prefill:
        n = min(processes, concurrency, keys)
        base = {"op": "put", "distribution": "sequential", "first": 0, "ops": keys,
                "concurrency": concurrency, "value_size": value_size, "keys": keys,
                "rate": None, "max_seconds": max_seconds, "timeout": timeout}
        specs = _specs(kind, targets, route, connections, n, base)
        pre, _ = _summarise(_execute(specs, max_seconds, timeout, "prefill", progress),
                            "put", targets)
        filled = {k: pre[k] for k in ("ops", "errors", "seconds", "ops_per_sec")}
    processes = min(processes, concurrency, ops)
    base = {"op": "mix", "get_ratio": get_ratio, "distribution": distribution, "first": 0,
            "ops": ops, "concurrency": concurrency, "value_size": value_size, "keys": keys,
            "rate": rate, "max_seconds": max_seconds, "timeout": timeout, "seed": seed,
            "contexts": contexts}
    specs = _specs(kind, targets, route, connections, processes, base)
    parts = _execute(specs, max_seconds, timeout, f"{kind} mix", progress)
    result, _ = _summarise(parts, "mix", targets)
    result.update(concurrency=concurrency, processes=processes, rate=rate, routing=routing,
                  target=target if isinstance(target, str) else ",".join(target), kind=kind,
                  get_ratio=get_ratio, distribution=distribution, keys=keys,
                  value_size=value_size,
                  connections=None if kind == "seda" else min(connections, concurrency),
                  seed=seed, prefill=filled)
    return result


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
    for op, s in (d.get("by_op") or {}).items():
        line += (f"  {op} {s['ops']} p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f} "
                 f"p99.9 {s['p999_ms']:.2f} ms")
    if d.get("errors"):
        line += "  errors: " + ", ".join(f"{k}={v}" for k, v in sorted(d["errors"].items()))
    return line


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.exit(_child_main(sys.argv[1:]))
