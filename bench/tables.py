"""The pure half of ``bench/report.py``: markdown tables, targets and the machine.

Nothing here starts a process or measures anything: each function takes result dicts as
``seda_dynamo.loadgen.run_phase`` / ``run_mix`` return them (``ops_per_sec``,
``p50_ms``, ``p99_ms``, ``p999_ms``, ``errors``, ...) and returns text, so
``tests/tooling/test_bench_report.py`` checks them without timing anything.

``Target`` is one goal of issue 5 (e.g. cluster put >= 3x etcd put) with its measured
value: ``verdict()`` says plainly whether it is met, and if not, by how much it is missed.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Result = Mapping[str, Any]
Row = tuple[str, Result]
STAGE_ORDER = ("network", "coordination", "versioning", "persistence", "gossip")
DASH = "–"


# Numbers ----------------------------------------------------------------------------------
def fmt_ops(x: float | None) -> str:
    """``12,345`` (ops/s), or a dash when not measured."""
    return DASH if x is None else f"{x:,.0f}"


def fmt_ms(x: float | None) -> str:
    """Milliseconds to 3 significant-ish digits: ``0.412``, ``7.31``, ``71.3``, ``1,204``."""
    if x is None:
        return DASH
    if x < 1:
        return f"{x:.3f}"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is not positive."""
    if a is None or b is None or b <= 0:
        return None
    return a / b


def errors_text(r: Result) -> str:
    """``overloaded=12, no_reply=1 (3 backlogged)`` or ``-``."""
    text = ", ".join(f"{k}={v:,}" for k, v in sorted(r.get("errors", {}).items())) or "-"
    if r.get("backlogged"):
        text += f" ({r['backlogged']:,} backlogged)"
    return text


