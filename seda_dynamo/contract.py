"""What the supervisor and its stage processes agree on, in one place both import.

The shell around the SEDA pipeline (Welsh et al. 2001) of one Dynamo node (paper
section 5): how a stage process is started (its command line and environment), where
each stage's inbound queue is (``ipc://RUN_DIR/STAGE.q``), how many worker processes
each stage runs now (``RUN_DIR/workers.json``, written by the supervisor, read by every
sender), and how a busy stage asks for one more worker (a ``RUN_DIR/grow.STAGE`` file,
then ``SIGUSR1`` to the supervisor). A stage stops on ``SIGTERM`` and ignores ``SIGINT``
(the supervisor stops the stages in order). Nothing here knows about ZeroMQ.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

import msgpack

#: The module every stage process runs: ``python -m RUNTIME_MODULE STAGE NODE_JSON``.
RUNTIME_MODULE = "seda_dynamo.runtime"
#: The node's resolved configuration, written by the supervisor into the run dir.
NODE_FILE = "node.json"
#: stage -> worker processes running, kept by the supervisor.
WORKERS_FILE = "workers.json"
#: A file ``grow.STAGE`` in the run dir: that stage asks for one more worker.
GROW_PREFIX = "grow."
#: Sent to the supervisor after a grow file is made: look for grow files now.
GROW_SIGNAL = signal.SIGUSR1
#: Sent to a stage process to stop it; it finishes its batch and closes its sockets.
STOP_SIGNAL = signal.SIGTERM
#: A Unix socket path has ~108 bytes; endpoints longer than this are refused at start.
MAX_IPC_PATH = 100


def endpoint(run_dir: str, stage: str) -> str:
    """The ``ipc://`` address of a stage's (or a worker's) inbound queue."""
    return f"ipc://{run_dir}/{stage}.q"


def check_endpoints(run_dir: str, names: Iterable[str]) -> None:
    """Refuse a run dir too deep for the ``ipc://`` paths of the worker ``names``."""
    longest = max((len(endpoint(run_dir, name)) for name in names), default=0)
    if longest > MAX_IPC_PATH:
        raise ValueError(f"run_dir {run_dir!r} is too deep for ipc:// socket paths; "
                         "choose a shorter one")


# Starting a stage process -------------------------------------------------------------
def node_file(run_dir: str) -> str:
    """Where the supervisor writes the configuration every stage process reads."""
    return str(Path(run_dir) / NODE_FILE)


def stage_command(name: str, node_json: str) -> list[str]:
    """The command line of the process of stage (or worker) ``name``."""
    return [sys.executable, "-m", RUNTIME_MODULE, name, node_json]


def parse_stage_command(argv: list[str]) -> tuple[str, str, str]:
    """``[STAGE, NODE_JSON]`` (``sys.argv[1:]`` of a stage process) -> (stage name, node
    json path, run dir): the run dir is the directory the node file is in."""
    if len(argv) != 2:
        raise ValueError(f"usage: python -m {RUNTIME_MODULE} STAGE RUN_DIR/{NODE_FILE}")
    name, node_json = argv
    return name, node_json, str(Path(node_json).parent)


def stage_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a stage process: the caller's, with two glibc malloc arenas
    unless set (a stage has one Python thread and ZeroMQ's IO thread, and each extra
    arena keeps freed pages of its own). A fixed ``MALLOC_MMAP_THRESHOLD_`` was tried
    too: it also fixes the trim threshold, and the heap was shrunk and regrown so often
    that puts fell by 20%, gets by 27%."""
    return {"MALLOC_ARENA_MAX": "2", **(os.environ if base is None else base)}


# The workers file ---------------------------------------------------------------------
def read_workers(run_dir: str) -> dict[str, int]:
    """How many worker processes each stage runs now; {} when the file is missing or
    damaged (a sender then sends to worker 0 of every stage, which always runs)."""
    try:
        with open(os.path.join(run_dir, WORKERS_FILE), "rb") as fh:
            raw = msgpack.unpackb(fh.read(), raw=False)
        return {str(k): int(v) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def write_workers(run_dir: str, workers: dict[str, int]) -> None:
    """Replace the workers file whole (a reader never sees half of it)."""
    path = os.path.join(run_dir, WORKERS_FILE)
    with open(path + ".tmp", "wb") as fh:
        fh.write(msgpack.packb(workers))
    os.replace(path + ".tmp", path)


# Asking for a worker ------------------------------------------------------------------
def grow_file(run_dir: str, stage: str) -> Path:
    return Path(run_dir, f"{GROW_PREFIX}{stage}")


def ask_to_grow(run_dir: str, stage: str, supervisor: int) -> None:
    """A stage asks supervisor process ``supervisor`` for one more worker of ``stage``."""
    grow_file(run_dir, stage).touch()
    os.kill(supervisor, GROW_SIGNAL)


def take_grow_requests(run_dir: str, stages: Iterable[str]) -> list[str]:
    """The stages of ``stages`` that asked for a worker since the last look, in order;
    each request is removed as it is taken."""
    asked = []
    for stage in stages:
        path = grow_file(run_dir, stage)
        if path.exists():
            path.unlink(missing_ok=True)
            asked.append(stage)
    return asked
