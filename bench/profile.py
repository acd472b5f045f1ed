"""Where a node's time goes, per stage: cProfile in every stage process under load.

Issue 5 asks to profile before optimising. This starts one real node (Berkeley DB,
fsync group commit, N=1) with ``SEDA_PROFILE_DIR`` set, so that every stage process runs
under cProfile and writes its statistics when it stops; drives a closed-loop load at it
(``--op put``, ``get`` or ``mix``; 64 in flight) for ``--seconds``; stops the node; and
summarises each stage: its busiest functions by own time, and its own time by area
(ZeroMQ, msgpack, the engine, our code...). ``bench/NOTES.md`` is written from this.

(py-spy, the sampling profiler, cannot read this machine's pyenv-built interpreter: it
fails with "Failed to find python version from target process". cProfile costs the
node about half its speed, so the shares matter here, not the absolute rate.)

    python -m bench.profile [--op put] [--seconds 10]
"""

from __future__ import annotations

import argparse
import collections
import os
import pstats
import sys
import tempfile

from bench import exit_on_sigterm, start_node
from seda_dynamo.hygiene import PROFILE_ENV
from seda_dynamo.loadgen import run_mix

DVVSETS = "DVVSets (causality, actors, contexts)"
#: Own-time areas, by the file a function is in (first match wins).
AREAS = (("zmq", "ZeroMQ (pyzmq)"), ("msgpack", "msgpack"), ("berkeleydb", "Berkeley DB"),
         ("engines/", "engine wrapper"), ("causality", DVVSETS),
         ("seda_dynamo/actors", DVVSETS), ("seda_dynamo/contexts", DVVSETS),
         ("merkle", "Merkle trees"), *((f"seda_dynamo/{part}.py", "stage runtime") for part in
                                       ("runtime", "sockets", "outbox", "accounting",
                                        "hygiene")),
         ("controllers", "SEDA controllers"), ("stages/", "stage handlers"),
         ("seda_dynamo/", "other cores"), ("psutil", "psutil (stats)"),
         ("hashlib", "hashing"))


def area(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    for needle, label in AREAS:
        if needle in where:
            return label
    return "Python built-ins / other"


def summarise(path: str, top: int) -> tuple[float, list[tuple[str, float]], dict[str, float]]:
    """(total own seconds, busiest functions, own seconds by area) of one stage."""
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    own: list[tuple[str, float]] = []
    areas: collections.Counter[str] = collections.Counter()
    total = 0.0
    for (filename, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        if name in ("poll", "<method 'poll' of 'zmq.backend.cython._zmq.Poller' objects>") \
                or "select.poll" in name or name.endswith("zmq_poll"):
            continue  # waiting for work is not work
        total += tottime
        short = f"{os.path.basename(filename)}:{line} {name}" if line else name
        own.append((short, tottime))
        areas[area(filename, name)] += tottime
    own.sort(key=lambda x: -x[1])
    return total, own[:top], dict(areas.most_common())


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--op", choices=["put", "get", "mix"], default="put")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--top", type=int, default=6)
    args = p.parse_args(argv)
    ratio = {"put": 0.0, "get": 1.0, "mix": 0.5}[args.op]
    with tempfile.TemporaryDirectory(prefix="sd-profile-") as data_dir:
        prof_dir = os.path.join(data_dir, "prof")
        os.makedirs(prof_dir)
        os.environ[PROFILE_ENV] = prof_dir
        try:
            node = start_node(data_dir)
        finally:
            del os.environ[PROFILE_ENV]
        with node:
            run_mix(node.server, 10_000, 64, get_ratio=0.0, keys=10_000, max_seconds=10)
            result = run_mix(node.server, 10_000_000, 64, get_ratio=ratio, keys=10_000,
                             max_seconds=args.seconds)
        print(f"## {args.op}: {result['ops_per_sec']:.0f} ops/s under cProfile, p99 "
              f"{result['p99_ms']:.1f} ms, 64 in flight, {args.seconds:g} s\n")
        for name in sorted(os.listdir(prof_dir)):
            stage = name.removesuffix(".prof")
            total, own, areas = summarise(os.path.join(prof_dir, name), args.top)
            if total <= 0:
                continue
            print(f"### {stage}: {total:.2f} s of own time\n")
            print("by area: " + ", ".join(f"{a} {100 * t / total:.0f}%"
                                          for a, t in areas.items() if t / total >= 0.02))
            print("\n| own time | function |\n|---:|---|")
            for fn, t in own:
                print(f"| {100 * t / total:.0f}% | `{fn[:100]}` |")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
