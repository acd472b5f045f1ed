"""``bench/report.md`` from the numbers ``bench/report.py`` measured (no I/O here).

``render(data, plots, plots_skipped)`` returns the markdown: the headline table first
(seda-dynamo's cluster against etcd and Redis, one node against the echo-chain ceiling),
then the machine, the date and how to reproduce it, the targets pair by pair, and the
details. ``data`` is what ``bench.report.measure`` collects (and ``--json`` prints):

* ``machine`` (``tables.machine_info()``), ``settings`` (concurrency, value size, ...),
  ``seconds`` (the whole run), ``loadavg_before`` / ``loadavg_after``;
* ``sections``: name -> ``{"runs": {key: result}, "sweep": {in flight: result},
  "overload": tables.overload_row(...), "cpu": StatsSampler.summary()}`` (each part only
  where measured), for ``ceiling``, ``node``, ``node_lt``, ``cluster``, ``etcd``,
  ``redis``; a result is a load-generator result dict with a ``label``;
* ``status``: name -> why a section was skipped or failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.tables import (
    Target,
    cpu_table,
    fmt_ms,
    fmt_ops,
    headline_table,
    machine_lines,
    overload_table,
    ratio,
    run_table,
    sweep_table,
    targets_table,
)

TITLES = {"ceiling": "echo chain (ceiling)", "node": "one node",
          "node_lt": "one node, --latency-target-ms 20", "cluster": "3-node cluster",
          "etcd": "etcd, 3 members", "redis": "Redis, 1 server"}
SWEEP_NAMES = {"cluster": "seda-dynamo, 3 nodes", "etcd": "etcd, 3 members",
               "redis": "Redis"}
CDF_NAMES = {"node": "seda-dynamo, 1 node", "cluster": "seda-dynamo, 3 nodes",
             "etcd": "etcd, 3 members", "redis": "Redis"}


def run(data: Mapping[str, Any], section: str, key: str) -> Mapping[str, Any] | None:
    """The result of run ``key`` of ``section``, or None when it was not measured."""
    return data.get("sections", {}).get(section, {}).get("runs", {}).get(key)


def ops(data: Mapping[str, Any], section: str, key: str) -> float | None:
    r = run(data, section, key)
    return None if r is None else r["ops_per_sec"]


def p999(data: Mapping[str, Any], section: str, key: str) -> float | None:
    r = run(data, section, key)
    return None if r is None else r["p999_ms"]


def targets(data: Mapping[str, Any]) -> list[Target]:
    """Issue 5's goals, pair by pair, then the comparisons that have none."""
    sections = data.get("sections", {})
    ceiling = ops(data, "ceiling", "put")
    out = [
        Target("seda cluster put / etcd put", ratio(ops(data, "cluster", "put"),
                                                   ops(data, "etcd", "put")), ">=", 3.0),
        Target("seda cluster get / etcd serializable get",
               ratio(ops(data, "cluster", "get"), ops(data, "etcd", "get")), ">=", 2.0),
    ]
    for op in ("put", "get"):
        share = ratio(ops(data, "node", op), ceiling)
        out.append(Target(f"seda node {op} / echo-chain ceiling",
                          None if share is None else 100.0 * share, ">=", 30.0, "%"))
    for op in ("put", "get"):
        out.append(Target(f"seda cluster {op} p99.9 at half its peak",
                          p999(data, "cluster", f"{op}_half"), "<", 25.0, "ms"))
    for name in ("node", "node_lt"):
        over = sections.get(name, {}).get("overload")
        out.append(Target(f"{TITLES[name]}: p99 admitted at 2x peak / p99 at peak",
                          None if over is None else over["p99_ratio"], "<=", 3.0))
    out += [
        Target("seda cluster 50/50 mix / etcd 50/50 mix",
               ratio(ops(data, "cluster", "mix50"), ops(data, "etcd", "mix50"))),
        Target("seda cluster put / Redis set", ratio(ops(data, "cluster", "put"),
                                                     ops(data, "redis", "put"))),
        Target("seda cluster get / Redis get", ratio(ops(data, "cluster", "get"),
                                                     ops(data, "redis", "get"))),
        Target("seda node put / Redis set", ratio(ops(data, "node", "put"),
                                                  ops(data, "redis", "put"))),
        Target("seda node get / Redis get", ratio(ops(data, "node", "get"),
                                                  ops(data, "redis", "get"))),
        Target("seda cluster 50/50 mix / Redis 50/50 mix",
               ratio(ops(data, "cluster", "mix50"), ops(data, "redis", "mix50"))),
    ]
    return out


