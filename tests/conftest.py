"""Shared fixtures: a real node in a temp directory, always stopped by pid."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from support import Node, build_cluster, stop_all

from seda_dynamo.ports import PORT_RANGE_ENV, port_range


def pytest_configure(config: pytest.Config) -> None:
    """``make test`` runs the suite in parallel workers (pytest-xdist): each draws the
    ports of the nodes it starts from a slice of the range of its own, so two workers
    never hand out the same port (the nodes they start inherit the slice)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if worker.startswith("gw") and worker[2:].isdigit() and count > 1:
        lo, hi = port_range()
        size = (hi - lo) // count
        first = lo + int(worker[2:]) * size
        os.environ[PORT_RANGE_ENV] = f"{first}-{first + size}"


@pytest.fixture
def node_factory(tmp_path) -> Iterator:
    nodes: list[Node] = []

    def make(node_id: str = "n1", **kwargs) -> Node:
        data_dir = tmp_path / node_id / "data"
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        node = Node(data_dir, node_id, **kwargs)
        nodes.append(node)
        return node

    yield make
    stop_all(nodes)


@pytest.fixture
def node(node_factory) -> Node:
    return node_factory().start()


@pytest.fixture
def cluster_factory(node_factory):
    """Start ``size`` nodes joined into one cluster (n1 founds it) and wait for the ring."""

    def make(size: int, **kwargs) -> list[Node]:
        return build_cluster(node_factory, size, **kwargs)

    return make
