"""Client processes of a load generator run, and the progress bar they feed.

With ``processes > 1`` each share of a run is driven by its own ``python -m
seda_dynamo.loadgen --child`` process (one core each, as the Dynamo paper's section 6
clients were separate machines); they report progress to the parent over a pipe and send
back their encoded histograms, which the parent merges. They die with the parent.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any, TextIO

import msgpack

from seda_dynamo.loadgen.loop import REPORT_EVERY, drive

PR_SET_PDEATHSIG = 1
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


def child_main(argv: list[str]) -> int:
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

    blob = msgpack.packb(drive(spec, report), use_bin_type=True)
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
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def execute(specs: list[dict[str, Any]], max_seconds: float, timeout: float,
             label: str, progress: bool) -> list[dict[str, Any]]:
    """Every spec's part: in this process for one spec, else one client process each."""
    bar = Progress(label, sum(s["ops"] for s in specs), max_seconds) if progress else None
    try:
        if len(specs) == 1:
            parts = [drive(specs[0], bar.update if bar is not None else None)]
        else:
            parts = _run_processes(specs, max_seconds, timeout, bar)
        if bar is not None:
            bar.update(sum(p["sent"] for p in parts), sum(sum(p["ok"].values()) for p in parts),
                       sum(sum(p["errors"].values()) for p in parts), force=True)
    finally:
        if bar is not None:
            bar.close()
    return parts
