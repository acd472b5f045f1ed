"""The runs a caller asks for: a put then a get phase, or a mix of gets and puts.

Each splits its requests over client processes (``processes``), plans where they go
(round-robin over the servers given, or to each key's owner, paper section 6.4), runs
them and returns one result dict (``summary``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from seda_dynamo.loadgen.keys import DISTRIBUTIONS
from seda_dynamo.loadgen.processes import execute
from seda_dynamo.loadgen.seda import fetch_ring, owner_routes
from seda_dynamo.loadgen.summary import PHASES, summarise
from seda_dynamo.loadgen.targets import REDIS_CONNECTIONS, parse_target

ROUTINGS = ("round-robin", "owner")


def _split(total: int, parts: int, index: int) -> tuple[int, int]:
    """The (first, count) share of ``total`` for part ``index`` of ``parts``."""
    base, extra = divmod(total, parts)
    return index * base + min(index, extra), base + (index < extra)


def _check_common(ops: int, concurrency: int, keys: int, value_size: int, processes: int,
                  rate: float | None, routing: str) -> None:
    if routing not in ROUTINGS:
        raise ValueError(f"unknown routing {routing!r}; expected one of {', '.join(ROUTINGS)}")
    if ops < 1 or concurrency < 1 or keys < 1 or value_size < 0 or processes < 1:
        raise ValueError("ops, concurrency, keys, processes must be >= 1, value_size >= 0")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 ops/s")


def _plan(target: str | Sequence[str], routing: str, ring: dict[str, Any] | None,
          connections: int | None, concurrency: int
          ) -> tuple[str, list[str], list[int] | None, int]:
    """``(kind, targets, route, connections)`` for a target string and routing."""
    kind, endpoints, options = parse_target(target)
    route: list[int] | None = None
    if routing == "owner":
        if kind != "seda":
            raise ValueError("owner routing needs a seda target (it routes by the ring)")
        targets, route = owner_routes(ring or fetch_ring(endpoints), endpoints[0])
    else:
        targets = endpoints
    if connections is None and "connections" in options:
        connections = int(options["connections"])
    if connections is None:
        connections = REDIS_CONNECTIONS if kind == "redis" else concurrency
    if connections < 1:
        raise ValueError("connections must be >= 1")
    return kind, targets, route, connections


def _specs(kind: str, targets: list[str], route: list[int] | None, connections: int,
           processes: int, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One spec per client process: its share of ops, concurrency, rate, connections."""
    specs = []
    for p in range(processes):
        first, count = _split(base["ops"], processes, p)
        c = _split(base["concurrency"], processes, p)[1]
        specs.append({**base, "kind": kind, "endpoints": targets, "route": route,
                      "first": base["first"] + first, "ops": count, "concurrency": c,
                      "connections": max(1, _split(connections, processes, p)[1]),
                      "rate": base["rate"] / processes if base["rate"] else None,
                      "seed": None if base.get("seed") is None else base["seed"] + p})
    return specs


def run_phase(server: str | Sequence[str], op: str, ops: int, concurrency: int = 64,
              value_size: int = 100, keys: int = 10_000, processes: int = 1,
              max_seconds: float = 60.0, rate: float | None = None, timeout: float = 5.0,
              routing: str = "round-robin", ring: dict[str, Any] | None = None,
              first_key: int = 0, progress: bool = False) -> dict[str, Any]:
    """Run one phase (``put`` or ``get``) and return its result dict (see ``run_phases``).

    ``server`` is a target (see ``parse_target``): one seda server, a list or a
    comma-separated string, or a ``redis://`` / ``etcd://`` URL; ``routing`` is
    ``"round-robin"`` or ``"owner"`` (seda only; it uses ``ring``, a ``ring`` reply, or
    fetches one from the servers). Request ``i`` uses key ``k{(first_key + i) % keys}``.
    """
    if op not in PHASES:
        raise ValueError(f"unknown phase {op!r}; expected one of {', '.join(PHASES)}")
    _check_common(ops, concurrency, keys, value_size, processes, rate, routing)
    kind, targets, route, connections = _plan(server, routing, ring, None, concurrency)
    processes = min(processes, concurrency, ops)
    base = {"op": op, "distribution": "sequential", "first": first_key, "ops": ops,
            "concurrency": concurrency, "value_size": value_size, "keys": keys, "rate": rate,
            "max_seconds": max_seconds, "timeout": timeout}
    specs = _specs(kind, targets, route, connections, processes, base)
    parts = execute(specs, max_seconds, timeout, op, progress)
    result, _ = summarise(parts, op, targets)
    result.update(concurrency=concurrency, processes=processes, rate=rate, routing=routing)
    return result


