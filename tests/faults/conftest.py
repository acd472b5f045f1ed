"""Fixtures of the fault-injection suite: network namespaces and clusters living in them.

``tests/conftest.py`` (node_factory, cluster_factory) applies here as well; this file
makes ``support`` and this directory's modules importable however pytest is started
(``pytest``, ``pytest tests/faults``, ``pytest tests/faults/test_faults.py``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (str(HERE.parent), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from nemesis import LabUnavailable, NetLab, NsNode  # noqa: E402
from support import build_cluster, stop_all  # noqa: E402

_why_no_lab: list[str] = []


@pytest.fixture
def maybe_netlab() -> Iterator[NetLab | None]:
    """Private network namespaces for this test's nodes, or None where there are none."""
    lab = NetLab()
    try:
        if os.environ.get("SEDA_FAULT_NO_NETNS"):
            raise LabUnavailable("SEDA_FAULT_NO_NETNS is set")
        lab.open()
    except LabUnavailable as exc:
        _why_no_lab[:] = [str(exc)]
        print(f"network namespaces unavailable: {exc}")
        yield None
        return
    try:
        yield lab
    finally:
        lab.close()
        left = lab.leftovers()
        assert not left, f"network namespaces or links left behind: {left}"


@pytest.fixture
def netlab(maybe_netlab) -> NetLab:
    if maybe_netlab is None:
        pytest.skip("network partitions need network namespaces (ip netns add, veth, "
                    f"bridge; root with CAP_NET_ADMIN): {' '.join(_why_no_lab)}")
    return maybe_netlab


@pytest.fixture
def ns_node_factory(maybe_netlab, tmp_path) -> Iterator:
    """Like ``node_factory``, for nodes in namespaces of the test's NetLab."""
    nodes: list[NsNode] = []

    def make(node_id: str, **kwargs) -> NsNode:
        assert maybe_netlab is not None, "no network namespaces here"
        data_dir = tmp_path / node_id / "data"
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        netns, ip = maybe_netlab.add_node()
        node = NsNode(data_dir, node_id, netns, ip, **kwargs)
        nodes.append(node)
        return node

    yield make
    stop_all(nodes)


@pytest.fixture
def ns_cluster_factory(ns_node_factory):
    """``cluster_factory`` for namespaced nodes: n1 founds, the others join it."""

    def make(size: int, **kwargs) -> list[NsNode]:
        return build_cluster(ns_node_factory, size, **kwargs)

    return make


@pytest.fixture
def any_cluster_factory(maybe_netlab, ns_cluster_factory, cluster_factory):
    """Namespaced nodes (partitions possible) where the machine allows, else loopback."""
    return ns_cluster_factory if maybe_netlab is not None else cluster_factory
