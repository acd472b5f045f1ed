"""The "Scale" section of the simulator's report (``seda_dynamo/sim/report.md``) and its
plot, from the runs of ``seda_dynamo.sim.scale``: gossip rounds for a join to reach
every node against log2(n) (Dynamo paper 4.8), the view's bytes, partition balance
(6.2 strategy 3) and a join's transfer time (4.9).

The plot is drawn with matplotlib when it is installed (the ``plots`` extra) and
otherwise written as a small SVG by hand, so ``make sim-scale`` needs nothing beyond
``make install``. Only the Scale section of the report is rewritten; the rest of the
file is kept as it is. A shell: it writes files.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLOT = "scale.svg"  # beside the report
GOSSIP_EVERY = 1.0  # the gossip stage's interval: the unit of the rounds (scale.py)
HEADING = "## Scale"


def spread_line(s: Any) -> str:
    return (f"nodes {s.nodes} seed {s.seed} Q {s.partitions}: every view in "
            f"{s.rounds:.2f} rounds (spread {s.spread_rounds:.2f}, ring {s.ring_rounds:.2f}), "
            f"{s.learned}/{s.nodes} learned, view {s.view_bytes} B, "
            f"{s.messages_per_node_s:.0f} msgs/node/s, wall {s.wall:.1f} s")


def transfer_line(t: Any) -> str:
    return (f"nodes {t.nodes} keys {t.keys}: join to owning {t.moved:.2f} s, to converged "
            f"{t.seconds:.2f} s simulated, "
            f"{t.transfers} streams, {t.transfer_bytes} B, new node holds {t.held} keys, "
            f"wall {t.wall:.1f} s {'; '.join(t.problems)}")


def _by_size(spreads: Sequence[Any]) -> dict[int, list[Any]]:
    sizes: dict[int, list[Any]] = {}
    for s in spreads:
        sizes.setdefault(s.nodes, []).append(s)
    return dict(sorted(sizes.items()))


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def tables(spreads: Sequence[Any], transfers: Sequence[Any]) -> str:
    rows = ["| nodes n | seeds | rounds (1 s), join to every view: mean / max | the same "
            "in rounds taken (n1's measured interval) | spread rounds (first old member "
            "to last): mean / max | log2 n | rounds until every ring plan has it: max | "
            "learned | wall s per run |",
            "|---|---|---|---|---|---|---|---|---|"]
    for n, runs in _by_size(spreads).items():
        rounds = [r.rounds for r in runs]
        spread = [r.spread_rounds for r in runs]
        taken = [r.rounds * GOSSIP_EVERY / r.interval for r in runs
                 if not math.isnan(r.interval)]
        measured = (f"{_mean(taken):.2f} / {max(taken):.2f} (a round every "
                    f"{_mean([r.interval for r in runs]):.2f} s)") if taken else "not measured"
        rows.append(f"| {n} | {len(runs)} | {_mean(rounds):.2f} / {max(rounds):.2f} | "
                    f"{measured} | "
                    f"{_mean(spread):.2f} / {max(spread):.2f} | {math.log2(n):.2f} | "
                    f"{max(r.ring_rounds for r in runs):.2f} | "
                    f"{min(r.learned for r in runs)}/{n} | "
                    f"{_mean([r.wall for r in runs]):.1f} |")
    rows += ["", "| nodes n | Q | view bytes (members + ring) | bytes per member | "
             "ring state to coordination | peer frames per node per s | peer KB per node "
             "per s | partitions per node before: max / min (ideal Q/n) | after the join: "
             "max / min (ideal Q/(n+1)) | bound ceil(Q/n)+1 | moves planned |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, runs in _by_size(spreads).items():
        r, q = runs[0], runs[0].partitions
        rows.append(
            f"| {n} | {q} | {r.view_bytes} ({r.member_bytes} + {r.ring_bytes}) | "
            f"{r.view_bytes / (n + 1):.0f} | {r.announce_bytes} | "
            f"{_mean([x.messages_per_node_s for x in runs]):.0f} | "
            f"{_mean([x.bytes_per_node_s for x in runs]) / 1000:.1f} | "
            f"{r.before[0]} / {r.before[1]} ({q / n:.2f}) | "
            f"{r.after[0]} / {r.after[1]} ({q / (n + 1):.2f}) | {-(-q // n) + 1} | "
            f"{r.moves} |")
    if transfers:
        rows += ["", "| nodes n | Q | keys | join to every move of its plan handed over, "
                 "as the new node sees it (simulated s) | join to every node converged "
                 "(simulated s) | partition streams | bytes streamed | keys on the new "
                 "node | pings answered by | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
        rows += [f"| {t.nodes} | {t.partitions} | {t.keys} | {t.moved:.2f} | {t.seconds:.2f} | "
                 f"{t.transfers} | {t.transfer_bytes} | {t.held} | "
                 f"{'the simulator' if t.answered else 'network stages'} | {t.wall:.1f} |"
                 for t in transfers]
    return "\n".join(rows)


def section(spreads: Sequence[Any], transfers: Sequence[Any]) -> str:
    sizes = _by_size(spreads)
    first, last = min(sizes), max(sizes)
    grow = _mean([r.rounds for r in sizes[last]]) - _mean([r.rounds for r in sizes[first]])
    per_member = {n: runs[0].view_bytes / (n + 1) for n, runs in sizes.items()}
    frames = {n: _mean([r.messages_per_node_s for r in runs]) for n, runs in sizes.items()}
    return f"""{HEADING}

