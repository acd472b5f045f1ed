"""The SEDA controllers (seda_dynamo.controllers): batching, queue delay, admission."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.controllers import BatchController, Gate, QueueDelay


def test_the_batch_grows_while_the_queue_is_long_and_batches_are_cheap():
    b = BatchController(target=0.010, low=16, high=4096, limit=256)
    assert b.observe(256, more_waiting=True, seconds=0.001) == 512
    assert b.observe(512, more_waiting=True, seconds=0.002) == 1024
    assert b.observe(40, more_waiting=False, seconds=0.001) == 1024  # short queue: as is


def test_a_slow_batch_is_cut_down_but_never_below_low():
    b = BatchController(target=0.010, low=16, high=4096, limit=1024)
    assert b.observe(1024, more_waiting=True, seconds=0.030) == 768
    assert b.observe(100, more_waiting=True, seconds=0.030) == 75  # from what was taken
    for _ in range(20):
        b.observe(b.limit, more_waiting=True, seconds=0.5)
    assert b.limit == 16


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.booleans(), st.floats(0, 1)), max_size=60))
def test_the_batch_limit_stays_within_its_bounds(steps):
    b = BatchController(target=0.010, low=16, high=4096, limit=256)
    for taken, more, seconds in steps:
        assert 16 <= b.observe(taken, more, seconds) <= 4096


def test_a_standing_queue_needs_a_whole_interval_of_slow_batches():
    d = QueueDelay(interval=0.1)
    d.observe(sent_at=0.0, now=0.05)  # one slow batch: 50 ms
    assert d.standing == 0.0  # not yet a whole interval of them
    for t in (0.10, 0.15, 0.20, 0.25):
        d.observe(sent_at=t - 0.05, now=t)
    assert abs(d.standing - 0.05) < 1e-9
    d.observe(sent_at=0.299, now=0.3)  # one quick batch ends it at once
    assert d.standing < 0.002


def test_the_gate_sheds_on_a_deep_foreground_queue_while_its_report_is_fresh():
    g = Gate(high_water=0.020, high=100)
    assert g.admit(0, now=1.0) is None
    g.report("persistence", 0.035, now=1.0)
    reason = g.admit(0, now=1.1)
    assert reason is not None and "persistence queue is 35 ms deep" in reason
    assert g.admit(0, now=1.3) is None  # the report is stale: admitted again
    g.report("persistence", 0.001, now=1.4)
    assert g.admit(0, now=1.4) is None
    assert g.shed == 1 and g.shed_by == {"persistence": 1}


def test_the_gate_holds_requests_in_flight_to_its_limit():
    g = Gate(high_water=0.0, high=4)
    assert [g.admit(n, now=0.0) is None for n in range(6)] == [True] * 4 + [False] * 2
    assert g.shed_by == {"in_flight": 2}
    unlimited = Gate(high_water=0.0, high=0)
    assert unlimited.admit(10**6, now=0.0) is None


def test_the_adaptive_limit_follows_the_latency_target_and_keeps_a_floor():
    g = Gate(high_water=0.0, high=1024, target=0.020, window=0.1, min_samples=10)
    assert g.limit == 128  # starts modestly
    now = 0.0
    for _ in range(5):  # a slow window: 200 answers of 80 ms with 128 in flight
        g.admit(127, now)
        for i in range(200):
            g.answered(0.080, now + i * 0.0005)
        now += 0.1
        g.answered(0.080, now)
    # cut in proportion, but never below what 2,000 answers/s need at 10 ms (Little)
    assert 8 <= g.limit < 128
    assert g.limit >= 2000 * 0.010 * 0.9
    slow = g.limit
    for _ in range(40):  # fast again, and the limit is what holds requests back
        g.admit(int(g.limit) + 1, now)
        for i in range(50):
            g.answered(0.002, now + i * 0.001)
        now += 0.1
        g.answered(0.002, now)
    assert g.limit > slow
    assert g.limit <= 1024


def test_one_slow_batch_after_an_idle_spell_is_not_a_standing_queue():
    d = QueueDelay(interval=0.1)
    d.observe(sent_at=0.0, now=0.001)
    d.observe(sent_at=4.85, now=5.0)  # idle for seconds, then one batch that waited
    assert d.standing < 0.002
    for now in (5.05, 5.1, 5.15):  # slow batches for a whole interval: standing
        d.observe(sent_at=now - 0.15, now=now)
    assert abs(d.standing - 0.15) < 1e-9


def test_a_stage_grows_only_when_it_is_the_bottleneck_and_cores_are_idle():
    from seda_dynamo.controllers import should_grow

    busy = {"busy": 0.95, "standing": 0.010, "running": 1, "most": 4, "idle_cpu": 60.0,
            "since_asked": 100.0}
    assert should_grow(**busy)
    assert not should_grow(**{**busy, "busy": 0.5})  # not busy enough
    assert not should_grow(**{**busy, "standing": 0.0})  # keeps up: no queue
    assert not should_grow(**{**busy, "idle_cpu": 5.0})  # no idle core to run it on
    assert not should_grow(**{**busy, "running": 4})  # at its most
    assert not should_grow(**{**busy, "since_asked": 3.0})  # asked a moment ago
