"""Throughput benchmarks: one real node and a 3-node cluster (put, get) against the
echo-chain ceiling.

Not part of ``make test`` (it starts a node and a cluster and takes ~1 min). Run with::

    /tmp/v/bin/python -m pytest bench -q -p no:cacheprovider --benchmark-enable

Each benchmark is one closed-loop ``loadgen.run_phase`` of ``BENCH_OPS`` (default 20,000)
requests with 64 in flight; ``benchmark.extra_info`` holds its result dict (ops/s and
latency percentiles), and the session ends with a table of ops/s side by side with the
ratio to the echo chain. The cluster runs (N=3, R=2, W=2) send each request to the first
node of its key's preference list (``routing="owner"``, the ring fetched once per run).
``python -m bench.report`` adds the rate-limited p99.9 runs.
"""

from __future__ import annotations

import os
from typing import Any

from bench import SingleNode
from bench.conftest import CEILING
from bench.echo_chain import EchoChain
from seda_dynamo.loadgen import format_result, run_phase

OPS = int(os.environ.get("BENCH_OPS", "20000"))
CONCURRENCY = 64
KEYS = OPS  # every key written once per put phase: no sibling pile-up from blind puts
MAX_ERROR_RATE = 0.01


def _measure(benchmark: Any, results: dict[str, Any], label: str, server: str,
             op: str, **kwargs: Any) -> dict[str, Any]:
    result = benchmark.pedantic(run_phase, args=(server, op, OPS, CONCURRENCY),
                                kwargs={"keys": KEYS, "max_seconds": 60.0, **kwargs},
                                rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    results[label] = result
    print(f"\n{label}: {format_result(result)}")
    assert result["ops"] > 0, f"{label}: no request succeeded: {result['errors']}"
    failed = sum(result["errors"].values())
    assert failed <= MAX_ERROR_RATE * result["sent"], f"{label}: errors {result['errors']}"
    return result


def test_echo_chain_put(benchmark: Any, echo: EchoChain,
                        bench_results: dict[str, Any]) -> None:
    _measure(benchmark, bench_results, CEILING, echo.server, "put")


def test_node_put(benchmark: Any, node: SingleNode, bench_results: dict[str, Any]) -> None:
    _measure(benchmark, bench_results, "node put", node.server, "put")


def test_node_get(benchmark: Any, node: SingleNode, bench_results: dict[str, Any]) -> None:
    if "node put" not in bench_results:  # run alone: load the keys first, untimed
        run_phase(node.server, "put", OPS, CONCURRENCY, keys=KEYS)
    _measure(benchmark, bench_results, "node get", node.server, "get")


def test_cluster_put(benchmark: Any, cluster: str, bench_results: dict[str, Any]) -> None:
    result = _measure(benchmark, bench_results, "cluster put", cluster, "put",
                      routing="owner")
    assert result["servers"] == 3 and result["routing"] == "owner"


def test_cluster_get(benchmark: Any, cluster: str, bench_results: dict[str, Any]) -> None:
    if "cluster put" not in bench_results:  # run alone: load the keys first, untimed
        run_phase(cluster, "put", OPS, CONCURRENCY, keys=KEYS, routing="owner")
    _measure(benchmark, bench_results, "cluster get", cluster, "get", routing="owner")
