"""The load generator's Redis driver: ``GET`` and ``SET`` in RESP2 over pipelined TCP.

For side-by-side numbers on the same machine (the Dynamo paper's section 6 figures,
here against a single-threaded in-memory server).
"""

from __future__ import annotations

from seda_dynamo.loadgen.tcp import Conn, FifoTcpDriver, Parsed


class RedisDriver(FifoTcpDriver):
    """``GET`` and ``SET`` in RESP2. A reply is ``+``/``:`` (done), ``$n`` (a bulk string,
    ``$-1`` for a missing key) or ``-CODE message`` (an error, counted by its CODE).

    Redis runs commands on one thread, so more connections buy no parallelism on the
    server: a few connections (``REDIS_CONNECTIONS``), each pipelining its share of the
    in-flight requests, keep the client's per-request cost lowest.
    """

    kind = "redis"

    def encode(self, conn: Conn, is_get: bool, key: bytes, value: bytes) -> bytes:
        if is_get:
            return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
        return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(key), key, len(value), value)

    def parse(self, buf: bytearray, pos: int) -> Parsed:
        return parse_resp(buf, pos)


def parse_resp(buf: bytes | bytearray, pos: int) -> Parsed:
    """One RESP reply to GET/SET at ``buf[pos:]``: ``(end, error code or None, True)``,
    or None when it is not all there yet; ValueError for anything else."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind = buf[pos]
    if kind == 0x24:  # $ bulk string
        n = int(buf[pos + 1:end])
        if n < 0:
            return end + 2, None, True
        stop = end + 4 + n
        return (stop, None, True) if len(buf) >= stop else None
    if kind in (0x2B, 0x3A):  # + simple string, : integer
        return end + 2, None, True
    if kind == 0x2D:  # - error: the first word is its code
        code = bytes(buf[pos + 1:end]).split(b" ", 1)[0].decode("ascii", "replace")
        return end + 2, code or "ERR", True
    raise ValueError(f"unexpected RESP reply type {chr(kind)!r}")
