"""A real node under process faults: kill -9, a dying stage, SIGTERM, a dead supervisor."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from support import retry, wait_until

pytestmark = pytest.mark.integration


def test_acked_writes_survive_kill_9_of_every_process(node_factory):
    node = node_factory(durability="fsync").start()
    with node.client() as c:
        for i in range(300):
            c.put(f"durable{i}", b"value-%d" % i)
        c.put("sib", b"a")
        c.put("sib", b"b")
    node.kill9()
    node.start()
    with node.client() as c:
        for i in range(300):
            assert c.get(f"durable{i}").values == [b"value-%d" % i], i
        assert sorted(c.get("sib").values) == [b"a", b"b"]


@pytest.mark.parametrize("stage", ["persistence", "versioning", "coordination", "network",
                                   "gossip"])
def test_a_killed_stage_is_restarted_and_the_node_keeps_serving(node, stage):
    with node.client() as c:
        c.put("before", b"1")
    old = node.stage_pids()[stage]
    os.kill(old, signal.SIGKILL)
    new = wait_until(lambda: node.stage_pids().get(stage) not in (None, old), 10,
                     f"{stage} to be restarted")
    assert new != old
    with node.client(timeout=2.0) as c:
        retry(lambda: c.put("after", b"2", timeout=1.0))
        assert c.get("after").values == [b"2"]
        assert c.get("before").values == [b"1"]


def test_requests_in_flight_when_a_stage_dies_fail_instead_of_hanging(node):
    with node.client(timeout=2.0) as c:
        os.kill(node.stage_pids()["persistence"], signal.SIGKILL)
        started = time.monotonic()
        outcome = []
        for i in range(20):
            try:
                c.put(f"k{i}", b"v", timeout=1.0)
                outcome.append("ok")
            except Exception as exc:  # noqa: BLE001 - any store error is a valid answer
                outcome.append(exc.code)
        assert time.monotonic() - started < 20 * 2.5
        assert set(outcome) <= {"ok", "timeout", "internal", "unavailable"}, outcome
        retry(lambda: c.put("later", b"v", timeout=1.0))


def test_sigterm_stops_every_stage_and_leaves_no_process(node):
    pids = node.all_pids()
    assert len(pids) == 6
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=15) == 0
    wait_until(lambda: not node.leftovers(), 5, "every stage to exit")


def test_stages_exit_by_themselves_when_the_supervisor_is_killed(node):
    stages = list(node.stage_pids().values())
    assert len(stages) == 5
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(timeout=5)

    def gone():
        return not [p for p in stages if psutil.pid_exists(p)
                    and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]

    wait_until(gone, 10, "orphaned stages to exit")


def test_ctrl_c_stops_the_node(node):
    os.killpg(node.proc.pid, signal.SIGINT)
    assert node.proc.wait(timeout=15) == 0
    wait_until(lambda: not node.leftovers(), 5, "every stage to exit")
