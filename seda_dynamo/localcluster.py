"""``seda-dynamo cluster start|stop``: a whole local cluster for people and examples.

Starts several ``seda-dynamo serve`` processes on loopback, each in its own process
group, the first founding the ring and the others joining it by gossip (paper section
4.8), records them in ``DATA_DIR/cluster.json``, and stops exactly those processes by
pid. Nothing here is needed to run a real cluster: it is ``serve --join`` done for you.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from seda_dynamo.client import Client, DynamoError

STATE_FILE = "cluster.json"
#: The nodes this process started, kept so they are not reaped (or warned about) early.
_spawned: list[subprocess.Popen[bytes]] = []
READY_SECONDS = 60.0
STOP_SECONDS = 15.0


def start(data_dir: str, nodes: int, base_port: int = 7000, extra: list[str] | None = None,
          host: str = "127.0.0.1") -> list[dict[str, Any]]:
    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if _running(root):
        raise RuntimeError(f"a cluster from {root} is running; stop it first")
    members: list[dict[str, Any]] = []
    for i in range(1, nodes + 1):
        node_id = f"node{i}"
        member = {"id": node_id, "client": f"{host}:{base_port + i - 1}",
                  "peer": f"{host}:{base_port + 100 + i - 1}",
                  "data_dir": str(root / node_id), "log": str(root / f"{node_id}.log")}
        cmd = [sys.executable, "-m", "seda_dynamo.cli", "serve", "--node-id", node_id,
               "--client", member["client"], "--peer", member["peer"],
               "--data-dir", member["data_dir"], *(extra or [])]
        if members:
            cmd += ["--join", members[0]["peer"]]
        with open(member["log"], "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        _spawned.append(proc)
        member["pid"] = proc.pid
        members.append(member)
        _save(root, members)
        if i == 1:
            _wait_ping(member)
    for member in members:
        _wait_ping(member)
    _wait_ring(members)
    return members


def stop(data_dir: str) -> list[int]:
    """SIGTERM every node recorded in DATA_DIR; SIGKILL a node's group if it lingers."""
    root = Path(data_dir).resolve()
    members = _load(root)
    procs = []
    for member in members:
        proc = _ours(member)
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            procs.append(proc)
    _gone, alive = psutil.wait_procs(procs, timeout=STOP_SECONDS)
    for proc in alive:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    (root / STATE_FILE).unlink(missing_ok=True)
    stopped = {p.pid for p in procs}
    for proc in [p for p in _spawned if p.pid in stopped]:
        proc.wait()
        _spawned.remove(proc)
    return sorted(stopped)


def _ours(member: dict[str, Any]) -> psutil.Process | None:
    """The node's supervisor, if that pid still runs it (pids get reused)."""
    try:
        proc = psutil.Process(member["pid"])
        cmdline = proc.cmdline()
    except psutil.Error:
        return None
    return proc if "serve" in cmdline and member["id"] in cmdline else None


def _running(root: Path) -> bool:
    return any(_ours(m) is not None for m in _load(root))


def _save(root: Path, members: list[dict[str, Any]]) -> None:
    (root / STATE_FILE).write_text(json.dumps(members, indent=2))


def _load(root: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((root / STATE_FILE).read_text())
    except FileNotFoundError:
        return []


def _wait_ping(member: dict[str, Any]) -> None:
    deadline = time.monotonic() + READY_SECONDS
    with Client(member["client"], timeout=0.5) as c:
        while time.monotonic() < deadline:
            if _ours(member) is None:
                raise RuntimeError(f"{member['id']} exited; see {member['log']}")
            try:
                c.ping()
                return
            except DynamoError:
                time.sleep(0.1)
    raise RuntimeError(f"{member['id']} did not answer within {READY_SECONDS:.0f} s")


def _wait_ring(members: list[dict[str, Any]]) -> None:
    """Until every node serves the same ring of all members, each seeing all up."""
    deadline = time.monotonic() + READY_SECONDS
    clients = [Client(m["client"], timeout=1.0) for m in members]
    try:
        while time.monotonic() < deadline:
            try:
                rings = [c.ring() for c in clients]
            except DynamoError:
                rings = []
            if rings and all(
                    r["epoch"] == rings[0]["epoch"] and len(r["nodes"]) == len(members)
                    and all(n["status"] == "up" for n in r["nodes"]) for r in rings):
                return
            time.sleep(0.2)
    finally:
        for c in clients:
            c.close()
    raise RuntimeError("the nodes did not form one ring in time")