Rerun: `make sim-scale` (`python -m seda_dynamo.sim.scale`; `--sizes`, `--seeds`,
`--large-seeds` for sizes over 200, `--transfer-sizes`, `--keys`; `--results FILE`
saves the numbers, `--render FILE` rewrites this section from them). How the
clusters are built, which stages run and what happens to events for the absent ones:
`seda_dynamo/sim/scale.py`'s docstring. In short: every node starts from the same
pre-agreed view of a settled n-node cluster (its view file written before its gossip
stage starts); a new node then joins through its own `admin join` request and the
real gossip path. Joins spread with nodes running only the network and gossip stages
(what membership needs); the transfer time is measured with every stage. Rounds are
gossip intervals (1 s of simulated time) observed every 0.05 s; seeds 0 and up; Q is
`run.partitions_for(n)` (a power of two, about eight partitions per node), N = 3.

{tables(spreads, transfers)}

![gossip rounds for a join to reach every node, against log2 n]({PLOT})

What the numbers say:

- Rounds grow with log n, not n: from {first} to {last} nodes (x{last / first:.0f}) the
  mean rounds from the join to every view grew by {grow:.2f}, while log2 n grew by
  {math.log2(last / first):.2f}. A round is push-pull with one random member, so the
  new entry spreads epidemically (paper 4.8). The count includes the joiner's own
  first round to its seed (up to one interval, as timers fall). The gossip timer is
  due 1 s after a round but fires at the gossip stage's next 0.1 s tick, so a round
  comes every 1.0 to 1.1 s: the rounds taken are the time divided by n1's measured
  interval ("not measured": runs made before it was). Rounds fall in step (below),
  so the last node learns at a whole round: seeds change who learned when, but at 50
  and at 200 nodes all three seeds ended in the same round (push-pull's spread
  varies little).
- Wall time is this shared 2-core machine's under load (other runs on it): the
  500-node run used about 7.5 minutes of CPU.
- The view each node gossips and stores is linear in n: about
  {", ".join(f"{b:.0f} B per member at {n}" for n, b in per_member.items())}
  (the member entries plus Q owner names; Q grows with n). A round sends it twice
  (push and pull), so gossip costs each node O(n) bytes a second and the cluster
  O(n^2): at {last} nodes about {sizes[last][0].view_bytes / 1000:.0f} KB a round.
- The failure detector pings every member every 0.5 s (`failure.Watcher.ping`), so a
  node sends about {", ".join(f"{f:.0f} peer frames a second at {n}" for n, f in
  frames.items())} (each ping counted with its answer; a ping round comes every
  0.5 to 0.6 s, by the same tick): pings and their answers are almost all the peer traffic of an
  idle cluster, O(n) per node and O(n^2) for the cluster. That, not gossip, is what
  limits the cluster size (and what makes 500-node simulations slow); the paper's
  Dynamo detected failures from the traffic it already had. Not changed here.
- Balance: {_balance(sizes)}
- The time for a join to finish its transfers is gossip time, not data time: the
  owners start streaming only once they have learned the plan and heard the new node
  answer a ping, and the new node routes by its partitions only once their owners'
  "handed over" entries have gossiped back to it; the few keys move in milliseconds.
- Found and fixed on the way (per-node CPU that grew faster than it should): each
  ping answer rebuilt the view's member dict, O(n) per answer and O(n^2) per ping
  round on every node, a third of the simulation's time at 200 nodes (now once per
  view: tests/stages/test_gossip.py); every merge parsed every member's two addresses
  with `ipaddress`, about 10% of a core per node at 500 (valid addresses are now
  remembered: tests/cores/test_address.py); each answer from a member still down
  (every member, when a node starts) re-ran failure detection over every member, n^2
  phi evaluations as a node starts among n, most of a 500-node run's time (now it
  judges the member that answered: tests/stages/test_gossip.py); a settled ring
  walked all Q partitions for its pending moves every tick (now answered at once).
