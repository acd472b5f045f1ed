"""Free loopback ports for the nodes this machine starts (tests, bench, `cluster start`).

Not a Dynamo mechanism: the one rule for choosing where a local node listens, so that
the launcher, the load generator's cluster and the test suite never pick a port two
ways. Ports come from below the kernel's ephemeral range, never twice in one process,
and from ``SEDA_PORT_RANGE`` when it is set (the test suite gives each parallel worker
a slice of its own).
"""

from __future__ import annotations

import os
import random
import socket

#: ``LO-HI``: the range free ports are drawn from (the test suite gives each of its
#: parallel workers a slice of its own); by default, from 10000 up to the kernel's
#: ephemeral range.
PORT_RANGE_ENV = "SEDA_PORT_RANGE"
_handed_out: set[int] = set()


def port_range() -> tuple[int, int]:
    """Where free ports are drawn: below the kernel's ephemeral range, so that no
    outgoing connection takes a port before the node binds it (a port from ``bind(0)``
    is an ephemeral one: while a cluster starts, another node's connection could take it
    as its source port first, and the node then fails to bind it: "Address already in
    use", a node that never answers ping)."""
    given = os.environ.get(PORT_RANGE_ENV)
    if given:
        lo, hi = (int(part) for part in given.split("-"))
        return lo, hi
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            ephemeral = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    return 10_000, max(ephemeral, 10_001)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port free now, from ``port_range()``; never the same twice in one
    process."""
    lo, hi = port_range()
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(lo, hi)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {lo}..{hi}")


def free_base_port(nodes: int, attempts: int = 200) -> int:
    """A base port whose cluster ports (clients ``base..``, peers ``base+100..``) are all
    free, from ``port_range()``."""
    if not 1 <= nodes <= 100:
        raise ValueError("nodes must be in 1..100")
    lo, hi = port_range()
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(lo, hi - 100 - nodes)
        ports = [*range(base, base + nodes), *range(base + 100, base + 100 + nodes)]
        if not _handed_out.intersection(ports) and all(_bindable(p) for p in ports):
            _handed_out.update(ports)
            return base
    raise RuntimeError(f"no free range of ports for {nodes} nodes in {lo}..{hi}")
