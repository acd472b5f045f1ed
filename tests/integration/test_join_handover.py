"""A lone node's acknowledged writes survive its join (paper 4.8.1, 4.9; issue 13): a
node started alone is a one-node cluster and acknowledges writes at W=1; once an
operator joins it to another cluster, the keys of partitions it is not given are
handed to those partitions' replicas (``seda_dynamo.strays``) and then forgotten."""

from __future__ import annotations

import pytest
from support import wait_for_ring, wait_until

from seda_dynamo.client import DynamoError
from seda_dynamo.ring import partition_of

pytestmark = pytest.mark.integration

#: Anti-entropy off: only the stray keys' hand-over can bring them to their replicas.
QUIET = ("--anti-entropy-every", "0")


def test_keys_a_lone_node_acknowledged_are_read_back_at_r3_after_it_joins(
        cluster_factory, node_factory):
    nodes = cluster_factory(3, extra=QUIET)
    lone = node_factory("n4", extra=QUIET).start()  # its own founder: no join
    keys = [f"lone{i}" for i in range(24)]
    with lone.client() as c:
        for k in keys:
            c.put(k, k.encode())  # N and W capped at 1: acknowledged by this node alone
        assert c.admin("join", nodes[0].peer)["status"] == "joining"
    ring = wait_for_ring([*nodes, lone], 4, seconds=60)
    stray = [k for k in keys
             if "n4" not in ring["owners"][partition_of(k.encode(), ring["partitions"])]]
    assert stray, "some keys belong to partitions the newcomer was not given"

    def read_back(k: str) -> bool:
        try:
            with nodes[0].client() as c:
                return c.get(k, r=3, timeout=2.0).values == [k.encode()]
        except DynamoError:
            return False

    for k in keys:
        wait_until(lambda k=k: read_back(k), 60, f"{k} at r=3", interval=0.2)
    # The newcomer forgets each stray key once all three replicas hold it.
    wait_until(lambda: lone.stats()["persistence"]["forgotten"] >= len(stray), 30,
               "the newcomer to forget its stray keys", interval=0.5)
    assert lone.stats()["gossip"]["strays_handed"] >= len(stray)
    for k in keys:
        assert read_back(k), k
