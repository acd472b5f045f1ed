"""``seda-dynamo admin tpstats`` and ``seda-dynamo top``: the stages of a node at a glance.

After Cassandra's ``nodetool tpstats``: one row per SEDA stage (Welsh et al. 2001, the
per-stage queue and controller figures; Dynamo paper section 6 on watching the
request pipeline), its worker processes summed. The input is the ``stats`` reply of a
node (every worker's last report, once a second); ``top`` draws two of them some
seconds apart as rates. Pure functions of those replies: the command shells do the IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seda_dynamo.metrics import number
from seda_dynamo.stage import STAGES, stage_of


@dataclass(frozen=True, slots=True)
class StageRow:
    """One stage of one node, its workers added up (latencies: the worst worker's)."""

    stage: str
    processes: int
    queue_depth: int
    processed: int
    errors: int
    dropped: int
    batch_size: float
    service_p50_ms: float
    service_p99_ms: float
    cpu_percent: float
    rss_bytes: int


def _num(report: dict[str, Any], name: str) -> float:
    return number(report.get(name)) or 0.0


def rows(stats: dict[str, Any]) -> list[StageRow]:
    """The stages of a ``stats`` reply in pipeline order, workers folded into their stage."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for worker, report in stats.items():
        if isinstance(report, dict):
            groups.setdefault(stage_of(str(worker)), []).append(report)
    order = [s.name for s in STAGES] + sorted(set(groups) - {s.name for s in STAGES})
    out = []
    for stage in order:
        reports = groups.get(stage)
        if not reports:
            continue
        out.append(StageRow(
            stage=stage, processes=len(reports),
            queue_depth=int(sum(_num(r, "queue_depth") for r in reports)),
            processed=int(sum(_num(r, "processed") for r in reports)),
            errors=int(sum(_num(r, "errors") for r in reports)),
            dropped=int(sum(_num(r, "dropped") for r in reports)),
            batch_size=sum(_num(r, "batch_size") for r in reports) / len(reports),
            service_p50_ms=max(_num(r, "service_p50_ms") for r in reports),
            service_p99_ms=max(_num(r, "service_p99_ms") for r in reports),
            cpu_percent=sum(_num(r, "cpu_percent") for r in reports),
            rss_bytes=int(sum(_num(r, "rss_bytes") for r in reports))))
    return out


HEADER = (f"{'stage':<13} {'procs':>5} {'queue':>6} {'processed':>11} {'errors':>6} "
          f"{'dropped':>7} {'batch':>6} {'svc p50':>8} {'svc p99':>8} {'cpu%':>6} "
          f"{'rss MB':>7}")


def _line(row: StageRow, rate: float | None) -> str:
    done = f"{rate:>9.0f}/s" if rate is not None else f"{row.processed:>11}"
    return (f"{row.stage:<13} {row.processes:>5} {row.queue_depth:>6} {done} "
            f"{row.errors:>6} {row.dropped:>7} {row.batch_size:>6.1f} "
            f"{row.service_p50_ms:>8.2f} {row.service_p99_ms:>8.2f} "
            f"{row.cpu_percent:>6.1f} {row.rss_bytes / 2**20:>7.1f}")


def text(node: str, stats: dict[str, Any]) -> str:
    """``admin tpstats``: a table of the node's stages (service times in ms per batch)."""
    lines = [f"node {node}", HEADER]
    lines += [_line(row, None) for row in rows(stats)]
    return "\n".join(lines)


def rates(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, float]:
    """Events processed per second by each stage between two ``stats`` replies."""
    was = {row.stage: row.processed for row in rows(before)}
    return {row.stage: max(0, row.processed - was.get(row.stage, row.processed))
            / max(seconds, 1e-9) for row in rows(after)}


def top_text(frames: dict[str, tuple[dict[str, Any], dict[str, Any] | None]],
             seconds: float, clock: str = "") -> str:
    """``top``: for each node, its stages with the rate of events over ``seconds``.

    ``frames`` maps a node's name to (its latest ``stats``, the one before or None); a
    node whose stats could not be read has an empty latest reply and is shown as such.
    """
    first = all(previous is None for _, previous in frames.values())
    lines = [f"seda-dynamo top {clock}".rstrip()
             + (" (processed: events since start" if first else
                f" (processed: events/s over {seconds:.1f} s") + "; svc: ms per batch)"]
    for node, (latest, previous) in frames.items():
        lines.append("")
        if not latest:
            lines.append(f"node {node}: not answering")
            continue
        per_second = rates(previous, latest, seconds) if previous else {}
        lines += [f"node {node}", HEADER]
        lines += [_line(row, per_second.get(row.stage)) for row in rows(latest)]
    return "\n".join(lines)
