"""Fuzzing one real node through its two ports (``target.SocketNode``): Dynamo paper
section 4.1 (the client interface) and 4.8 (the peers). Nothing sent stops, restarts or
wedges a stage: every client message gets exactly one reply, no stage counts an error,
the same pids serve afterwards, the fuzzed keys are still readable and writable, and no
stage's memory grows beyond what the input could make it hold.

About 20 s of fuzzing; ``SEDA_SOAK=1`` (``make soak``) ten times as long.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from strategies import (
    ERROR_CODES,
    MAX_BODY,
    PEER_MESSAGE,
    UNKNOWN,
    client_message,
    expected_id,
    keys_of,
    peer_keys_of,
)
from support import wait_until
from target import SocketNode

pytestmark = pytest.mark.integration

SOAK = os.environ.get("SEDA_SOAK", "") not in ("", "0")
BUDGET_S = float(os.environ.get("SEDA_FUZZ_SECONDS") or (200.0 if SOAK else 20.0))
#: Memory a stage may gain over the fuzz (RSS). The fuzz keeps at most
#: ``SocketNode.WINDOW`` (32) client messages unanswered and sends at most
#: ``SocketNode.PEER_WINDOW`` (8) peer messages before the node has read the ones
#: before them, so a stage holds at most that many of each at once, each up to three
#: times (its bytes, the events decoded from it, the events it encodes for the next
#: stage); plus 64 MiB for what glibc keeps of freed blocks until the runtime's
#: ``malloc_trim`` (every 30 s; ``MALLOC_ARENA_MAX=2``) and Python's pools. A peer
#: message may be as large as a record (64 MiB, docs/peer-protocol.md), but the fuzz's
#: are at most 5 events (about 5.5 MiB; its batches of 65 are of small events): the
#: bound is about 300 MiB, one a leak outgrows in the soak. Persistence runs bdb, whose
#: cache is bounded by its own setting: the values written land on disk. Measured
#: growth per stage: up to 43 MiB in 20 s; up to 89 MiB in the 200 s soak (persistence;
#: that run had 65 MiB peer messages among its input).
def rss_bound(largest_client: int, largest_peer: int) -> int:
    return 64 * 1024 * 1024 + 3 * (SocketNode.WINDOW * largest_client
                                   + SocketNode.PEER_WINDOW * largest_peer)

STEP = st.one_of(st.tuples(st.just("client"), client_message(changes=False)),
                 st.tuples(st.just("peer"), PEER_MESSAGE))


def rss(pids: dict[str, int]) -> dict[str, int]:
    return {name: psutil.Process(pid).memory_info().rss for name, pid in pids.items()}


def oversize(node) -> None:
    """A client message and a peer message over the ports' sizes, each on a socket of
    its own: ZeroMQ drops those connections without a reply (docs/protocol.md)."""
    ctx = zmq.Context()
    try:
        for address, size in ((node.server, 2 * MAX_BODY + 1),
                              (node.peer, 64 * 1024 * 1024 + 2 * 64 * 1024 + 1)):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"tcp://{address}")
            sock.send_multipart([b"", b"\x00" * size])
            sock.poll(500)
            sock.close(0)
    finally:
        ctx.term()


def fuzz(target: SocketNode, budget: float) -> tuple[int, Counter, list[bytes]]:
    """Fuzzed steps until ``budget`` seconds are spent; the ids the replies must carry
    and the keys named."""
    ids: Counter = Counter()
    keys: list[bytes] = []
    stop = time.monotonic() + budget
    rounds = 0

    def step(steps):
        for kind, what in steps:
            if kind == "client":
                target.client(what)
                want = expected_id(what)
                if want is not None and want is not UNKNOWN:
                    ids[want if not isinstance(want, bool) else int(want)] += 1
                keys.extend(keys_of(what))
            else:
                target.peer(what)
                keys.extend(peer_keys_of(what))

    while time.monotonic() < stop:
        rounds += 1
        run = settings(max_examples=50, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck))(
            given(st.lists(STEP, min_size=1, max_size=6))(step))
        seed(rounds)(run)()
        target.drain(0)
    return rounds, ids, keys


@pytest.mark.timeout(BUDGET_S + 120)  # the budget, the node's start and the checks
def test_fuzzed_frames_leave_a_real_node_whole(node_factory):
    node = node_factory(durability="nosync").start()
    pids = node.stage_pids()
    supervisor = node.proc.pid
    before = rss(pids)
    target = SocketNode(node.server, node.peer)
    started = time.monotonic()
    try:
        rounds, ids, keys = fuzz(target, BUDGET_S)
        oversize(node)
        replies = target.settle()
        sent, peer_sent = target.sent, target.peer_sent
        largest = (target.largest_client, target.largest_peer)
    finally:
        target.close()
    spent = time.monotonic() - started
    print(f"fuzz: {sent} client and {peer_sent} peer messages in {rounds} rounds of 50 "
          f"cases, {spent:.1f} s")
    assert len(replies) == sent, f"{sent} client messages, {len(replies)} replies"
    got = Counter(r["id"] if not isinstance(r.get("id"), bool) else int(r["id"])
                  for r in replies if "id" in r)
    assert not ids - got, f"ids never answered: {list((ids - got).items())[:5]}"
    for reply in replies:
        assert isinstance(reply.get("ok"), bool), reply
        if not reply["ok"]:
            assert reply["error"] in ERROR_CODES and reply["error"] != "internal", reply
            assert isinstance(reply["message"], str) and reply["message"], reply
    # The same processes serve: nothing died or was restarted.
    assert psutil.pid_exists(supervisor)
    assert node.stage_pids() == pids, "a stage died or was restarted"
    # Every stage's next report (once a second) counts no error.
    wait_until(lambda: all("errors" in s for s in node.stats().values()), 10, "reports")
    time.sleep(1.5)
    stats = node.stats()
    print("in flight:", {name: {k: v for k, v in s.items() if "in_flight" in k}
                         for name, s in stats.items()})
    errors = {name: s.get("errors") for name, s in stats.items()}
    assert errors == dict.fromkeys(errors, 0), errors
    with node.client() as c:
        for key in [b"k", *keys][:20]:
            old = c.get(key)
            c.put(key, b"after", context=old.context)
            assert c.get(key).values == [b"after"], key[:40]
    after = rss(pids)
    print("rss growth MiB:", {n: round((after[n] - before[n]) / 2**20, 1) for n in after})
    print("largest messages MiB (client, peer):", [round(n / 2**20, 1) for n in largest],
          "bound MiB:", rss_bound(*largest) // 2**20)
    assert all(after[n] - before[n] <= rss_bound(*largest) for n in after), (before, after)
