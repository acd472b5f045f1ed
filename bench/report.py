"""The benchmark report: the echo-chain ceiling, then one real node, as a markdown table.

Runs, in order (closed loop, ``--concurrency`` in flight, ``--ops`` requests each):
the echo chain (the bare 5-process ZeroMQ pipeline, ``bench/echo_chain.py``), node put,
node get; then node put and get in rate-limited (open-loop) mode at half of the peak
just measured, which gives the p99.9 latency of a node that is not saturated (the
Dynamo paper's section 6 reports p99.9 under its production load, not at the knee).

    /tmp/v/bin/python -m bench.report [--ops 20000] [--json]     # or: make bench
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any

from bench import free_port, start_node
from bench.echo_chain import start_echo_chain
from seda_dynamo.loadgen import format_result, run_phase


def table(rows: list[tuple[str, dict[str, Any]]], ceiling: float) -> str:
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
    p.add_argument("--json", action="store_true", help="print the result dicts as JSON")
    args = p.parse_args(argv)
    kw = {"value_size": args.value_size, "keys": args.keys or args.ops,
          "max_seconds": args.max_seconds}

    def run(label: str, server: str, op: str, rate: float | None = None) -> dict[str, Any]:
        result = run_phase(server, op, args.ops, args.concurrency, rate=rate, **kw)
        print(f"{label:<22} {format_result(result)}", file=sys.stderr, flush=True)
        rows.append((label, result))
        return result

    rows: list[tuple[str, dict[str, Any]]] = []
    with start_echo_chain(free_port()) as chain:  # stopped before the node starts
        ceiling = run("echo chain (ceiling)", chain.server, "put")["ops_per_sec"]
    with tempfile.TemporaryDirectory(prefix="sd-bench-") as data_dir:
        with start_node(data_dir, engine=args.engine, durability=args.durability) as node:
            peak = {op: run(f"node {op}", node.server, op)["ops_per_sec"]
                    for op in ("put", "get")}
            for op in ("put", "get"):
                rate = max(1.0, peak[op] / 2)
                run(f"node {op} @ {rate:.0f}/s (½ peak)", node.server, op, rate=rate)
    if args.json:
        print(json.dumps([{"run": label, **r} for label, r in rows], indent=2))
    else:
        print(f"\n{args.concurrency} in flight, {args.ops} ops per run, "
              f"{args.value_size}-byte values, engine {args.engine} ({args.durability})\n")
        print(table(rows, ceiling))
    return 0


if __name__ == "__main__":
    sys.exit(main())
