"""Which keys a load generator run touches: uniform, or YCSB's Zipfian skew.

Dynamo's workloads are skewed (paper section 6: a few keys are hot); ``Zipfian`` draws
key ranks as YCSB does, so a run can load the ring unevenly the way real traffic does.
Pure: no IO, no dependency beyond the standard library.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable

DISTRIBUTIONS = ("uniform", "zipfian")
ZIPF_THETA = 0.99  # YCSB's default skew


@functools.lru_cache(maxsize=8)
def _zeta(n: int, theta: float) -> float:
    return math.fsum(i ** -theta for i in range(1, n + 1))


class Zipfian:
    """Ranks ``0..n-1`` drawn with ``P(rank k) ~ 1 / (k + 1) ** theta``; rank 0 is hottest.

    YCSB's ZipfianGenerator: the method of Gray et al., "Quickly generating billion-record
    synthetic databases" (SIGMOD 1994). ``zeta(n)`` is summed once (O(n), cached); every
    draw is then O(1): ranks 0 and 1 exactly, the rest by the closed-form inverse of the
    continuous approximation. Key ``k{rank}`` is then hashed onto the ring like any other,
    so the hot keys land on random partitions (what YCSB's scrambling is for).
    """

    def __init__(self, n: int, theta: float = ZIPF_THETA,
                 rng: random.Random | None = None) -> None:
        if n < 1:
            raise ValueError("a Zipfian needs at least one item")
        if not 0.0 < theta < 1.0:
            raise ValueError("theta must be in (0, 1)")
        self.n, self.theta = n, theta
        self.random = (rng or random.Random()).random
        self.zetan = _zeta(n, theta)
        zeta2 = 1.0 + 0.5 ** theta
        self.second = zeta2  # u * zetan below this: rank 1
        self.alpha = 1.0 / (1.0 - theta)
        # with n <= 2 every draw is rank 0 or 1, and eta (0 / 0 at n == 2) is unused
        self.eta = ((1.0 - (2.0 / n) ** (1.0 - theta)) / (1.0 - zeta2 / self.zetan)
                    if n > 2 else 0.0)

    def probability(self, rank: int) -> float:
        """The exact Zipf probability of ``rank`` (what the draws approximate)."""
        return 1.0 / ((rank + 1) ** self.theta * self.zetan)

    def __call__(self) -> int:
        u = self.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self.second:
            return 1
        return min(self.n - 1, int(self.n * (self.eta * u - self.eta + 1.0) ** self.alpha))


def key_chooser(distribution: str, keys: int, rng: random.Random) -> Callable[[], int]:
    """A function drawing key indices in ``0..keys-1``: ``uniform`` or ``zipfian``."""
    if distribution == "uniform":
        draw = rng.random
        return lambda: min(keys - 1, int(draw() * keys))
    if distribution == "zipfian":
        return Zipfian(keys, ZIPF_THETA, rng)
    raise ValueError(f"unknown distribution {distribution!r}; "
                     f"expected one of {', '.join(DISTRIBUTIONS)}")