def run_phases(server: str | Sequence[str], ops: int, concurrency: int = 64,
               value_size: int = 100, keys: int = 10_000, processes: int = 1,
               max_seconds: float = 60.0, rate: float | None = None, timeout: float = 5.0,
               routing: str = "round-robin", progress: bool = False) -> list[dict[str, Any]]:
    """A ``put`` phase then a ``get`` phase over the same keys.

    Each result: ``{"phase", "ops" (successful), "errors" ({code: n}, with "no_reply"),
    "seconds", "ops_per_sec", "p50_ms", "p99_ms", "p999_ms", "max_ms", "concurrency"}``
    plus ``processes``, ``rate``, ``sent``, ``backlogged``, ``servers`` (how many got
    traffic), ``routing`` and ``per_server`` (requests sent to each); ``cdf``:
    ``[[percentile, ms], ...]`` at ``CDF_PERCENTILES`` over every successful request;
    ``error_ms``: ``{replies, p50_ms, p99_ms, p999_ms, max_ms, mean_ms}`` over the error
    replies that came back (e.g. how fast a shed ``overloaded`` was answered; ``no_reply``
    is not among them). With owner routing the ring is fetched once, before the put phase.
    """
    ring = fetch_ring(parse_target(server)[1]) if routing == "owner" else None
    return [run_phase(server, op, ops, concurrency, value_size, keys, processes, max_seconds,
                      rate, timeout, routing, ring, progress=progress) for op in PHASES]


def run_mix(target: str | Sequence[str], ops: int, concurrency: int = 64,
            get_ratio: float = 0.5, value_size: int = 100, keys: int = 10_000,
            distribution: str = "uniform", rate: float | None = None, processes: int = 1,
            max_seconds: float = 60.0, timeout: float = 5.0, progress: bool = False,
            routing: str = "round-robin", connections: int | None = None,
            prefill: bool = False, seed: int | None = None,
            ring: dict[str, Any] | None = None, contexts: bool = True) -> dict[str, Any]:
    """Gets and puts mixed at random, against any target; returns the result dict.

    Each request is a get with probability ``get_ratio`` (else a put of ``value_size``
    random bytes) of key ``k{i}``, ``i`` drawn from ``distribution`` over ``keys``
    (``uniform``, or ``zipfian``: YCSB's theta 0.99, key ``k0`` the hottest). ``rate``
    None is the closed loop, else the open loop at that many ops/s. ``connections``
    (TCP targets) overrides the target's ``?connections=``. ``prefill`` first writes every
    key once (closed loop, not measured) so that gets find values. ``seed`` makes the
    choice of ops and keys repeatable. ``contexts`` (seda targets): each put carries the
    context of the last reply for its key, as a read-modify-write client does, so the
    key space does not fill with siblings (Redis and etcd simply overwrite).

    The result has the keys of ``run_phase`` (``phase`` is ``"mix"``; ``ops``,
    ``errors``, ``seconds``, ``ops_per_sec``, ``p50_ms``, ``p99_ms``, ``p999_ms``,
    ``max_ms``, ``concurrency``, ``processes``, ``rate``, ``sent``, ``backlogged``,
    ``servers``, ``routing``, ``per_server``, ``cdf``, ``error_ms``) and ``mean_ms``;
    ``by_op``: for ``get`` and ``put`` each ``{ops, errors, ops_per_sec, p50_ms, p99_ms,
    p999_ms, max_ms, mean_ms}``; ``target``, ``kind``, ``get_ratio``, ``distribution``,
    ``keys``, ``value_size``, ``connections``, ``seed``; ``prefill`` (None, or the put run's
    ``{ops, errors, seconds, ops_per_sec}``).
    """
    if not 0.0 <= get_ratio <= 1.0:
        raise ValueError("get_ratio must be in 0..1")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; "
                         f"expected one of {', '.join(DISTRIBUTIONS)}")
    _check_common(ops, concurrency, keys, value_size, processes, rate, routing)
    kind, targets, route, connections = _plan(target, routing, ring, connections, concurrency)
    seed = seed if seed is not None else random.randrange(1 << 62)
    filled = None
    if prefill:
        n = min(processes, concurrency, keys)
        base = {"op": "put", "distribution": "sequential", "first": 0, "ops": keys,
                "concurrency": concurrency, "value_size": value_size, "keys": keys,
                "rate": None, "max_seconds": max_seconds, "timeout": timeout}
        specs = _specs(kind, targets, route, connections, n, base)
        pre, _ = summarise(execute(specs, max_seconds, timeout, "prefill", progress),
                            "put", targets)
        filled = {k: pre[k] for k in ("ops", "errors", "seconds", "ops_per_sec")}
    processes = min(processes, concurrency, ops)
    base = {"op": "mix", "get_ratio": get_ratio, "distribution": distribution, "first": 0,
            "ops": ops, "concurrency": concurrency, "value_size": value_size, "keys": keys,
            "rate": rate, "max_seconds": max_seconds, "timeout": timeout, "seed": seed,
            "contexts": contexts}
    specs = _specs(kind, targets, route, connections, processes, base)
    parts = execute(specs, max_seconds, timeout, f"{kind} mix", progress)
    result, _ = summarise(parts, "mix", targets)
    result.update(concurrency=concurrency, processes=processes, rate=rate, routing=routing,
                  target=target if isinstance(target, str) else ",".join(target), kind=kind,
                  get_ratio=get_ratio, distribution=distribution, keys=keys,
                  value_size=value_size,
                  connections=None if kind == "seda" else min(connections, concurrency),
                  seed=seed, prefill=filled)
    return result
