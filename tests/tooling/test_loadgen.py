"""The load generator (the ``seda_dynamo.loadgen`` package): histogram merge, result
dicts, formatting, the Zipfian key chooser, the RESP and HTTP parsers, mixed runs,
``seda-dynamo bench --json``, and ``bench`` without the ``bench`` extra.

Fast (~10 s): the pure parts, then small runs (at most a few hundred requests) against the
bare echo chain of ``bench/echo_chain.py``, in-process fake servers (a thread of ROUTER
sockets, one of which answers ``ring``; a thread speaking RESP) and one real node (the
``node`` fixture). Every process started here is stopped by pid before the module ends.
Redis and etcd themselves are driven in ``tests/tooling/test_peers.py``.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgpack
import psutil
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import REPO_ROOT, free_port
from bench.echo_chain import EchoChain, start_echo_chain
from seda_dynamo.loadgen import (
    CDF_PERCENTILES,
    Zipfian,
    fetch_ring,
    format_result,
    key_chooser,
    merge_histograms,
    new_histogram,
    owner_routes,
    parse_http_response,
    parse_resp,
    parse_target,
    run_mix,
    run_phase,
    run_phases,
    server_list,
)
from seda_dynamo.ring import partition_of

KEYS = {"phase", "ops", "errors", "seconds", "ops_per_sec", "p50_ms", "p99_ms", "p999_ms",
        "max_ms", "concurrency"}


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoChain]:
    chain = start_echo_chain(free_port())
    try:
        yield chain
    finally:
        chain.stop()
    assert all(p.poll() is not None for p in chain.procs)


def _check_result(r: dict[str, Any], phase: str, ops: int, concurrency: int) -> None:
    assert KEYS <= r.keys()
    assert r["phase"] == phase and r["concurrency"] == concurrency
    assert r["ops"] == ops and r["sent"] == ops and r["errors"] == {}
    assert r["seconds"] > 0 and r["ops_per_sec"] == pytest.approx(ops / r["seconds"], rel=0.01)
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"] <= r["max_ms"] < 5000


# Pure parts --------------------------------------------------------------------------------
def test_merge_histograms_keeps_every_value() -> None:
    a, b = new_histogram(), new_histogram()
    for us in range(1, 1001):  # 1 us .. 1 ms
        a.record_value(us)
    for _ in range(10):
        b.record_value(50_000)  # 50 ms
    merged = merge_histograms([a.encode(), b.encode()])
    assert merged.get_total_count() == 1010
    assert merged.get_value_at_percentile(50) == pytest.approx(505, rel=0.01)
    assert merged.get_max_value() == pytest.approx(50_000, rel=0.001)
    assert merge_histograms([]).get_total_count() == 0


def test_format_result_is_one_line_with_the_numbers() -> None:
    r = {"phase": "get", "ops": 998, "errors": {"no_reply": 1, "overloaded": 1},
         "seconds": 0.5, "ops_per_sec": 1996.0, "p50_ms": 1.25, "p99_ms": 3.5,
         "p999_ms": 7.0, "max_ms": 9.75, "concurrency": 64}
    line = format_result(r)
    assert "\n" not in line
    for part in ("get", "998 ok", "1996 ops/s", "p50 1.25 ms", "p99 3.50 ms",
                 "p99.9 7.00 ms", "max 9.75 ms", "64 in flight", "no_reply=1",
                 "overloaded=1"):
        assert part in line
    assert "scheduled" in format_result({**r, "rate": 2000.0, "backlogged": 3})


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="phase"):
        run_phase("127.0.0.1:1", "mix", 10)
    with pytest.raises(ValueError):
        run_phase("127.0.0.1:1", "put", 0)
    with pytest.raises(ValueError):
        run_phase("127.0.0.1:1", "put", 10, rate=0)


# Against the echo chain --------------------------------------------------------------------
def test_closed_loop_result(echo: EchoChain) -> None:
    r = run_phase(echo.server, "put", 300, concurrency=16, value_size=64, keys=50)
    _check_result(r, "put", 300, 16)
    assert r["rate"] is None and r["backlogged"] == 0


def test_phases_are_put_then_get(echo: EchoChain) -> None:
    results = run_phases(echo.server, 100, concurrency=8, keys=10)
    assert [r["phase"] for r in results] == ["put", "get"]
    for r in results:
        _check_result(r, r["phase"], 100, 8)


def test_two_processes_merge_their_histograms(echo: EchoChain) -> None:
    r = run_phase(echo.server, "get", 101, concurrency=8, processes=2)
    _check_result(r, "get", 101, 8)
    assert r["processes"] == 2


def test_rate_limited_follows_the_schedule(echo: EchoChain) -> None:
    r = run_phase(echo.server, "put", 100, concurrency=8, rate=2000.0)
    _check_result(r, "put", 100, 8)
    assert r["rate"] == 2000.0 and r["backlogged"] >= 0
    assert r["seconds"] >= 0.045  # 100 sends 0.5 ms apart cannot finish sooner


def test_wall_clock_cap_stops_sending(echo: EchoChain) -> None:
    r = run_phase(echo.server, "put", 500, concurrency=1, max_seconds=0.02)
    assert 0 < r["sent"] < 500 and r["ops"] == r["sent"] and r["errors"] == {}


# Errors --------------------------------------------------------------------------------------
def test_no_reply_is_counted() -> None:
    r = run_phase(f"127.0.0.1:{free_port()}", "put", 3, concurrency=3, timeout=0.1)
    assert r["ops"] == 0 and r["errors"] == {"no_reply": 3}
    assert r["ops_per_sec"] == 0 and r["p999_ms"] == 0
    assert "no_reply=3" in format_result(r)


def test_error_replies_are_counted_by_code() -> None:
    """A fake server: odd ids are shed as ``overloaded``, even ones succeed."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            if not router.poll(20):
                continue
            *envelope, body = router.recv_multipart()
            rid = msgpack.unpackb(body)["id"]
            reply = {"ok": True, "id": rid} if rid % 2 == 0 else \
                {"ok": False, "id": rid, "error": "overloaded", "message": "shed"}
            router.send_multipart([*envelope, msgpack.packb(reply)])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        r = run_phase(f"127.0.0.1:{port}", "get", 40, concurrency=4)
    finally:
        done.set()
        thread.join(5)
        router.close(linger=0)
        ctx.term()
    assert r["ops"] == 20 and r["errors"] == {"overloaded": 20}
    assert r["p50_ms"] > 0


