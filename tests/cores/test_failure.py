"""The accrual failure detector (paper 4.8), a pure core: recorded series of ping
answers, no handler; and the watcher around it (pings, the down set) under a fake clock.
"""

from __future__ import annotations

import random

from duties import LOG, Sent
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.duty import Route
from seda_dynamo.failure import OWN_STALL, PING_EVERY, Detector, Settings, Watcher


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


# The watcher: pings, the detector and the down set, under a fake clock -------------------
PEERS = {"b": "127.0.0.1:7102", "c": "127.0.0.1:7103"}


def watcher(peers: dict[str, str] | None = None) -> tuple[Watcher, Sent, list[frozenset]]:
    sent, changes = Sent(), []
    members = dict(PEERS if peers is None else peers)
    w = Watcher(sent, Settings(first_interval=PING_EVERY), lambda: members,
                lambda: changes.append(w.down), LOG)
    return w, sent, changes


def run(w: Watcher, sent: Sent, until: float, answers: bool = True,
        silent: frozenset[str] = frozenset(), start: float = 0.0) -> None:
    """Ping every PING_EVERY from ``start``; every peer not ``silent`` answers at once."""
    steps = round((until - start) / PING_EVERY)
    for k in range(steps + 1):
        now = start + k * PING_EVERY
        w.ping(now)
        for call in sent.calls():
            node = call[5]
            if answers and node not in silent:
                w.answer(now + 0.01, node, _route(call[3]), ["pong"])


def _route(ref: list) -> Route:
    route = Route.parse(ref)
    assert route is not None
    return route


def test_the_watcher_pings_every_peer_and_each_is_down_until_it_answers():
    w, sent, changes = watcher()
    w.start()
    assert w.down == {"b", "c"}
    w.ping(0.0)
    calls = sent.calls()
    assert sorted((c[1], c[3], c[4], c[5]) for c in calls) == [
        (PEERS["b"], ["ping", 0.0], ["ping"], "b"), (PEERS["c"], ["ping", 0.0], ["ping"], "c")]
    w.answer(0.01, "b", _route(["ping", 0.0]), ["pong"])
    assert w.down == {"c"} and changes == [frozenset({"c"})]


def test_a_silent_peer_goes_down_and_a_stall_of_the_watcher_itself_blames_no_one():
    w, sent, _ = watcher()
    w.start()
    run(w, sent, 10.0)
    assert not w.down
    run(w, sent, 20.0, silent=frozenset({"c"}), start=10.5)
    assert w.down == {"c"}
    run(w, sent, 30.0, start=20.5)
    assert not w.down
    # Not run for 5 s (the stage was stopped): the silence was the watcher's own.
    run(w, sent, 40.0, start=30.0 + 5.0)
    assert not w.down and w.detector.suspicions == 1
    assert 5.0 > OWN_STALL


def test_a_member_learned_of_is_down_until_it_answers_and_one_gone_is_forgotten():
    members = dict(PEERS)
    sent, changes = Sent(), []
    w = Watcher(sent, Settings(), lambda: members, lambda: changes.append(1), LOG)
    w.start()
    run(w, sent, 2.0)
    assert not w.down
    members["d"] = "127.0.0.1:7104"
    del members["c"]
    w.learned()
    assert w.down == {"d"}
    w.heard(2.5, "c")  # an answer from a node that is no member any more: not remembered
    assert "c" not in w.down and w.detector.heard("c")  # forgotten at the next check only
    w.detect(2.6)
    assert not w.detector.heard("c")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ping", "answer", "stall"]),
                          st.sampled_from(sorted(PEERS))), max_size=60))
def test_a_peer_never_heard_is_always_down_and_every_change_is_reported(steps):
    w, sent, changes = watcher()
    w.start()
    now, heard, last = 0.0, set(), w.down
    for action, node in steps:
        now += 5.0 if action == "stall" else 0.2
        if action == "answer":
            w.answer(now, node, _route(["ping", now - 0.1]), ["pong"])
            heard.add(node)
        else:
            w.ping(now)
        assert set(PEERS) - heard <= w.down
        if w.down != last:
            assert changes and changes[-1] == w.down
            last = w.down
