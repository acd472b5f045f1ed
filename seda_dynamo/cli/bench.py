"""``seda-dynamo bench``: load a node, a local cluster, Redis or etcd, and report latency.

Throughput and latency percentiles of gets and puts, the figures of Dynamo paper section
6, from the load generator ``seda_dynamo.loadgen`` (loaded only when this command runs):
a put phase then a get phase, or one ``--mix`` run; ``--cluster`` starts a loopback
cluster for the run and stops it after. Exit 1 when a request failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from seda_dynamo.cli.common import Subparsers
from seda_dynamo.client import DEFAULT_SERVER


def add_parser(sub: Subparsers) -> None:
    b = sub.add_parser("bench", help="run the load generator against a node, a cluster, "
                                      "Redis or etcd")
    b.add_argument("--server", default=DEFAULT_SERVER,
                   help="HOST:PORT of a node, or several separated by commas")
    b.add_argument("--target", metavar="URL",
                   help="what to load: seda://HOST:PORT[,HOST:PORT...], "
                        "redis://127.0.0.1:PORT or etcd://127.0.0.1:PORT[,PORT...], each "
                        "optionally ending in ?connections=N (default: seda://--server)")
    b.add_argument("--cluster", action="store_true",
                   help="start a local loopback cluster (bdb, fsync, N=3 R=2 W=2) in a temp "
                        "dir, load it, then stop it; --server is ignored")
    b.add_argument("--nodes", type=int, default=3, help="nodes of the --cluster")
    b.add_argument("--routing", choices=["round-robin", "owner"],
                   help="spread requests over several servers: round-robin, or to the first "
                        "node of the key's preference list (default: owner with --cluster, "
                        "round-robin otherwise; owner needs a seda target)")
    b.add_argument("--mix", metavar="GET/PUT",
                   help="one mixed run with these percentages of gets and puts, e.g. 95/5 or "
                        "50/50 (default: a put phase, then a get phase)")
    b.add_argument("--distribution", choices=["uniform", "zipfian"], default="uniform",
                   help="how a --mix run picks keys (zipfian: YCSB's theta 0.99)")
    b.add_argument("--prefill", action="store_true",
                   help="with --mix: write every key once first (closed loop, not measured)")
    b.add_argument("--ops", type=int,
                   help="requests per phase or --mix run (default 20000; with --mix and "
                        "--seconds, 10000000, so that the time decides)")
    b.add_argument("--concurrency", type=int, default=64, help="requests in flight (total)")
    b.add_argument("--value-size", type=int, default=100, help="bytes per value")
    b.add_argument("--keys", type=int,
                   help="distinct keys (default 10000; with --cluster and no --mix, --ops: each "
                        "key is written once per phase)")
    b.add_argument("--processes", type=int, default=1, help="client processes")
    b.add_argument("--rate", type=float, help="open loop: ops/s on a fixed schedule")
    b.add_argument("--seconds", "--max-seconds", dest="max_seconds", type=float,
                   metavar="SECONDS",
                   help="wall-clock cap per phase or --mix run (default 60)")
    b.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   help="a progress bar on stderr (default: when stderr is a terminal)")
    b.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write the results as JSON to FILE (without FILE, or -: to stdout); "
                        "a --mix run is one dict, phases a list of dicts")
    b.set_defaults(func=run)


def parse_mix(text: str) -> float:
    """``"95/5"`` (percent gets / puts) as the share of gets, 0.95."""
    try:
        gets, puts = (float(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--mix wants GET/PUT percentages such as 95/5, not {text!r}") \
            from None
    if gets < 0 or puts < 0 or abs(gets + puts - 100.0) > 1e-6:
        raise ValueError(f"--mix percentages must be >= 0 and add up to 100, not {text!r}")
    return gets / 100.0


def run(args: argparse.Namespace) -> int:
    from seda_dynamo import loadgen

    get_ratio = parse_mix(args.mix) if args.mix is not None else None
    if get_ratio is None and args.distribution != "uniform":
        raise ValueError("--distribution applies to a --mix run")
    if get_ratio is None and args.prefill:
        raise ValueError("--prefill applies to a --mix run")
    if args.cluster and args.target:
        raise ValueError("--cluster starts its own nodes: leave out --target")
    max_seconds = args.max_seconds if args.max_seconds is not None else 60.0
    ops = args.ops if args.ops is not None else \
        10_000_000 if get_ratio is not None and args.max_seconds is not None else 20_000
    progress = args.progress if args.progress is not None else sys.stderr.isatty()

    def run(target: str) -> list[dict[str, Any]] | dict[str, Any]:
        each_once = args.cluster and get_ratio is None  # every key written once per phase
        keys = args.keys if args.keys is not None else ops if each_once else 10_000
        routing = args.routing or ("owner" if args.cluster else "round-robin")
        if get_ratio is not None:
            return loadgen.run_mix(target, ops, args.concurrency, get_ratio, args.value_size,
                                   keys, args.distribution, args.rate, args.processes,
                                   max_seconds, progress=progress, routing=routing,
                                   prefill=args.prefill)
        return loadgen.run_phases(target, ops, args.concurrency, args.value_size, keys,
                                  processes=args.processes, max_seconds=max_seconds,
                                  rate=args.rate, routing=routing, progress=progress)

    try:
        if args.cluster:
            if not 1 <= args.nodes <= 100:
                raise ValueError("--nodes must be in 1..100")
            print(f"starting a {args.nodes}-node cluster ...", file=sys.stderr, flush=True)
            with loadgen.local_cluster(args.nodes) as members:
                print("cluster up: " + ", ".join(f"{m['id']} {m['client']} (pid {m['pid']})"
                                                 for m in members), file=sys.stderr, flush=True)
                results = run(",".join(m["client"] for m in members))
        else:
            results = run(args.target or f"seda://{args.server}")
    except RuntimeError as exc:
        print(f"seda-dynamo: {exc}", file=sys.stderr)
        return 1
    runs = results if isinstance(results, list) else [results]
    if args.json == "-":
        print(json.dumps(results, indent=2))
    else:
        for phase in runs:
            print(loadgen.format_result(phase))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
                f.write("\n")
    return 1 if any(phase["errors"] for phase in runs) else 0