# Several servers -------------------------------------------------------------------------
class FakeNodes:
    """``count`` ROUTERs on loopback served by one thread: every get/put succeeds, and a
    ``ring`` request gets ``ring`` back (node ``n{i}`` at router ``i``'s address).

    Requests are held until the thread has read all that were queued and only then
    answered, so ``max_held`` (the most requests seen unanswered at once, over all the
    routers) is the client's real in-flight total.
    """

    def __init__(self, count: int) -> None:
        self.ctx = zmq.Context()
        self.routers = []
        for _ in range(count):
            router = self.ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.bind_to_random_port("tcp://127.0.0.1")
            self.routers.append(router)
        self.servers = [r.getsockopt_string(zmq.LAST_ENDPOINT).removeprefix("tcp://")
                        for r in self.routers]
        self.ring: dict[str, Any] = {}
        self.keys: list[list[bytes]] = [[] for _ in range(count)]
        self.ring_requests = 0
        self.max_held = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        poller = zmq.Poller()
        for router in self.routers:
            poller.register(router, zmq.POLLIN)
        while not self.done.is_set():
            ready = dict(poller.poll(20))
            held = []
            while ready:
                for i, router in enumerate(self.routers):
                    if router in ready:
                        while router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                            *envelope, body = router.recv_multipart()
                            held.append((i, envelope, msgpack.unpackb(body)))
                ready = dict(poller.poll(1))  # whatever else is on its way
            self.max_held = max(self.max_held, len(held))
            for i, envelope, req in held:
                if req["op"] == "ring":
                    self.ring_requests += 1
                    reply = {**self.ring, "ok": True, "id": req["id"]}
                else:
                    self.keys[i].append(req["key"])
                    reply = {"ok": True, "id": req["id"]}
                self.routers[i].send_multipart([*envelope, msgpack.packb(reply)])

    def __enter__(self) -> FakeNodes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(5)
        for router in self.routers:
            router.close(linger=0)
        self.ctx.term()


