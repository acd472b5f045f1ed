"""Metrics: request histograms kept by the coordinator, and their Prometheus exposition.

What an operator watches on a Dynamo node (paper section 6: the latency of gets and
puts at the 99.9th percentile, the share of reads that return divergent versions,
section 6.3) plus the SEDA stage figures (Welsh et al. 2001: queue, batch, service
time). ``OpMetrics`` is the coordinator's running tally; ``render`` turns a node's
``stats`` reply into the Prometheus text format (version 0.0.4); ``http_reply`` answers
one HTTP GET of the metrics listener. Pure values and functions: the network stage owns
the socket.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from seda_dynamo.stage import stage_of

#: Upper bounds (ms) of the request latency buckets; a last +Inf bucket is implied.
LATENCY_BUCKETS_MS = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
                      2500.0, 5000.0, 10000.0)
#: Upper bounds of the versions-per-read buckets (0: the key was not found).
SIBLING_BUCKETS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0)
OPS = ("get", "put", "delete")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192
MAX_CONNECTIONS = 64  # metrics connections with a request head still incomplete


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (not cumulative; the last is +Inf), their sum and number."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def to_wire(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts),
                "sum": round(self.total, 6), "count": self.count}


@dataclass(slots=True)
class OpMetrics:
    """The coordinator's tally of the client requests it answered, by operation."""

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPS, 0))
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    latency: dict[str, Histogram] = field(default_factory=lambda: {
        op: Histogram(LATENCY_BUCKETS_MS) for op in OPS})
    siblings: Histogram = field(default_factory=lambda: Histogram(SIBLING_BUCKETS))

    def answered(self, op: str, seconds: float, error: str | None) -> None:
        if op not in self.requests:
            return
        self.requests[op] += 1
        self.latency[op].observe(seconds * 1000.0)
        if error:
            codes = self.errors.setdefault(op, {})
            codes[error] = codes.get(error, 0) + 1

    def read(self, versions: int) -> None:
        self.siblings.observe(float(versions))

    def to_wire(self) -> dict[str, Any]:
        return {"requests": dict(self.requests),
                "errors": {op: dict(codes) for op, codes in self.errors.items()},
                "latency_ms": {op: h.to_wire() for op, h in self.latency.items()},
                "siblings": self.siblings.to_wire()}


# Exposition ---------------------------------------------------------------------------
def _labels(**labels: Any) -> str:
    def esc(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def number(value: Any) -> float | None:
    """``value`` as a float if it is a number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(round(value, 6))


class _Out:
    """Collects samples grouped by metric family (one HELP and TYPE line each)."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, kind: str, help_text: str, labels: str, value: Any,
            suffix: str = "") -> None:
        sample = number(value)
        if sample is None:
            return
        family = self.families.setdefault(name, (kind, help_text, []))
        family[2].append(f"{name}{suffix}{labels} {_fmt(sample)}")

    def histogram(self, name: str, help_text: str, wire: Any, scale: float,
                  **labels: Any) -> None:
        """A histogram from ``Histogram.to_wire`` (bounds scaled: ms to seconds)."""
        if not isinstance(wire, dict):
            return
        bounds, counts = wire.get("bounds"), wire.get("counts")
        if not isinstance(bounds, list) or not isinstance(counts, list) \
                or len(counts) != len(bounds) + 1:
            return
        running = 0.0
        for bound, count in zip([*bounds, None], counts, strict=True):
            running += number(count) or 0.0
            le = "+Inf" if bound is None else _fmt(float(bound) * scale)
            self.add(name, "histogram", help_text, _labels(**labels, le=le), running,
                     "_bucket")
        self.add(name, "histogram", help_text, _labels(**labels),
                 (number(wire.get("sum")) or 0.0) * scale, "_sum")
        self.add(name, "histogram", help_text, _labels(**labels), running, "_count")

    def text(self) -> str:
        lines = []
        for name, (kind, help_text, samples) in self.families.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


