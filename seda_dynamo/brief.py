"""A short text of a value that came from the network, safe to put in a log line or an
error message.

Dynamo paper section 4.8: members exchange requests over a wire that carries whatever a
sender puts on it, so a value a validator refuses may be 1,000 levels deep (msgpack
decodes up to 1,024) or megabytes long. ``f"{value!r:.60}"`` and ``"%.60r"`` build the
whole text before they cut it: a deep value raises RecursionError (which no ValueError
guard catches) and a long one allocates its full text. ``brief`` looks at a few levels,
a few items of each and the first bytes of each bin or str, never more. Pure, no IO.
"""

from __future__ import annotations

import reprlib
from typing import Any


class _Brief(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 6
        self.maxstring = self.maxother = self.maxlong = 40

    def repr_bytes(self, x: bytes, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return f"{x[:self.maxstring]!r}...({len(x)} bytes)"


_BRIEF = _Brief()


def brief(value: Any, width: int = 80) -> str:
    """At most ``width`` characters saying what ``value`` is, whatever its depth or size."""
    return _BRIEF.repr(value)[:width]