def _ring(servers: list[str], owners: list[list[str]], down: tuple[str, ...] = ()
          ) -> dict[str, Any]:
    nodes = [{"id": f"n{i}", "client": s, "peer": "127.0.0.1:1",
              "status": "down" if f"n{i}" in down else "up"} for i, s in enumerate(servers)]
    return {"partitions": len(owners), "owners": owners, "nodes": nodes, "epoch": 1,
            "n": 3, "r": 2, "w": 2}


def test_server_list_accepts_one_a_string_or_a_list() -> None:
    assert server_list("a:1") == ["a:1"]
    assert server_list(" a:1, b:2 ,") == ["a:1", "b:2"]
    assert server_list(["a:1", "b:2"]) == ["a:1", "b:2"]
    with pytest.raises(ValueError):
        server_list(" , ")
    with pytest.raises(ValueError, match="routing"):
        run_phase("a:1,b:2", "put", 10, routing="random")


def test_owner_routes_skip_nodes_that_are_not_up() -> None:
    ring = _ring(["a:1", "b:2", "c:3"], [["n0", "n1"], ["n1", "n2"], ["n2", "n0"], ["n2"]],
                 down=("n2",))
    targets, route = owner_routes(ring, "seed:9")
    assert [targets[t] for t in route] == ["a:1", "b:2", "a:1", "seed:9"]
    with pytest.raises(RuntimeError, match="malformed"):
        owner_routes({**ring, "partitions": 8}, "seed:9")


def test_round_robin_spreads_over_servers_within_one_in_flight_limit() -> None:
    with FakeNodes(2) as fake:
        r = run_phase(",".join(fake.servers), "put", 200, concurrency=8, keys=50)
    _check_result(r, "put", 200, 8)
    assert r["servers"] == 2 and r["routing"] == "round-robin"
    assert r["per_server"] == {fake.servers[0]: 100, fake.servers[1]: 100}
    assert [len(k) for k in fake.keys] == [100, 100]
    assert fake.ring_requests == 0
    assert 1 <= fake.max_held <= 8  # the limit is the total over both servers
    assert "2 servers, round-robin" in format_result(r)


def test_owner_routing_sends_each_key_to_its_first_live_owner() -> None:
    with FakeNodes(3) as fake:
        owners = [["n0", "n1", "n2"], ["n1", "n2", "n0"], ["n2", "n0", "n1"], ["n1", "n0"]]
        fake.ring = _ring(fake.servers, owners, down=("n2",))
        expected = {0: 0, 1: 1, 2: 0, 3: 1}  # partition -> router; n2 is down
        results = run_phases(fake.servers[0], 60, concurrency=8, keys=60, routing="owner")
        assert fake.ring_requests == 1  # once for both phases
        r = run_phase(fake.servers, "get", 40, concurrency=8, processes=2, routing="owner")
        assert fake.ring_requests == 2
    for res in results:
        _check_result(res, res["phase"], 60, 8)
        assert res["servers"] == 2 and res["routing"] == "owner"
    _check_result(r, "get", 40, 8)
    assert r["processes"] == 2 and sum(r["per_server"].values()) == 40
    assert fake.keys[2] == [] and len(fake.keys[0]) + len(fake.keys[1]) == 160
    for i in (0, 1):
        assert all(expected[partition_of(k, 4)] == i for k in fake.keys[i])
    assert fake.keys[0] and fake.keys[1]
    assert 1 <= fake.max_held <= 8


def test_no_ring_is_an_error() -> None:
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="no ring"):
        fetch_ring(f"127.0.0.1:{free_port()}", timeout=0.1)
    assert time.monotonic() - t0 < 1.0


# Keys: uniform and Zipfian ------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 2**32), theta=st.floats(0.05, 0.995))
def test_zipfian_keys_stay_in_range(n: int, seed: int, theta: float) -> None:
    z = Zipfian(n, theta, random.Random(seed))
    draws = [z() for _ in range(300)]
    assert all(0 <= d < n for d in draws)
    uniform = key_chooser("uniform", n, random.Random(seed))
    assert all(0 <= uniform() < n for _ in range(300))
    if n <= 2:
        assert set(draws) <= {0, 1} and (n == 2 or set(draws) == {0})


