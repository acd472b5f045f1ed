"""CURVE on real sockets: allowed clients and nodes get through, everyone else gets nothing.

docs/configuration.md, "Security": one shared server key per cluster, an own key per
node and per client, and allow-lists of public keys for the client and the peer port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from support import wait_for_ring, wait_until
from zmq.utils.monitor import recv_monitor_message

from seda_dynamo import causality
from seda_dynamo.client import BadRequest, Client, NoReply, Unavailable
from seda_dynamo.config import ConfigError, load
from seda_dynamo.security import (
    KEY_ENV,
    SERVER_KEY_ENV,
    ClientKeys,
    KeyFileError,
    generate,
)

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seda_dynamo.cli", *args], text=True,
                          capture_output=True, timeout=30)


@pytest.fixture
def keys(tmp_path) -> Path:
    """cluster (the shared server key), n1 n2 n3 (nodes), alice mallory (clients); the
    allow-lists hold n1 and n2 (not n3) and alice (not mallory)."""
    d = tmp_path / "keys"
    made = cli("keys", "generate", "cluster", "n1", "n2", "n3", "alice", "mallory",
               "--dir", str(d))
    assert made.returncode == 0, made.stderr
    assert "alice: public" in made.stdout
    assert (d / "n1.key_secret").stat().st_mode & 0o077 == 0, "secret keys are private"
    for listed, names in (("peers", ["n1", "n2"]), ("clients", ["alice"])):
        (d / listed).mkdir()
        for name in names:
            shutil.copy(d / f"{name}.key", d / listed)
    return d


def curve_flags(d: Path, node: str) -> tuple[str, ...]:
    return ("--curve-server-key", str(d / "cluster.key_secret"),
            "--curve-node-key", str(d / f"{node}.key_secret"),
            "--curve-client-keys", str(d / "clients"),
            "--curve-peer-keys", str(d / "peers"))


def client_keys(d: Path, who: str) -> ClientKeys:
    return ClientKeys.from_files(str(d / f"{who}.key_secret"), str(d / "cluster.key"))


def test_generate_refuses_to_overwrite_a_key_and_names_bad_files(tmp_path):
    generate(tmp_path, "a")
    with pytest.raises(KeyFileError, match="exists already"):
        generate(tmp_path, "a")
    with pytest.raises(KeyFileError, match="key name"):
        generate(tmp_path, "../evil")
    with pytest.raises(KeyFileError, match="client key"):
        ClientKeys.from_files(str(tmp_path / "missing.key_secret"), str(tmp_path / "a.key"))


def test_curve_settings_are_all_or_nothing_and_their_files_are_checked(keys):
    with pytest.raises(ConfigError, match="curve_node_key, curve_client_keys, "
                                          "curve_peer_keys: must be set too"):
        load(None, curve_server_key=str(keys / "cluster.key_secret"))
    good = dict(curve_server_key=str(keys / "cluster.key_secret"),
                curve_node_key=str(keys / "n1.key_secret"),
                curve_client_keys=str(keys / "clients"), curve_peer_keys=str(keys / "peers"))
    assert load(None, **good).curve_server_key
    with pytest.raises(ConfigError, match="^curve_server_key = .*holds only a public key"):
        load(None, **{**good, "curve_server_key": str(keys / "cluster.key")})
    with pytest.raises(ConfigError, match="^curve_peer_keys = .*not a directory"):
        load(None, **{**good, "curve_peer_keys": str(keys / "nowhere")})
    with pytest.raises(ConfigError, match="lacks this node's own public key"):
        load(None, **{**good, "curve_node_key": str(keys / "n3.key_secret")})


def test_only_allowed_clients_get_through(node_factory, keys):
    node = node_factory("n1", extra=curve_flags(keys, "n1"),
                        keys=client_keys(keys, "alice")).start()
    with node.client() as alice:
        alice.put("k", b"secret")
        assert alice.get("k").values == [b"secret"]
    # A key not on the list, or no CURVE at all: not a single reply comes back.
    for stranger in (Client(node.server, timeout=1.0, keys=client_keys(keys, "mallory")),
                     Client(node.server, timeout=1.0)):
        with stranger, pytest.raises(NoReply):
            stranger.get("k")
    # The command line takes the same keys, from flags or the environment.
    got = cli("get", "--server", node.server, "--curve-key", str(keys / "alice.key_secret"),
              "--curve-server-key", str(keys / "cluster.key"), "k")
    assert got.returncode == 0 and got.stdout.strip() == "secret", got.stderr
    refused = cli("get", "--server", node.server, "--timeout", "1",
                  "--curve-key", str(keys / "mallory.key_secret"),
                  "--curve-server-key", str(keys / "cluster.key"), "k")
    assert refused.returncode == 3 and "no reply" in refused.stderr, refused.stderr


def test_the_load_generator_takes_its_keys_from_the_environment(node_factory, keys):
    node = node_factory("n1", extra=curve_flags(keys, "n1"),
                        keys=client_keys(keys, "alice")).start()
    env = {**os.environ, KEY_ENV: str(keys / "alice.key_secret"),
           SERVER_KEY_ENV: str(keys / "cluster.key")}
    args = [sys.executable, "-m", "seda_dynamo.cli", "bench", "--server", node.server,
            "--ops", "300", "--concurrency", "4", "--keys", "50", "--json"]
    done = subprocess.run(args, env=env, text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    phases = json.loads(done.stdout)
    assert [p["errors"] for p in phases] == [{}, {}] and phases[0]["sent"] == 300
    got = subprocess.run([sys.executable, "-m", "seda_dynamo.cli", "get", "--server",
                          node.server, "k0"], env=env, text=True, capture_output=True,
                         timeout=30)
    # 300 blind puts over 50 keys: k0 holds its concurrent versions as siblings.
    assert got.returncode == 0 and got.stdout.count("\n") >= 1, got.stderr
    half = {k: v for k, v in env.items() if k != SERVER_KEY_ENV}
    refused = subprocess.run(args, env=half, text=True, capture_output=True, timeout=60)
    assert refused.returncode == 2 and "CURVE needs both" in refused.stderr


def test_a_raw_socket_without_the_key_is_dropped_at_the_handshake(node_factory, keys):
    node = node_factory("n1", extra=curve_flags(keys, "n1"),
                        keys=client_keys(keys, "alice")).start()
    ctx = zmq.Context.instance()
    monitor_events = []
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket()
    sock.connect(f"tcp://{node.server}")
    sock.send_multipart([b"", b"\x80"])  # would be a bad_request, were it let in
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if monitor.poll(100):
            monitor_events.append(recv_monitor_message(monitor)["event"])
        if sock.poll(0):
            pytest.fail("a stranger's frame was answered")
    sock.disable_monitor()
    monitor.close(linger=0)
    sock.close(linger=0)
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in monitor_events
    assert zmq.EVENT_CONNECTED in monitor_events, "it reached the port, and no further"


def test_allowed_nodes_form_a_cluster_and_an_unknown_node_cannot_join(node_factory, keys):
    def make(name: str, **kwargs):
        return node_factory(name, extra=curve_flags(keys, name),
                            keys=client_keys(keys, "alice"), **kwargs)

    n1 = make("n1").start()
    n2 = make("n2", join=n1).start()
    wait_for_ring([n1, n2], 2)
    with n1.client() as c:
        c.put("shared", b"v", w=2)  # both replicas stamped: the peer sockets carry it
    with n2.client() as c:
        assert c.get("shared", r=2).values == [b"v"]

    # n3 holds the cluster's server key but its own key is on no allow-list. Its own
    # allow-list names it (so it starts), yet n1 and n2 refuse every frame it sends.
    (keys / "peers3").mkdir()
    shutil.copy(keys / "n3.key", keys / "peers3")
    n3 = node_factory("n3", join=n1, extra=(
        "--curve-server-key", str(keys / "cluster.key_secret"),
        "--curve-node-key", str(keys / "n3.key_secret"),
        "--curve-client-keys", str(keys / "clients"),
        "--curve-peer-keys", str(keys / "peers3")), keys=client_keys(keys, "alice"))
    n3.start_joining()
    with n3.client(timeout=10.0) as c:
        wait_until(lambda: c.ping(), 30, "n3 to answer its own clients")
    time.sleep(4)  # many gossip rounds
    for member in (n1, n2):
        assert sorted(x["id"] for x in member.ring()["nodes"]) == ["n1", "n2"]
        network = member.stats()["network"]
        assert network["bad_peer_events"] == 0
    with n3.client(timeout=2.0) as c:
        try:
            learnt = sorted(x["id"] for x in c.ring()["nodes"])
        except Unavailable:  # still waiting to join: it has no ring at all
            learnt = []
    assert learnt in (["n3"], []), f"n3 learnt of {learnt}"
    with n1.client() as c:
        assert c.get("shared", r=2).values == [b"v"]

    # Nor can it write a replica straight to a member's peer port with its own key.
    forged = causality.encode(causality.update(causality.new(b"forged"), causality.EMPTY,
                                               "n3#x"))
    event = ["req", n3.peer, 1, ["rput", b"planted", forged, None]]
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    ClientKeys.from_files(str(keys / "n3.key_secret"), str(keys / "cluster.key")).apply(sock)
    sock.connect(f"tcp://{n1.peer}")
    for _ in range(10):
        try:  # refused at the handshake, the socket may have no connection to queue on
            sock.send(msgpack.packb([event], use_bin_type=True), zmq.NOBLOCK)
        except zmq.Again:
            pass
        time.sleep(0.1)
    sock.close(linger=0)
    with n1.client() as c:
        assert c.get("planted", r=2).values == []
    # The same frame from an allowed key is a replica write (so the refusal above is
    # the key's doing, not a malformed event).
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    ClientKeys.from_files(str(keys / "n2.key_secret"), str(keys / "cluster.key")).apply(sock)
    sock.connect(f"tcp://{n1.peer}")
    sock.send(msgpack.packb([event], use_bin_type=True))  # waits for its handshake
    with n1.client() as c:
        wait_until(lambda: c.get("planted", r=1).values == [b"forged"], 10,
                   "an allowed node's replica write")
    sock.close(linger=0)


def test_the_admin_key_list_needs_curve_and_holds_only_client_keys(keys):
    (keys / "admins").mkdir()
    shutil.copy(keys / "alice.key", keys / "admins")
    with pytest.raises(ConfigError, match="^curve_admin_keys = .*needs CURVE on"):
        load(None, curve_admin_keys=str(keys / "admins"))
    good = dict(curve_server_key=str(keys / "cluster.key_secret"),
                curve_node_key=str(keys / "n1.key_secret"),
                curve_client_keys=str(keys / "clients"), curve_peer_keys=str(keys / "peers"),
                curve_admin_keys=str(keys / "admins"))
    assert load(None, **good).curve_admin_keys
    shutil.copy(keys / "mallory.key", keys / "admins")  # on no client list: never connects
    with pytest.raises(ConfigError, match="^curve_admin_keys = .*not in curve_client_keys"):
        load(None, **good)


def test_with_curve_only_a_key_on_the_admin_list_may_join_or_leave(node_factory, keys):
    """Issue 11, item 7: admin join and leave change the cluster. Alice may connect but
    is not on curve_admin_keys: both are refused with a message saying why, while the
    read-only commands stay open to her; root, on the list, is obeyed."""
    generate(keys, "root")
    shutil.copy(keys / "root.key", keys / "clients")
    (keys / "admins").mkdir()
    shutil.copy(keys / "root.key", keys / "admins")
    node = node_factory("n1", extra=(*curve_flags(keys, "n1"), "--curve-admin-keys",
                                     str(keys / "admins")),
                        keys=client_keys(keys, "alice")).start()
    with node.client() as alice:
        for command, seed in (("join", "127.0.0.1:1"), ("leave", None)):
            with pytest.raises(BadRequest, match="curve_admin_keys"):
                alice.call("admin", command=command, seed=seed)
        assert alice.admin("status")["nodes"][0]["status"] == "valid"  # nothing changed
        assert alice.admin("transfers")["active"] == []
    with Client(node.server, timeout=5.0, keys=client_keys(keys, "root")) as root:
        assert root.admin("leave")["status"] in ("leaving", "left")
        assert root.admin("status")["nodes"][0]["status"] != "valid"