#: Per-worker stage figures: (counter name in stats, metric, type, help, scale).
STAGE_FIGURES = (
    ("processed", "seda_stage_processed_total", "counter", "Events a stage worker handled.",
     1.0),
    ("errors", "seda_stage_errors_total", "counter", "Events a stage worker failed on.", 1.0),
    ("dropped", "seda_stage_dropped_total", "counter",
     "Events a stage worker dropped (a full queue, an unknown or unreachable peer).", 1.0),
    ("bad_destinations", "seda_stage_bad_destinations_total", "counter",
     "Events for a node address that cannot be connected to (counted in dropped too).",
     1.0),
    ("peer_sockets", "seda_stage_peer_sockets", "gauge",
     "Sockets a stage worker holds open to other nodes.", 1.0),
    ("queue_depth", "seda_stage_queue_depth", "gauge", "Events waiting in the queue.", 1.0),
    ("queue_delay_ms", "seda_stage_queue_delay_seconds", "gauge",
     "Smoothed time an event waits in the queue.", 0.001),
    ("batch_size", "seda_stage_batch_size", "gauge", "Smoothed events per batch.", 1.0),
    ("batch_limit", "seda_stage_batch_limit", "gauge",
     "The batching controller's current limit.", 1.0),
    ("service_p50_ms", "seda_stage_service_p50_seconds", "gauge",
     "Median time to handle one batch, over the last second.", 0.001),
    ("service_p99_ms", "seda_stage_service_p99_seconds", "gauge",
     "99th percentile time to handle one batch, over the last second.", 0.001),
    ("cpu_percent", "seda_stage_cpu_percent", "gauge", "CPU use of the worker process.", 1.0),
    ("rss_bytes", "seda_stage_rss_bytes", "gauge", "Resident memory of the worker process.",
     1.0),
)


#: Node figures: (stage whose report has it, its name there, metric, type, help).
NODE_FIGURES = (
    ("network", "requests", "seda_client_frames_total", "counter",
     "Client frames the network stage read."),
    ("network", "bad_requests", "seda_bad_requests_total", "counter",
     "Client frames refused as malformed."),
    ("network", "shed", "seda_shed_total", "counter",
     "Client requests answered with overloaded."),
    ("network", "requests_in_flight", "seda_requests_in_flight", "gauge",
     "Client requests open at the network stage."),
    ("coordination", "read_repairs", "seda_read_repairs_total", "counter",
     "Replicas sent a merged version after a get."),
    ("coordination", "forwarded", "seda_forwarded_total", "counter",
     "Writes forwarded to a replica to stamp."),
    ("coordination", "replaced", "seda_targets_replaced_total", "counter",
     "Request targets that failed or were silent, replaced by the next node."),
    ("coordination", "suspected", "seda_nodes_suspected_total", "counter",
     "Times a node that failed a request began to be routed around."),
    ("persistence", "hints", "seda_hints_pending", "gauge",
     "Hinted writes this node holds for replicas that were down."),
    ("gossip", "hints_delivered", "seda_hints_delivered_total", "counter",
     "Hinted writes handed back."),
    ("persistence", "keys", "seda_keys", "gauge", "Keys in the local engine."),
    ("gossip", "members", "seda_members", "gauge",
     "Members of the cluster in this node's view."),
    ("gossip", "epoch", "seda_ring_epoch", "gauge", "Epoch of the ring in this node's view."),
    ("gossip", "transfers_active", "seda_transfers_active", "gauge",
     "Partition hand-overs streaming now."),
    ("gossip", "exchanges", "seda_anti_entropy_exchanges_total", "counter",
     "Merkle-tree exchanges with a replica."),
    ("gossip", "sweeps", "seda_anti_entropy_sweeps_total", "counter",
     "Full sweeps of the partitions this node replicates."),
    ("gossip", "suspicions", "seda_peer_suspicions_total", "counter",
     "Times the failure detector declared a peer down."),
    ("gossip", "false_suspicions", "seda_peer_false_suspicions_total", "counter",
     "Peers declared down that then answered a ping sent before that: alive but slow."),
)


