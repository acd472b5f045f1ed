"""Operating a node: tpstats and top, admin status, the Prometheus endpoint, logging."""

from __future__ import annotations

import ast
import http.client
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import free_port, wait_until

from seda_dynamo import admin, metrics, tpstats

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|\+Inf|NaN)$')


def report(**figures):
    base = {"processed": 0, "errors": 0, "dropped": 0, "queue_depth": 0, "batch_size": 1.0,
            "service_p50_ms": 0.1, "service_p99_ms": 0.5, "cpu_percent": 1.0,
            "rss_bytes": 2**20}
    return {**base, **figures}


def parse(text: str) -> dict[str, float]:
    """Every sample of an exposition, keyed by name and labels; fails on a bad line."""
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in types, f"family {name} declared twice"
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not an exposition line: {line!r}"
        samples[match[1] + (match[2] or "")] = float(match[3])
    return samples


# Pure cores --------------------------------------------------------------------------
def test_tpstats_folds_a_stages_workers_into_one_row():
    stats = {"network": report(processed=10), "versioning": report(processed=5, errors=1,
                                                                   service_p99_ms=2.0),
             "versioning.1": report(processed=7, dropped=2, service_p99_ms=3.0,
                                    queue_depth=4)}
    rows = {row.stage: row for row in tpstats.rows(stats)}
    assert [r.stage for r in tpstats.rows(stats)] == ["versioning", "network"], "stage order"
    v = rows["versioning"]
    assert (v.processes, v.processed, v.errors, v.dropped, v.queue_depth) == (2, 12, 1, 2, 4)
    assert v.service_p99_ms == 3.0 and v.rss_bytes == 2 * 2**20
    later = {**stats, "versioning.1": report(processed=27)}
    assert tpstats.rates(stats, later, 2.0)["versioning"] == 10.0
    text = tpstats.top_text({"n1": (later, stats), "n2": ({}, None)}, 2.0, "12:00:00")
    assert "10/s" in text and "node n2: not answering" in text


def test_status_shows_each_nodes_hints_and_anti_entropy_sweep():
    reply = {"epoch": 3, "pending_transfers": 0, "partitions": 8, "nodes": [
        {"id": "a", "status": "valid", "up": True, "partitions": 8, "planned": 8,
         "transfers_out": 0, "transfers_in": 0},
        {"id": "b", "status": "valid", "up": False, "partitions": 8, "planned": 8,
         "transfers_out": 0, "transfers_in": 0}]}
    local = {"a": {"persistence": {"hints": 12}, "gossip": {
        "sweep_position": 3, "sweeps": 2, "last_sweep_at": 990.0, "exchanges": 9,
        "keys_pushed": 1, "keys_pulled": 2}}, "b": None}
    text = admin.status_text(reply, local, now=1000.0)
    line_a = next(line for line in text.splitlines() if line.startswith("a "))
    assert "12" in line_a and "sweep 3/8, 2 done, last 10s ago, 9 exchanges, 3 keys" in line_a
    assert "(not answering)" in next(line for line in text.splitlines()
                                     if line.startswith("b "))


def test_histograms_render_as_cumulative_prometheus_buckets():
    ops = metrics.OpMetrics()
    for ms in (0.3, 4.0, 4.0, 700.0, 20000.0):
        ops.answered("get", ms / 1000.0, None)
    ops.answered("put", 0.002, "unavailable")
    ops.answered("ring", 0.001, None)  # not a keyed op: not counted
    ops.read(0)
    ops.read(2)
    stats = {"coordination": report(ops=ops.to_wire()), "network": report(shed=3),
             "persistence": report(hints=4), "gossip": report(members=2)}
    samples = parse(metrics.render("n1", stats))
    get = 'seda_request_duration_seconds_bucket{node="n1",op="get",le="%s"}'
    assert samples[get % "0.0005"] == 1 and samples[get % "0.005"] == 3
    assert samples[get % "1"] == 4 and samples[get % "+Inf"] == 5
    assert samples['seda_request_duration_seconds_count{node="n1",op="get"}'] == 5
    assert samples['seda_requests_total{node="n1",op="put"}'] == 1
    assert samples['seda_quorum_failures_total{node="n1",op="put",reason="unavailable"}'] == 1
    assert samples['seda_siblings_per_read_bucket{node="n1",le="0"}'] == 1
    assert samples['seda_siblings_per_read_bucket{node="n1",le="2"}'] == 2
    assert samples['seda_hints_pending{node="n1"}'] == 4
    assert samples['seda_shed_total{node="n1"}'] == 3
    assert samples['seda_stage_rss_bytes{node="n1",stage="network",worker="network"}'] == 2**20
    assert 'op="ring"' not in metrics.render("n1", stats)


