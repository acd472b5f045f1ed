"""Several versioning workers on a real node: spread by key, and one added under load."""

from __future__ import annotations

import threading

import pytest
from support import wait_until

from seda_dynamo import contract
from seda_dynamo.client import Client

pytestmark = pytest.mark.integration


def hot_writes(server: str, writers: int, each: int) -> set[bytes]:
    """``writers`` clients, each putting ``each`` blind values to one hot key (and a few
    other keys); every value acknowledged."""
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with Client(server, timeout=10.0) as c:
                for i in range(each):
                    c.put("hot", b"w%d-%d" % (w, i))
                    c.put(f"cold-{w}-{i}", b"x")
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return {b"w%d-%d" % (w, i) for w in range(writers) for i in range(each)}


def test_two_versioning_workers_share_the_keys_and_lose_no_sibling(node_factory):
    node = node_factory(extra=("--versioning-workers", "2")).start()
    pids = node.stage_pids()
    assert {"versioning", "versioning.1"} <= pids.keys(), pids
    written = hot_writes(node.server, 4, 25)
    with node.client() as c:
        assert set(c.get("hot").values) == written
        def both_worked():
            s = c.stats()
            return all(s.get(w, {}).get("processed", 0) > 0
                       for w in ("versioning", "versioning.1")) and s

        wait_until(both_worked, 5, "both workers to report work")


def test_a_worker_added_while_writes_run_loses_no_sibling(node_factory, tmp_path):
    run_dir = tmp_path / "run"
    node = node_factory(extra=("--run-dir", str(run_dir))).start()
    assert "versioning.1" not in node.stage_pids()
    result: dict[str, set] = {}
    t = threading.Thread(target=lambda: result.setdefault("w", hot_writes(node.server, 3, 40)))
    t.start()
    try:
        # What a busy versioning stage does (the runtime, when accounting says so).
        contract.ask_to_grow(str(run_dir), "versioning", node.proc.pid)
        wait_until(lambda: "versioning.1" in node.stage_pids(), 10, "a second worker")
    finally:
        t.join(60)
    with node.client() as c:
        assert set(c.get("hot").values) == result["w"]
    assert "worker versioning.1 added" in node.log()
