"""What a load generator target string names: which kind of server, and where.

``seda://host:port[,host:port...]`` (or bare ``host:port``, or a list of them),
``redis://127.0.0.1:PORT`` and ``etcd://127.0.0.1:PORT[,PORT...]``, each optionally
ending in ``?connections=N``. The same load (paper section 6's figures) is then run
against any of them. Pure functions, no IO.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs

KINDS = ("seda", "redis", "etcd")
# Connections over all client processes when the target string does not say
# (``?connections=N``); see RedisDriver and EtcdDriver for why.
REDIS_CONNECTIONS = 8


def server_list(server: str | Sequence[str]) -> list[str]:
    """``"a:1"``, ``"a:1,b:2"`` or ``["a:1", "b:2"]`` as a list of servers (at least one)."""
    items = server.split(",") if isinstance(server, str) else list(server)
    servers = [s.strip() for s in items if s and s.strip()]
    if not servers:
        raise ValueError("no server given")
    return servers


def parse_target(target: str | Sequence[str]) -> tuple[str, list[str], dict[str, str]]:
    """``(kind, endpoints, options)`` of a target string (see the module docstring).

    ``"seda://a:1,b:2"``, ``"a:1,b:2"`` and ``["a:1", "b:2"]`` are seda targets;
    ``"redis://h:p"`` and ``"etcd://h:p1,p2,p3"`` (a bare port takes the host before it)
    are TCP targets. ``options`` come from a ``?name=value`` suffix.
    """
    if not isinstance(target, str):
        return "seda", server_list(target), {}
    text = target.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme == "tcp":
        return "seda", server_list(text), {}
    if scheme not in KINDS:
        raise ValueError(f"unknown target {target!r}; expected seda://, redis:// or etcd://")
    rest, _, query = rest.partition("?")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - {"connections"}
    if unknown:
        raise ValueError(f"unknown target option(s) {', '.join(sorted(unknown))} in {target!r}")
    if scheme == "seda":
        return "seda", server_list(rest.rstrip("/")), options
    endpoints, host = [], ""
    for item in server_list(rest.rstrip("/")):
        if item.isdigit() and host:
            item = f"{host}:{item}"
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a {scheme} endpoint must be HOST:PORT, not {item!r}")
        endpoints.append(item)
    return scheme, endpoints, options
