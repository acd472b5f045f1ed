"""The accrual failure detector (paper 4.8), a pure core: recorded series of ping
answers, no handler.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.failure import Detector, Settings


def steady(start: float, end: float, every: float = 0.5, jitter: float = 0.05,
           seed: int = 7) -> list[float]:
    rnd = random.Random(seed)
    out, t = [], start
    while t < end:
        out.append(t + rnd.uniform(0, jitter))
        t += every
    return out


def feed(detector: Detector, node: str, arrivals: list[float]) -> None:
    for t in arrivals:
        detector.heartbeat(node, t, t - 0.01)


def test_phi_grows_with_silence_and_the_threshold_sits_where_the_settings_say():
    s = Settings()
    d = Detector(s)
    feed(d, "b", steady(0.0, 30.0, jitter=0.0))
    last = d.windows["b"].last
    values = [d.phi("b", last + x / 10) for x in range(80)]
    assert values == sorted(values)
    # Mean 0.5 s + 2.5 s acceptable pause, spread at its floor of 0.1 s: phi 8 is
    # about 5.6 deviations past that.
    assert d.phi("b", last + 3.5) < s.threshold <= d.phi("b", last + 3.6)


def test_a_recorded_series_with_one_late_answer_under_load_is_never_suspected():
    d = Detector()
    arrivals = steady(0.0, 20.0) + [22.9] + steady(23.4, 40.0)  # a 3.4 s gap at 19.5
    checks = [x / 10 for x in range(1, 400)]
    for t in checks:
        for a in [a for a in arrivals if t - 0.1 < a <= t]:
            d.heartbeat("b", a, a - 0.01)
        assert d.check(t, {"b"}) == frozenset(), t
    assert d.suspicions == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.05, 2.0), min_size=0, max_size=150),
       st.floats(0.0, 100.0))
def test_a_stopped_peer_is_suspected_within_a_bound_whatever_it_did_before(intervals, start):
    """Whatever intervals it showed (each within max_interval, else not learned from),
    a peer that stops is down at the latest max_interval + pause + z * max_interval / 2
    after its last answer (a spread of values in [0, M] is at most M / 2)."""
    s = Settings()
    d = Detector(s)
    t = start
    d.heartbeat("b", t, t)
    for gap in intervals:
        t += gap
        d.heartbeat("b", t, t)
    z = 5.62  # phi 8: the normal tail beyond 5.62 deviations is under 1e-8
    bound = s.max_interval + s.acceptable_pause + z * max(s.min_std_dev, s.max_interval / 2)
    assert d.check(t + bound, {"b"}) == {"b"}
    assert d.check(t + bound + 1000, {"b"}) == {"b"}  # and stays down


def test_only_an_answer_to_a_ping_sent_before_the_suspicion_proves_it_wrong():
    d = Detector()
    feed(d, "b", steady(0.0, 10.0, jitter=0.0))  # last answer at 9.5
    feed(d, "c", steady(0.0, 10.0, jitter=0.0))
    assert d.check(14.0, {"b", "c"}) == {"b", "c"}
    assert d.suspicions == 2
    # b was only slow: it answers the ping sent at 11.0. c was restarted: it answers
    # the first ping sent after it came back (a view answer first, which proves nothing).
    assert d.heartbeat("b", 15.0, 11.0) is True
    assert d.heartbeat("c", 15.0, None) is True
    assert d.heartbeat("c", 15.2, 15.0) is False
    assert d.check(15.3, {"b", "c"}) == frozenset()
    assert (d.suspicions, d.false_suspicions) == (2, 1)


def test_an_excused_silence_of_the_observer_suspects_no_one_and_teaches_nothing():
    d = Detector()
    feed(d, "b", steady(0.0, 10.0, jitter=0.0))
    before = list(d.windows["b"].intervals)
    d.excuse(30.0, 0.5)  # we were stopped from 9.5 to 30
    assert d.check(30.0, {"b"}) == frozenset()
    d.heartbeat("b", 30.1, 30.0)
    assert list(d.windows["b"].intervals) == before


def test_members_that_left_are_forgotten_and_unknown_ones_are_down_until_heard():
    d = Detector()
    d.heartbeat("b", 1.0, 0.9)
    assert d.check(1.1, {"b", "c"}) == {"c"}
    assert d.check(1.2, {"c"}) == {"c"} and not d.heard("b")
