"""``python -m seda_dynamo.sim --seed N [--nodes M] [--seeds K] [--faults calm|default|harsh]``:
run simulated seeds (N, N+1, ..., N+K-1) of an M-node cluster under the named nemesis
(``sim/nemesis.py: PRESETS``) and print, per seed, its trace hash and
anomalies, then how many seeds a second this machine runs. Exit status 1 when any seed
found an anomaly: replay it with ``--seed`` (Dynamo paper sections 4.4-4.9 under faults).
"""

from __future__ import annotations

import argparse
import sys
import time

from seda_dynamo.sim.nemesis import PRESETS
from seda_dynamo.sim.run import run_seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seda_dynamo.sim",
                                     description="deterministic simulation of a cluster")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds to run")
    parser.add_argument("--nodes", type=int, default=3, help="nodes (3 to 50)")
    parser.add_argument("--faults", choices=sorted(PRESETS), default="default",
                        help="how harsh the nemesis is (calm: no faults)")
    args = parser.parse_args(argv)
    if not 3 <= args.nodes <= 50 or args.seeds < 1:
        parser.error("--nodes must be 3 to 50 and --seeds at least 1")
    started = time.monotonic()  # the wall clock measures the runs; no run reads it
    failed = 0
    for seed in range(args.seed, args.seed + args.seeds):
        result = run_seed(seed, args.nodes, nemesis=PRESETS[args.faults])
        print(f"seed {seed} nodes {args.nodes} trace {result.trace_hash} "
              f"requests {result.requests} anomalies {len(result.anomalies)} converged "
              f"{'never' if result.convergence is None else f'{result.convergence:.2f}s'}",
              flush=True)
        for anomaly in result.anomalies:
            print(f"  {anomaly}")
        failed += bool(result.anomalies)
    elapsed = time.monotonic() - started
    print(f"{args.seeds} seeds of {args.nodes} nodes ({args.faults}) in {elapsed:.1f} s: "
          f"{args.seeds / elapsed:.3g} seeds/s ({elapsed / args.seeds:.2f} s a seed), "
          f"{failed} with anomalies")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