# Targets ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A goal and what was measured: ``value`` compared with ``bound`` by ``rule``.

    ``rule`` is ``">="`` (at least), ``"<="`` (at most), ``"<"`` (below) or ``""`` (no
    target: the value is only reported). ``unit`` is ``"x"`` (a ratio), ``"%"`` or
    ``"ms"``. ``value`` None means it was not measured (a part skipped or failed).
    """

    name: str
    value: float | None
    rule: str = ""
    bound: float = 0.0
    unit: str = "x"

    def show(self, x: float) -> str:
        if self.unit == "x":
            return f"{x:.2f}x"
        if self.unit == "%":
            return f"{x:.1f} %"
        return f"{fmt_ms(x)} {self.unit}".rstrip()

    @property
    def goal(self) -> str:
        sign = {">=": "≥", "<=": "≤"}.get(self.rule, self.rule)
        return f"{sign} {self.show(self.bound)}" if self.rule else "none"

    @property
    def met(self) -> bool | None:
        """True / False, or None when there is no target or nothing was measured."""
        if not self.rule or self.value is None:
            return None
        if self.rule == ">=":
            return self.value >= self.bound
        if self.rule == "<=":
            return self.value <= self.bound
        if self.rule == "<":
            return self.value < self.bound
        raise ValueError(f"unknown rule {self.rule!r}")

    def verdict(self) -> str:
        """``met``, ``MISSED: ... short of ...``, ``not measured`` or ``no target``."""
        if self.value is None:
            return "not measured"
        if not self.rule:
            return "no target"
        if self.met:
            return "met"
        if self.rule == ">=":
            short = 100.0 * (1.0 - self.value / self.bound) if self.bound else 0.0
            more = (f"; {self.bound / self.value:.2f} times as much needed" if self.value > 0
                    else "")
            return (f"**MISSED** by {short:.0f} %: {self.show(self.value)} where "
                    f"{self.goal} was the target{more}")
        over = (f"{100.0 * (self.value / self.bound - 1.0):.0f} % over" if self.bound > 0
                else "over")
        return f"**MISSED**: {self.show(self.value)} is {over} the target {self.goal}"


def targets_table(targets: Iterable[Target]) -> str:
    lines = ["| comparison | measured | target | verdict |", "|---|---:|---|---|"]
    for t in targets:
        measured = DASH if t.value is None else t.show(t.value)
        lines.append(f"| {t.name} | {measured} | {t.goal} | {t.verdict()} |")
    return "\n".join(lines)


# Tables -----------------------------------------------------------------------------------
def run_table(rows: Sequence[Row], ceiling: float | None = None) -> str:
    """One line per run: ops/s, p50/p99/p99.9 ms, % of the ceiling (if given; closed-loop
    runs only), errors. No rows: ``_not measured_``."""
    if not rows:
        return "_not measured_"
    share = ceiling is not None and ceiling > 0
    head = "| run | ops/s | p50 ms | p99 ms | p99.9 ms |" + (" % of ceiling |" if share else "")
    lines = [head + " client CPU % | errors |",
             "|---|---:|---:|---:|---:|" + ("---:|" if share else "") + "---:|---|"]
    for label, r in rows:
        line = (f"| {label} | {fmt_ops(r['ops_per_sec'])} | {fmt_ms(r['p50_ms'])} | "
                f"{fmt_ms(r['p99_ms'])} | {fmt_ms(r['p999_ms'])} |")
        if share:
            line += (f" {100.0 * r['ops_per_sec'] / ceiling:.1f} |"
                     if ceiling and not r.get("rate") else " |")
        cpu = r.get("client_cpu_percent")
        lines.append(line + f" {DASH if cpu is None else f'{cpu:.0f}'} | {errors_text(r)} |")
    return "\n".join(lines)


def headline_table(systems: Sequence[tuple[str, Result | None, Result | None]],
                   ceiling: float | None = None) -> str:
    """``(name, put result, get result)`` per system: ops/s and p99.9 of each.

    With ``ceiling`` (the echo chain's ops/s) a system's ops/s also shows its share of it
    when the name says ``1 node``.
    """
    lines = ["| system | put ops/s | put p99.9 ms | get ops/s | get p99.9 ms |",
             "|---|---:|---:|---:|---:|"]
    for name, put, get in systems:
        cells = []
        for r in (put, get):
            if r is None:
                cells += [DASH, DASH]
                continue
            ops = fmt_ops(r["ops_per_sec"])
            if ceiling and "1 node" in name:
                ops += f" ({100.0 * r['ops_per_sec'] / ceiling:.0f} % of ceiling)"
            cells += [ops, fmt_ms(r["p999_ms"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overload_row(label: str, offered: float, over: Result, peak: Result) -> dict[str, Any]:
    """The overload numbers of one node: what was offered, admitted, shed, and how fast."""
    sent = max(1, over.get("sent", 0))
    shed = over.get("errors", {}).get("overloaded", 0)
    other = {k: v for k, v in over.get("errors", {}).items() if k != "overloaded"}
    err = over.get("error_ms") or {}
    return {"label": label, "offered": offered, "sent": over.get("sent", 0),
            "sent_per_sec": over.get("sent", 0) / max(over.get("seconds", 0.0), 1e-9),
            "admitted_per_sec": over["ops_per_sec"], "admitted_p99_ms": over["p99_ms"],
            "admitted_p999_ms": over["p999_ms"], "peak_p99_ms": peak["p99_ms"],
            "p99_ratio": ratio(over["p99_ms"], peak["p99_ms"]),
            "shed_share": 100.0 * shed / sent, "shed": shed,
            "shed_p50_ms": err.get("p50_ms") if shed else None,
            "shed_p99_ms": err.get("p99_ms") if shed else None,
            "backlogged": over.get("backlogged", 0), "other_errors": other}


def overload_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| node | offered ops/s (sent) | admitted ops/s | admitted p99 ms | peak p99 ms "
             "| p99 / peak p99 | shed | shed reply p50 / p99 ms | backlogged | other errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for o in rows:
        r = o["p99_ratio"]
        other = ", ".join(f"{k}={v:,}" for k, v in sorted(o["other_errors"].items())) or "-"
        lines.append(
            f"| {o['label']} | {fmt_ops(o['offered'])} ({fmt_ops(o['sent_per_sec'])}) | "
            f"{fmt_ops(o['admitted_per_sec'])} | "
            f"{fmt_ms(o['admitted_p99_ms'])} | {fmt_ms(o['peak_p99_ms'])} | "
            f"{DASH if r is None else f'{r:.2f}x'} | {o['shed_share']:.1f} % "
            f"({o['shed']:,} of {o['sent']:,}) | {fmt_ms(o['shed_p50_ms'])} / "
            f"{fmt_ms(o['shed_p99_ms'])} | {o['backlogged']:,} | {other} |")
    return "\n".join(lines)


def sweep_table(sweeps: Mapping[str, Mapping[int, Result]]) -> str:
    """Concurrency -> ops/s (p99 ms) of each system; ``sweeps``: system -> level -> result."""
    names = list(sweeps)
    levels = sorted({c for runs in sweeps.values() for c in runs})
    lines = ["| in flight | " + " | ".join(f"{n} ops/s (p99 ms)" for n in names) + " |",
             "|---:|" + "---:|" * len(names)]
    for c in levels:
        cells = []
        for n in names:
            r = sweeps[n].get(c)
            cells.append(DASH if r is None
                         else f"{fmt_ops(r['ops_per_sec'])} ({fmt_ms(r['p99_ms'])})")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_table(summary: Mapping[str, Any]) -> str:
    """Stage -> CPU % per node (``StatsSampler.summary()``), with each node's total."""
    cpu: Mapping[str, Mapping[str, float]] = summary["cpu_percent"]
    nodes = list(cpu)
    stages = stage_names(cpu)
    lines = ["| stage | " + " | ".join(f"{n} CPU %" for n in nodes) + " |",
             "|---|" + "---:|" * len(nodes)]
    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(
            f"{cpu[n].get(stage, 0.0):.1f}" for n in nodes) + " |")
    lines.append("| **node total** | " + " | ".join(
        f"**{sum(cpu[n].values()):.1f}**" for n in nodes) + " |")
    samples = ", ".join(f"{n}: {k}" for n, k in summary["samples"].items())
    lines.append(f"\nload generator (the report's process): "
                 f"{summary['loadgen_cpu_percent']:.1f} % CPU; stats samples per node: "
                 f"{samples}; 100 % = one core")
    return "\n".join(lines)


