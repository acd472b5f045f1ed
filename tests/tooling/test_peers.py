"""``bench/peers.py``: a real Redis and a real 3-member etcd on loopback, each driven
briefly by ``loadgen.run_mix`` (a few hundred requests).

A test is skipped, naming the Debian package, when its binary is missing. Every process a
context manager started must be gone (checked by pid) and its temp dir removed, also when
the body raises.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from bench.peers import MissingBinary, binary, etcd_cluster, redis_server
from seda_dynamo.loadgen import run_mix


def _need(name: str) -> None:
    try:
        binary(name)
    except MissingBinary as exc:
        pytest.skip(str(exc))


def _alive(pids: list[int]) -> list[int]:
    """The pids still running (a zombie or a reused pid of someone else's does not count)."""
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and \
                    any(name in " ".join(proc.cmdline()) for name in ("redis", "etcd")):
                alive.append(pid)
        except psutil.Error:
            pass
    return alive


def _check_mix(r: dict, ops: int, servers: int) -> None:
    assert r["errors"] == {} and r["ops"] == r["sent"] == ops
    assert r["servers"] == servers and all(n > 0 for n in r["per_server"].values())
    for s in r["by_op"].values():
        assert s["ops"] > 0
        assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["p999_ms"] <= s["max_ms"] < 5000


def test_redis_server_is_durable_driven_and_stopped() -> None:
    _need("redis-server")
    with redis_server() as url:
        pids, data_dir = list(url.pids), url.data_dir
        assert url.startswith("redis://127.0.0.1:") and _alive(pids) == pids
        r = run_mix(url, 400, concurrency=16, keys=100, seed=1, prefill=True)
        logs = [f for _, _, files in os.walk(data_dir) for f in files if ".aof" in f]
        assert logs  # appendonly: the writes went to the log
    _check_mix(r, 400, 1)
    assert r["kind"] == "redis" and r["prefill"]["ops"] == 100
    assert _alive(pids) == [] and not os.path.exists(data_dir)


def test_a_failing_body_still_stops_redis() -> None:
    _need("redis-server")
    seen: dict = {}
    with pytest.raises(RuntimeError, match="boom"):
        with redis_server() as url:
            seen.update(pids=list(url.pids), dir=url.data_dir)
            raise RuntimeError("boom")
    assert seen["pids"] and _alive(seen["pids"]) == [] and not os.path.exists(seen["dir"])


def test_etcd_cluster_of_three_is_driven_and_stopped() -> None:
    _need("etcd")
    with etcd_cluster(3) as urls:
        pids, data_dir = list(urls.pids), urls.data_dir
        assert len(urls) == 3 and all(u.startswith("http://127.0.0.1:") for u in urls)
        assert len(set(pids)) == 3 and _alive(pids) == pids
        assert urls.target == "etcd://127.0.0.1:" + ",".join(u.rsplit(":", 1)[1] for u in urls)
        r = run_mix(urls.target, 300, concurrency=16, keys=100, seed=2)
    _check_mix(r, 300, 3)
    assert r["kind"] == "etcd" and r["connections"] == 16
    assert _alive(pids) == [] and not os.path.exists(data_dir)


def test_a_missing_binary_names_its_debian_package(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to find
    with pytest.raises(MissingBinary, match="Debian package redis-server"):
        with redis_server():
            pass
    with pytest.raises(MissingBinary, match="Debian package etcd-server") as exc:
        with etcd_cluster(1):
            pass
    assert exc.value.package == "etcd-server"