def test_the_metrics_page_answers_http_and_refuses_the_rest():
    def page() -> str:
        return "x 1\n"

    assert metrics.http_reply(b"GET /metrics HTTP/1.1\r\nHost: a", page) is None
    ok = metrics.http_reply(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", page)
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nx 1\n")
    assert b"version=0.0.4" in ok
    head = metrics.http_reply(b"HEAD /metrics HTTP/1.1\r\n\r\n", page)
    assert head.endswith(b"\r\n\r\n") and b"Content-Length: 4" in head
    assert metrics.http_reply(b"POST /metrics HTTP/1.1\r\n\r\n", page).startswith(
        b"HTTP/1.1 405")
    assert metrics.http_reply(b"GET /admin HTTP/1.1\r\n\r\n", page).startswith(
        b"HTTP/1.1 404")
    assert metrics.http_reply(b"\x00\x01\r\n\r\n", page).startswith(b"HTTP/1.1 400")
    assert metrics.http_reply(b"G" * 9000, page).startswith(b"HTTP/1.1 431")


SERVER_MODULES = [*sorted((ROOT / "stages").glob("*.py")),
                  *sorted((ROOT / "seda_dynamo" / "engines").glob("*.py")),
                  *(ROOT / "seda_dynamo" / f"{m}.py" for m in (
                      "runtime", "contract", "sockets", "outbox", "accounting", "hygiene",
                      "supervisor", "stage", "metrics", "security", "config",
                      "causality", "actors", "contexts", "ring", "claim", "merkle",
                      "membership", "protocol",
                      "controllers", "background", "durable", "transfer", "reaper",
                      "routing", "requests", "antientropy"))]


@pytest.mark.parametrize("path", SERVER_MODULES, ids=lambda p: p.name)
def test_the_server_logs_and_never_prints(path):
    tree = ast.parse(path.read_text())
    prints = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert not prints, f"{path.name}: print() at lines {prints}; use logging"


# A real node ---------------------------------------------------------------------------
def scrape(address: str, path: str = "/metrics") -> tuple[int, str, str]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), \
            response.read().decode()
    finally:
        conn.close()


