"""The load generator's runs (the ``seda_dynamo.loadgen`` package, seda targets): result
dicts, closed and open loop, client processes, errors, several servers and owner routing,
mixed runs, ``seda-dynamo bench --json``, and ``bench`` without the ``bench`` extra.

Fast (~10 s): small runs (at most a few hundred requests) against the bare echo chain of
``bench/echo_chain.py``, in-process fake nodes (a thread of ROUTER sockets, one of which
answers ``ring``) and one real node (the ``node`` fixture). Every process started here is
stopped by pid before the module ends. The parts without IO are in
``test_loadgen_pure.py``, the TCP drivers in ``test_loadgen_drivers.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import psutil
import pytest
import zmq

from bench import REPO_ROOT
from bench.echo_chain import EchoChain, start_echo_chain
from seda_dynamo.loadgen import (
    CDF_PERCENTILES,
    fetch_ring,
    format_result,
    owner_routes,
    run_mix,
    run_phase,
    run_phases,
    server_list,
)
from seda_dynamo.ports import free_port
from seda_dynamo.ring import partition_of

KEYS = {"phase", "ops", "errors", "seconds", "ops_per_sec", "p50_ms", "p99_ms", "p999_ms",
        "max_ms", "concurrency"}


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoChain]:
    with start_echo_chain(free_port()) as chain:
        yield chain
    assert all(p.poll() is not None for p in chain.procs)


def _check_result(r: dict[str, Any], phase: str, ops: int, concurrency: int) -> None:
    assert KEYS <= r.keys()
    assert r["phase"] == phase and r["concurrency"] == concurrency
    assert r["ops"] == ops and r["sent"] == ops and r["errors"] == {}
    assert r["seconds"] > 0 and r["ops_per_sec"] == pytest.approx(ops / r["seconds"], rel=0.01)
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"] <= r["max_ms"] < 5000


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
