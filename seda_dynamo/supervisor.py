"""The node supervisor: spawns one OS process per stage, restarts the ones that die.

The shell around the SEDA pipeline (Welsh et al. 2001) of one Dynamo node (paper
section 5): it resolves the configuration, spawns the stages of ``stage.STAGES`` in
order, restarts a stage that dies while the others keep serving, and on SIGTERM or
Ctrl-C stops every stage and leaves no process behind. Stages watch for its death.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from seda_dynamo import contract
from seda_dynamo.config import NodeConfig
from seda_dynamo.stage import STAGES, StageSpec, worker_name
from seda_dynamo.stage import workers as stage_workers

log = logging.getLogger("seda_dynamo.supervisor")

STOP_GRACE = 5.0
RESTART_WINDOW = 30.0
RESTARTS_BEFORE_BACKOFF = 5


def make_run_dir(config: NodeConfig) -> str:
    """A short directory for the ``ipc://`` endpoints (a socket path has ~100 bytes)."""
    if config.run_dir:
        os.makedirs(config.run_dir, exist_ok=True)
        run_dir = config.run_dir
    else:
        run_dir = tempfile.mkdtemp(prefix=f"sd-{config.node_id[:12]}-", dir="/tmp")
    contract.check_endpoints(run_dir, [worker_name(s.name, stage_workers(config, s.name)[1] - 1)
                                       for s in STAGES])
    return run_dir


def check_free(name: str, address: str) -> None:
    """Fail at once, naming the address, if another process listens on it."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            raise OSError(f"{name} address {address} is not available: {exc.strerror}") \
                from None


class Supervisor:
    """Owns the stage processes of one node."""

    def __init__(self, config: NodeConfig) -> None:
        check_free("client", config.client)
        check_free("peer", config.peer)
        if config.metrics:
            check_free("metrics", config.metrics)
        self.config = config
        try:
            os.makedirs(config.data_dir, exist_ok=True)
        except OSError as exc:
            raise OSError(f"data_dir {config.data_dir!r} cannot be made: {exc.strerror}") \
                from None
        self.run_dir = make_run_dir(config)
        self.node_json = contract.node_file(self.run_dir)
        Path(self.node_json).write_text(config.to_json())
        self.children: dict[str, subprocess.Popen[bytes]] = {}  # by worker name
        self.restarts: dict[str, deque[float]] = {}
        self.not_before: dict[str, float] = {}
        self.stopping = False
        self.workers = {s.name: stage_workers(config, s.name)[0] for s in STAGES}
        self.grow_asked = False

    def spawn(self, name: str) -> None:
        self.children[name] = subprocess.Popen(contract.stage_command(name, self.node_json),
                                               stdin=subprocess.DEVNULL,
                                               env=contract.stage_env())
        log.debug("stage %s started as pid %d", name, self.children[name].pid)

    def names(self, stage: StageSpec) -> list[str]:
        return [worker_name(stage.name, i) for i in range(self.workers[stage.name])]

    def start(self) -> None:
        contract.write_workers(self.run_dir, self.workers)
        for stage in STAGES:
            for name in self.names(stage):
                self.spawn(name)
        log.info("node %s: clients on tcp://%s, peers on tcp://%s, data in %s (%s, %s)",
                 self.config.node_id, self.config.client, self.config.peer,
                 self.config.data_dir, self.config.engine, self.config.durability)

    def check(self, now: float) -> None:
        """Restart every stage that exited, with a back-off if it keeps dying."""
        for name, proc in list(self.children.items()):
            if proc.poll() is None or self.stopping:
                continue
            if now < self.not_before.get(name, 0.0):
                continue
            recent = self.restarts.setdefault(name, deque())
            while recent and recent[0] < now - RESTART_WINDOW:
                recent.popleft()
            if len(recent) >= RESTARTS_BEFORE_BACKOFF and name not in self.not_before:
                self.not_before[name] = now + 1.0
                log.error("stage %s keeps dying; next restart in 1 s", name)
                continue
            self.not_before.pop(name, None)
            recent.append(now)
            log.warning("stage %s (pid %d) exited with %s: restarting", name, proc.pid,
                        proc.returncode)
            self.spawn(name)

    def grow(self) -> None:
        """Add a worker to each stage that asked for one (``contract.ask_to_grow``), up
        to its most; the other stages spread its events over one more worker."""
        self.grow_asked = False
        for stage in contract.take_grow_requests(self.run_dir, (s.name for s in STAGES)):
            running = self.workers[stage]
            most = stage_workers(self.config, stage)[1]
            if running >= most:
                continue
            name = worker_name(stage, running)
            self.spawn(name)  # its queue exists before anyone sends to it
            self.workers[stage] = running + 1
            contract.write_workers(self.run_dir, self.workers)
            log.warning("stage %s is busy: worker %s added (%d of at most %d)", stage,
                        name, running + 1, most)

    def run(self) -> int:
        def request_stop(signum: int, _frame: Any) -> None:
            self.stopping = True

        def request_grow(signum: int, _frame: Any) -> None:
            self.grow_asked = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(contract.GROW_SIGNAL, request_grow)
        self.start()
        try:
            while not self.stopping:
                time.sleep(0.1)
                if self.grow_asked:
                    self.grow()
                self.check(time.monotonic())
        finally:
            self.stop()
        return 0

    def stop(self) -> None:
        """SIGTERM every stage (network first, persistence last), then SIGKILL stragglers."""
        self.stopping = True
        for stage in reversed(STAGES):
            for name in self.names(stage):
                proc = self.children.get(name)
                if proc is not None and proc.poll() is None:
                    proc.send_signal(contract.STOP_SIGNAL)
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in %.0f s: killing it", proc.pid, STOP_GRACE)
                proc.kill()
                proc.wait()
        if not self.config.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        log.info("node %s stopped", self.config.node_id)
