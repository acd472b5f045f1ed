"""A throw-away loopback cluster for ``seda-dynamo bench --cluster`` and ``bench/``.

``local_cluster`` starts N nodes joined into one ring (``launcher.start_cluster``, paper
section 4.8) in a fresh temporary directory on a free range of ports, yields them, and
always stops them by pid and removes the directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from seda_dynamo.launcher import NodeProcess, start_cluster
from seda_dynamo.ports import free_base_port

CLUSTER_ARGS = ("--engine", "bdb", "--durability", "fsync", "--n", "3", "--r", "2", "--w", "2")
READY_SECONDS = 60.0


def _log_tails(data_dir: str, lines: int = 15) -> str:
    out = []
    for name in sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []:
        if name.endswith(".log"):
            with open(os.path.join(data_dir, name), errors="replace") as f:
                out.append(f"--- {name}\n" + "".join(f.readlines()[-lines:]))
    return "\n".join(out)


def member(node: NodeProcess) -> dict[str, Any]:
    """What callers know a member by: ``id``, ``client``, ``peer``, ``data_dir``, ``log``,
    ``pid``, and ``process`` (the ``launcher.NodeProcess``, to kill or restart it)."""
    return {"id": node.node_id, "client": node.server, "peer": node.peer,
            "data_dir": str(node.data_dir), "log": str(node.log_path), "pid": node.pid,
            "process": node}


@contextmanager
def local_cluster(nodes: int = 3, extra: Sequence[str] = CLUSTER_ARGS,
                  base_port: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """A loopback cluster in a fresh temp dir, for benchmarks.

    Yields the members (``member``) once every node serves the same settled ring;
    always stops the nodes by pid (each member's current process, also one restarted
    meanwhile) and removes the directory on exit.
    """
    data_dir = tempfile.mkdtemp(prefix="sd-bench-cluster-")
    started: list[NodeProcess] = []
    try:
        base = base_port if base_port is not None else free_base_port(nodes)
        try:
            started = start_cluster(data_dir, nodes, base, list(extra), seconds=READY_SECONDS)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{_log_tails(data_dir)}") from exc
        yield [member(node) for node in started]
    finally:
        try:
            for node in started:
                node.stop()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