def test_zipfian_hot_keys_are_hot() -> None:
    n, draws = 1000, 50_000
    z = Zipfian(n, rng=random.Random(7))  # YCSB's theta 0.99
    counts = Counter(z() for _ in range(draws))
    assert counts.most_common(1)[0][0] == 0  # k0 is the hottest key
    assert counts[0] / draws == pytest.approx(z.probability(0), rel=0.05)  # ~13 %
    assert counts[1] / draws == pytest.approx(z.probability(1), rel=0.08)
    for lo, hi in ((2, 10), (10, 100), (100, 1000)):  # the approximation's error is < 10 %
        share = sum(counts[k] for k in range(lo, hi)) / draws
        assert share == pytest.approx(sum(z.probability(k) for k in range(lo, hi)), rel=0.2)
    assert sum(c for _, c in counts.most_common(10)) / draws > 0.3  # uniform: 1 %
    choose = key_chooser("uniform", n, random.Random(7))
    uniform = Counter(choose() for _ in range(draws))
    assert max(uniform.values()) / draws < 0.005 and len(uniform) == n


def test_bad_key_choices_are_refused() -> None:
    with pytest.raises(ValueError):
        Zipfian(0)
    with pytest.raises(ValueError, match="theta"):
        Zipfian(10, theta=1.0)
    with pytest.raises(ValueError, match="distribution"):
        key_chooser("pareto", 10, random.Random())
    with pytest.raises(ValueError, match="distribution"):
        run_mix("127.0.0.1:1", 10, distribution="pareto")
    with pytest.raises(ValueError, match="get_ratio"):
        run_mix("127.0.0.1:1", 10, get_ratio=1.5)
    with pytest.raises(ValueError, match="owner"):
        run_mix("redis://127.0.0.1:1", 10, routing="owner")


# Targets and the TCP drivers' parsers ---------------------------------------------------------
def test_parse_target_names_kind_and_endpoints() -> None:
    assert parse_target("127.0.0.1:1") == ("seda", ["127.0.0.1:1"], {})
    assert parse_target("seda://a:1,b:2") == ("seda", ["a:1", "b:2"], {})
    assert parse_target(["a:1", "b:2"]) == ("seda", ["a:1", "b:2"], {})
    assert parse_target("redis://127.0.0.1:6379?connections=4") == \
        ("redis", ["127.0.0.1:6379"], {"connections": "4"})
    assert parse_target("etcd://127.0.0.1:1,2,127.0.0.2:3") == \
        ("etcd", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.2:3"], {})
    for bad in ("mongo://127.0.0.1:1", "redis://nohost", "redis://127.0.0.1:0",
                "etcd://127.0.0.1:1?depth=2", "redis://"):
        with pytest.raises(ValueError):
            parse_target(bad)


def _parse_all(parse: Any, stream: bytes) -> list[tuple[int, str | None, bool]]:
    out, pos = [], 0
    while (parsed := parse(stream, pos)) is not None:
        out.append(parsed)
        pos = parsed[0]
        if pos == len(stream):
            break
    return out


def _check_every_prefix(parse: Any, stream: bytes, ends: list[int]) -> None:
    """Cut anywhere, a parser returns exactly the replies that are complete."""
    for cut in range(len(stream) + 1):
        assert [p[0] for p in _parse_all(parse, stream[:cut])] == [e for e in ends if e <= cut]


def test_parse_resp_counts_errors_by_code_and_waits_for_whole_replies() -> None:
    replies = [b"+OK\r\n", b"$-1\r\n", b"$7\r\nhel\r\nlo\r\n", b"-WRONGTYPE Operation\r\n",
               b":3\r\n", b"$0\r\n\r\n", b"-ERR\r\n"]
    stream = b"".join(replies)
    parsed = _parse_all(parse_resp, stream)
    assert [code for _, code, _ in parsed] == [None, None, None, "WRONGTYPE", None, None, "ERR"]
    assert all(keep for _, _, keep in parsed) and parsed[-1][0] == len(stream)
    _check_every_prefix(parse_resp, stream, [p[0] for p in parsed])
    with pytest.raises(ValueError):
        parse_resp(b"*1\r\n$1\r\nx\r\n", 0)


def test_parse_http_response_with_length_chunks_and_close() -> None:
    ok = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n"
          b'{"a":"b"}')
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n5;ext=1\r\n:\"b\"}\r\n0\r\nX-Trailer: 1\r\n\r\n")
    unavailable = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n"
                   b"Connection: close\r\n\r\n{}")
    stream = ok + chunked + unavailable
    parsed = _parse_all(parse_http_response, stream)
    assert [(code, keep) for _, code, keep in parsed] == \
        [(None, True), (None, True), ("http_503", False)]
    assert [p[0] for p in parsed] == [len(ok), len(ok) + len(chunked), len(stream)]
    _check_every_prefix(parse_http_response, stream, [p[0] for p in parsed])
    with pytest.raises(ValueError):
        parse_http_response(b"SSH-2.0-OpenSSH\r\n\r\n", 0)
    with pytest.raises(ValueError):
        parse_http_response(b"HTTP/1.1 200 OK\r\n\r\n", 0)  # no length: unsupported