def headline(data: Mapping[str, Any]) -> str:
    s = data.get("settings", {})
    rows = [("**seda-dynamo, 3 nodes** (N=3 R=2 W=2)", run(data, "cluster", "put"),
             run(data, "cluster", "get")),
            ("etcd, 3 members (serializable get)", run(data, "etcd", "put"),
             run(data, "etcd", "get")),
            ("Redis, 1 server (appendfsync always)", run(data, "redis", "put"),
             run(data, "redis", "get")),
            ("**seda-dynamo, 1 node**", run(data, "node", "put"), run(data, "node", "get")),
            ("echo chain: 5 bare ZeroMQ processes (ceiling)", run(data, "ceiling", "put"),
             None)]
    table = headline_table(rows, ops(data, "ceiling", "put"))
    where = data.get("where") or {}
    place = ("All on one machine over loopback, one system at a time." if not where else
             "One system at a time; measured elsewhere: " + "; ".join(
                 f"{TITLES.get(k, k)}: {v}" for k, v in sorted(where.items()))
             + ". The rest on this machine over loopback.")
    return (f"{table}\n\nPeak runs: closed loop, {s.get('concurrency', 64)} requests in "
            f"flight, {s.get('value_size', 100)}-byte values; every system acknowledges a "
            f"write only once it is on disk (fsync). {place}")


def _section_note(data: Mapping[str, Any], name: str) -> str:
    why = data.get("status", {}).get(name)
    return f"\n_{TITLES[name]}: {why}_\n" if why else ""


def _rows(data: Mapping[str, Any], section: str, keys: Sequence[str]
          ) -> list[tuple[str, Mapping[str, Any]]]:
    rows = []
    for key in keys:
        r = run(data, section, key)
        if r is not None:
            rows.append((r.get("label", f"{section} {key}"), r))
    return rows


def _mix_lines(data: Mapping[str, Any], runs: Sequence[tuple[str, str]]) -> str:
    """The gets and puts of the mixes, each on its own: ops/s and p99.9."""
    lines = []
    for section, key in runs:
        r = run(data, section, key)
        if r and r.get("by_op"):
            g, p = r["by_op"]["get"], r["by_op"]["put"]
            lines.append(f"- {r['label']}: gets {fmt_ops(g['ops_per_sec'])}/s, p99.9 "
                         f"{fmt_ms(g['p999_ms'])} ms; puts {fmt_ops(p['ops_per_sec'])}/s, "
                         f"p99.9 {fmt_ms(p['p999_ms'])} ms")
    return "\n" + "\n".join(lines) if lines else ""


def _plot(plots: Mapping[str, str], title: str, skipped: str | None) -> str:
    if title in plots:
        return f"\n![{title}]({plots[title]})\n"
    return f"\n_(plot skipped: {skipped})_\n" if skipped else "\n_(nothing to plot)_\n"