- Fidelity: in the membership-only runs (and full-stage runs over 50 nodes) the
  simulator answers pings in the network stages' place; at 12 nodes the rounds match
  real network-stage pings within one round (tests/sim/test_scale.py). All nodes of a
  formed cluster start together, so their gossip rounds fall in step (the classic
  synchronous-rounds model); the new node's do not.
"""


def _balance(sizes: dict[int, list[Any]]) -> str:
    """Whether every ring measured kept each node within floor..ceil of its share."""
    off = [f"{n} nodes: {r.before}, after {r.after}" for n, runs in sizes.items()
           for r in runs[:1] if not (r.before[1] >= r.partitions // n
                                     and r.before[0] <= -(-r.partitions // n)
                                     and r.after[1] >= r.partitions // (n + 1)
                                     and r.after[0] <= -(-r.partitions // (n + 1)))]
    if off:
        return "some rings are off the floor..ceil of Q/n: " + "; ".join(off) + "."
    return ("at every size each node owns floor(Q/n) or ceil(Q/n) partitions, before "
            "the join and in its plan (Q/(n+1)), within the checker's bound ceil(Q/n)+1.")


def write(report: Path, spreads: Sequence[Any], transfers: Sequence[Any]) -> None:
    """Rewrite the Scale section of ``report`` (appended when absent), and the plot."""
    text = report.read_text() if report.exists() else "# The simulator's report\n"
    new = section(spreads, transfers)
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: new + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + new
    report.write_text(text)
    plot(report.with_name(PLOT), spreads)


def _series(spreads: Sequence[Any]) -> tuple[list[int], list[float], list[float]]:
    sizes = _by_size(spreads)
    return (list(sizes), [_mean([r.rounds for r in runs]) for runs in sizes.values()],
            [max(r.rounds for r in runs) for runs in sizes.values()])


def plot(path: Path, spreads: Sequence[Any]) -> None:
    """Rounds (mean and max) against n, with log2 n: matplotlib, or SVG by hand."""
    try:
        import matplotlib
    except ImportError:
        path.write_text(svg(*_series(spreads)))
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, mean, most = _series(spreads)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(sizes, mean, "o-", label="mean rounds, join to every view")
    ax.plot(sizes, most, "s--", label="max rounds")
    ax.plot(sizes, [math.log2(n) for n in sizes], ":", label="log2 n")
    ax.set_xscale("log")
    ax.set_xlabel("nodes n")
    ax.set_ylabel("gossip rounds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def svg(sizes: list[int], mean: list[float], most: list[float]) -> str:
    """The same plot as a hand-written SVG: x is log n, y is rounds."""
    w, h, left, right, top, bottom = 580, 320, 50, 220, 20, 45
    lo, hi = math.log(min(sizes)), math.log(max(sizes))
    ref = [math.log2(n) for n in sizes]
    ymax = math.ceil(max([*mean, *most, *ref, 1.0]) + 1)

    def x(n: int) -> float:
        span = (hi - lo) or 1.0
        return left + (math.log(n) - lo) / span * (w - left - right) if hi > lo else \
            (left + w - right) / 2

    def y(v: float) -> float:
        return top + (1 - v / ymax) * (h - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{left}" y1="{y(0)}" x2="{w - right}" y2="{y(0)}" stroke="black"/>',
           f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{top}" stroke="black"/>']
    for v in range(0, ymax + 1, max(1, ymax // 6)):
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for n in sizes:
        out.append(f'<text x="{x(n):.1f}" y="{y(0) + 16:.1f}" text-anchor="middle">'
                   f'{n}</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 8}" text-anchor="middle">'
               'nodes n (log scale)</text>')
    out.append(f'<text x="14" y="{(top + h - bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(top + h - bottom) / 2})">gossip rounds</text>')
    lines = [("mean rounds, join to every view", mean, "#1f77b4", ""),
             ("max rounds", most, "#d62728", ' stroke-dasharray="6 3"'),
             ("log2 n", ref, "#555555", ' stroke-dasharray="2 3"')]
    for k, (label, values, colour, dash) in enumerate(lines):
        points = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in zip(sizes, values,
                                                                     strict=True))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"{dash}/>')
        out += [f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>'
                for n, v in zip(sizes, values, strict=True)]
        ly = top + 14 + 18 * k
        out.append(f'<line x1="{w - right + 12}" y1="{ly}" x2="{w - right + 36}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{w - right + 40}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
