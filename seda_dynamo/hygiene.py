"""Process hygiene of a stage process: everything it does for itself, not for events.

Part of the shell around the SEDA pipeline (Welsh et al. 2001) of one Dynamo node
(paper section 5; no algorithm of the paper lives here): exit with the supervisor
(Linux's parent-death signal, also checked by polling), one log line per event naming
node and stage, a process title, a quiet cyclic garbage collector, glibc's
``malloc_trim`` now and then so the RSS follows the live data, and two ways to look
inside a running stage: cProfile stats at exit (``SEDA_PROFILE_DIR``, bench/profile.py)
and a tracemalloc snapshot a minute (``SEDA_TRACEMALLOC_DIR``, a leak hunt).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from seda_dynamo import contract
from seda_dynamo.config import NodeConfig

PR_SET_PDEATHSIG = 1
GC_THRESHOLD = 50_000
PROFILE_ENV = "SEDA_PROFILE_DIR"  # set: each stage writes cProfile stats there on exit
TRACEMALLOC_ENV = "SEDA_TRACEMALLOC_DIR"  # set: each stage writes a heap snapshot a minute
SNAPSHOT_EVERY = 60.0  # seconds between tracemalloc snapshots
TRIM_EVERY = 30.0  # seconds between handing freed heap pages back to the OS (malloc_trim)


def die_with_parent() -> None:
    """Ask Linux to send us the stop signal when the supervisor dies (the runtime also
    polls for it: ``parent_gone``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, contract.STOP_SIGNAL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def parent_gone(parent: int) -> bool:
    """Whether the process that started us (pid ``parent``) is gone: we were re-parented."""
    return os.getppid() != parent


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


def set_title(node_id: str, stage: str) -> None:
    """``seda-dynamo[NODE] stages.STAGE`` in ps and top, when setproctitle is installed."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(f"seda-dynamo[{node_id}] stages.{stage}")


def quiet_gc() -> None:
    """The stage's long-lived objects are made now: keep the cyclic collector off them
    and let it run rarely, so a full collection does not stall a batch (a tail-latency
    spike)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


@contextlib.contextmanager
def profiled(stage: str) -> Iterator[None]:
    """With SEDA_PROFILE_DIR set, cProfile the block and write ``STAGE.prof`` there."""
    out = os.environ.get(PROFILE_ENV)
    if not out:
        yield
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(os.path.join(out, f"{stage}.prof"))


def _libc_trim() -> Callable[[int], Any] | None:
    """glibc's ``malloc_trim``, or None elsewhere."""
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


class Housekeeping:
    """What a stage does for its own memory about once a second (``due``).

    A stage frees and reallocates message buffers all day; without a trim now and then,
    freed pages in the middle of the heap stay in the process and its RSS creeps up
    although its live data does not. With SEDA_TRACEMALLOC_DIR set, a tracemalloc
    snapshot each minute (compare two with ``Snapshot.compare_to``)."""

    def __init__(self, stage: str, now: float) -> None:
        self.stage = stage
        self.trim = _libc_trim()
        self.trimmed_at = now
        self.snapshots = os.environ.get(TRACEMALLOC_ENV) or None
        self.snapshot_at = now

    def due(self, now: float) -> None:
        if self.trim is not None and now - self.trimmed_at >= TRIM_EVERY:
            self.trimmed_at = now
            self.trim(0)
        if self.snapshots is not None:
            self._snapshot(now)

    def _snapshot(self, now: float) -> None:
        import tracemalloc

        if not tracemalloc.is_tracing():
            tracemalloc.start(8)
            self.snapshot_at = now
            return
        if now - self.snapshot_at >= SNAPSHOT_EVERY:
            self.snapshot_at = now
            assert self.snapshots is not None
            path = os.path.join(self.snapshots, f"{self.stage}-{int(now)}.snap")
            tracemalloc.take_snapshot().dump(path)
