"""The one node launcher (``seda_dynamo.launcher``): a node started, known by every pid,
stopped by pid from this process or from another one's record, killed -9, and a node
that cannot start reported with its log instead of waited for.

Each test starts at most one small node (memory engine) and leaves no process behind.
The CLI's ``cluster start|stop`` (N nodes joined into one ring) is tested in
``tests/integration/test_cli.py``; ``tests/support.Node`` runs on this launcher in every
integration test.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support import free_port

from seda_dynamo.launcher import STAGE_NAMES, NodeProcess, NotReady, is_ours

pytestmark = pytest.mark.integration

ARGS = ("--engine", "memory", "--durability", "nosync", "--n", "1", "--r", "1", "--w", "1")


@pytest.fixture
def made(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    """Nodes a test makes; every one stopped, and none of their pids left running."""
    nodes: list[NodeProcess] = []
    yield nodes
    for node in nodes:
        node.stop()
    assert not [pid for node in nodes for pid in node.leftovers()]


def _node(tmp_path: Path, args: tuple[str, ...] = ARGS) -> NodeProcess:
    return NodeProcess("lx1", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}",
                       tmp_path / "lx1", tmp_path / "lx1.log", args)


def test_a_node_serves_with_every_stage_and_stops_by_pid(tmp_path, made):
    node = _node(tmp_path)
    made.append(node.spawn())
    node.wait_ready()
    assert set(node.stage_pids()) == set(STAGE_NAMES)
    pids = node.all_pids()
    assert pids[0] == node.pid and len(pids) >= 1 + len(STAGE_NAMES)
    with node.client() as c:
        c.put("k", b"v")
        assert c.get("k").values == [b"v"]
    signalled = node.stop()
    assert signalled[0] == node.pid  # SIGTERM to the supervisor first
    assert not node.running() and not any(is_ours(pid) for pid in pids)


def test_another_process_stops_a_node_from_its_recorded_pid(tmp_path, made):
    """As ``cluster stop`` does: a new handle attaches to the pid and stops the node; a
    pid that runs something else (here this test) is refused."""
    node = _node(tmp_path)
    made.append(node.spawn())
    node.wait_ready()
    pids = node.all_pids()
    other = _node(tmp_path)
    assert not other.attach(psutil.Process().pid)  # pytest is not node lx1
    assert other.attach(node.pid) and other.running()
    other.stop()
    assert not any(is_ours(pid) for pid in pids)


def test_kill9_takes_every_process_at_once_and_the_node_starts_again(tmp_path, made):
    node = _node(tmp_path)
    made.append(node.spawn())
    node.wait_ready()
    first = node.all_pids()
    node.kill9()
    assert not any(is_ours(pid) for pid in first)
    assert not set(first) & node.known_pids  # forgotten: the numbers may be reused
    node.spawn().wait_ready()
    assert node.pid not in first


def test_a_paused_node_is_still_stopped(tmp_path, made):
    node = _node(tmp_path)
    made.append(node.spawn())
    node.wait_ready()
    pids = node.all_pids()
    node.signal_all(signal.SIGSTOP)
    node.stop()
    assert not any(is_ours(pid) for pid in pids)


def test_a_node_that_cannot_start_is_reported_with_its_log(tmp_path, made):
    node = _node(tmp_path, (*ARGS, "--engine", "no-such-engine"))
    made.append(node.spawn())
    with pytest.raises(NotReady, match="exited") as failed:
        node.wait_ready()
    assert "no-such-engine" in str(failed.value)  # the log's last lines say why
