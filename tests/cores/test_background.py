"""The background/foreground controller of paper section 6.5 (seda_dynamo.background)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.background import REPORT_TTL, BackgroundShare, p99


def test_idle_foreground_leaves_background_work_unthrottled():
    share = BackgroundShare(target=0.02)
    assert share.allows(0.0)
    share.report(0.0, requests=0, p99=0.0)
    share.spend(10_000)
    assert share.allows(0.1) and math.isinf(share.current_rate(0.1))


def test_a_slow_foreground_halves_the_rate_down_to_the_floor_and_recovers():
    share = BackgroundShare(target=0.02, floor=100.0)
    rates = []
    for i in range(8):
        share.report(i * 0.5, requests=500, p99=0.050)
        rates.append(share.current_rate(i * 0.5))
    assert rates[:4] == [800.0, 400.0, 200.0, 100.0] and rates[-1] == 100.0
    assert share.backoffs == 8
    for i in range(8, 60):
        share.report(i * 0.5, requests=500, p99=0.005)
    assert math.isinf(share.current_rate(30.0))  # fast again: unthrottled


def test_the_bucket_holds_work_to_the_rate():
    share = BackgroundShare(target=0.02, floor=100.0)
    share.report(0.0, requests=100, p99=1.0)  # rate 800/s
    done, now = 0, 0.0
    while now < 2.0:
        if share.allows(now):
            share.spend(50)
            done += 50
        now += 0.01
    assert 1_400 <= done <= 1_900  # about 800/s over 2 s, plus one burst


def test_stale_reports_count_as_idle_and_target_zero_never_throttles():
    share = BackgroundShare(target=0.02)
    share.report(0.0, requests=100, p99=1.0)
    assert not math.isinf(share.current_rate(REPORT_TTL - 0.1))
    assert math.isinf(share.current_rate(REPORT_TTL + 0.1))
    off = BackgroundShare(target=0.0)
    off.report(0.0, requests=100, p99=10.0)
    assert math.isinf(off.current_rate(0.0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.floats(0, 1)), max_size=50))
def test_the_rate_never_falls_below_the_floor(reports):
    share = BackgroundShare(target=0.02, floor=50.0)
    for i, (requests, latency) in enumerate(reports):
        share.report(i * 0.5, requests, latency)
        assert share.current_rate(i * 0.5) >= 50.0


def test_p99_nearest_rank():
    assert p99([]) == 0.0
    assert p99([3.0]) == 3.0
    assert p99([float(i) for i in range(1, 101)]) == 99.0
    assert p99([float(i) for i in range(1, 1001)]) == 990.0
