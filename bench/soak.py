"""The memory soak: does any stage process grow while a node serves for minutes?

Issue 5's memory target: at 80% of a node's peak (a 50/50 get/put mix, 100-byte values,
open loop), the RSS of every stage process stays within 10% over a 10-minute soak. One
real node (Berkeley DB, fsync group commit, N=1) is started in a temp dir; its peak is
measured with a short closed-loop run; then the open-loop load runs in slices of
``--sample`` seconds, and after each slice every stage's ``rss_bytes`` is read from
``stats``. The first ``--warmup`` seconds are not judged (caches, the engine's pages and
the Merkle trees fill up then); growth is the last sample over the first one after it.
It is shown for the whole RSS and for the RSS outside the storage engine's cache
(Berkeley DB maps it from its ``__db.NNN`` region files, and it fills page by page up
to its configured size); the verdict is on the latter.

    python -m bench.soak [--minutes 10] [--share 0.8]      # part of `make soak`

Prints a markdown table and writes ``bench/soak.json``; exits 1 when a stage grew by
more than ``--limit`` (10%).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import exit_on_sigterm, start_node
from seda_dynamo.client import Client
from seda_dynamo.loadgen import run_mix

KEYS = 100_000


def rss(server: str) -> tuple[dict[str, int], dict[str, int]]:
    """Every stage's RSS in bytes, as its last stats report says (once a second), and the
    part of it that is the storage engine's cache: Berkeley DB maps its cache from region
    files (``__db.NNN``), which fill up to the configured size and then stay there."""
    with Client(server, timeout=5.0) as c:
        stats = c.stats()
    total = {name: int(s["rss_bytes"]) for name, s in sorted(stats.items())
             if "rss_bytes" in s}
    cache = {}
    for name, s in stats.items():
        try:
            maps = psutil.Process(int(s["pid"])).memory_maps()
        except (psutil.Error, KeyError, ValueError, TypeError):
            continue
        cache[name] = sum(m.rss for m in maps if os.path.basename(m.path).startswith("__db."))
    return total, cache


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--share", type=float, default=0.8, help="of the measured peak")
    p.add_argument("--sample", type=float, default=20.0, help="seconds per slice")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds not judged")
    p.add_argument("--limit", type=float, default=10.0, help="percent growth allowed")
    p.add_argument("--out", default=str(Path(__file__).with_name("soak.json")))
    args = p.parse_args(argv)
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sd-soak-") as data_dir:
        with start_node(data_dir) as node:
            server = node.server
            peak = run_mix(server, 10_000_000, 64, keys=KEYS, max_seconds=10.0,
                           prefill=True, seed=1)
            rate = max(100.0, peak["ops_per_sec"] * args.share)
            print(f"peak {peak['ops_per_sec']:.0f} ops/s; soaking at {rate:.0f} ops/s for "
                  f"{args.minutes:g} min", file=sys.stderr, flush=True)
            started = time.monotonic()
            end = started + args.minutes * 60.0
            while time.monotonic() < end:
                seconds = min(args.sample, end - time.monotonic())
                if seconds <= 0.5:
                    break
                r = run_mix(server, int(rate * seconds) + 1, 1024, keys=KEYS, rate=rate,
                            max_seconds=seconds, processes=2, seed=len(samples) + 2)
                at = round(time.monotonic() - started, 1)
                total, cache = rss(server)
                samples.append({"at": at, "rss": total, "engine_cache": cache,
                                "ops_per_sec": r["ops_per_sec"], "p99_ms": r["p99_ms"],
                                "errors": r["errors"]})
                print(f"{at:7.1f} s  {r['ops_per_sec']:8.0f} ops/s  p99 {r['p99_ms']:.1f} ms  "
                      + "  ".join(f"{k} {v / 2**20:.1f}M" for k, v in samples[-1]["rss"].items()),
                      file=sys.stderr, flush=True)
    judged = [s for s in samples if s["at"] >= args.warmup] or samples[-1:]
    first, last = judged[0], judged[-1]
    rows, worst, worst_total = [], 0.0, 0.0
    for stage in sorted(first["rss"]):
        if stage not in last["rss"]:
            continue
        was, now = first["rss"][stage], last["rss"][stage]
        cache_was = first.get("engine_cache", {}).get(stage, 0)
        cache_now = last.get("engine_cache", {}).get(stage, 0)
        growth = 100.0 * (now - was) / was
        outside = 100.0 * ((now - cache_now) - (was - cache_was)) / (was - cache_was)
        worst_total, worst = max(worst_total, growth), max(worst, outside)
        rows.append(f"| {stage} | {was / 2**20:.1f} | {now / 2**20:.1f} | {growth:+.1f} % | "
                    f"{cache_was / 2**20:.1f} → {cache_now / 2**20:.1f} | {outside:+.1f} % |")
    ok = worst <= args.limit
    print(f"\nRSS per stage at {args.share:.0%} of peak ({peak['ops_per_sec']:.0f} ops/s), "
          f"50/50 mix, {args.minutes:g} min; judged from {judged[0]['at']:.0f} s to "
          f"{judged[-1]['at']:.0f} s\n")
    print("| stage | RSS first (MiB) | RSS last (MiB) | growth | engine cache (MiB) | "
          "growth outside the engine cache |\n|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\nworst growth {worst_total:+.1f} % in all; {worst:+.1f} % outside the storage "
          f"engine's cache, which fills up to its configured size (limit {args.limit:g} %): "
          f"{'flat' if ok else 'GREW'}")
    Path(args.out).write_text(json.dumps({"peak": peak["ops_per_sec"], "rate": rate,
                                          "samples": samples, "worst_growth_percent": worst_total,
                                          "worst_growth_outside_cache_percent": worst},
                                         indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
