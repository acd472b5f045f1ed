"""The load generator's targets and TCP drivers (``seda_dynamo.loadgen.targets``,
``tcp``, ``redis``, ``etcd``): target strings, the RESP and HTTP reply parsers fed every
prefix of a stream, and the Redis driver against an in-process fake RESP server (a
thread), nothing listening, and a server that never answers. Redis and etcd themselves
are driven in ``tests/tooling/test_peers.py``; seda targets in ``test_loadgen.py``.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from seda_dynamo.loadgen import parse_http_response, parse_resp, parse_target, run_mix
from seda_dynamo.ports import free_port


# Targets and the TCP drivers' parsers ---------------------------------------------------------
def test_parse_target_names_kind_and_endpoints() -> None:
    assert parse_target("127.0.0.1:1") == ("seda", ["127.0.0.1:1"], {})
    assert parse_target("seda://a:1,b:2") == ("seda", ["a:1", "b:2"], {})
    assert parse_target(["a:1", "b:2"]) == ("seda", ["a:1", "b:2"], {})
    assert parse_target("redis://127.0.0.1:6379?connections=4") == \
        ("redis", ["127.0.0.1:6379"], {"connections": "4"})
    assert parse_target("etcd://127.0.0.1:1,2,127.0.0.2:3") == \
        ("etcd", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.2:3"], {})
    for bad in ("mongo://127.0.0.1:1", "redis://nohost", "redis://127.0.0.1:0",
                "etcd://127.0.0.1:1?depth=2", "redis://"):
        with pytest.raises(ValueError):
            parse_target(bad)


def _parse_all(parse: Any, stream: bytes) -> list[tuple[int, str | None, bool]]:
    out, pos = [], 0
    while (parsed := parse(stream, pos)) is not None:
        out.append(parsed)
        pos = parsed[0]
        if pos == len(stream):
            break
    return out


def _check_every_prefix(parse: Any, stream: bytes, ends: list[int]) -> None:
    """Cut anywhere, a parser returns exactly the replies that are complete."""
    for cut in range(len(stream) + 1):
        assert [p[0] for p in _parse_all(parse, stream[:cut])] == [e for e in ends if e <= cut]


def test_parse_resp_counts_errors_by_code_and_waits_for_whole_replies() -> None:
    replies = [b"+OK\r\n", b"$-1\r\n", b"$7\r\nhel\r\nlo\r\n", b"-WRONGTYPE Operation\r\n",
               b":3\r\n", b"$0\r\n\r\n", b"-ERR\r\n"]
    stream = b"".join(replies)
    parsed = _parse_all(parse_resp, stream)
    assert [code for _, code, _ in parsed] == [None, None, None, "WRONGTYPE", None, None, "ERR"]
    assert all(keep for _, _, keep in parsed) and parsed[-1][0] == len(stream)
    _check_every_prefix(parse_resp, stream, [p[0] for p in parsed])
    with pytest.raises(ValueError):
        parse_resp(b"*1\r\n$1\r\nx\r\n", 0)


def test_parse_http_response_with_length_chunks_and_close() -> None:
    ok = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n"
          b'{"a":"b"}')
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n5;ext=1\r\n:\"b\"}\r\n0\r\nX-Trailer: 1\r\n\r\n")
    unavailable = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n"
                   b"Connection: close\r\n\r\n{}")
    stream = ok + chunked + unavailable
    parsed = _parse_all(parse_http_response, stream)
    assert [(code, keep) for _, code, keep in parsed] == \
        [(None, True), (None, True), ("http_503", False)]
    assert [p[0] for p in parsed] == [len(ok), len(ok) + len(chunked), len(stream)]
    _check_every_prefix(parse_http_response, stream, [p[0] for p in parsed])
    with pytest.raises(ValueError):
        parse_http_response(b"SSH-2.0-OpenSSH\r\n\r\n", 0)
    with pytest.raises(ValueError):
        parse_http_response(b"HTTP/1.1 200 OK\r\n\r\n", 0)  # no length: unsupported


# TCP targets: a fake RESP server, nothing listening, a server that never answers -------------
def _resp_commands(buf: bytearray) -> list[list[bytes]]:
    """The complete RESP arrays at the start of ``buf``, removed from it."""
    commands = []
    while True:
        end = buf.find(b"\r\n")
        if end < 0:
            return commands
        count, pos, args = int(buf[1:end]), end + 2, []
        for _ in range(count):
            line = buf.find(b"\r\n", pos)
            if line < 0:
                return commands
            size = int(buf[pos + 1:line])
            if len(buf) < line + 4 + size:
                return commands
            args.append(bytes(buf[line + 2:line + 2 + size]))
            pos = line + 4 + size
        commands.append(args)
        del buf[:pos]


class FakeRedis:
    """A thread per connection on a loopback port: SET is ``+OK``; GET of a key ending in an
    odd digit is ``-WRONGTYPE ...``, of any other key a 3-byte value. ``silent`` never
    answers at all."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        conn.settimeout(0.05)
        with conn:
            while not self.done.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                replies = []
                for cmd in _resp_commands(buf):
                    if cmd[0] == b"SET":
                        replies.append(b"+OK\r\n")
                    elif int(cmd[1][-1:]) % 2:
                        replies.append(b"-WRONGTYPE Operation against a key\r\n")
                    else:
                        replies.append(b"$3\r\nabc\r\n")
                if replies and not self.silent:
                    conn.sendall(b"".join(replies))

    def __enter__(self) -> FakeRedis:
        self.threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in list(self.threads):
            thread.join(5)
        self.listener.close()


def test_redis_driver_pipelines_and_counts_errors_by_code() -> None:
    with FakeRedis() as fake:
        r = run_mix(fake.url + "?connections=3", 400, concurrency=12, keys=10, seed=1)
    gets = r["by_op"]["get"]
    assert r["kind"] == "redis" and r["connections"] == 3 and fake.connections == 3
    assert r["sent"] == 400 and set(r["errors"]) == {"WRONGTYPE"}
    assert gets["errors"] == r["errors"] and r["by_op"]["put"]["errors"] == {}
    assert r["ops"] + r["errors"]["WRONGTYPE"] == 400 and gets["ops"] > 0
    assert r["per_server"] == {fake.url.removeprefix("redis://"): 400}


def test_tcp_target_down_or_silent_is_counted_and_bounded() -> None:
    t0 = time.monotonic()
    r = run_mix(f"redis://127.0.0.1:{free_port()}", 50, concurrency=4)
    assert r["ops"] == 0 and r["errors"] == {"refused": 50}
    with FakeRedis(silent=True) as fake:
        r = run_mix(fake.url, 6, concurrency=3, timeout=0.2)
    assert r["ops"] == 0 and r["errors"] == {"no_reply": 6}
    assert time.monotonic() - t0 < 5.0
