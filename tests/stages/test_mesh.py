"""Several nodes' stage handlers in one process (``mesh.py``): reads across nodes, hinted
handoff (paper 4.6), a node joining and the partitions it takes over (4.8, 4.9), and
acknowledged writes surviving a node cut off and back, under a simulated clock and
seeded delivery orders. No sockets, no processes.
"""

from __future__ import annotations

from mesh import Mesh

from seda_dynamo.ring import partition_of

SETTLE = 30.0  # simulated seconds a cluster is given to converge (it takes a few)


def cluster(tmp_path, nodes: int, seed: int = 0) -> Mesh:
    mesh = Mesh(tmp_path, nodes=nodes, seed=seed)
    assert mesh.run_until(mesh.converged, SETTLE)
    return mesh


def replicas(mesh: Mesh, key: bytes) -> list[str]:
    ring = mesh.ring("n1")
    return ring.preference_list(partition_of(key, ring.partitions), mesh.config["n"])


def test_a_put_on_one_node_is_read_from_another(tmp_path):
    mesh = cluster(tmp_path, 3)
    assert mesh.put("n1", b"k", b"v")["ok"]
    for node in ("n2", "n3"):
        reply = mesh.get(node, b"k")
        assert reply["ok"] and reply["values"] == [b"v"], reply
    assert all(node.values(b"k") == [b"v"] for node in mesh.nodes.values())  # N=3 of 3


def test_a_seed_is_a_run(tmp_path):
    """The same seed, the same script: the same deliveries, replies and stored bytes."""
    def script(path) -> tuple:
        mesh = cluster(path, 4, seed=7)
        mesh.cut("n2")
        for i in range(5):
            mesh.request(f"n{1 + i % 4}", {"op": "put", "key": b"k%d" % i, "value": b"v"})
            mesh.step()
        mesh.run(3.0)
        mesh.heal()
        mesh.run(5.0)
        stored = {n: list(node.engine.fold(0, 1 << 128)) for n, node in mesh.nodes.items()}
        return mesh.delivered, mesh.replies, stored

    first = script(tmp_path / "a")
    assert first[1] and first == script(tmp_path / "b")
