"""The ``seda-dynamo`` command against a real node, as a person would type it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seda_dynamo.cli", *args], text=True,
                          capture_output=True, timeout=30, check=check)


def test_put_get_delete_stats_from_the_shell(node):
    server = ("--server", node.server)
    assert cli("put", *server, "cart", "apple").stdout.startswith("ok context=")
    cli("put", *server, "cart", "pear")
    got = cli("get", *server, "cart")
    assert sorted(got.stdout.split()) == ["apple", "pear"]
    assert "2 value(s)" in got.stderr
    context = got.stderr.split("context=")[1].strip()
    cli("put", *server, "--context", context, "cart", "both")
    assert cli("get", *server, "cart").stdout.split() == ["both"]
    assert cli("delete", *server, "cart").stdout.strip() == "ok"
    missing = cli("get", *server, "cart", check=False)
    assert missing.returncode == 1 and missing.stdout == ""
    assert cli("ping", *server).stdout.strip() == "n1"
    stats = json.loads(cli("stats", *server).stdout)
    assert stats["network"]["requests"] >= 6
    ring = json.loads(cli("ring", *server).stdout)
    assert ring["partitions"] == 256


def test_errors_are_reported_with_their_code():
    result = cli("get", "--server", "127.0.0.1:1", "--timeout", "0.2", "k", check=False)
    assert result.returncode == 3 and "no_reply" in result.stderr


def test_a_bad_configuration_is_refused_with_the_key_named(tmp_path):
    result = cli("serve", "--r", "7", "--data-dir", str(tmp_path), check=False)
    assert result.returncode == 2 and "r = 7" in result.stderr


def test_cluster_start_prints_endpoints_and_stop_leaves_no_process(tmp_path):
    import psutil

    from seda_dynamo.ports import free_base_port

    base = free_base_port(3)
    root = tmp_path / "c"
    started = cli("cluster", "start", "--nodes", "3", "--data-dir", str(root),
                  "--base-port", str(base), "--engine", "memory", check=False)
    try:
        assert started.returncode == 0, started.stderr
        lines = started.stdout.splitlines()
        assert [line.split(":")[0] for line in lines[:3]] == ["node1", "node2", "node3"]
        state = json.loads((root / "cluster.json").read_text())
        pids = [m["pid"] for m in state]
        assert cli("put", "--server", f"127.0.0.1:{base + 1}", "k", "v").returncode == 0
        assert cli("get", "--server", f"127.0.0.1:{base + 2}", "k").stdout.split() == ["v"]
        ring = json.loads(cli("ring", "--server", f"127.0.0.1:{base}").stdout)
        assert len(ring["nodes"]) == 3
        children = [c.pid for p in pids for c in psutil.Process(p).children()]
    finally:
        stopped = cli("cluster", "stop", "--data-dir", str(root), check=False)
    assert stopped.stdout.strip() == "stopped 3 node(s)"
    assert not [p for p in pids + children if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_a_busy_port_is_refused_at_once_with_the_address_named(node, tmp_path):
    result = cli("serve", "--client", node.server, "--data-dir", str(tmp_path), check=False)
    assert result.returncode == 1 and f"client address {node.server}" in result.stderr


def test_a_log_file_or_data_dir_that_cannot_be_made_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli("serve", "--data-dir", str(tmp_path / "d"), "--log-file",
                 str(blocker / "node.log"), check=False)
    assert result.returncode == 2 and "log_file = " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    from support import free_port

    result = cli("serve", "--data-dir", str(blocker / "data"), "--client",
                 f"127.0.0.1:{free_port()}", "--peer", f"127.0.0.1:{free_port()}", check=False)
    assert result.returncode == 1 and "data_dir" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
