"""The benchmark report: seda-dynamo against its ceiling, etcd and Redis (``make bench``).

One thing at a time on this machine, each stopped (by pid) before the next starts, also
when a run fails; 100-byte values and 64 requests in flight unless said otherwise:

1. the echo chain (``bench/echo_chain.py``): the bare 5-process ZeroMQ pipeline, the
   ceiling of this architecture here;
2. one node (Berkeley DB, fsync): put and get peaks (closed loop), put and get at half
   the peak (open loop, p99.9), then overload, with the node's processes on one CPU and
   the load generator on the others (when there are two or more): a put peak, then open
   loop at twice it with 2048 allowed in flight over 2 load-generator processes -- the
   p99 of the admitted requests against the peak run's, the share shed as
   ``overloaded`` and how fast those replies came; then the same put peak and overload
   on a node started with ``--latency-target-ms 20``;
3. a 3-node loopback cluster (N=3 R=2 W=2, requests to the key's first replica): put and
   get peaks, 50/50 and 95/5 mixes, half-peak put and get, each stage's CPU share during
   the put run, and puts at 1, 4, 16, 64, 256 in flight;
4. an etcd cluster of 3 members (``bench/peers.py``): put, serializable get, 50/50 mix,
   and the in-flight sweep; Redis (appendfsync always): set, get, 50/50, the sweep.

The cluster, etcd and Redis may instead be ones already running elsewhere
(``--cluster-servers``, ``--etcd``, ``--redis``): the cluster targets of issue 5 assume
nodes on machines of their own, which one small machine cannot give them.

It writes ``OUT/report.md`` (default ``bench/report.md``; ``bench/render.py`` lays it
out) with PNGs in ``OUT/report/`` (``bench/plots.py``, when matplotlib is installed) and
the raw numbers in ``OUT/report/results.json``, and prints the markdown (``--json``: the
numbers) on stdout; progress goes to stderr. A full run takes about 3 minutes.

    /tmp/v/bin/python -m bench.report                    # or: make bench
    /tmp/v/bin/python -m bench.report --quick --out /tmp/r   # short runs, to try it out
    /tmp/v/bin/python -m bench.report --skip-node --skip-peers   # the cluster only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import call, cluster_servers, exit_on_sigterm, start_node
from bench.echo_chain import start_echo_chain
from bench.peers import MissingBinary, etcd_cluster, redis_server
from bench.plots import make_plots
from bench.render import plot_data, render
from bench.tables import machine_info, overload_row
from seda_dynamo.loadgen import fetch_ring, format_result, local_cluster, run_mix, run_phase
from seda_dynamo.ports import free_port

CLUSTER_NODES = 3
CLUSTER_NRW = (3, 2, 2)
LATENCY_TARGET_MS = 20
SAMPLE_SECONDS = 1.0
FRESH = 10**9  # the key space of the runs that write fresh keys (first_key onwards)
UNBOUNDED_OPS = 10**7  # the time-bounded runs: max_seconds ends them
DEFAULT_OUT = str(Path(__file__).resolve().parent)


@dataclass(frozen=True)
class Profile:
    """How long each kind of run is: ``--quick`` or the full report."""

    ops: int  # at most this many requests per closed-loop peak run ...
    max_seconds: float  # ... which otherwise lasts this long
    half_seconds: float  # the open-loop half-peak runs
    overload_seconds: float
    sweep_seconds: float  # each level of the in-flight sweep
    levels: tuple[int, ...] = (1, 4, 16, 64, 256)
    overload_concurrency: int = 2048
    overload_processes: int = 2


FULL = Profile(ops=1_000_000, max_seconds=5.0, half_seconds=10.0, overload_seconds=5.0,
               sweep_seconds=3.0)
QUICK = Profile(ops=100_000, max_seconds=1.5, half_seconds=2.0, overload_seconds=2.0,
                sweep_seconds=1.0)


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def with_client_cpu(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``'s result plus ``client_cpu_percent``: the CPU the load generator (this
    process and its client processes, reaped by then) used per second of the run; near
    100 per client process, the client is what limits the run."""
    t0, cpu0 = time.monotonic(), _cpu_seconds()
    result = run()
    wall = max(time.monotonic() - t0, 1e-9)
    result["client_cpu_percent"] = round(100.0 * (_cpu_seconds() - cpu0) / wall, 1)
    return result


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


