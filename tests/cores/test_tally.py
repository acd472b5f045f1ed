"""What a coordinator counts (``seda_dynamo.tally``, paper 6 and 6.5): a report goes out
once per window with every foreground latency since the last one, each exactly once; a
forwarded write is in the latency report but only its forwarder's metrics.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo.background import p99
from seda_dynamo.tally import COUNTS, FOREGROUND_WINDOW, Tally


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 0.3)), max_size=40))
def test_every_foreground_latency_is_reported_once_a_window_at_most(steps):
    tally, now, reported, sent_at = Tally(), 0.0, [], []
    answered = []
    for seconds, dt in steps:
        tally.answered("get", seconds, None)
        answered.append(seconds)
        now += dt
        report = tally.report(now)
        if report is not None:
            reported.append(report)
            sent_at.append(now)
    final = tally.report(now + 2 * FOREGROUND_WINDOW)
    assert final is not None
    reported.append(final)
    assert sum(count for count, _ in reported) == len(answered)
    assert all(b - a >= FOREGROUND_WINDOW for a, b in zip(sent_at, sent_at[1:], strict=False))
    assert tally.latencies == [] and tally.report(now + 2.5 * FOREGROUND_WINDOW) is None


def test_the_report_is_the_count_and_p99_of_the_window():
    tally = Tally()
    for seconds in (0.1, 0.2, 0.9):
        tally.answered("put", seconds, None)
    assert tally.report(FOREGROUND_WINDOW) == (3, p99([0.1, 0.2, 0.9]))


def test_metrics_count_only_measured_requests_and_the_report_only_foreground_ones():
    tally = Tally()
    tally.answered("put", 0.1, None, measured=False)  # a write another node forwarded
    tally.answered("put", 0.2, "overloaded", foreground=False)
    assert tally.metrics.requests["put"] == 1 and tally.metrics.errors["put"] == {
        "overloaded": 1}
    assert tally.latencies == [0.1]


def test_a_finished_request_adds_to_its_count_and_its_read():
    tally = Tally()
    assert set(tally.counts) == set(COUNTS) and not any(tally.counts.values())
    tally.finished("get", 0.1, {"ok": False, "error": "timeout"}, None, "timeouts", True)
    tally.finished("get", 0.1, {"ok": True}, 2, None, True)
    assert tally.counts["timeouts"] == 1 and tally.metrics.requests["get"] == 2
    assert tally.metrics.errors["get"] == {"timeout": 1} and len(tally.latencies) == 2
