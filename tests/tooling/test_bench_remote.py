"""``bench.report`` against a cluster it did not start (``--cluster-servers``): the way
its cluster targets are meant to be measured, with the nodes on machines of their own.
Here the "remote" cluster is three real nodes on loopback, started by the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_report_measures_a_running_cluster_and_says_where(cluster_factory, tmp_path):
    nodes = cluster_factory(3)
    servers = ",".join(n.server for n in nodes)
    done = subprocess.run(
        [sys.executable, "-m", "bench.report", "--quick", "--skip-node", "--skip-peers",
         "--cluster-servers", servers, "--out", str(tmp_path), "--json"],
        cwd=ROOT, text=True, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout)
    assert data["status"].get("cluster") is None, data["status"]
    assert data["where"] == {"cluster": f"the running cluster at {servers}"}
    put = data["sections"]["cluster"]["runs"]["put"]
    assert put["ops_per_sec"] > 0 and not put["errors"]
    assert set(data["sections"]["cluster"]["cpu"]["samples"]) == {"n1", "n2", "n3"}
    report = (tmp_path / "report.md").read_text()
    assert f"measured elsewhere: 3-node cluster: the running cluster at {servers}" in report
    with nodes[0].client() as c:  # the cluster is the test's: still up after the report
        assert c.ping() == "n1"
