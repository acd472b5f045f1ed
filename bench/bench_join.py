"""Growing and healing a loaded cluster: anti-entropy repair time, then a 4th node's join.

Dynamo paper sections 4.7 (anti-entropy) and 4.9 (adding nodes). On a 3-node loopback
cluster (N=3 R=2 W=2, Berkeley DB with fsync) holding ``--keys`` keys:

1. anti-entropy: node3 is killed, ``--differ`` more keys are written, node3 restarts
   with anti-entropy on (the others keep it off) and the time until it holds every key
   is measured (it includes rebuilding node3's Merkle trees from its store);
2. join: node4 joins; the time until every planned hand-over is done, the bytes and
   MB/s streamed, and the p99 of a steady foreground get load meanwhile.

    python -m bench.bench_join [--keys 100000] [--differ 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Any

from bench import exit_on_sigterm
from seda_dynamo.client import Client, DynamoError
from seda_dynamo.launcher import NodeProcess
from seda_dynamo.loadgen import CLUSTER_ARGS, local_cluster, run_phase

QUIET = ["--anti-entropy-every", "0", "--tombstone-reap-after", "0"]


def stat(server: str, stage: str, name: str) -> Any:
    with Client(server, timeout=2.0) as c:
        for _ in range(50):
            stages = c.stats()
            if stage in stages:
                return stages[stage].get(name)
            time.sleep(0.1)
    raise RuntimeError(f"no {stage} stats from {server}")


def wait(predicate, seconds: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if predicate():
                return time.monotonic() - started
        except DynamoError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--differ", type=int, default=1_000)
    p.add_argument("--value-size", type=int, default=100)
    args = p.parse_args(argv)
    rows: list[tuple[str, str]] = []
    extra = [*CLUSTER_ARGS, *QUIET]
    with local_cluster(3, extra=extra) as members:
        servers = [m["client"] for m in members]
        load = run_phase(servers, "put", args.keys, 64, value_size=args.value_size,
                         keys=args.keys, routing="owner", max_seconds=3600)
        rows.append(("load", f"{load['ops']} keys at {load['ops_per_sec']:.0f} puts/s"))

        # 1. Anti-entropy repair of a node that missed writes.
        n3 = members[2]
        node3: NodeProcess = n3["process"]
        node3.kill9()
        more = run_phase(servers[:2], "put", args.differ, 16, value_size=args.value_size,
                         keys=args.keys + args.differ, max_seconds=600, first_key=args.keys)
        total = args.keys + more["ops"]
        # node3 again, with anti-entropy on (local_cluster stops it on the way out)
        node3.args = (*CLUSTER_ARGS, "--anti-entropy-every", "0.2", "--tombstone-reap-after", "0")
        node3.join = None  # it restarts as a member, from its own cluster state
        node3.spawn()
        node4: NodeProcess | None = None
        try:
            seconds = wait(lambda: stat(n3["client"], "persistence", "keys") >= total, 3600,
                           "node3 to be repaired")
            rows.append(("anti-entropy", f"{more['ops']} differing keys among {total} "
                         f"repaired in {seconds:.1f} s (incl. rebuilding node3's trees)"))

            # 2. A fourth node joins; a steady get load runs meanwhile.
            root = tempfile.mkdtemp(prefix="sd-bench-join-")
            base = int(n3["client"].rsplit(":", 1)[1]) + 1
            client4, peer4 = f"127.0.0.1:{base}", f"127.0.0.1:{base + 100}"
            started = time.monotonic()
            node4 = NodeProcess("node4", client4, peer4, f"{root}/node4", f"{root}/node4.log",
                                extra, join=members[0]["peer"]).spawn()
            p99s: list[float] = []

            def settled() -> bool:
                with Client(servers[0], timeout=2.0) as c:
                    status = c.admin("status")
                return len(status["nodes"]) == 4 and status["pending_transfers"] == 0

            while time.monotonic() - started < 3600:
                fg = run_phase(servers, "get", 2000, 16, keys=args.keys, rate=1000.0,
                               max_seconds=30)
                p99s.append(fg["p99_ms"])
                if settled():
                    break
            seconds = time.monotonic() - started
            moved = sum(stat(s, "gossip", "transfer_bytes") for s in servers)
            rows.append(("join", f"node4 joined in {seconds:.1f} s; {moved / 1e6:.1f} MB "
                         f"streamed ({moved / 1e6 / seconds:.1f} MB/s); foreground get p99 "
                         f"{max(p99s):.1f} ms worst, {sorted(p99s)[len(p99s) // 2]:.1f} ms "
                         f"median over {len(p99s)} windows at 1,000 gets/s"))
        finally:
            if node4 is not None:
                node4.stop()
    print("| step | result |\n|---|---|")
    for name, result in rows:
        print(f"| {name} | {result} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
