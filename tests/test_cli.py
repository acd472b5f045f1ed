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
