"""Shared fixtures: a real node in a temp directory, always stopped by pid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import Node, build_cluster, stop_all


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
