"""What a fuzzer needs of the simulator (``tests/fuzz/simnode.py``): any message on a
simulated node's client or peer port, handed to its real network stage as the port's
ROUTER would, and a copy of a whole formed cluster to start each case from.

Dynamo paper sections 4.1 (a node's client interface) and 4.8 (the port its peers
write to): input from anyone, whose consequences run through the simulated cluster.
"""

from __future__ import annotations

import copy
from typing import Any

from seda_dynamo.sim.cluster import CLIENT, Caller, Cluster


def client_frames(cluster: Cluster, node_id: str, frames: list[bytes],
                  caller: Caller | None = None) -> None:
    """Any multipart message on ``node_id``'s client port, as its ROUTER reads it:
    ``frames[0]`` is the connection's identity (not ``CLIENT``); the replies to it land
    in ``cluster.frame_replies[frames[0]]``. ``caller``: a loopback client by default."""
    assert frames and frames[0] != CLIENT, "the identity names the sender"
    _port(cluster, node_id, "client", frames, [caller or Caller()])


def peer_message(cluster: Cluster, node_id: str, message: bytes, identity: bytes) -> None:
    """Any message on ``node_id``'s peer port, as if sent by the DEALER ``identity``
    (another member's peer address, or an unknown one), not through the network."""
    _port(cluster, node_id, "peer", [identity, message], None)


def _port(cluster: Cluster, node_id: str, port: str, frames: list[bytes],
          callers: list[Caller] | None) -> None:
    node = cluster.nodes[node_id]
    handler = node.stages.get("network")
    if handler is None:
        return  # nobody listens: the message is lost, as on a closed port
    cluster.trace.record(cluster.now, node_id, port, b"\0".join(frames))
    handler.handle_frames(port, [frames], cluster.now, callers)
    cluster._flush(node, handler)


def copy_cluster(cluster: Cluster) -> Cluster:
    """An independent copy of the whole cluster as it is now (handlers, disks, clock,
    network, trace): it runs on as the original would, without forming a cluster
    again. The data directories are shared, so a copy is for runs that restart no node
    (the view file is written, and read only at a start)."""
    code: dict[int, Any] = {id(module): module for node in cluster.nodes.values()
                            for module in node.modules.values()}  # shared: not state
    return copy.deepcopy(cluster, code)
