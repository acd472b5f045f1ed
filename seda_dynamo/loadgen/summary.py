"""A run's numbers: latency histograms merged over client processes, the result dict
and its one-line summary.

What the Dynamo paper reports in section 6 (average and 99.9th percentile latency of
reads and writes, Figures 4 and 6): ops/s and p50 / p99 / p99.9 / max latency from an
HdrHistogram at microsecond resolution, per op for a mix, and a latency CDF.
"""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US, HIGHEST_US, DIGITS = 1, 60_000_000, 3
PHASES = ("put", "get")
CDF_PERCENTILES = (0.0, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0,
                   95.0, 97.5, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def merge_histograms(encoded: list[bytes]) -> HdrHistogram:
    """One histogram holding every value of the encoded ones (``HdrHistogram.encode()``)."""
    merged = new_histogram()
    for blob in encoded:
        merged.add(HdrHistogram.decode(blob))
    return merged

def _ms(hist: HdrHistogram, percentile: float) -> float:
    return round(hist.get_value_at_percentile(percentile) / 1000.0, 3)


def _latency(hist: HdrHistogram, n_ok: int) -> dict[str, float]:
    if not n_ok:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "p999_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    return {"p50_ms": _ms(hist, 50.0), "p99_ms": _ms(hist, 99.0), "p999_ms": _ms(hist, 99.9),
            "max_ms": round(hist.get_max_value() / 1000.0, 3),
            "mean_ms": round(hist.get_mean_value() / 1000.0, 3)}


def summarise(parts: list[dict[str, Any]], phase: str, targets: list[str]
               ) -> tuple[dict[str, Any], dict[str, HdrHistogram]]:
    """The fields every result has, and the merged histogram of each op."""
    hists = {op: merge_histograms([p["hist"][op] for p in parts]) for op in PHASES}
    errors: dict[str, int] = {}
    for part in parts:
        for code, n in part["errors"].items():
            errors[code] = errors.get(code, 0) + n
    n_ok = sum(sum(p["ok"].values()) for p in parts)
    # perf_counter is CLOCK_MONOTONIC on Linux: comparable across the client processes
    seconds = (max(p["end"] for p in parts) - min(p["t0"] for p in parts)) / 1e9
    merged = new_histogram()
    for hist in hists.values():
        merged.add(hist)
    lat = _latency(merged, n_ok)
    result = {"phase": phase, "ops": n_ok, "errors": errors, "seconds": round(seconds, 6),
              "ops_per_sec": round(n_ok / seconds, 1), "p50_ms": lat["p50_ms"],
              "p99_ms": lat["p99_ms"], "p999_ms": lat["p999_ms"], "max_ms": lat["max_ms"],
              "sent": sum(p["sent"] for p in parts),
              "backlogged": sum(p["backlogged"] for p in parts),
              "servers": len(targets),
              "per_server": {t: sum(p["per_server"][j] for p in parts)
                             for j, t in enumerate(targets)},
              "cdf": [[pct, _ms(merged, pct) if n_ok else 0.0] for pct in CDF_PERCENTILES]}
    # error replies (not no_reply, which never came back): how long e.g. a shed took
    err_hist = merge_histograms([p["err_hist"] for p in parts if "err_hist" in p])
    n_replied = err_hist.get_total_count()
    result["error_ms"] = {"replies": n_replied, **_latency(err_hist, n_replied)}
    if phase == "mix":
        result["mean_ms"] = lat["mean_ms"]
        result["by_op"] = {}
        for op in ("get", "put"):
            ok = sum(p["ok"][op] for p in parts)
            op_errors: dict[str, int] = {}
            for part in parts:
                for code, n in part["op_errors"][op].items():
                    op_errors[code] = op_errors.get(code, 0) + n
            result["by_op"][op] = {"ops": ok, "errors": op_errors,
                                   "ops_per_sec": round(ok / seconds, 1),
                                   **_latency(hists[op], ok)}
    return result, hists


def format_result(d: dict[str, Any]) -> str:
    """One human line, e.g. ``put  20000 ok in 2.1 s  9500 ops/s  p50 6.1 ms ...``."""
    line = (f"{d['phase']:<4} {d['ops']:>7} ok in {d['seconds']:.2f} s "
            f"{d['ops_per_sec']:>9.0f} ops/s  p50 {d['p50_ms']:.2f} ms  "
            f"p99 {d['p99_ms']:.2f} ms  p99.9 {d['p999_ms']:.2f} ms  max {d['max_ms']:.2f} ms"
            f"  ({d['concurrency']} in flight")
    if d.get("rate"):
        line += f", {d['rate']:.0f}/s scheduled, {d.get('backlogged', 0)} backlogged"
    if d.get("servers", 1) > 1:
        line += f", {d['servers']} servers, {d.get('routing', 'round-robin')}"
    line += ")"
    for op, s in (d.get("by_op") or {}).items():
        line += (f"  {op} {s['ops']} p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f} "
                 f"p99.9 {s['p999_ms']:.2f} ms")
    if d.get("errors"):
        line += "  errors: " + ", ".join(f"{k}={v}" for k, v in sorted(d["errors"].items()))
    return line