class Bench:
    """Runs the sections one after the other and collects their numbers in ``data``."""

    def __init__(self, args: argparse.Namespace, profile: Profile, command: str) -> None:
        self.args, self.profile, self.command = args, profile, command
        self.sections: dict[str, dict[str, Any]] = {}
        self.status: dict[str, str] = {}
        self.where: dict[str, str] = {}  # sections measured on systems this run did not start

    # one run --------------------------------------------------------------------------
    def _record(self, section: str, key: str, label: str, result: dict[str, Any]
                ) -> dict[str, Any]:
        result["label"] = label
        print(f"{label:<34} {format_result(result)}", file=sys.stderr, flush=True)
        self.sections.setdefault(section, {}).setdefault("runs", {})[key] = result
        return result

    def phase(self, section: str, key: str, label: str, target: Any, op: str, *,
              keys: int, first_key: int = 0, rate: float | None = None,
              ops: int | None = None, concurrency: int | None = None,
              seconds: float | None = None, **extra: Any) -> dict[str, Any]:
        """One ``run_phase`` (closed loop unless ``rate``), recorded as ``key``."""
        result = with_client_cpu(lambda: run_phase(
            target, op, ops or self.profile.ops, concurrency or self.args.concurrency,
            value_size=self.args.value_size, keys=keys, first_key=first_key, rate=rate,
            max_seconds=seconds or self.profile.max_seconds, **extra))
        return self._record(section, key, label, result)

    def mix(self, section: str, key: str, label: str, target: Any, get_ratio: float,
            keys: int, **extra: Any) -> dict[str, Any]:
        result = with_client_cpu(lambda: run_mix(
            target, self.profile.ops, self.args.concurrency, get_ratio,
            value_size=self.args.value_size, keys=max(1, keys),
            max_seconds=self.profile.max_seconds, seed=len(self.sections), **extra))
        return self._record(section, key, label, result)

    def half(self, section: str, prefix: str, target: Any, op: str, peak: float,
             keys: int, first_key: int = 0, **extra: Any) -> dict[str, Any]:
        """Open loop at half ``peak`` for ``half_seconds``."""
        rate = max(1.0, peak / 2)
        n = max(100, int(rate * self.profile.half_seconds))
        return self.phase(section, f"{op}_half", f"{prefix} {op} @ {rate:,.0f}/s (½ peak)",
                          target, op, keys=keys, first_key=first_key, rate=rate, ops=n,
                          seconds=self.profile.half_seconds + 2.0, **extra)

    def sweep(self, section: str, prefix: str, target: Any, first_key: int,
              **extra: Any) -> None:
        """Puts (fresh keys) at each in-flight level, ``sweep_seconds`` each."""
        runs = self.sections.setdefault(section, {}).setdefault("sweep", {})
        for c in self.profile.levels:
            r = with_client_cpu(lambda c=c, k=first_key: run_phase(
                target, "put", UNBOUNDED_OPS, c, value_size=self.args.value_size, keys=FRESH,
                first_key=k, max_seconds=self.profile.sweep_seconds, **extra))
            first_key += r["sent"]
            r["label"] = f"{prefix} put, {c} in flight"
            print(f"{r['label']:<34} {format_result(r)}", file=sys.stderr, flush=True)
            runs[c] = r

    # the sections ---------------------------------------------------------------------
    def ceiling(self) -> None:
        with start_echo_chain(free_port()) as chain:
            self.phase("ceiling", "put", "echo chain (ceiling)", chain.server, "put",
                       keys=self.profile.ops)

    def node(self, section: str, prefix: str, extra: list[str], full: bool) -> None:
        a, p = self.args, self.profile
        with tempfile.TemporaryDirectory(prefix="sd-bench-") as data_dir, \
                start_node(data_dir, engine=a.engine, durability=a.durability,
                           extra=extra) as node:
            put = self.phase(section, "put", f"{prefix} put", node.server, "put", keys=p.ops)
            written = max(1, put["sent"])
            fresh = written
            if full:
                get = self.phase(section, "get", f"{prefix} get", node.server, "get",
                                 keys=written)
                fresh += self.half(section, prefix, node.server, "put", put["ops_per_sec"],
                                   FRESH, fresh)["sent"]
                self.half(section, prefix, node.server, "get", get["ops_per_sec"], written)
            # Overload: the node on one CPU, the load generator on the others, for the
            # peak it is judged against and for the run at twice that peak.
            with node.cpus_apart() as apart:
                peak = put
                if apart:
                    peak = self.phase(section, "put_apart", f"{prefix} put, node on 1 CPU",
                                      node.server, "put", keys=FRESH, first_key=fresh + 1)
                    fresh += peak["sent"] + 1
                rate = 2.0 * peak["ops_per_sec"]
                over = self.phase(section, "overload", f"{prefix} put @ 2x peak",
                                  node.server, "put", keys=FRESH, first_key=fresh, rate=rate,
                                  ops=max(100, int(rate * p.overload_seconds)),
                                  concurrency=p.overload_concurrency,
                                  seconds=p.overload_seconds, processes=p.overload_processes)
            row = overload_row(TITLES_OVERLOAD[section], rate, over, peak)
            row["cpus_apart"] = apart
            self.sections[section]["overload"] = row

    def cluster(self) -> None:
        a, p = self.args, self.profile
        n, r, w = CLUSTER_NRW
        extra = ["--engine", a.engine, "--durability", a.durability,
                 "--n", str(n), "--r", str(r), "--w", str(w)]
        if a.cluster_servers:  # a cluster running elsewhere, on machines of its own
            ring = fetch_ring(a.cluster_servers)
            members_here = [{"id": m["id"], "client": m["client"]} for m in ring["nodes"]]
            running: Any = contextlib.nullcontext(members_here)
            self.where["cluster"] = f"the running cluster at {a.cluster_servers}"
        else:
            print(f"starting a {CLUSTER_NODES}-node cluster ...", file=sys.stderr,
                  flush=True)
            running = local_cluster(CLUSTER_NODES, extra)
        with running as members:
            servers = cluster_servers(members)
            route = {"routing": "owner", "ring": fetch_ring(servers)}  # fetched once
            sampler = StatsSampler({m["id"]: m["client"] for m in members})
            with sampler:
                put = self.phase("cluster", "put", "cluster put", servers, "put",
                                 keys=p.ops, **route)
            self.sections["cluster"]["cpu"] = sampler.summary()
            written = max(1, put["sent"])
            get = self.phase("cluster", "get", "cluster get", servers, "get", keys=written,
                             **route)
            self.mix("cluster", "mix50", "cluster 50/50 mix", servers, 0.5, written, **route)
            self.mix("cluster", "mix95", "cluster 95/5 mix", servers, 0.95, written, **route)
            fresh = written + self.half("cluster", "cluster", servers, "put",
                                        put["ops_per_sec"], FRESH, written, **route)["sent"]
            self.half("cluster", "cluster", servers, "get", get["ops_per_sec"], written,
                      **route)
            self.sweep("cluster", "cluster", servers, fresh, **route)

    def peer(self, section: str, prefix: str, target: str, get_label: str) -> None:
        put = self.phase(section, "put", f"{prefix} {'set' if section == 'redis' else 'put'}",
                         target, "put", keys=self.profile.ops)
        written = max(1, put["sent"])
        self.phase(section, "get", f"{prefix} {get_label}", target, "get", keys=written)
        self.mix(section, "mix50", f"{prefix} 50/50 mix", target, 0.5, written)
        self.sweep(section, prefix, target, written)

    def etcd(self) -> None:
        if self.args.etcd:
            self.where["etcd"] = f"the running etcd at {self.args.etcd}"
            self.peer("etcd", "etcd", self.args.etcd, "get (serializable)")
            return
        with etcd_cluster(3) as urls:
            self.peer("etcd", "etcd", urls.target, "get (serializable)")

    def redis(self) -> None:
        if self.args.redis:
            self.where["redis"] = f"the running Redis at {self.args.redis}"
            self.peer("redis", "redis", self.args.redis, "get")
            return
        with redis_server() as url:
            self.peer("redis", "redis", url.target, "get")

    # running them ---------------------------------------------------------------------
    def section(self, name: str, body: Callable[[], None]) -> None:
        """Run one section; a missing binary skips it, a failure is noted (and printed)."""
        t0 = time.monotonic()
        try:
            body()
        except MissingBinary as exc:
            self.status[name] = f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001 - the report says what failed, and goes on
            traceback.print_exc()
            self.status[name] = f"failed: {type(exc).__name__}: {exc}".splitlines()[0]
        print(f"-- {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)

    def measure(self) -> dict[str, Any]:
        a = self.args
        t0, load_before = time.monotonic(), os.getloadavg()
        self.section("ceiling", self.ceiling)
        if not a.skip_node:
            self.section("node", lambda: self.node("node", "node", [], full=True))
            self.section("node_lt", lambda: self.node(
                "node_lt", "node (latency target)",
                ["--latency-target-ms", str(LATENCY_TARGET_MS)], full=False))
        if not a.skip_cluster:
            self.section("cluster", self.cluster)
        if not a.skip_peers:
            self.section("etcd", self.etcd)
            self.section("redis", self.redis)
        settings = {"concurrency": a.concurrency, "value_size": a.value_size,
                    "engine": a.engine, "durability": a.durability, "quick": a.quick,
                    "command": self.command,
                    **asdict(self.profile)}
        return {"machine": machine_info(), "settings": settings, "sections": self.sections,
                "status": self.status, "where": self.where,
                "seconds": round(time.monotonic() - t0, 1),
                "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


TITLES_OVERLOAD = {"node": "defaults",
                   "node_lt": f"--latency-target-ms {LATENCY_TARGET_MS}"}


def write_report(data: dict[str, Any], out: str) -> str:
    """``out/report.md``, ``out/report/*.png`` and ``out/report/results.json``: the
    markdown."""
    fig_dir = os.path.join(out, "report")
    os.makedirs(fig_dir, exist_ok=True)
    try:
        made, skipped = make_plots(plot_data(data), fig_dir)
    except Exception as exc:  # noqa: BLE001 - plots are optional: the tables still count
        traceback.print_exc()
        made, skipped = [], f"plotting failed: {type(exc).__name__}: {exc}"
    markdown = render(data, [(title, f"report/{name}") for title, name in made], skipped)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(fig_dir, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    return markdown


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, help="cap of requests per closed-loop peak run "
                   "(default 1,000,000; --quick: 100,000)")
    p.add_argument("--max-seconds", type=float, help="seconds per closed-loop peak run "
                   "(default 5; --quick: 1.5)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--engine", choices=["bdb", "memory"], default="bdb")
    p.add_argument("--durability", choices=["fsync", "nosync"], default="fsync")
    p.add_argument("--quick", action="store_true", help="short runs, to try it out")
    p.add_argument("--skip-node", action="store_true", help="no single-node runs")
    p.add_argument("--skip-cluster", action="store_true", help="no 3-node cluster runs")
    p.add_argument("--skip-peers", action="store_true", help="no etcd and Redis runs")
    p.add_argument("--cluster-servers", metavar="HOST:PORT,...",
                   help="measure this running seda-dynamo cluster (N=3 R=2 W=2, on machines "
                        "of its own) instead of starting 3 nodes here")
    p.add_argument("--etcd", metavar="URL",
                   help="measure this running etcd (etcd://HOST:PORT[,PORT...]) instead of "
                        "starting one here")
    p.add_argument("--redis", metavar="URL",
                   help="measure this running Redis (redis://HOST:PORT) instead of starting "
                        "one here")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help="where report.md and report/ go (default: bench/)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.ops or args.max_seconds:
        profile = Profile(**{**asdict(profile), "ops": args.ops or profile.ops,
                             "max_seconds": args.max_seconds or profile.max_seconds})
    command = " ".join(["python -m bench.report", *argv])
    data = Bench(args, profile, command).measure()
    markdown = write_report(data, args.out)
    print(f"wrote {os.path.join(args.out, 'report.md')} in {data['seconds']:.0f} s",
          file=sys.stderr)
    print(json.dumps(data, indent=2) if args.json else markdown)
    return 1 if any(v.startswith("failed") for v in data["status"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
