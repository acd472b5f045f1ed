"""The simulator's parts (``seda_dynamo.sim``): the clock's order, the network's faults,
and crashes that keep the disks (Dynamo paper sections 4.4 and 4.6 rely on both)."""

from __future__ import annotations

import enum
import gc
import logging
import random
import types
from typing import Any

from seda_dynamo.sim.clock import Clock
from seda_dynamo.sim.cluster import Cluster
from seda_dynamo.sim.fuzzing import copy_cluster
from seda_dynamo.sim.net import Faults, Network
from seda_dynamo.sim.node import peer_address


def test_the_clock_runs_entries_by_time_then_by_the_order_they_were_scheduled():
    clock = Clock()
    clock.at(2.0, "late")
    clock.at(1.0, "first")
    clock.at(1.0, "second")
    assert [clock.pop() for _ in range(3)] == [("first",), ("second",), ("late",)]
    assert clock.now == 2.0


def test_a_one_way_partition_loses_only_what_its_side_sends():
    net = Network(random.Random(1), ["a", "b", "c"])
    net.partition(["a"], ["b", "c"], one_way=True)
    assert net.delays("a", "b") == [] and net.delays("a", "c") == []
    assert len(net.delays("b", "a")) == 1
    net.heal()
    assert len(net.delays("a", "b")) == 1


def test_a_faulty_link_loses_and_duplicates_some_messages_and_a_calm_one_none():
    net = Network(random.Random(2), ["a", "b"])
    net.faulty(Faults(loss=0.5, duplicate=0.5, jitter=0.01))
    copies = [len(net.delays("a", "b")) for _ in range(400)]
    assert {0, 1, 2} <= set(copies)
    net.calm()
    assert {len(net.delays("a", "b")) for _ in range(100)} == {1}


def test_a_crashed_node_refuses_requests_and_restarts_with_its_data(tmp_path):
    cluster = Cluster(tmp_path, 3, seed=5)
    assert cluster.run_until(cluster.converged, 30.0)
    assert cluster.call("n1", {"op": "put", "key": b"k", "value": b"v"})["ok"]
    cluster.crash("n1")
    assert cluster.request("n1", {"op": "get", "key": b"k"}) in cluster.refused
    cluster.run(2.0)
    cluster.start("n1")
    assert cluster.nodes["n1"].values(b"k") == [b"v"]  # the engine kept what it committed
    assert cluster.nodes["n1"].stages["persistence"].mint_epoch == 2  # type: ignore[attr-defined]
    assert cluster.run_until(cluster.converged, 30.0)
    assert cluster.call("n1", {"op": "get", "key": b"k"})["values"] == [b"v"]


def test_what_is_in_flight_to_a_crashed_stage_is_lost_and_it_restarts_fresh(tmp_path):
    cluster = Cluster(tmp_path, 3, seed=6)
    assert cluster.run_until(cluster.converged, 30.0)
    rid = cluster.request("n2", {"op": "put", "key": b"k", "value": b"v", "timeout_ms": 500})
    cluster.crash("n2", "coordination")  # the request was on its way there
    assert cluster.run_until(lambda: rid in cluster.replies, 5.0)
    assert not cluster.replies[rid]["ok"]  # the network stage's own deadline answers
    cluster.start("n2", "coordination")
    assert cluster.run_until(cluster.converged, 30.0)
    assert cluster.call("n2", {"op": "put", "key": b"k", "value": b"w"})["ok"]


#: Not state: code, plain values, and loggers (the process's, shared by design).
NOT_STATE = (type, types.ModuleType, types.CodeType, str, bytes, int, float, bool,
             type(None), enum.Enum, logging.Logger)
#: Shared by a copy and its original harmlessly: nobody changes them.
IMMUTABLE = (tuple, frozenset, types.FunctionType, types.BuiltinFunctionType)


def reachable(root: Any) -> dict[int, Any]:
    """Every object reachable from ``root`` that may be state, by id: through attributes
    and containers, and through what a function closes over (not its module's globals)."""
    seen: dict[int, Any] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, NOT_STATE):
            continue
        seen[id(obj)] = obj
        if isinstance(obj, types.FunctionType):
            stack += [cell.cell_contents for cell in obj.__closure__ or ()]
            stack += list(obj.__defaults__ or ())
        else:
            stack += gc.get_referents(obj)
    return seen


def test_a_copied_cluster_shares_no_state_and_runs_on_as_the_original_does(tmp_path):
    cluster = Cluster(tmp_path, 3, seed=9)
    assert cluster.run_until(cluster.converged, 30.0)
    twin = copy_cluster(cluster)
    original = reachable(cluster)
    shared = [obj for key, obj in reachable(twin).items()
              if key in original and not isinstance(obj, IMMUTABLE)]
    assert not shared, sorted({type(obj).__name__ for obj in shared})
    for run in (twin, cluster):  # the copy first: it must not read the original's state
        assert run.call("n1", {"op": "put", "key": b"k", "value": b"v"})["ok"]
        assert run.call("n2", {"op": "get", "key": b"k"})["values"] == [b"v"]
        run.run(5.0)
    assert twin.trace.hexdigest() == cluster.trace.hexdigest()
    assert twin.now == cluster.now


def test_a_write_a_node_acknowledged_before_it_joined_survives_the_join(tmp_path):
    cluster = Cluster(tmp_path, 3, seed=8)
    assert cluster.run_until(cluster.converged, 30.0)
    newcomer = cluster.add()  # its own founder until told to join
    keys = [b"k%d" % i for i in range(8)]
    for key in keys:
        assert cluster.call(newcomer.id, {"op": "put", "key": key, "value": b"v"})["ok"]
    reply = cluster.call(newcomer.id, {"op": "admin", "command": "join",
                                       "seed": peer_address(1)})
    assert reply["ok"], reply
    assert cluster.run_until(cluster.converged, 60.0)
    cluster.run(10.0)  # anti-entropy time
    for key in keys:
        assert cluster.call("n1", {"op": "get", "key": key, "r": 3})["values"] == [b"v"], key
