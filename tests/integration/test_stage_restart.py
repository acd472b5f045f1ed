"""A real node whose persistence stage is killed while versioning waits on it: the
restarted stage announces itself (``messages.Started``) to every versioning worker, which
stop waiting on the dead process, so the keys it held are served again at once rather
than after the engine deadline (Dynamo paper section 4.4's read-merge-write per key;
found by the simulator, seed 21)."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from support import retry, wait_until

from seda_dynamo.client import Client, DynamoError
from stages.versioning import ENGINE_DEADLINE

pytestmark = pytest.mark.integration

KEYS = [f"held-{i}" for i in range(8)]  # spread over both versioning workers


def test_keys_a_killed_persistence_stage_was_reading_are_served_again_after_its_restart(
        node_factory):
    node = node_factory(extra=("--versioning-workers", "2")).start()
    with node.client() as c:
        for key in KEYS:
            c.put(key, b"before")
    old = node.stage_pids()["persistence"]
    os.kill(old, signal.SIGSTOP)  # its queue fills with reads it will never answer
    try:
        outcomes: list[str] = []

        def put(key: str) -> None:
            with Client(node.server, timeout=1.5) as c:
                try:
                    c.put(key, b"lost", timeout=1.0)
                    outcomes.append("ok")
                except DynamoError as exc:
                    outcomes.append(exc.code)

        threads = [threading.Thread(target=put, args=(key,)) for key in KEYS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(outcomes) == len(KEYS) and "ok" not in outcomes, outcomes
    finally:
        os.kill(old, signal.SIGKILL)
    wait_until(lambda: node.stage_pids().get("persistence") not in (None, old), 10,
               "persistence to be restarted")
    # Before, each key stayed in flight until ENGINE_DEADLINE after its lost read, and
    # every put of it queued behind: these failed for the whole window.
    with node.client(timeout=1.5) as c:
        for key in KEYS:
            retry(lambda key=key: c.put(key, b"after", timeout=1.0),
                  seconds=ENGINE_DEADLINE / 4)
            # blind puts: siblings; the put whose read was lost was never made
            assert sorted(c.get(key).values) == [b"after", b"before"]
