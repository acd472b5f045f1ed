"""Fixtures of the benchmark suite: the echo-chain ceiling, one real seda-dynamo node and
a 3-node loopback cluster (N=3, R=2, W=2).

Each runs for the whole session (started when a benchmark first needs it) and is stopped
by pid at teardown (no process survives the run). Results the benchmarks record are
printed side by side at the end, with the ratio to the echo chain. See
``bench/test_bench.py`` for how to run the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench import SingleNode, cluster_servers, start_node
from bench.echo_chain import EchoChain, start_echo_chain
from seda_dynamo.loadgen import CLUSTER_ARGS, local_cluster
from seda_dynamo.ports import free_port

RESULTS = pytest.StashKey[dict[str, dict[str, Any]]]()
NODE = pytest.StashKey[SingleNode]()
CEILING = "echo chain put"


@pytest.fixture(scope="session")
def echo() -> Iterator[EchoChain]:
    with start_echo_chain(free_port()) as chain:
        yield chain


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory,
         pytestconfig: pytest.Config) -> Iterator[SingleNode]:
    """A single node: bdb engine, fsync, N = R = W = 1; ready once it answers ping."""
    started = start_node(str(tmp_path_factory.mktemp("node")))
    pytestconfig.stash[NODE] = started
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[str]:
    """3 nodes (bdb, fsync, N=3 R=2 W=2) serving one ring: their client endpoints,
    comma-separated. Stopped by pid, its temp dir removed, at the end of the session.

    The single node, if one was started, is stopped first (2 cores: one thing at a
    time), so the cluster benchmarks run after the node's (they come last in the file).
    """
    single = pytestconfig.stash.get(NODE, None)
    if single is not None:
        single.stop()  # idempotent: its own fixture stops it again at the end
    with local_cluster(3, CLUSTER_ARGS) as members:
        yield cluster_servers(members)


@pytest.fixture(scope="session")
def bench_results(pytestconfig: pytest.Config) -> dict[str, dict[str, Any]]:
    """Label -> the ``run_phase`` result dict, for the summary at the end."""
    return pytestconfig.stash.setdefault(RESULTS, {})


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, {})
    if not results:
        return
    ceiling = results.get(CEILING, {}).get("ops_per_sec")
    tr = terminalreporter
    tr.section("seda-dynamo throughput (closed loop)")
    tr.write_line(f"{'':<16} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
                  f"{'x/echo':>9}  errors")
    for label, r in results.items():
        ratio = f"{r['ops_per_sec'] / ceiling:9.1%}" if ceiling else f"{'-':>9}"
        errors = ", ".join(f"{k}={v}" for k, v in sorted(r["errors"].items())) or "-"
        tr.write_line(f"{label:<16} {r['ops_per_sec']:>9.0f} {r['p50_ms']:>8.2f} "
                      f"{r['p99_ms']:>8.2f} {r['p999_ms']:>9.2f} {ratio}  {errors}")
