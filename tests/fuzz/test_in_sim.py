"""Fuzzing both ports of node n1 of a simulated three-node cluster (``simnode.SimNode``,
``seda_dynamo.sim``): the properties ``test_handlers`` holds one node's handlers to,
with the other members real. Dynamo paper sections 4.1 (the client interface), 4.5 (a
quorum across replicas) and 4.8 (the peers): n1's calls go to real replicas whose
answers race the fuzz's forged ones, its answers to fuzzed requests reach the member
they name, and afterwards every node still serves every key the fuzz touched.

Admin commands that change the cluster are left out (as against a real node): a
well-formed ``leave`` takes n1 out of it. ``SEDA_SOAK=1`` (``make soak``) runs ten
times as many examples.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from simnode import SimNode
from strategies import PEER_MESSAGE, client_message
from target import stage_stack
from test_handlers import BAD_CLOCK, DEEP_PEER, UNISSUED_COUNTER, fuzz

from seda_dynamo.sim.run import logged_errors

SOAK = os.environ.get("SEDA_SOAK", "") not in ("", "0")
EXAMPLES = 10 if SOAK else 1
SIM_FUZZ = settings(deadline=None, max_examples=40 * EXAMPLES, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])

CLIENT = st.tuples(st.just("client"), client_message(changes=False))
PEER = st.tuples(st.just("peer"), PEER_MESSAGE)
STEP = st.one_of(CLIENT, PEER, st.tuples(st.just("tick"), st.sampled_from([0.5, 3.0, 40.0])))


def works_from_every_node(node: SimNode, keys: list[bytes]) -> None:
    """Each node in turn serves a well-formed read-then-write of each key (named by the
    fuzzed client messages or peer requests), at the cluster's own R and W, and reads
    its write back alone."""
    for key in list(dict.fromkeys([b"k", *keys]))[:5]:
        for node_id in sorted(node.cluster.nodes):
            got = node.ask(node_id, {"op": "get", "key": key})
            assert got and got["ok"], (node_id, key[:40], got)
            value = b"after " + node_id.encode()
            put = node.ask(node_id, {"op": "put", "key": key, "value": value,
                                     "context": got["context"]})
            assert put and put["ok"], (node_id, key[:40], put)
            again = node.ask(node_id, {"op": "get", "key": key})
            assert again and again["ok"] and again["values"] == [value], \
                (node_id, key[:40], again)


def run(steps: list[tuple[str, Any]]) -> None:
    with logged_errors() as errors:
        node = SimNode(errors)  # a deep copy: the harness's recursion, not a stage's
        with stage_stack():
            fuzz(steps, node, works_from_every_node)


@SIM_FUZZ
@given(st.lists(CLIENT, min_size=1, max_size=8))
def test_client_frames_get_one_reply_each_in_a_cluster(steps):
    run(steps)


@SIM_FUZZ
@given(st.lists(PEER, min_size=1, max_size=6))
@example(DEEP_PEER[:1])  # what the fuzzers found, kept for each target
@example(BAD_CLOCK)
@example(UNISSUED_COUNTER)
def test_peer_frames_from_members_and_strangers_leave_no_node_behind(steps):
    run(steps)


@SIM_FUZZ
@given(st.lists(STEP, min_size=1, max_size=10))
def test_both_ports_interleaved_in_a_cluster(steps):
    run(steps)
