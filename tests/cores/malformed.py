"""Bytes no decoder of ours may fail on with anything but ValueError (tests/cores)."""

from __future__ import annotations

import msgpack


def packed(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


#: Hostile msgpack: each asks a decoder for too much (memory, depth) or is no msgpack.
HOSTILE = [
    b"",
    b"\xc1",
    b"\x91" * 100_000 + b"\xc0",  # deep nesting
    b"\xdd\xff\xff\xff\xff",  # array of 2**32 - 1 items
    b"\xdf\xff\xff\xff\xff",  # map of 2**32 - 1 items
    b"\xdb\xff\xff\xff\xff",  # str of 4 GiB
    b"\xc6\xff\xff\xff\xff",  # bin of 4 GiB
    b"\xc9\xff\xff\xff\xff\x01",  # ext of 4 GiB
    b"\xc7\x00\xff",  # malformed timestamp ext
    b"\xa2\xff\xfe",  # invalid UTF-8
]
