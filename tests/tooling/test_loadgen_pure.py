"""The load generator's parts without IO (``seda_dynamo.loadgen.summary`` and
``keys``): histogram merge, the one-line result, argument checks, and the uniform and
Zipfian key choosers. Microseconds each; no process, no socket.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.loadgen import (
    Zipfian,
    format_result,
    key_chooser,
    merge_histograms,
    new_histogram,
    run_mix,
    run_phase,
)


# Pure parts --------------------------------------------------------------------------------
def test_merge_histograms_keeps_every_value() -> None:
    a, b = new_histogram(), new_histogram()
    for us in range(1, 1001):  # 1 us .. 1 ms
        a.record_value(us)
    for _ in range(10):
        b.record_value(50_000)  # 50 ms
    merged = merge_histograms([a.encode(), b.encode()])
    assert merged.get_total_count() == 1010
    assert merged.get_value_at_percentile(50) == pytest.approx(505, rel=0.01)
    assert merged.get_max_value() == pytest.approx(50_000, rel=0.001)
    assert merge_histograms([]).get_total_count() == 0


def test_format_result_is_one_line_with_the_numbers() -> None:
    r = {"phase": "get", "ops": 998, "errors": {"no_reply": 1, "overloaded": 1},
         "seconds": 0.5, "ops_per_sec": 1996.0, "p50_ms": 1.25, "p99_ms": 3.5,
         "p999_ms": 7.0, "max_ms": 9.75, "concurrency": 64}
    line = format_result(r)
    assert "\n" not in line
    for part in ("get", "998 ok", "1996 ops/s", "p50 1.25 ms", "p99 3.50 ms",
                 "p99.9 7.00 ms", "max 9.75 ms", "64 in flight", "no_reply=1",
                 "overloaded=1"):
        assert part in line
    assert "scheduled" in format_result({**r, "rate": 2000.0, "backlogged": 3})


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="phase"):
        run_phase("127.0.0.1:1", "mix", 10)
    with pytest.raises(ValueError):
        run_phase("127.0.0.1:1", "put", 0)
    with pytest.raises(ValueError):
        run_phase("127.0.0.1:1", "put", 10, rate=0)


# Keys: uniform and Zipfian ------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 2**32), theta=st.floats(0.05, 0.995))
def test_zipfian_keys_stay_in_range(n: int, seed: int, theta: float) -> None:
    z = Zipfian(n, theta, random.Random(seed))
    draws = [z() for _ in range(300)]
    assert all(0 <= d < n for d in draws)
    uniform = key_chooser("uniform", n, random.Random(seed))
    assert all(0 <= uniform() < n for _ in range(300))
    if n <= 2:
        assert set(draws) <= {0, 1} and (n == 2 or set(draws) == {0})


def test_zipfian_hot_keys_are_hot() -> None:
    n, draws = 1000, 50_000
    z = Zipfian(n, rng=random.Random(7))  # YCSB's theta 0.99
    counts = Counter(z() for _ in range(draws))
    assert counts.most_common(1)[0][0] == 0  # k0 is the hottest key
    assert counts[0] / draws == pytest.approx(z.probability(0), rel=0.05)  # ~13 %
    assert counts[1] / draws == pytest.approx(z.probability(1), rel=0.08)
    for lo, hi in ((2, 10), (10, 100), (100, 1000)):  # the approximation's error is < 10 %
        share = sum(counts[k] for k in range(lo, hi)) / draws
        assert share == pytest.approx(sum(z.probability(k) for k in range(lo, hi)), rel=0.2)
    assert sum(c for _, c in counts.most_common(10)) / draws > 0.3  # uniform: 1 %
    choose = key_chooser("uniform", n, random.Random(7))
    uniform = Counter(choose() for _ in range(draws))
    assert max(uniform.values()) / draws < 0.005 and len(uniform) == n


def test_bad_key_choices_are_refused() -> None:
    with pytest.raises(ValueError):
        Zipfian(0)
    with pytest.raises(ValueError, match="theta"):
        Zipfian(10, theta=1.0)
    with pytest.raises(ValueError, match="distribution"):
        key_chooser("pareto", 10, random.Random())
    with pytest.raises(ValueError, match="distribution"):
        run_mix("127.0.0.1:1", 10, distribution="pareto")
    with pytest.raises(ValueError, match="get_ratio"):
        run_mix("127.0.0.1:1", 10, get_ratio=1.5)
    with pytest.raises(ValueError, match="owner"):
        run_mix("redis://127.0.0.1:1", 10, routing="owner")
