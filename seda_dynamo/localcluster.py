"""``seda-dynamo cluster start|stop``: a whole local cluster for people and examples.

Starts several ``seda-dynamo serve`` processes on loopback through ``launcher`` (the
first founding the ring, the others joining it by gossip, paper section 4.8), records
them in ``DATA_DIR/cluster.json``, and a later ``cluster stop`` stops exactly those
processes by pid. Nothing here is needed to run a real cluster: it is ``serve --join``
done for you. What this module adds to ``launcher`` is only the record, so that start
and stop can be two commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seda_dynamo.launcher import NodeProcess, start_cluster

STATE_FILE = "cluster.json"
READY_SECONDS = 60.0
#: The nodes this process started: stopped (and reaped) through their own handles.
_started: dict[int, NodeProcess] = {}


def start(data_dir: str, nodes: int, base_port: int = 7000, extra: list[str] | None = None,
          host: str = "127.0.0.1") -> list[dict[str, Any]]:
    """Start ``nodes`` nodes and wait until they serve one ring; their records
    (``id``, ``client``, ``peer``, ``data_dir``, ``log``, ``pid``)."""
    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if any(node.running() for node in _attached(root)):
        raise RuntimeError(f"a cluster from {root} is running; stop it first")

    def record(started: list[NodeProcess]) -> None:
        _save(root, [_member(node) for node in started])

    started = start_cluster(root, nodes, base_port, extra or [], host, READY_SECONDS, record)
    _started.update((node.pid, node) for node in started if node.pid is not None)
    return [_member(node) for node in started]


def stop(data_dir: str) -> list[int]:
    """Stop every node recorded in DATA_DIR that still runs (SIGTERM, then SIGKILL what
    lingers); the supervisors' pids."""
    root = Path(data_dir).resolve()
    nodes = [_started.pop(node.pid, node) for node in _attached(root) if node.running()]
    for node in nodes:
        node.stop()
    (root / STATE_FILE).unlink(missing_ok=True)
    return sorted(node.pid for node in nodes if node.pid is not None)


def _member(node: NodeProcess) -> dict[str, Any]:
    return {"id": node.node_id, "client": node.server, "peer": node.peer,
            "data_dir": str(node.data_dir), "log": str(node.log_path), "pid": node.pid}


def _attached(root: Path) -> list[NodeProcess]:
    """The recorded nodes whose pid still runs that node (pids get reused)."""
    found = []
    for m in _load(root):
        node = NodeProcess(m["id"], m["client"], m["peer"], m["data_dir"], m["log"])
        if node.attach(m["pid"]):
            found.append(node)
    return found


def _save(root: Path, members: list[dict[str, Any]]) -> None:
    (root / STATE_FILE).write_text(json.dumps(members, indent=2))


def _load(root: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((root / STATE_FILE).read_text())
    except FileNotFoundError:
        return []