def stage_names(cpu: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The stages seen, in pipeline order, unknown ones after."""
    seen = {stage for stages in cpu.values() for stage in stages}
    return [s for s in STAGE_ORDER if s in seen] + sorted(seen - set(STAGE_ORDER))


# The machine ------------------------------------------------------------------------------
def _first_line(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else None


def version_of(text: str | None) -> str | None:
    """``3.4.23`` out of ``etcd Version: 3.4.23`` or ``Redis server v=7.0.15 sha=...``."""
    if not text:
        return None
    m = re.search(r"(?:v=|Version:\s*|version\s+)v?(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else text


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, kernel, Python, etcd and Redis versions, and the date (UTC)."""
    return {"cores": os.cpu_count(), "cpu": cpu_model(),
            "kernel": f"{platform.system()} {platform.release()}",
            "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
            "etcd": version_of(_first_line(["etcd", "--version"])),
            "redis": version_of(_first_line(["redis-server", "--version"])),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def machine_lines(info: Mapping[str, Any]) -> str:
    return "\n".join([
        f"- machine: {info['cores']} cores, {info['cpu']}; {info['kernel']}",
        f"- {info['python']}; etcd {info.get('etcd') or 'not installed'}; "
        f"Redis {info.get('redis') or 'not installed'}",
        f"- date: {info['date']}"])
