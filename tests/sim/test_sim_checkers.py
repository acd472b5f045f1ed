"""The simulator's checkers of issue 13 on small runs: a failed write is judged against
what was reachable for its whole life (paper 4.6, sloppy quorum), fairly (a link that
may lose messages takes it out of judgement), replicas that missed a write disagree
until anti-entropy repairs them within the bound (paper 4.7), and one client write is
stamped once (paper 4.4: one value, one dot)."""

from __future__ import annotations

import random

from seda_dynamo.ring import partition_of
from seda_dynamo.sim import checkers
from seda_dynamo.sim.cluster import Cluster, Reach
from seda_dynamo.sim.net import Faults
from seda_dynamo.sim.workload import Workload

FOUNDERS = ["n1", "n2", "n3"]


def test_reachable_counts_the_nodes_up_and_linked_both_ways_without_loss():
    nodes = ["a", "b", "c", "d"]
    calm = Reach(0.0, frozenset(nodes), frozenset(), frozenset())
    assert checkers.reachable(calm, "a", nodes) == set(nodes)
    one_way = Reach(0.0, frozenset(nodes), frozenset({("c", "a")}), frozenset())
    assert checkers.reachable(one_way, "a", nodes) == {"a", "b", "d"}
    lossy = Reach(0.0, frozenset(nodes), frozenset(), frozenset({("b", "d")}))
    assert checkers.reachable(lossy, "a", nodes) == {"a", "c"}  # b and d: not both
    crashed = Reach(0.0, frozenset({"a", "b"}), frozenset(), frozenset())
    assert checkers.reachable(crashed, "a", nodes) == {"a", "b"}
    assert checkers.reachable(crashed, "c", nodes) == set()  # the coordinator is down


def test_a_failed_write_is_flagged_when_w_nodes_were_reachable_and_not_on_a_lossy_link(
        tmp_path):
    cluster = Cluster(tmp_path, 3, seed=9)
    assert cluster.run_until(cluster.converged, 30.0)
    cluster.run(checkers.STEADY)
    workload = Workload(cluster, random.Random(1), keys=1)
    cluster.crash("n3")
    calm = workload.send("put", b"k", "n1", value=b"v1", w=3)  # two can answer: it fails
    assert cluster.run_until(workload.settled, 10.0)
    assert calm.reply is not None and calm.reply["error"] in checkers.QUORUM_ERRORS
    assert checkers.failed_writes(cluster, workload, 3, FOUNDERS) == []  # honest at W=3
    flagged = checkers.failed_writes(cluster, workload, 2, FOUNDERS)  # not at W=2
    assert len(flagged) == 1 and f"put {calm.rid} " in flagged[0], flagged

    cluster.net.faulty(Faults(loss=0.01, duplicate=0.0, jitter=0.0))
    lossy = workload.send("put", b"k", "n1", value=b"v2", w=3)
    assert cluster.run_until(workload.settled, 10.0)
    assert lossy.reply is not None and not lossy.reply["ok"]
    assert not [f for f in checkers.failed_writes(cluster, workload, 2, FOUNDERS)
                if f"put {lossy.rid} " in f]


def test_a_forward_into_a_fresh_partition_times_out_and_is_not_judged(tmp_path):
    """A node that is no replica of the key forwards the write to the first replica; cut
    off from it the instant it sends, it cannot know the write did not arrive, so no
    second node is sent it (it would be stamped twice) and it times out, though W other
    replicas were reachable. ``failed_writes`` does not count that against the store."""
    cluster = Cluster(tmp_path, 4, seed=12)
    assert cluster.run_until(cluster.converged, 30.0)
    cluster.run(checkers.STEADY)
    ring = cluster.ring("n4")
    assert ring is not None
    key = next(k for k in (b"k%d" % i for i in range(500))
               if "n4" not in ring.preference_list(partition_of(k, ring.partitions), 3))
    first = ring.preference_list(partition_of(key, ring.partitions), 3)[0]
    workload = Workload(cluster, random.Random(1), keys=1)
    cluster.net.partition(["n4"], [first])
    put = workload.send("put", key, "n4", value=b"v1")
    assert cluster.run_until(workload.settled, 10.0)
    assert put.reply is not None and put.reply["error"] == "timeout", put.reply
    assert checkers.failed_writes(cluster, workload, 2, ["n1", "n2", "n3", "n4"]) == []
    cluster.net.heal()
    assert cluster.run_until(cluster.converged, 30.0)
    assert checkers.stamped_once(cluster) == []


def test_a_replica_that_missed_a_write_disagrees_until_anti_entropy_repairs_it(tmp_path):
    cluster = Cluster(tmp_path, 3, seed=10, anti_entropy_every=1.0)
    assert cluster.run_until(cluster.converged, 30.0)
    assert checkers.disagreeing(cluster) == []
    cluster.crash("n3")
    assert cluster.call("n1", {"op": "put", "key": b"k", "value": b"v"})["ok"]
    cluster.start("n3")
    back = cluster.now
    assert checkers.disagreeing(cluster) == [b"k"]
    assert cluster.run_until(cluster.converged, 30.0)
    bound = checkers.convergence_bound(cluster, back)
    assert cluster.run_until(lambda: not checkers.disagreeing(cluster), bound)
    assert cluster.nodes["n3"].values(b"k") == [b"v"]


def test_a_value_stamped_twice_is_flagged_wherever_its_two_dots_are(tmp_path):
    """Every value the clients write is unique, so a value under two dots is one write
    stamped twice (a forward sent on after silence, a duplicated frame): a later
    read-modify-write that saw one dot leaves the other as a sibling. The same value put
    twice stands in for that here."""
    cluster = Cluster(tmp_path, 3, seed=11)
    assert cluster.run_until(cluster.converged, 30.0)
    assert cluster.call("n1", {"op": "put", "key": b"k", "value": b"v1"})["ok"]
    assert cluster.call("n2", {"op": "put", "key": b"j", "value": b"v2"})["ok"]
    assert checkers.stamped_once(cluster) == []
    assert cluster.call("n2", {"op": "put", "key": b"k", "value": b"v1"})["ok"]
    [found] = checkers.stamped_once(cluster)
    assert found.startswith("b'v1' stamped twice")
    read = cluster.call("n3", {"op": "get", "key": b"k", "r": 3})
    assert sorted(read["values"]) == [b"v1", b"v1"]
    assert cluster.call("n3", {"op": "put", "key": b"k", "value": b"v3", "w": 3,
                               "context": read["context"]})["ok"]
    assert all(node.values(b"k") == [b"v3"] for node in cluster.nodes.values())
    assert checkers.stamped_once(cluster) == [found], "covered, yet seen stamped"