# Mixed runs -----------------------------------------------------------------------------------
def _check_by_op(r: dict[str, Any]) -> None:
    assert set(r["by_op"]) == {"get", "put"}
    for s in r["by_op"].values():
        assert s["ops"] > 0 and s["ops_per_sec"] > 0
        assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["p999_ms"] <= s["max_ms"] < 5000
    assert [p for p, _ in r["cdf"]] == list(CDF_PERCENTILES)
    ms = [v for _, v in r["cdf"]]
    assert ms == sorted(ms) and ms[0] > 0 and ms[-1] == pytest.approx(r["max_ms"], rel=0.01)


def test_mix_has_per_op_summaries_and_a_cdf(echo: EchoChain) -> None:
    r = run_mix(echo.server, 400, concurrency=16, get_ratio=0.75, keys=100,
                distribution="zipfian", seed=3)
    _check_result(r, "mix", 400, 16)
    _check_by_op(r)
    assert 240 < r["by_op"]["get"]["ops"] < 360
    assert r["by_op"]["get"]["ops"] + r["by_op"]["put"]["ops"] == 400
    assert (r["kind"], r["distribution"], r["get_ratio"], r["seed"]) == \
        ("seda", "zipfian", 0.75, 3)
    assert r["prefill"] is None and r["mean_ms"] > 0
    again = run_mix(f"seda://{echo.server}", 400, concurrency=16, get_ratio=0.75, keys=100,
                    distribution="zipfian", seed=3)
    assert again["by_op"]["get"]["ops"] == r["by_op"]["get"]["ops"]  # the seed decides
    assert "get 3" in format_result(r) and "put " in format_result(r)