def render(node: str, stats: dict[str, Any]) -> str:
    """The Prometheus text exposition of a node's ``stats`` reply."""
    out = _Out()
    for worker, report in sorted(stats.items()):
        if not isinstance(report, dict):
            continue
        labels = _labels(node=node, stage=stage_of(worker), worker=worker)
        for key, name, kind, help_text, scale in STAGE_FIGURES:
            value = number(report.get(key))
            out.add(name, kind, help_text, labels, None if value is None else value * scale)
    coordination = stats.get("coordination", {})
    gossip = stats.get("gossip", {})
    node_labels = _labels(node=node)
    ops = coordination.get("ops", {}) if isinstance(coordination, dict) else {}
    for op, count in (ops.get("requests") or {}).items():
        out.add("seda_requests_total", "counter",
                "Client requests the coordinator answered, by operation.",
                _labels(node=node, op=op), count)
    for op, codes in (ops.get("errors") or {}).items():
        for code, count in (codes or {}).items():
            out.add("seda_request_errors_total", "counter",
                    "Client requests answered with an error, by operation and code.",
                    _labels(node=node, op=op, code=code), count)
    for op, wire in (ops.get("latency_ms") or {}).items():
        out.histogram("seda_request_duration_seconds",
                      "Time from a request reaching the coordinator to its reply.", wire,
                      0.001, node=node, op=op)
    for op, codes in (ops.get("errors") or {}).items():
        for reason in ("unavailable", "timeout"):
            out.add("seda_quorum_failures_total", "counter",
                    "Requests that did not gather R or W replies, by reason.",
                    _labels(node=node, op=op, reason=reason), (codes or {}).get(reason, 0))
    out.histogram("seda_siblings_per_read", "Versions returned by a successful get "
                  "(0: not found; more than 1: concurrent siblings).",
                  ops.get("siblings"), 1.0, node=node)
    for stage, key, name, kind, help_text in NODE_FIGURES:
        report = stats.get(stage)
        if isinstance(report, dict):
            out.add(name, kind, help_text, node_labels, report.get(key))
    if gossip:
        out.add("seda_anti_entropy_keys_repaired_total", "counter",
                "Keys pulled or pushed by anti-entropy.", node_labels,
                (number(gossip.get("keys_pushed")) or 0)
                + (number(gossip.get("keys_pulled")) or 0))
    return out.text()


# The listener's one page --------------------------------------------------------------
def http_reply(request: bytes, body: Any) -> bytes | None:
    """The response to one HTTP request in ``request``, or None while its head is still
    incomplete. ``body()`` makes the exposition, called only for ``GET /metrics``."""
    head, sep, _ = request.partition(b"\r\n\r\n")
    if not sep:
        if len(request) > MAX_REQUEST_BYTES:
            return response(431, "Request Header Fields Too Large", "request head too long\n")
        return None
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return response(400, "Bad Request", "expected an HTTP request line\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target not in (b"/metrics", b"/"):
        return response(404, "Not Found", "the metrics are at /metrics\n")
    if method not in (b"GET", b"HEAD"):
        return response(405, "Method Not Allowed", "GET /metrics\n", allow="GET, HEAD")
    text = body()
    return response(200, "OK", text, content_type=CONTENT_TYPE, head_only=method == b"HEAD")


def response(code: int, reason: str, text: str, content_type: str = "text/plain",
              head_only: bool = False, allow: str | None = None) -> bytes:
    payload = text.encode("utf-8")
    headers = [f"HTTP/1.1 {code} {reason}", f"Content-Type: {content_type}",
               f"Content-Length: {len(payload)}", "Connection: close"]
    if allow:
        headers.append(f"Allow: {allow}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + (b"" if head_only
                                                                  else payload)


class Scrapes:
    """The metrics listener's connections (HTTP on a raw TCP port): each one's bytes are
    gathered until its request head is complete; at most ``MAX_CONNECTIONS`` wait."""

    def __init__(self) -> None:
        self.partial: dict[bytes, bytes] = {}  # connection -> its request so far

    def __len__(self) -> int:
        return len(self.partial)

    def feed(self, conn: bytes, data: bytes, page: Any) -> bytes | None:
        """The response to send on ``conn`` (then close it), or None while its request
        is incomplete; empty ``data`` is a connect or a disconnect. ``page()`` makes the
        exposition; what it raises is raised here (the request is then forgotten)."""
        if not data:
            self.partial.pop(conn, None)
            return None
        if conn not in self.partial and len(self.partial) >= MAX_CONNECTIONS:
            # Half-sent requests are held until complete; this many is no scraper.
            return response(503, "Service Unavailable", "too many open metrics connections\n")
        request = self.partial.pop(conn, b"") + data
        reply = http_reply(request, page)
        if reply is None:
            self.partial[conn] = request
        return reply
