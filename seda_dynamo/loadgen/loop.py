"""The load generator's loop: one client process sending requests to one target.

Closed loop (``rate`` None: exactly ``concurrency`` requests in flight, latency from the
send) or open loop (requests due on a fixed schedule, latency from the *scheduled* time,
so a stalled server is charged for the requests it delayed: no coordinated omission).
The loop is the same for every target; the target's driver (``seda``, ``redis``,
``etcd``) moves the bytes. Measures what the Dynamo paper's section 6 reports.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

from seda_dynamo.loadgen.etcd import EtcdDriver
from seda_dynamo.loadgen.keys import key_chooser
from seda_dynamo.loadgen.redis import RedisDriver
from seda_dynamo.loadgen.seda import SedaDriver
from seda_dynamo.loadgen.summary import HIGHEST_US, LOWEST_US, new_histogram
from seda_dynamo.loadgen.tcp import FifoTcpDriver

REPORT_EVERY = 0.5  # seconds between progress reports (children to parent, and the bar)


def make_driver(spec: dict[str, Any]) -> SedaDriver | FifoTcpDriver:
    """The driver of ``spec["kind"]`` for this client process's share of the run.

    Every driver takes requests (``send``), pushes them out (``flush``), waits for
    readiness (``wait``) and hands back finished requests as ``(id, None)`` or ``(id,
    error code)`` (``collect``); ``abandon(id)`` is told when the loop gave up waiting
    for a request, ``close()`` at the end."""
    kind = spec["kind"]
    if kind == "seda":
        return SedaDriver(spec["endpoints"], spec["route"], spec.get("contexts", False))
    cls = RedisDriver if kind == "redis" else EtcdDriver
    return cls(spec["endpoints"], spec["connections"], spec["concurrency"])


Report = Callable[[int, int, int], None]  # (sent, ok, errors) so far


def drive(spec: dict[str, Any], report: Report | None = None) -> dict[str, Any]:
    """Run ``spec["ops"]`` requests (ids ``first..first+ops-1``) against one target.

    ``spec["op"]`` is ``get``, ``put`` or ``mix`` (a get with probability ``get_ratio``);
    ``distribution`` is ``sequential`` (request ``i`` uses key ``k{i % keys}``),
    ``uniform`` or ``zipfian``. Returns this process's part of the result: one encoded
    histogram per op, counts, errors by code, and the first send and last reply times.
    """
    first, ops, concurrency = spec["first"], spec["ops"], spec["concurrency"]
    keys, value_size, rate = spec["keys"], spec["value_size"], spec["rate"]
    timeout, max_seconds = spec["timeout"], spec["max_seconds"]
    mode, get_ratio = spec["op"], spec.get("get_ratio", 0.0)
    rng = random.Random(spec.get("seed"))
    sequential = spec.get("distribution", "sequential") == "sequential"
    choose = None if sequential else key_chooser(spec["distribution"], keys, rng)
    draw = rng.random
    always_get = mode == "get"
    mixed = mode == "mix"
    hists = {True: new_histogram(), False: new_histogram()}  # is_get -> latencies
    err_hist = new_histogram()  # latency of the error replies (a shed request's, ...)
    n_ok = {True: 0, False: 0}
    errors: dict[str, int] = {}
    op_errors: dict[bool, dict[str, int]] = {True: {}, False: {}}
    pad = 4096
    blob = os.urandom(value_size + pad)
    # id -> (latency start, send time, is_get) in ns; the start is the scheduled time in
    # open loop. The dict is in send order, so the oldest is first.
    pending: dict[int, tuple[int, int, bool]] = {}
    done: list[tuple[int, str | None]] = []
    sent = backlogged = n_err = 0
    timeout_ns = int(timeout * 1e9)
    interval_ns = int(1e9 / rate) if rate else 0
    report_ns = int(REPORT_EVERY * 1e9)
    driver = make_driver(spec)
    per_server = [0] * len(driver.targets)
    try:
        t0 = last_reply = time.perf_counter_ns()
        next_report = t0 + report_ns
        stop_sending = t0 + int(max_seconds * 1e9)
        last_full = t0 - 1  # the last time a due request found no free slot
        while True:
            now = time.perf_counter_ns()
            sending = sent < ops and now < stop_sending
            if not sending and not pending:
                break
            while sending and sent < ops:
                due = t0 + sent * interval_ns
                if rate and due > now:
                    break
                if len(pending) >= concurrency:
                    last_full = now
                    break
                rid = first + sent
                k = rid % keys if choose is None else choose()
                is_get = draw() < get_ratio if mixed else always_get
                key = b"k%d" % k
                value = b"" if is_get else blob[rid % pad:rid % pad + value_size]
                per_server[driver.send(rid, is_get, key, value)] += 1
                send_ns = time.perf_counter_ns()
                pending[rid] = (due if rate else send_ns, send_ns, is_get)
                backlogged += bool(rate) and due <= last_full
                sent += 1
            driver.flush()
            # Sleep until a reply, the next scheduled send or the oldest request's deadline.
            wake = now + 100_000_000
            if pending:
                wake = min(wake, next(iter(pending.values()))[1] + timeout_ns)
            if rate and sending and sent < ops and len(pending) < concurrency:
                wake = min(wake, t0 + sent * interval_ns)
            driver.wait(max(0, wake - time.perf_counter_ns()) / 1e9)
            end = time.perf_counter_ns()
            driver.collect(done)
            for rid, code in done:
                started = pending.pop(rid, None)
                if started is None:
                    continue  # a late reply to a request already counted as no_reply
                last_reply = end
                if code is None:
                    n_ok[started[2]] += 1
                    us = (end - started[0]) // 1000
                    hists[started[2]].record_value(min(max(us, LOWEST_US), HIGHEST_US))
                else:
                    n_err += 1
                    errors[code] = errors.get(code, 0) + 1
                    us = (end - started[0]) // 1000
                    err_hist.record_value(min(max(us, LOWEST_US), HIGHEST_US))
                    by_op = op_errors[started[2]]
                    by_op[code] = by_op.get(code, 0) + 1
            done.clear()
            now = time.perf_counter_ns()
            while pending:  # expire from the oldest
                rid, (_, send_ns, is_get) = next(iter(pending.items()))
                if now - send_ns < timeout_ns:
                    break
                del pending[rid]
                n_err += 1
                errors["no_reply"] = errors.get("no_reply", 0) + 1
                op_errors[is_get]["no_reply"] = op_errors[is_get].get("no_reply", 0) + 1
                driver.abandon(rid)
            if report is not None and now >= next_report:
                next_report = now + report_ns
                report(sent, n_ok[True] + n_ok[False], n_err)
        end_ns = last_reply if last_reply > t0 else time.perf_counter_ns()
    finally:
        driver.close()
    if report is not None:
        report(sent, n_ok[True] + n_ok[False], n_err)
    return {"hist": {"get": hists[True].encode(), "put": hists[False].encode()},
            "err_hist": err_hist.encode(),
            "ok": {"get": n_ok[True], "put": n_ok[False]}, "errors": errors,
            "op_errors": {"get": op_errors[True], "put": op_errors[False]}, "sent": sent,
            "per_server": per_server, "backlogged": backlogged, "t0": t0,
            "end": max(end_ns, t0 + 1)}
