"""The report's PNGs (matplotlib, the optional ``plots`` extra: ``pip install .[plots]``).

Three figures, each written by a function that takes plain numbers:

* ``plot_sweep``: throughput against the requests in flight (log-log), one line a system;
* ``plot_cdf``: latency CDF of the closed-loop peak runs, a panel each for put and get,
  from the ``cdf`` of the load generator's result (``[[percentile, ms], ...]``); the
  y axis is a logit scale, so the median and the 99.9th percentile both get room;
* ``plot_cpu``: each stage's CPU share per node (grouped bars), from ``StatsSampler``.

``missing()`` says why there are no plots (matplotlib not installed), or None. The Agg
backend is used: no display is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from bench.tables import stage_names

DPI = 110
SIZE = (7.5, 4.2)
# one colour per system in every figure
COLORS = {"seda-dynamo, 1 node": "tab:blue", "seda-dynamo, 3 nodes": "tab:red",
          "etcd, 3 members": "tab:orange", "Redis": "tab:green"}
CDF_TICKS = (0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)


def missing() -> str | None:
    """None when matplotlib can be imported, else why not (for the report)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError as exc:
        return (f"matplotlib is not installed ({exc}); `pip install -e '.[plots]'` "
                "(as `make bench` does) adds it")
    return None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig: Any, ax: Any, title: str, path: str, **grid: str) -> None:
    """Title, grid, legend and the PNG of a one-panel figure."""
    ax.set_title(title)
    ax.grid(True, alpha=0.3, **grid)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_sweep(sweeps: Mapping[str, Sequence[tuple[int, float]]], path: str,
               title: str = "Throughput vs requests in flight") -> str:
    """``sweeps``: system -> ``[(in flight, ops/s), ...]``. Writes ``path``; returns it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    try:
        for name, points in sweeps.items():
            pts = sorted((c, ops) for c, ops in points if ops > 0)
            if pts:
                ax.plot([c for c, _ in pts], [ops for _, ops in pts], marker="o", label=name,
                        color=COLORS.get(name))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        levels = sorted({c for points in sweeps.values() for c, _ in points})
        if levels:
            ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("requests in flight (closed loop)")
        ax.set_ylabel("ops/s (log)")
        _finish(fig, ax, title, path, which="both")
    finally:
        plt.close(fig)
    return path


def cdf_points(cdf: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """``(ms, fraction)`` of a ``[[percentile, ms], ...]`` CDF, the 0th and 100th
    percentiles left out (a logit axis has no room for 0 and 1) and ms > 0."""
    xs, ys = [], []
    for pct, ms in cdf:
        if 0.0 < pct < 100.0 and ms > 0:
            xs.append(ms)
            ys.append(pct / 100.0)
    return xs, ys


def plot_cdf(panels: Mapping[str, Mapping[str, Sequence[Sequence[float]]]], path: str,
             title: str = "Latency CDF of the peak runs (closed loop)") -> str:
    """``panels``: op (``put``, ``get``) -> system -> cdf. Writes ``path``; returns it."""
    plt = _pyplot()
    from matplotlib import ticker

    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(SIZE[0] * 1.4, SIZE[1]),
                             sharey=True, squeeze=False)
    try:
        for ax, (op, curves) in zip(axes[0], panels.items(), strict=False):
            for name, cdf in curves.items():
                xs, ys = cdf_points(cdf)
                if xs:
                    ax.plot(xs, ys, marker=".", label=name, color=COLORS.get(name))
            ax.set_xscale("log")
            ax.set_yscale("logit")
            ax.set_ylim(0.01, 0.9999)
            ax.set_yticks(CDF_TICKS, [f"{100 * t:g} %" for t in CDF_TICKS])
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xlabel(f"{op} latency, ms (log)")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(op)
            ax.legend(fontsize="small")
        axes[0][0].set_ylabel("fraction of requests at or below (logit)")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def plot_cpu(cpu: Mapping[str, Mapping[str, float]], path: str,
             title: str = "CPU per stage during the cluster put run") -> str:
    """``cpu``: node -> stage -> CPU % (100 = one core). Writes ``path``; returns it."""
    plt = _pyplot()
    stages = stage_names(cpu)
    nodes = list(cpu)
    fig, ax = plt.subplots(figsize=SIZE)
    try:
        width = 0.8 / max(1, len(nodes))
        for i, node in enumerate(nodes):
            xs = [s + (i - (len(nodes) - 1) / 2) * width for s in range(len(stages))]
            ax.bar(xs, [cpu[node].get(stage, 0.0) for stage in stages], width, label=node)
        ax.set_xticks(range(len(stages)), stages)
        ax.set_ylabel("CPU % (100 = one core)")
        _finish(fig, ax, title, path, axis="y")
    finally:
        plt.close(fig)
    return path


def make_plots(data: Mapping[str, Any], out_dir: str) -> tuple[list[tuple[str, str]], str | None]:
    """Every figure ``data`` has numbers for, in ``out_dir``.

    ``data``: ``sweep`` (system -> [(in flight, ops/s)]), ``cdf`` (op -> system -> cdf),
    ``cpu`` (node -> stage -> %); any may be empty. Returns ``([(title, file name)],
    why none were made or None)``.
    """
    why = missing()
    if why is not None:
        return [], why
    os.makedirs(out_dir, exist_ok=True)
    made: list[tuple[str, str]] = []
    if any(data.get("sweep", {}).values()):
        name = "throughput_vs_concurrency.png"
        plot_sweep(data["sweep"], os.path.join(out_dir, name))
        made.append(("Throughput vs requests in flight", name))
    cdfs = {op: curves for op, curves in data.get("cdf", {}).items() if curves}
    if cdfs:
        name = "latency_cdf.png"
        plot_cdf(cdfs, os.path.join(out_dir, name))
        made.append(("Latency CDF of the peak runs", name))
    if data.get("cpu"):
        name = "stage_cpu.png"
        plot_cpu(data["cpu"], os.path.join(out_dir, name))
        made.append(("CPU per stage, cluster put run", name))
    return made, None