@pytest.mark.integration
def test_a_node_serves_prometheus_metrics_and_logs_to_its_file(node_factory, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    log_file = tmp_path / "logs" / "n1.log"
    node = node_factory("n1", extra=("--metrics", address, "--log-file", str(log_file)))
    node.start()
    with node.client() as c:
        c.put("a", b"1")
        c.put("a", b"2")  # a blind second put: two siblings
        assert len(c.get("a").values) == 2
        c.get("missing")

    def scraped():
        status, kind, text = scrape(address)
        samples = parse(text)
        # Each stage reports once a second: wait for the coordinator's counts and for a
        # report from every stage (a node just started may not have them all yet).
        reported = {key.split('stage="')[1].split('"')[0] for key in samples
                    if key.startswith("seda_stage_processed_total")}
        return status == 200 and samples.get(
            'seda_requests_total{node="n1",op="get"}', 0) >= 2 and len(reported) == 5 \
            and (kind, samples)

    kind, samples = wait_until(scraped, 10, "every stage's figures in a scrape")
    assert kind.startswith("text/plain; version=0.0.4")
    assert samples['seda_requests_total{node="n1",op="put"}'] == 2
    assert samples['seda_siblings_per_read_bucket{node="n1",le="0"}'] == 1
    assert samples['seda_siblings_per_read_bucket{node="n1",le="2"}'] == 2
    assert samples['seda_request_duration_seconds_count{node="n1",op="put"}'] == 2
    assert samples['seda_hints_pending{node="n1"}'] == 0
    stages = {key.split('stage="')[1].split('"')[0] for key in samples
              if key.startswith("seda_stage_processed_total")}
    assert stages == {"network", "coordination", "versioning", "persistence", "gossip"}
    assert scrape(address, "/nope")[0] == 404
    # A client that sends half a request and hangs up leaves the node serving.
    import socket
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(b"GET /metr")
    assert scrape(address)[0] == 200

    lines = log_file.read_text().splitlines()
    assert any("[n1 supervisor]" in line and "clients on" in line for line in lines)
    assert all(re.match(r"^\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ \[n1 [a-z.0-9]+\] ", line)
               for line in lines if line and not line.startswith((" ", "Traceback"))), lines


@pytest.mark.integration
def test_tpstats_top_and_status_from_the_shell(cluster_factory):
    n1, n2 = cluster_factory(2)
    with n1.client() as c:
        for i in range(20):
            c.put(f"k{i}", b"v")
    n1.stats()
    n2.stats()

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "seda_dynamo.cli", *args], text=True,
                              capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    table = cli("admin", "tpstats", "--server", n1.server).splitlines()
    assert table[0] == "node n1" and table[1].split()[:3] == ["stage", "procs", "queue"]
    assert [line.split()[0] for line in table[2:]] == [
        "persistence", "versioning", "coordination", "gossip", "network"]
    top = cli("top", "--server", n1.server, "--cluster", "--frames", "2", "--every", "0.3")
    assert "node n1" in top and "node n2" in top and "/s" in top
    status = cli("admin", "status", "--server", n1.server).splitlines()
    assert "hints" in status[1] and "anti-entropy" in status[1]
    for name in ("n1", "n2"):
        line = next(line for line in status if line.startswith(name + " "))
        assert "sweep " in line and "exchanges" in line, line


def test_half_sent_scrapes_are_capped_and_answered_503():
    from seda_dynamo.config import NodeConfig
    from stages import network

    h = network.Handler(NodeConfig(metrics="127.0.0.1:9100"))
    h.name = "network"
    h.handle_frames("metrics", [[b"c%d" % i, b"GET /metr"] for i in range(200)], 0.0)
    out = h.take_outbox()
    assert len(h.http) == metrics.MAX_CONNECTIONS
    refused = [e for dest, e in out if dest == "metrics" and e[1].startswith(b"HTTP/1.1 503")]
    assert len(refused) == 200 - metrics.MAX_CONNECTIONS
    h.handle_frames("metrics", [[b"c0", b"ics HTTP/1.1\r\n\r\n"], [b"c1", b""]], 0.0)
    out = h.take_outbox()
    assert out[0][1][0] == b"c0" and out[0][1][1].startswith(b"HTTP/1.1 200")
    assert out[1][1] == [b"c0", b""] and len(h.http) == metrics.MAX_CONNECTIONS - 2


@pytest.mark.integration
def test_the_log_file_is_reopened_after_logrotate_moves_it(node_factory, tmp_path):
    log_file = tmp_path / "n1.log"
    node = node_factory("n1", extra=("--log-file", str(log_file), "--log-level", "debug"))
    node.start()
    log_file.rename(tmp_path / "n1.log.1")  # what logrotate does, without copytruncate
    with node.client() as c:
        c.admin("join", "127.0.0.1:1")  # a warning from the gossip stage
    wait_until(lambda: log_file.exists() and "[n1 gossip]" in log_file.read_text(), 10,
               "the gossip stage to write to a new log file")
