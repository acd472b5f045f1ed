"""Admission control and the stage counters on a real node (supervisor + 5 stages)."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq
from support import wait_until

pytestmark = pytest.mark.integration


def burst(server: str, count: int, timeout: float = 10.0) -> dict[int, dict]:
    """``count`` puts sent at once on one DEALER socket; every reply by request id."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"tcp://{server}")
        for i in range(count):
            body = {"op": "put", "id": i, "key": b"burst-%d" % i, "value": b"v%d" % i}
            sock.send_multipart([b"", msgpack.packb(body)])
        replies: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        while len(replies) < count and sock.poll(max(0, deadline - time.monotonic()) * 1000):
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            replies[reply["id"]] = reply
        return replies
    finally:
        sock.close(linger=0)
        ctx.term()


def test_requests_over_the_in_flight_limit_are_shed_and_the_rest_are_served(node_factory):
    node = node_factory(extra=("--max-in-flight", "8")).start()
    replies = burst(node.server, 400)
    assert len(replies) == 400, "every request is answered, shed or served"
    shed = [i for i, r in replies.items() if r.get("error") == "overloaded"]
    served = [i for i, r in replies.items() if r.get("ok")]
    assert shed and served and len(shed) + len(served) == 400, replies
    assert "requests in flight" in replies[shed[0]]["message"]
    with node.client() as c:
        for i in served[:50]:
            assert c.get(b"burst-%d" % i).values == [b"v%d" % i]
        for i in shed[:50]:  # a shed write was never applied
            assert c.get(b"burst-%d" % i).values == []
        network = wait_until(lambda: c.stats()["network"].get("shed", 0) >= len(shed) and
                             c.stats()["network"], 5, "the shed counter")
    assert network["shed_by"]["in_flight"] >= len(shed)


def test_a_deep_stage_queue_sheds_new_requests_until_it_drains(node_factory):
    """With the high-water mark at a microsecond every queue is "deep" once traffic flows:
    requests are shed naming the stage, and the node still serves in between."""
    node = node_factory(extra=("--overload-delay-ms", "0.001")).start()
    reasons, served = set(), 0
    with node.client(timeout=2.0) as c:
        deadline = time.monotonic() + 5.0
        i = 0
        while time.monotonic() < deadline and not (reasons and served > 5):
            i += 1
            try:
                c.put(f"q{i}", b"v")
                served += 1
            except Exception as exc:  # noqa: BLE001 - checked below
                assert getattr(exc, "code", None) == "overloaded", exc
                reasons.add(str(exc).split(" queue is")[0].rsplit(" ", 1)[-1])
    assert served > 5
    assert reasons and reasons <= {"coordination", "versioning", "persistence"}, reasons


def test_every_stage_reports_its_controllers(node):
    with node.client() as c:
        for i in range(200):
            c.put(f"k{i}", b"v")

        def reported():
            stages = c.stats()
            return all(stages.get(s, {}).get("batches", 0) > 0 for s in
                       ("network", "coordination", "versioning", "persistence")) and stages

        stages = wait_until(reported, 5, "the stages to report their batches")
    for name, counters in stages.items():
        for key in ("batch_size", "batch_limit", "queue_depth", "queue_delay_ms",
                    "queue_delay_max_ms", "service_time_ms", "dropped"):
            assert key in counters, (name, key)
        assert counters["batch_limit"] >= 16, name
    assert stages["network"]["shed"] == 0
