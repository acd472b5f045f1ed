"""The benchmark report: the echo-chain ceiling, one real node, then a 3-node cluster.

Runs, in order (closed loop, ``--concurrency`` in flight, ``--ops`` requests each):
the echo chain (the bare 5-process ZeroMQ pipeline, ``bench/echo_chain.py``), node put,
node get; then node put and get in rate-limited (open-loop) mode at half of the peak
just measured, which gives the p99.9 latency of a node that is not saturated (the
Dynamo paper's section 6 reports p99.9 under its production load, not at the knee).

Then the same four runs against a 3-node loopback cluster (N=3, R=2, W=2, the paper's
common configuration), each request sent straight to the first node of its key's
preference list (client-driven coordination, section 6.4), printed as a second table.
During the cluster's closed-loop put run every node's ``stats`` is sampled once a second,
which gives the CPU share of each stage (a third table). One thing runs at a time: the
echo chain is stopped before the node starts, the node before the cluster starts.

    /tmp/v/bin/python -m bench.report [--ops 20000] [--json]     # or: make bench
    /tmp/v/bin/python -m bench.report --skip-node                # the cluster only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import call, cluster_servers, free_port, start_node
from bench.echo_chain import start_echo_chain
from seda_dynamo.loadgen import fetch_ring, format_result, local_cluster, run_phase

CLUSTER_NODES = 3
CLUSTER_NRW = (3, 2, 2)
STAGE_ORDER = ("network", "coordination", "versioning", "persistence", "gossip")
SAMPLE_SECONDS = 1.0

Row = tuple[str, dict[str, Any]]


def table(rows: list[Row], ceiling: float) -> str:
    lines = ["| run | ops/s | p50 ms | p99 ms | p99.9 ms | % of ceiling | errors |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for label, r in rows:
        errors = ", ".join(f"{k}={v}" for k, v in sorted(r["errors"].items())) or "-"
        if r.get("backlogged"):
            errors += f" ({r['backlogged']} backlogged)"
        share = f"{100.0 * r['ops_per_sec'] / ceiling:.1f}" if ceiling else "-"
        lines.append(f"| {label} | {r['ops_per_sec']:.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {share} | {errors} |")
    return "\n".join(lines)


class StatsSampler:
    """Polls ``stats`` of some nodes every second in a thread: each stage's ``cpu_percent``.

    A stage reports its counters once a second (``cpu_percent`` over that second), so the
    first sample of each node, which may cover time before the run, is left out when
    there are others.
    """

    def __init__(self, servers: dict[str, str], interval: float = SAMPLE_SECONDS) -> None:
        self.servers = servers  # node id -> client address
        self.interval = interval
        self.samples: dict[str, list[dict[str, float]]] = {node: [] for node in servers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-sampler", daemon=True)
        self.cpu_seconds = 0.0
        self.seconds = 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for node, server in self.servers.items():
                reply = call(server, {"op": "stats"}, timeout=0.5)
                if reply and reply.get("ok"):
                    self.samples[node].append(
                        {stage: float(c.get("cpu_percent", 0.0))
                         for stage, c in reply.get("stages", {}).items()})

    def __enter__(self) -> StatsSampler:
        self._t0, self._cpu0 = time.monotonic(), time.process_time()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.seconds = time.monotonic() - self._t0
        self.cpu_seconds = time.process_time() - self._cpu0  # the load generator (us)

    def mean_cpu(self) -> dict[str, dict[str, float]]:
        """Node -> stage -> mean cpu_percent over the samples."""
        out: dict[str, dict[str, float]] = {}
        for node, samples in self.samples.items():
            use = samples[1:] if len(samples) > 1 else samples
            stages: dict[str, list[float]] = {}
            for sample in use:
                for stage, pct in sample.items():
                    stages.setdefault(stage, []).append(pct)
            out[node] = {s: sum(v) / len(v) for s, v in stages.items()}
        return out

    def summary(self) -> dict[str, Any]:
        return {"cpu_percent": self.mean_cpu(),
                "samples": {node: len(s) for node, s in self.samples.items()},
                "loadgen_cpu_percent": round(100.0 * self.cpu_seconds
                                             / max(self.seconds, 1e-9), 1)}


def cpu_table(summary: dict[str, Any]) -> str:
    cpu: dict[str, dict[str, float]] = summary["cpu_percent"]
    nodes = list(cpu)
    seen = {stage for stages in cpu.values() for stage in stages}
    stages = [s for s in STAGE_ORDER if s in seen] + sorted(seen - set(STAGE_ORDER))
    lines = ["| stage | " + " | ".join(f"{n} CPU %" for n in nodes) + " |",
             "|---|" + "---:|" * len(nodes)]
    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(
            f"{cpu[n].get(stage, 0.0):.1f}" for n in nodes) + " |")
    lines.append("| **node total** | " + " | ".join(
        f"**{sum(cpu[n].values()):.1f}**" for n in nodes) + " |")
    samples = ", ".join(f"{n}: {k}" for n, k in summary["samples"].items())
    lines.append(f"\nload generator (this process): {summary['loadgen_cpu_percent']:.1f} % "
                 f"CPU; stats samples per node: {samples}; 100 % = one core")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=20_000, help="requests per run")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--keys", type=int, help="distinct keys (default: --ops, so each put "
                   "run writes every key once)")
    p.add_argument("--engine", choices=["bdb", "memory"], default="bdb")
    p.add_argument("--durability", choices=["fsync", "nosync"], default="fsync")
    p.add_argument("--max-seconds", type=float, default=60.0, help="cap per run")
    p.add_argument("--skip-node", action="store_true", help="no single-node runs")
    p.add_argument("--skip-cluster", action="store_true", help="no 3-node cluster runs")
    p.add_argument("--json", action="store_true", help="print the result dicts as JSON")
    args = p.parse_args(argv)
    kw = {"value_size": args.value_size, "keys": args.keys or args.ops,
          "max_seconds": args.max_seconds}
    rows: list[Row] = []
    cluster_rows: list[Row] = []

    def run(into: list[Row], label: str, server: str, op: str, rate: float | None = None,
            **extra: Any) -> dict[str, Any]:
        result = run_phase(server, op, args.ops, args.concurrency, rate=rate, **kw, **extra)
        print(f"{label:<26} {format_result(result)}", file=sys.stderr, flush=True)
        into.append((label, result))
        return result

    def peak_then_half(into: list[Row], prefix: str, server: str,
                       during_put: Callable[[], Any] | None = None, **extra: Any) -> None:
        peak = {}
        for op in ("put", "get"):
            if op == "put" and during_put is not None:
                with during_put():
                    peak[op] = run(into, f"{prefix} {op}", server, op, **extra)["ops_per_sec"]
            else:
                peak[op] = run(into, f"{prefix} {op}", server, op, **extra)["ops_per_sec"]
        for op in ("put", "get"):
            rate = max(1.0, peak[op] / 2)
            run(into, f"{prefix} {op} @ {rate:.0f}/s (½ peak)", server, op, rate=rate, **extra)

    load_before = os.getloadavg()
    with start_echo_chain(free_port()) as chain:  # stopped before any node starts
        ceiling = run(rows, "echo chain (ceiling)", chain.server, "put")["ops_per_sec"]
    if not args.skip_node:
        with tempfile.TemporaryDirectory(prefix="sd-bench-") as data_dir:
            with start_node(data_dir, engine=args.engine, durability=args.durability) as node:
                peak_then_half(rows, "node", node.server)
    cpu: dict[str, Any] | None = None
    if not args.skip_cluster:
        n, r, w = CLUSTER_NRW
        extra = ["--engine", args.engine, "--durability", args.durability,
                 "--n", str(n), "--r", str(r), "--w", str(w)]
        print(f"starting a {CLUSTER_NODES}-node cluster ...", file=sys.stderr, flush=True)
        with local_cluster(CLUSTER_NODES, extra) as members:
            servers = cluster_servers(members)
            ring = fetch_ring(servers)  # fetched once for all four runs
            sampler = StatsSampler({m["id"]: m["client"] for m in members})
            peak_then_half(cluster_rows, "cluster", servers, during_put=lambda: sampler,
                           routing="owner", ring=ring)
            cpu = sampler.summary()
    load_after = os.getloadavg()
    if args.json:
        out: dict[str, Any] = {
            "node": [{"run": label, **res} for label, res in rows],
            "cluster": [{"run": label, **res} for label, res in cluster_rows],
            "cluster_put_cpu": cpu, "loadavg_before": load_before, "loadavg_after": load_after}
        print(json.dumps(out, indent=2))
        return 0
    print(f"\n{args.concurrency} in flight, {args.ops} ops per run, "
          f"{args.value_size}-byte values, engine {args.engine} ({args.durability})\n")
    print(table(rows, ceiling))
    if cluster_rows:
        n, r, w = CLUSTER_NRW
        per = cluster_rows[0][1].get("per_server", {})
        print(f"\n{CLUSTER_NODES}-node loopback cluster, N={n} R={r} W={w}, owner routing "
              f"(put requests per node: {', '.join(str(v) for v in per.values())})\n")
        print(table(cluster_rows, ceiling))
    if cpu is not None:
        print("\nstage CPU during the cluster put run (closed loop, `stats` cpu_percent, "
              "mean of 1-s samples)\n")
        print(cpu_table(cpu))
    print(f"\nload average (1/5/15 min): before {_load(load_before)}, "
          f"after {_load(load_after)}, on {os.cpu_count()} cores")
    return 0


def _load(avg: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in avg)


if __name__ == "__main__":
    sys.exit(main())
