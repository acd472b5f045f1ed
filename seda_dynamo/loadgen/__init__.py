"""The load generator behind ``seda-dynamo bench``: throughput and latency percentiles.

It measures what the Dynamo paper reports in section 6 (average and 99.9th percentile
latency of reads and writes, Figures 4 and 6), against seda-dynamo and, for side-by-side
numbers on the same machine, against Redis and etcd:

* ``run_phase`` / ``run_phases``: a ``put`` phase over keys ``k{i % keys}`` with random
  values, then a ``get`` phase over the same keys;
* ``run_mix``: gets and puts mixed at random (``get_ratio``), keys drawn uniformly or from
  a YCSB-style Zipfian distribution (``Zipfian``), with per-op summaries and a latency CDF.

Each is summarised as ops/s and p50 / p99 / p99.9 / max latency from an HdrHistogram
(microsecond resolution).

A *target* (``targets``) names what to load; each kind has a small driver of its own
module (``seda``, ``redis``, ``etcd``; the last two on ``tcp``), and one select-driven
loop per client process (``loop``) runs any of them:

* ``seda://host:port[,host:port...]`` (or a bare ``host:port``, a list of them): one
  ZeroMQ DEALER socket per server, requests matched by ``id`` (docs/protocol.md);
* ``redis://127.0.0.1:PORT``: a minimal RESP client (``GET``/``SET``) on non-blocking TCP
  sockets, several connections each pipelining, replies matched in FIFO order;
* ``etcd://127.0.0.1:PORT[,PORT...]``: etcd v3's HTTP/JSON gateway (``/v3/kv/range``
  with ``serializable`` reads, ``/v3/kv/put``) over HTTP/1.1 keep-alive connections.

The redis and etcd drivers are our own, not a client library's: they sit in the load
generator's hot loop, where a general-purpose (async) client would cost more per request
than the servers under test. A target string may end in ``?connections=N`` (TCP targets:
the connections over all client processes). Every target gets the same concurrency, key
space and value size.

Two ways to pace requests, for every target:

* closed loop (``rate=None``): exactly ``concurrency`` requests in flight; a reply lets
  the next request go. Latency is measured from the moment a request is sent.
* open loop (``rate=ops_per_sec``): requests are due on a fixed schedule and latency is
  measured from the *scheduled* time, so a server that stalls is charged for the requests
  it delayed (no coordinated omission). At most ``concurrency`` are in flight; a request
  that is due while that limit is reached waits and is counted as ``backlogged``.

Both are bounded by ``ops`` and by ``max_seconds`` of wall clock, after which nothing new
is sent and the requests in flight are drained (each waits at most ``timeout`` seconds;
one that gets no reply counts as the error ``no_reply``). With ``processes > 1`` that
many client processes share the load and their histograms are merged; they report their
progress to the parent, which draws a progress bar on stderr when asked.

Several seda servers (a list, or ``"host:a,host:b"``) share the load of one run; the
in-flight limit is the total over all of them. ``routing`` says who gets a request:

* ``"round-robin"``: request ``i`` goes to server ``i % len(servers)``.
* ``"owner"``: the ring is fetched once (a ``ring`` request to the first server that
  answers) and each request goes to the first live node of its key's preference list,
  ``owners[md5(key) * Q >> 128]`` -- the client-driven coordination of the Dynamo paper,
  section 6.4, which saves the hop from a random node to a coordinator. The servers
  given are only the seeds: the traffic goes to the ring's client addresses.

``local_cluster()`` (``cluster``) starts a throw-away loopback cluster for ``seda-dynamo
bench --cluster`` and ``bench/``, and always stops it and removes its directory.

The package needs the ``bench`` extra (HdrHistogram). Without it, importing the package
raises ``MissingExtra``, an ImportError that is also a ValueError, so ``seda-dynamo
bench`` says which extra to install and exits 2 without a traceback. ``keys`` and
``targets`` are pure and need nothing.
"""
from __future__ import annotations

#: The extra this package needs, and the modules it brings.
EXTRA = "bench"
EXTRA_MODULES = ("hdrh",)


class MissingExtra(ImportError, ValueError):
    """The ``bench`` extra is not installed. A ValueError too: the CLI reports a
    ValueError as one line and exits 2."""

    def __init__(self, module: str) -> None:
        super().__init__(f"the load generator needs the '{EXTRA}' extra (no module "
                         f"{module!r}): pip install 'seda-dynamo[{EXTRA}]'", name=module)


try:
    from seda_dynamo.loadgen.cluster import CLUSTER_ARGS, free_base_port, local_cluster
    from seda_dynamo.loadgen.etcd import EtcdDriver, parse_http_response
    from seda_dynamo.loadgen.keys import DISTRIBUTIONS, ZIPF_THETA, Zipfian, key_chooser
    from seda_dynamo.loadgen.loop import drive, make_driver
    from seda_dynamo.loadgen.processes import Progress, die_with_parent
    from seda_dynamo.loadgen.redis import RedisDriver, parse_resp
    from seda_dynamo.loadgen.runs import ROUTINGS, run_mix, run_phase, run_phases
    from seda_dynamo.loadgen.seda import SedaDriver, fetch_ring, owner_routes
    from seda_dynamo.loadgen.summary import (
        CDF_PERCENTILES,
        PHASES,
        format_result,
        merge_histograms,
        new_histogram,
    )
    from seda_dynamo.loadgen.targets import KINDS, REDIS_CONNECTIONS, parse_target, server_list
except ImportError as exc:
    if exc.name is None or exc.name.split(".")[0] not in EXTRA_MODULES:
        raise
    raise MissingExtra(exc.name.split(".")[0]) from None

__all__ = [
    "CDF_PERCENTILES", "CLUSTER_ARGS", "DISTRIBUTIONS", "KINDS", "PHASES",
    "REDIS_CONNECTIONS", "ROUTINGS", "ZIPF_THETA", "EtcdDriver", "MissingExtra", "Progress",
    "RedisDriver", "SedaDriver", "Zipfian", "die_with_parent", "drive", "fetch_ring",
    "format_result", "free_base_port", "key_chooser", "local_cluster", "make_driver",
    "merge_histograms", "new_histogram", "owner_routes", "parse_http_response",
    "parse_resp", "parse_target", "run_mix", "run_phase", "run_phases", "server_list",
]