def test_mix_in_two_processes_reports_progress(echo: EchoChain,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    r = run_mix(echo.server, 300, concurrency=8, processes=2, rate=250.0, keys=40,
                progress=True, prefill=True)
    _check_result(r, "mix", 300, 8)
    _check_by_op(r)
    assert r["processes"] == 2 and r["seconds"] >= 1.1  # 300 sends 4 ms apart
    assert r["prefill"]["ops"] == 40 and r["prefill"]["errors"] == {}
    err = capfd.readouterr().err
    done = [int(n.replace(",", "")) for n in re.findall(r"\] ([\d,]+)/300 ops", err)]
    assert done[-1] == 300 and any(0 < n < 300 for n in done)  # the children reported
    assert "ops/s" in err and "errors 0" in err


def test_mix_against_a_real_node(node: Any) -> None:
    r = run_mix(node.server, 300, concurrency=8, keys=50, seed=5, prefill=True)
    assert set(r["errors"]) <= {"overloaded"}  # admission control may shed a few
    assert r["ops"] + sum(r["errors"].values()) == r["sent"] == 300
    assert r["prefill"]["ops"] + sum(r["prefill"]["errors"].values()) == 50
    _check_by_op(r)
    assert r["seconds"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"] <= r["max_ms"]


# TCP targets: a fake RESP server, nothing listening, a server that never answers -------------
def _resp_commands(buf: bytearray) -> list[list[bytes]]:
    """The complete RESP arrays at the start of ``buf``, removed from it."""
    commands = []
    while True:
        end = buf.find(b"\r\n")
        if end < 0:
            return commands
        count, pos, args = int(buf[1:end]), end + 2, []
        for _ in range(count):
            line = buf.find(b"\r\n", pos)
            if line < 0:
                return commands
            size = int(buf[pos + 1:line])
            if len(buf) < line + 4 + size:
                return commands
            args.append(bytes(buf[line + 2:line + 2 + size]))
            pos = line + 4 + size
        commands.append(args)
        del buf[:pos]


class FakeRedis:
    """A thread per connection on a loopback port: SET is ``+OK``; GET of a key ending in an
    odd digit is ``-WRONGTYPE ...``, of any other key a 3-byte value. ``silent`` never
    answers at all."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        conn.settimeout(0.05)
        with conn:
            while not self.done.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                replies = []
                for cmd in _resp_commands(buf):
                    if cmd[0] == b"SET":
                        replies.append(b"+OK\r\n")
                    elif int(cmd[1][-1:]) % 2:
                        replies.append(b"-WRONGTYPE Operation against a key\r\n")
                    else:
                        replies.append(b"$3\r\nabc\r\n")
                if replies and not self.silent:
                    conn.sendall(b"".join(replies))

    def __enter__(self) -> FakeRedis:
        self.threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in list(self.threads):
            thread.join(5)
        self.listener.close()


def test_redis_driver_pipelines_and_counts_errors_by_code() -> None:
    with FakeRedis() as fake:
        r = run_mix(fake.url + "?connections=3", 400, concurrency=12, keys=10, seed=1)
    gets = r["by_op"]["get"]
    assert r["kind"] == "redis" and r["connections"] == 3 and fake.connections == 3
    assert r["sent"] == 400 and set(r["errors"]) == {"WRONGTYPE"}
    assert gets["errors"] == r["errors"] and r["by_op"]["put"]["errors"] == {}
    assert r["ops"] + r["errors"]["WRONGTYPE"] == 400 and gets["ops"] > 0
    assert r["per_server"] == {fake.url.removeprefix("redis://"): 400}


def test_tcp_target_down_or_silent_is_counted_and_bounded() -> None:
    t0 = time.monotonic()
    r = run_mix(f"redis://127.0.0.1:{free_port()}", 50, concurrency=4)
    assert r["ops"] == 0 and r["errors"] == {"refused": 50}
    with FakeRedis(silent=True) as fake:
        r = run_mix(fake.url, 6, concurrency=3, timeout=0.2)
    assert r["ops"] == 0 and r["errors"] == {"no_reply": 6}
    assert time.monotonic() - t0 < 5.0


# The command line -----------------------------------------------------------------------------
def _bench_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seda_dynamo.cli", "bench", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_cli_writes_the_mix_result_as_json(echo: EchoChain, tmp_path: Any) -> None:
    out = tmp_path / "mix.json"
    proc = _bench_cli("--target", f"seda://{echo.server}", "--mix", "90/10", "--ops", "200",
                      "--concurrency", "8", "--keys", "20", "--distribution", "zipfian",
                      "--no-progress", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["phase"] == "mix" and r["ops"] == 200 and r["errors"] == {}
    assert r["get_ratio"] == 0.9 and r["distribution"] == "zipfian" and r["keys"] == 20
    assert r["by_op"]["get"]["ops"] > r["by_op"]["put"]["ops"] and len(r["cdf"]) > 10
    assert proc.stdout.startswith("mix ") and proc.stderr == ""
    phases = _bench_cli("--server", echo.server, "--ops", "50", "--json")  # stdout, as before
    assert phases.returncode == 0, phases.stderr
    assert [p["phase"] for p in json.loads(phases.stdout)] == ["put", "get"]
    bad = _bench_cli("--mix", "90/20")
    assert bad.returncode == 2 and "add up to 100" in bad.stderr


def test_bench_without_the_bench_extra_names_the_extra_and_exits_2(tmp_path: Any) -> None:
    """HdrHistogram missing (``sys.modules["hdrh"] = None`` in a sitecustomize, as if the
    extra were not installed): one line naming the extra, exit 2, no traceback."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['hdrh'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), REPO_ROOT])}
    proc = subprocess.run([sys.executable, "-m", "seda_dynamo.cli", "bench", "--server",
                           f"127.0.0.1:{free_port()}", "--ops", "1", "--no-progress"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'seda-dynamo[bench]'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_no_load_generator_process_is_left() -> None:
    me = psutil.Process()
    assert not [c.pid for c in me.children(recursive=True)
                if "seda_dynamo.loadgen" in " ".join(c.cmdline())]
