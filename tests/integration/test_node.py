"""A real node (supervisor + 5 stage processes, ZeroMQ, Berkeley DB): the client's view."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
import zmq

from seda_dynamo import contexts
from seda_dynamo.client import AsyncClient, Client

pytestmark = pytest.mark.integration


def test_round_trip_ping_ring_and_stats(node):
    with node.client() as c:
        assert c.ping() == "n1"
        assert c.get("missing") == ([], None)
        ctx = c.put("k", b"v")
        assert isinstance(ctx, bytes)
        assert c.get("k").values == [b"v"]
        assert c.get(b"k").values == [b"v"], "a str key means its UTF-8 bytes"
        ring = c.ring()
        assert ring["partitions"] == 256 and len(ring["owners"]) == 256
        assert ring["nodes"] == [{"id": "n1", "client": node.server,
                                  "peer": f"127.0.0.1:{node.peer_port}", "status": "up"}]
        assert all(owners == ["n1"] for owners in ring["owners"])
        assert ring["epoch"] >= 1 and (ring["n"], ring["r"], ring["w"]) == (3, 2, 2)

        def five_stages():
            stages = c.stats()
            return len(stages) == 5 and stages

        from support import wait_until
        stages = wait_until(five_stages, 10, "every stage to report its counters")
        for name in ("network", "coordination", "versioning", "persistence", "gossip"):
            for counter in ("processed", "queue_depth", "errors", "cpu_percent", "rss_bytes"):
                assert counter in stages[name], (name, counter)
            assert stages[name]["rss_bytes"] > 1_000_000


def test_blind_puts_become_siblings_and_a_context_resolves_them(node):
    with node.client() as c:
        c.put("cart", b"apple")
        c.put("cart", b"pear")
        values, ctx = c.get("cart")
        assert sorted(values) == [b"apple", b"pear"]
        c.put("cart", b"apple+pear", ctx)
        assert c.get("cart").values == [b"apple+pear"]
        # A put with a stale context supersedes only what that context covered.
        c.put("cart", b"late", ctx)
        assert sorted(c.get("cart").values) == [b"apple+pear", b"late"]


def test_put_context_covers_the_version_just_written(node):
    with node.client() as c:
        ctx = c.put("k", b"one")
        ctx = c.put("k", b"two", ctx)
        assert c.get("k").values == [b"two"]


def test_delete_is_a_tombstone_that_hides_what_its_context_covers(node):
    with node.client() as c:
        c.put("d", b"x")
        values, ctx = c.get("d")
        c.delete("d", ctx)
        values, ctx2 = c.get("d")
        assert values == [] and ctx2 is not None
        c.put("d", b"again", ctx2)
        assert c.get("d").values == [b"again"]
        # Without a context, a delete covers what the coordinator holds.
        c.delete("d")
        assert c.get("d").values == []
        # A delete with a stale context leaves later writes alone.
        c.put("e", b"1")
        stale = c.get("e").context
        c.put("e", b"2", stale)
        c.put("e", b"3")
        c.delete("e", stale)
        assert sorted(c.get("e").values) == [b"2", b"3"]


def test_concurrent_puts_to_one_key_never_lose_a_sibling(node):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(f"tcp://{node.server}")
    try:
        for i in range(200):
            sock.send_multipart([b"", msgpack.packb({"op": "put", "id": i, "key": b"hot",
                                                     "value": str(i).encode()})])
        replies = [msgpack.unpackb(sock.recv_multipart()[-1]) for _ in range(200)]
        assert all(r["ok"] for r in replies)
    finally:
        sock.close(linger=0)
        ctx.term()
    with node.client() as c:
        assert sorted(c.get("hot").values) == sorted(str(i).encode() for i in range(200))


def test_req_socket_and_pipelined_dealer_with_1000_in_flight(node):
    ctx = zmq.Context()
    try:
        req = ctx.socket(zmq.REQ)
        req.connect(f"tcp://{node.server}")
        req.send(msgpack.packb({"op": "put", "key": b"r", "value": b"req"}))
        assert req.poll(5000)
        assert msgpack.unpackb(req.recv())["ok"] is True
        req.send(msgpack.packb({"op": "get", "key": b"r", "id": 7}))
        assert req.poll(5000)
        reply = msgpack.unpackb(req.recv())
        assert reply["values"] == [b"req"] and reply["id"] == 7
        req.close(linger=0)

        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://{node.server}")
        for i in range(1000):
            dealer.send_multipart([b"", msgpack.packb(
                {"op": "put", "id": i, "key": f"p{i}".encode(), "value": str(i).encode()})])
        seen = set()
        while len(seen) < 1000:
            assert dealer.poll(10_000), f"only {len(seen)} of 1000 replies"
            frames = dealer.recv_multipart()
            assert frames[0] == b""
            reply = msgpack.unpackb(frames[1])
            assert reply["ok"], reply
            seen.add(reply["id"])
        assert seen == set(range(1000))
        for i in range(0, 1000, 5):
            dealer.send_multipart([b"", msgpack.packb({"op": "get", "id": i,
                                                       "key": f"p{i}".encode()})])
        for _ in range(200):
            assert dealer.poll(10_000)
            reply = msgpack.unpackb(dealer.recv_multipart()[1])
            assert reply["values"] == [str(reply["id"]).encode()]
        dealer.close(linger=0)
    finally:
        ctx.term()


def test_asyncio_client_pipelines(node):
    async def main():
        async with AsyncClient(node.server) as c:
            assert await c.ping() == "n1"
            await asyncio.gather(*(c.put(f"a{i}", b"%d" % i) for i in range(100)))
            results = await asyncio.gather(*(c.get(f"a{i}") for i in range(100)))
            assert [r.values for r in results] == [[b"%d" % i] for i in range(100)]
            values, ctx = await c.get("a1")
            await c.delete("a1", ctx)
            assert (await c.get("a1")).values == []

    asyncio.run(main())


def test_wiped_data_directory_gets_a_new_incarnation(node_factory, tmp_path):
    import shutil

    node = node_factory().start()
    with node.client() as c:
        first = contexts.decode_context(c.put("k", b"v1"))
    node.stop()
    shutil.rmtree(node.data_dir)
    node.start()
    with node.client() as c:
        second = contexts.decode_context(c.put("k", b"v2"))
    assert set(first).isdisjoint(second), (first, second)
    assert all(actor.startswith("n1#") for actor in [*first, *second])


def test_client_can_be_used_as_a_library_object():
    c = Client("127.0.0.1:1", timeout=0.2)
    try:
        with pytest.raises(Exception) as info:
            c.ping()
        assert info.value.code == "no_reply"
    finally:
        c.close()
