"""The pure helpers of the benchmark report (bench/tables.py, bench/render.py,
bench/plots.py): tables, targets and their verdicts, the markdown, the figures. Nothing
here is started or timed: the result dicts are made up."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.plots import cdf_points, make_plots
from bench.render import plot_data, render, targets
from bench.tables import (
    Target,
    fmt_ms,
    fmt_ops,
    headline_table,
    overload_row,
    overload_table,
    ratio,
    run_table,
    sweep_table,
    version_of,
)
from seda_dynamo.loadgen import CDF_PERCENTILES


def result(ops_per_sec: float, p99: float = 5.0, p999: float = 8.0, label: str = "",
           **extra: Any) -> dict[str, Any]:
    cdf = [[pct, round(0.5 + pct / 10.0, 3)] for pct in CDF_PERCENTILES]
    return {"label": label, "ops_per_sec": ops_per_sec, "p50_ms": 1.0, "p99_ms": p99,
            "p999_ms": p999, "max_ms": 20.0, "errors": {}, "sent": 1000, "seconds": 1.0,
            "backlogged": 0, "rate": None, "cdf": cdf, **extra}


def sample_data() -> dict[str, Any]:
    node_put = result(12_000, p99=8.0, label="node put")
    over = result(11_000, p99=20.0, label="node put @ 2x peak", sent=120_000, seconds=5.0,
                  errors={"overloaded": 60_000}, rate=24_000.0,
                  error_ms={"replies": 60_000, "p50_ms": 0.8, "p99_ms": 3.0})
    return {
        "machine": {"cores": 2, "cpu": "a CPU", "kernel": "Linux 6", "python": "CPython 3.11",
                    "etcd": "3.4.23", "redis": None, "date": "2026-11-22 10:00 UTC"},
        "settings": {"concurrency": 64, "value_size": 100, "max_seconds": 5.0,
                     "ops": 1_000_000, "overload_seconds": 5.0, "overload_concurrency": 4096,
                     "sweep_seconds": 2.5, "command": "python -m bench.report"},
        "seconds": 300.0, "loadavg_before": (0.5, 0.4, 0.3), "loadavg_after": (2.0, 1.0, 0.5),
        "status": {"redis": "skipped: redis-server not found"},
        "sections": {
            "ceiling": {"runs": {"put": result(36_000, label="echo chain (ceiling)")}},
            "node": {"runs": {"put": node_put, "get": result(18_000, label="node get"),
                              "overload": over},
                     "overload": overload_row("defaults", 24_000.0, over, node_put)},
            "cluster": {"runs": {"put": result(3_000, p999=70.0, label="cluster put"),
                                 "get": result(7_000, label="cluster get"),
                                 "put_half": result(1_500, p999=30.0, rate=1_500.0),
                                 "get_half": result(3_500, p999=12.0, rate=3_500.0)},
                        "sweep": {1: result(200), 64: result(3_000), 256: result(4_000)},
                        "cpu": {"cpu_percent": {"node1": {"network": 10.0, "gossip": 1.0}},
                                "samples": {"node1": 4}, "loadgen_cpu_percent": 40.0}},
            "etcd": {"runs": {"put": result(1_500, label="etcd put"),
                              "get": result(2_000, label="etcd get")},
                     "sweep": {1: result(150), 64: result(1_500)}},
        },
    }


def test_numbers_are_formatted_for_people() -> None:
    assert fmt_ops(12345.6) == "12,346" and fmt_ops(None) == "–"
    assert [fmt_ms(x) for x in (0.4123, 7.314, 71.33, 1204.0)] == ["0.412", "7.31", "71.3",
                                                                    "1,204"]
    assert ratio(6.0, 2.0) == 3.0
    assert ratio(1.0, None) is None and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    assert version_of("etcd Version: 3.4.23") == "3.4.23"
    assert version_of("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc") == "7.0.15"
    assert version_of(None) is None


def test_a_target_says_whether_it_is_met_and_by_how_much_it_is_missed() -> None:
    assert Target("put ratio", 3.2, ">=", 3.0).verdict() == "met"
    missed = Target("put ratio", 1.5, ">=", 3.0)
    assert missed.met is False
    assert "MISSED" in missed.verdict() and "50 %" in missed.verdict()
    assert "2.00 times" in missed.verdict()
    late = Target("p99.9", 30.0, "<", 25.0, "ms")
    assert late.met is False and "20 % over" in late.verdict()
    assert Target("p99.9", 25.0, "<", 25.0, "ms").met is False  # "below" is strict
    assert Target("ratio", 3.0, "<=", 3.0).met is True
    assert Target("ratio", None, ">=", 3.0).verdict() == "not measured"
    info = Target("vs redis", 0.2)
    assert info.met is None and info.verdict() == "no target" and info.goal == "none"
    assert Target("share", 34.0, ">=", 30.0, "%").goal == "≥ 30.0 %"


def test_tables_have_one_line_per_run_and_show_the_share_of_the_ceiling() -> None:
    rows = [("echo", result(40_000)), ("node put", result(12_000, errors={"timeout": 2})),
            ("half", result(6_000, rate=6_000.0, backlogged=3))]
    lines = run_table(rows, ceiling=40_000).splitlines()
    assert len(lines) == 2 + 3
    assert "| 30.0 |" in lines[3] and "timeout=2" in lines[3]
    assert lines[4].count("|") == lines[3].count("|") and "(3 backlogged)" in lines[4]
    assert "% of ceiling" not in run_table(rows)
    assert run_table([]) == "_not measured_"
    head = headline_table([("seda, 1 node", result(12_000), None)], ceiling=40_000)
    assert "12,000 (30 % of ceiling)" in head and head.splitlines()[-1].endswith("– | – |")
    sweep = sweep_table({"a": {1: result(100), 4: result(300)}, "b": {4: result(50)}})
    assert sweep.splitlines()[2].startswith("| 1 | 100 (5.00) | – |")


def test_overload_row_counts_what_was_shed_and_how_fast() -> None:
    peak = result(12_000, p99=8.0)
    over = result(11_000, p99=24.0, sent=100_000, seconds=5.0,
                  errors={"overloaded": 40_000, "no_reply": 5},
                  error_ms={"replies": 40_000, "p50_ms": 0.9, "p99_ms": 4.0})
    row = overload_row("defaults", 24_000.0, over, peak)
    assert row["p99_ratio"] == 3.0 and row["shed_share"] == 40.0
    assert row["shed_p99_ms"] == 4.0 and row["other_errors"] == {"no_reply": 5}
    assert row["sent_per_sec"] == 20_000.0
    text = overload_table([row])
    assert "40.0 % (40,000 of 100,000)" in text and "3.00x" in text and "no_reply=5" in text


def test_targets_pair_the_systems_as_the_issue_asks() -> None:
    by_name = {t.name: t for t in targets(sample_data())}
    assert by_name["seda cluster put / etcd put"].value == 2.0
    assert by_name["seda cluster put / etcd put"].met is False
    assert by_name["seda cluster get / etcd serializable get"].value == 3.5
    assert by_name["seda node put / echo-chain ceiling"].value == pytest.approx(100 / 3)
    assert by_name["seda cluster put p99.9 at half its peak"].met is False
    assert by_name["seda cluster get p99.9 at half its peak"].met is True
    assert by_name["one node: p99 admitted at 2x peak / p99 at peak"].value == 2.5
    assert by_name["seda cluster put / Redis set"].verdict() == "not measured"


def test_the_report_starts_with_the_headline_and_says_what_was_not_measured() -> None:
    data = sample_data()
    md = render(data, [("Throughput vs requests in flight", "report/sweep.png")],
                plots_skipped=None)
    assert md.startswith("# seda-dynamo benchmark report\n\n| system |")
    assert md.index("| system |") < md.index("## Machine") < md.index("## Targets")
    assert "`make bench`" in md and "2 cores, a CPU" in md and "Redis not installed" in md
    assert "![Throughput vs requests in flight](report/sweep.png)" in md
    assert "skipped: redis-server not found" in md
    assert "**MISSED**" in md and "| met |" in md
    skipped = render(data, [], plots_skipped="matplotlib is not installed")
    assert "Plots skipped: matplotlib is not installed" in skipped
    assert "All on one machine over loopback" in md
    json.dumps(data)  # what --json prints and results.json holds
    elsewhere = render({**data, "where": {"cluster": "the running cluster at 10.0.0.1:7000"}},
                       [], plots_skipped=None)
    assert "measured elsewhere: 3-node cluster: the running cluster at 10.0.0.1:7000" \
        in elsewhere


def test_plot_data_and_cdf_points() -> None:
    pd = plot_data(sample_data())
    assert pd["sweep"]["seda-dynamo, 3 nodes"] == [(1, 200), (64, 3_000), (256, 4_000)]
    assert set(pd["cdf"]["put"]) == {"seda-dynamo, 1 node", "seda-dynamo, 3 nodes",
                                     "etcd, 3 members"}
    assert pd["cpu"] == {"node1": {"network": 10.0, "gossip": 1.0}}
    xs, ys = cdf_points([[0.0, 0.1], [50.0, 2.0], [99.9, 9.0], [100.0, 12.0]])
    assert xs == [2.0, 9.0] and ys == pytest.approx([0.5, 0.999])


def test_the_figures_are_written_when_matplotlib_is_there(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    made, why = make_plots(plot_data(sample_data()), str(tmp_path))
    assert why is None
    assert [name for _, name in made] == ["throughput_vs_concurrency.png", "latency_cdf.png",
                                          "stage_cpu.png"]
    for _, name in made:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