def render(data: Mapping[str, Any], plots: Sequence[tuple[str, str]] = (),
           plots_skipped: str | None = None) -> str:
    """The whole report as markdown; ``plots``: ``[(title, relative path)]``."""
    s = data.get("settings", {})
    figures = dict(plots)
    sections = data.get("sections", {})
    minutes = data.get("seconds", 0.0) / 60.0
    out = ["# seda-dynamo benchmark report", "", headline(data), "",
           "## Machine and how to reproduce", "", machine_lines(data.get("machine", {})),
           f"- reproduce: `make bench` (it runs `python -m bench.report`); this report: "
           f"`{s.get('command', 'python -m bench.report')}`, {minutes:.1f} min"
           + (" (`--quick`: short runs, for trying it out)" if s.get("quick") else ""),
           f"- load average (1/5/15 min): before {_load(data.get('loadavg_before'))}, "
           f"after {_load(data.get('loadavg_after'))}"]
    problems = data.get("status", {})
    if problems:
        out += ["", "Not measured:", ""]
        out += [f"- {TITLES.get(k, k)}: {v}" for k, v in problems.items()]
    if plots_skipped:
        out += ["", f"Plots skipped: {plots_skipped}. The tables are complete."]
    out += ["", "## Targets, pair by pair", "",
            "Throughput ratios compare the closed-loop peak runs below. \"MISSED\" says by "
            "how much.", "", targets_table(targets(data)), "", "## Details", ""]

    out += ["### The ceiling and one node", "",
            f"The echo chain is the bare 5-process ZeroMQ pipeline with the node's batching "
            f"(`bench/echo_chain.py`): the most this architecture does here. One node: "
            f"Berkeley DB, fsync group commit, N=R=W=1. Each closed-loop run lasts "
            f"{s.get('max_seconds', 0):g} s (or {s.get('ops', 0):,} requests). \"½ peak\" "
            f"rows are open loop at half the peak just measured, latency from each "
            f"request's scheduled send time. *client CPU %*: what the load generator used "
            f"(100 = one core; near 100 for one client process, the client limits the "
            f"run).", _section_note(data, "ceiling"),
            _section_note(data, "node"),
            run_table(_rows(data, "ceiling", ["put"])
                      + _rows(data, "node", ["put", "get", "put_half", "get_half",
                                             "put_apart"])
                      + _rows(data, "node_lt", ["put", "put_apart"]),
                      ops(data, "ceiling", "put")), ""]

    overloads = [sections[n]["overload"] for n in ("node", "node_lt")
                 if sections.get(n, {}).get("overload")]
    apart = all(o.get("cpus_apart") for o in overloads) and overloads
    out += ["### Overload: one node at twice its put peak", "",
            ("The node's processes run on one CPU and the load generator on the other(s), "
             "both for the peak and for the overload run: sharing the CPUs, the load "
             "generator would take them from the node exactly when it offers the most. "
             if apart else "") +
            f"Open loop at 2x the node's own closed-loop put peak for "
            f"{s.get('overload_seconds', 0):.0f} s, {s.get('overload_concurrency', 0):,} "
            "allowed in flight over 2 load-generator processes; *sent*: the rate the "
            "client kept up. *admitted p99* is over the requests served, from their "
            "scheduled send time; *shed* are the `overloaded` replies, and how fast they "
            "came back; *backlogged*: requests that fell due while every slot was taken by "
            "one the node had not answered yet (their wait counts in their latency). Node "
            "defaults (a fixed in-flight limit and queue-delay shedding), then a node "
            "started with `--latency-target-ms 20` (the adaptive in-flight limit).",
            _section_note(data, "node_lt"), ""]
    out += [overload_table(overloads) if overloads else "_not measured_", ""]

    cluster = sections.get("cluster", {})
    per = (run(data, "cluster", "put") or {}).get("per_server", {})
    out += ["### 3-node loopback cluster", "",
            "N=3 R=2 W=2, Berkeley DB with fsync group commit, each request sent to the "
            "first node of its key's preference list (client-driven coordination, paper "
            "section 6.4). Mixes: gets and puts at random over the keys the put run wrote, "
            "uniformly." + (f" Put requests per node: {', '.join(f'{v:,}' for v in per.values())}."
                           if per else ""), _section_note(data, "cluster"),
            run_table(_rows(data, "cluster", ["put", "get", "mix50", "mix95", "put_half",
                                              "get_half"])),
            _mix_lines(data, [("cluster", "mix50"), ("cluster", "mix95")]), ""]
    if cluster.get("cpu"):
        out += ["#### CPU per stage during the cluster put run", "",
                "Each stage's `cpu_percent` from the nodes' `stats`, mean of 1-s samples.", "",
                cpu_table(cluster["cpu"]),
                _plot(figures, "CPU per stage, cluster put run", plots_skipped)]

    out += ["### etcd and Redis", "",
            "etcd 3.4, 3 members on loopback (its raft log fsynced before it acknowledges), "
            "driven through its HTTP/JSON gateway with serializable reads; Redis with "
            "`appendonly yes, appendfsync always`. Same concurrency, keys and value size.",
            _section_note(data, "etcd"), _section_note(data, "redis"),
            run_table(_rows(data, "etcd", ["put", "get", "mix50"])
                      + _rows(data, "redis", ["put", "get", "mix50"])),
            _mix_lines(data, [("etcd", "mix50"), ("redis", "mix50")]), ""]

    sweeps = {SWEEP_NAMES[n]: {int(c): r for c, r in sections[n]["sweep"].items()}
              for n in SWEEP_NAMES if sections.get(n, {}).get("sweep")}
    out += ["### Throughput vs requests in flight", "",
            f"Puts (Redis: SET), closed loop, {s.get('sweep_seconds', 0):g} s per level.", ""]
    out += [sweep_table(sweeps) if sweeps else "_not measured_",
            _plot(figures, "Throughput vs requests in flight", plots_skipped)]
    out += ["### Latency CDF of the peak runs", "",
            "From the closed-loop put and get peak runs above (a logit y axis: the median "
            "and the tail both get room).",
            _plot(figures, "Latency CDF of the peak runs", plots_skipped)]
    return "\n".join(out).rstrip() + "\n"


def plot_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """What ``bench.plots.make_plots`` takes, out of ``data``."""
    sections = data.get("sections", {})
    sweep = {SWEEP_NAMES[n]: [(int(c), r["ops_per_sec"])
                              for c, r in sections[n]["sweep"].items()]
             for n in SWEEP_NAMES if sections.get(n, {}).get("sweep")}
    cdf: dict[str, dict[str, Any]] = {"put": {}, "get": {}}
    for name, label in CDF_NAMES.items():
        for op in ("put", "get"):
            r = run(data, name, op)
            if r is not None and r.get("cdf"):
                cdf[op][label] = r["cdf"]
    cpu = sections.get("cluster", {}).get("cpu", {}) or {}
    return {"sweep": sweep, "cdf": cdf, "cpu": cpu.get("cpu_percent", {})}


def _load(avg: Sequence[float] | None) -> str:
    return " / ".join(f"{x:.2f}" for x in avg) if avg else "-"
