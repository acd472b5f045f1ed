"""Fault injection against real clusters: process kills, stage kills, pauses, partitions.

Every test ends with the set-full check of ``checker``: after the faults are healed,
each replica on its own (the other nodes paused) holds every acknowledged write and no
acknowledged delete. The time from "faults stopped" to "converged" is printed and
attached to the test (``record_property``, visible in ``--junitxml``).

``SEDA_SOAK=1`` (``make soak``) runs the same tests with longer schedules and more keys;
``SEDA_FAULT_SEED=N`` replays a nemesis schedule (the seed is printed by every run).
"""

from __future__ import annotations

import os
import random
import shutil
import time

import pytest
from checker import (
    Expect,
    History,
    Worker,
    WriteLoad,
    check_alone,
    check_cluster,
    converge,
    judge,
)
from nemesis import SOAK, Nemesis, Schedule, kill9
from support import retry, wait_for_ring, wait_for_status, wait_until

from seda_dynamo import contexts
from seda_dynamo.ring import partition_of

pytestmark = pytest.mark.integration

#: Seconds between anti-entropy exchanges in these tests: convergence is quick.
AE = "0.5"
SEED = int(os.environ.get("SEDA_FAULT_SEED") or (random.randrange(1 << 30) if SOAK else 679))


def soak(normal, longer):
    return longer if SOAK else normal


def report(record_property, name: str, value) -> None:
    print(f"{name}: {value}")
    record_property(name, value)


def settle(nodes, history: History, stopped: float, seconds: float, record_property,
           prefix: str = "", owns=None) -> float:
    """The set-full check: converge, report the time, then read once more through the
    cluster (R=2) to see what a client sees."""
    result = converge(nodes, history, stopped, seconds, owns=owns)
    report(record_property, f"{prefix}history", history.summary())
    assert result.seconds is not None, result.describe()
    report(record_property, f"{prefix}convergence_seconds", round(result.seconds, 2))
    bad = check_cluster(nodes[-1], history)
    assert not bad, "; ".join(map(str, bad[:20]))
    return result.seconds


# (a) ------------------------------------------------------------------------------------
@pytest.mark.timeout(soak(170, 900))
def test_set_full_under_a_mixed_nemesis(any_cluster_factory, maybe_netlab, record_property):
    """3 nodes, N=3 R=2 W=2, two writers (puts of unique keys, blind writes of shared
    keys, deletes with the put's context, blind re-creations of deleted keys, tombstones
    reaped a second after their delete) while nodes are killed and restarted, stages
    killed, nodes paused and (with namespaces) cut off from the others; then every
    replica alone holds every acknowledged write and no acknowledged delete."""
    nodes = any_cluster_factory(3, extra=("--anti-entropy-every", AE,
                                          "--tombstone-reap-after", "1"))
    faults = ("kill_node", "kill_stage", "pause")
    if maybe_netlab is not None:
        faults += ("partition",)
    report(record_property, "seed", SEED)
    report(record_property, "faults", " ".join(faults))
    history = History()
    workers = [Worker("a", nodes), Worker("b", nodes)]
    cycles = soak(1, 3)
    for cycle in range(cycles):
        load = WriteLoad(history, workers, SEED + cycle, w=2, tag=f"c{cycle}-",
                         recreate_ratio=0.1, recreate_after=3.0)
        seconds = soak(20.0, 100.0)
        nemesis = Nemesis(nodes, SEED + cycle, Schedule(
            faults, rounds=soak(12, 60), seconds=seconds), lab=maybe_netlab)
        nemesis.start()
        try:  # the load ends during the nemesis's last fault, which stop() heals
            load.run(ops=int(20 * (seconds + 30)), seconds=seconds + 30, rate=20.0,
                     stop=nemesis.done)
        finally:
            stopped = time.monotonic()
            events = nemesis.stop()
            report(record_property, f"c{cycle}_nemesis", nemesis.describe())
        report(record_property, f"c{cycle}_heal_seconds", round(time.monotonic() - stopped, 2))
        assert len(events) >= 3, "the nemesis acted"
        assert history.outcomes["put ok"] >= 100, history.summary()
        assert history.outcomes["delete ok"] >= 10, history.summary()
        wait_for_ring(nodes, 3, seconds=60)
        settle(nodes, history, stopped, soak(75.0, 180.0), record_property, f"c{cycle}_")
        report(record_property, f"c{cycle}_tombstones_reaped",
               sum(n.stats()["gossip"].get("tombstones_reaped", 0) for n in nodes))


# (b) ------------------------------------------------------------------------------------
def actors(context: bytes) -> dict[str, int]:
    """The version vector a context stands for: actor (node#incarnation) -> counter."""
    return contexts.decode_context(context)


@pytest.mark.timeout(soak(120, 300))
def test_a_wiped_replica_rejoins_without_reissuing_versions(cluster_factory,
                                                            record_property):
    """Riak kv679: a replica loses its disk and comes back under the same node id. Were
    it to restart its counters, its next dot would equal one the other replicas have
    already seen (and discarded as superseded), and they would silently drop the new
    acknowledged value. Anti-entropy is off so the wiped node learns nothing behind the
    test's back. (Soak: each node is wiped in turn.)"""
    nodes = cluster_factory(3, extra=("--anti-entropy-every", "0"))

    def wipe(turn: int) -> None:
        x, y, z = nodes[turn:] + nodes[:turn]
        history = History()  # this turn's keys (the wiped node lacks earlier turns')
        acked = history.acked_put
        k, blind, j = f"k{turn}", f"blind{turn}", f"j{turn}"
        with x.client() as cx:
            for key in (k, blind, j):
                ctx = None
                for i in range(3):  # x stamps all three: its counter for the key is 3
                    value = b"%s-old-%d" % (key.encode(), i)
                    ctx = retry(lambda key=key, value=value, ctx=ctx:
                                cx.put(key, value, ctx, w=3))
                    acked(key, value, supersedes=True)
            old_actors = set(actors(ctx))
        kill9(x)
        shutil.rmtree(x.data_dir)  # the disk is gone: data, incarnation, cluster.state
        x.join = y  # same id and addresses; it must rejoin through a member
        x.start()
        wait_for_ring(nodes, 3)

        # 1. A blind put through x of a key x no longer holds at all: a sibling of the
        #    old value, on every replica.
        with x.client() as cx:
            new_ctx = retry(lambda: cx.put(blind, b"blind-new"))
        acked(blind, b"blind-new")
        mine = f"{x.node_id}#"
        assert {a for a in actors(new_ctx) if a.startswith(mine)} - old_actors, \
            f"{x.node_id} stamped with an actor it used before its wipe: {actors(new_ctx)}"
        report(record_property, f"actors_{x.node_id}", f"before wipe {sorted(old_actors)}, "
               f"after {sorted(actors(new_ctx))}")
        with y.client() as cy:
            assert sorted(retry(lambda: cy.get(blind, r=3)).values) == \
                [b"blind-new", b"%s-old-2" % blind.encode()]

        # 2. y writes j (superseding the old value) while x is paused and misses it;
        #    then a blind put through x: a sibling, not a silent replacement.
        x.pause()
        try:
            with y.client() as cy:
                _, ctx = cy.get(j, r=2)
                cy.put(j, b"j-newer-via-y", ctx, w=2)
                acked(j, b"j-newer-via-y", supersedes=True)
        finally:
            x.resume()
        with x.client() as cx:
            retry(lambda: cx.put(j, b"j-blind-via-x"))
        acked(j, b"j-blind-via-x")
        with z.client() as cz:
            assert sorted(retry(lambda: cz.get(j, r=3)).values) == \
                [b"j-blind-via-x", b"j-newer-via-y"]

        # 3. k through x with the context of a get: the new value alone, everywhere.
        with x.client() as cx:
            values, ctx = retry(lambda: cx.get(k, r=2))
            assert values == [b"%s-old-2" % k.encode()]
            cx.put(k, b"k-new", ctx)
        acked(k, b"k-new", supersedes=True)
        for node in nodes:
            with node.client() as c:
                assert retry(lambda c=c: c.get(k, r=3)).values == [b"k-new"], node.node_id

        settle(nodes, history, time.monotonic(), 30.0, record_property, f"{x.node_id}_")
        for node in nodes:  # the superseded versions are gone, not siblings
            with node.client() as c:
                assert c.get(k, r=1).values == [b"k-new"]

    for turn in range(soak(1, 3)):
        wipe(turn)


# (b') -----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_key_recreated_after_its_tombstone_was_reaped_is_not_covered_by_old_contexts(
        cluster_factory, record_property):
    """Protocol semantics 2 and 3: a put supersedes only what its context's get returned,
    and a blind write is concurrent with any other write. Here "cart" is put, read by a
    client, deleted; its tombstone is reaped; a new value is put blind; then the client
    that read the old value writes with its (old) context: both new values must stay, as
    siblings. Likewise a delete retried with its old context must not delete the key's
    new value."""
    nodes = cluster_factory(3, extra=("--anti-entropy-every", AE,
                                      "--tombstone-reap-after", "0.5"))
    a, b, _ = nodes
    history = History()
    with a.client() as ca, b.client() as cb:
        ca.put("cart", b"v1", w=3)
        history.acked_put("cart", b"v1")
        _, stale = cb.get("cart", r=3)  # a reader, who will write much later
        retried = ca.put("retry", b"r1", w=3)
        history.acked_put("retry", b"r1")
        for key, ctx in (("cart", stale), ("retry", retried)):
            ca.delete(key, ctx, w=3)
            history.acked_delete(key)
        started = time.monotonic()
        for key in ("cart", "retry"):  # no replica holds anything: context nil
            wait_until(lambda key=key: ca.get(key, r=3).context is None, 30,
                       f"the tombstone of {key} to be reaped on every replica")
        report(record_property, "reaped_after_seconds", round(time.monotonic() - started, 2))

        ctx = ca.put("cart", b"v2-after-the-delete")
        history.acked_put("cart", b"v2-after-the-delete")
        report(record_property, "dots", f"v1 {actors(stale)}, v2 {actors(ctx)}")
        cb.put("cart", b"v3-from-the-old-read", stale)
        history.acked_put("cart", b"v3-from-the-old-read")
        ca.put("retry", b"r2-after-the-delete")
        history.acked_put("retry", b"r2-after-the-delete")
        cb.delete("retry", retried)  # the client's retry of its (acknowledged) delete
        history.delete_attempt("retry", {b"r1"})
        history.delete_done("retry", {b"r1"}, None)
        time.sleep(0.5)
        assert sorted(ca.get("cart", r=3).values) == [b"v2-after-the-delete",
                                                      b"v3-from-the-old-read"]
        assert ca.get("retry", r=3).values == [b"r2-after-the-delete"]
    settle(nodes, history, time.monotonic(), 15.0, record_property)


# (c) ------------------------------------------------------------------------------------
@pytest.mark.timeout(soak(150, 400))
def test_a_node_restarted_mid_hint_delivery_still_gets_its_hints(cluster_factory,
                                                                 record_property):
    """5 nodes, two down; writes go to fallbacks with hints. The two come back and one
    is SIGKILLed again the moment hints start arriving, then restarted: once every hint
    is delivered, each of the two holds, on its own, every key it owns. Anti-entropy is
    off: only hinted handoff can bring the keys home."""
    nodes = cluster_factory(5, extra=("--anti-entropy-every", "0"))
    up, down = nodes[:3], nodes[3:]
    victim = down[0]
    for node in down:
        kill9(node)
    for node in down:
        for observer in up:
            wait_for_status(observer, node.node_id, "down")
    history = History()
    keys = soak(400, 2000)
    with up[0].client() as c0, up[1].client() as c1, up[2].client() as c2:
        for i in range(keys):
            key, value = f"h{i}", b"v%d" % i
            history.put_attempt(key, value)
            try:
                (c0, c1, c2)[i % 3].put(key, value, w=2, timeout=2.0)
            except Exception as exc:  # noqa: BLE001 - not acknowledged: not expected
                history.put_done(key, value, getattr(exc, "code", "error"))
            else:
                history.put_done(key, value, None)
    ring = up[0].ring()

    def owns(node, key: str) -> bool:
        return node.node_id in ring["owners"][partition_of(key.encode(), ring["partitions"])]

    acked = [k for k, e in history.expectations().items() if e.must]
    assert len(acked) >= keys * 0.95, history.summary()

    def hints_held() -> int:
        return sum(n.stats()["persistence"]["hints"] for n in up)

    expected = sum(owns(d, k) for d in down for k in acked)
    wait_until(lambda: hints_held() == expected, 20, f"{expected} hints on the fallbacks")
    report(record_property, "hints", expected)

    for node in down:
        node.start_joining()
    # Peer events reach the victim's network stage live: a burst of them is the first
    # batch of hints (gossip and pings come a few per second).
    seen = [0]

    def burst() -> bool:
        with victim.client(timeout=0.3) as c:
            events = c.stats()["network"].get("peer_events", 0)
        jumped = events - seen[0] >= 16 and seen[0] > 0
        seen[0] = events
        return jumped

    try:
        wait_until(burst, 20, "hints to start arriving at the victim", interval=0.01)
        trigger = "burst"
    except AssertionError:
        trigger = "timeout"
    kill9(victim)
    report(record_property, "kill_trigger", trigger)
    stopped = time.monotonic()
    for node in down[1:]:
        node.wait_ready()
    time.sleep(1.2)  # persistence reports its counters once a second
    report(record_property, "hints_left_after_kill", f"{hints_held()} of {expected}")
    victim.start()
    wait_for_ring(nodes, 5)
    wait_until(lambda: hints_held() == 0, 60, "every hint to be delivered", interval=0.5)
    report(record_property, "hints_delivered_seconds", round(time.monotonic() - stopped, 2))
    for node in down:
        others = [n for n in nodes if n is not node]
        anomalies = check_alone(node, others, history, owns)
        assert not anomalies, "; ".join(map(str, anomalies[:20]))


# (d) ------------------------------------------------------------------------------------
@pytest.mark.timeout(soak(150, 600))
def test_both_sides_of_a_partition_take_w1_writes_and_converge_when_healed(
        ns_cluster_factory, netlab, record_property):
    """One node cut off from the two others (blackhole routes, both ways) while a client
    writes through each side with W=1 (sloppy quorum: each side acknowledges alone),
    including blind writes of the same keys on both sides and deletes of keys written
    before the cut. Once healed, every replica alone holds every acknowledged value (the
    two sides' writes of a key as siblings) and no acknowledged delete."""
    nodes = ns_cluster_factory(3, extra=("--anti-entropy-every", AE))
    rng = random.Random(SEED)
    report(record_property, "seed", SEED)
    history = History()
    for round_ in range(soak(1, 3)):
        lone = rng.choice(nodes)
        rest = [n for n in nodes if n is not lone]
        minority, majority = Worker(f"min{round_}", [lone]), Worker(f"maj{round_}", rest)
        before = WriteLoad(history, [minority, majority], SEED, w=2, delete_ratio=0.0,
                           shared_ratio=0.0, tag=f"r{round_}-pre-")
        before.run(ops=soak(60, 300), seconds=15.0)
        netlab.cut([lone], rest)
        try:
            wait_for_status(lone, rest[0].node_id, "down")
            wait_for_status(rest[0], lone.node_id, "down")
            during = WriteLoad(history, [minority, majority], SEED, w=1, delete_ratio=0.25,
                               shared_ratio=0.25, tag=f"r{round_}-cut-")
            during.run(ops=soak(150, 600), seconds=soak(10.0, 30.0))
        finally:
            stopped = time.monotonic()
            netlab.heal()
        outcomes = history.outcomes
        assert outcomes["put ok"] >= 200 and outcomes["delete ok"] >= 20, history.summary()
        wait_for_ring(nodes, 3, seconds=30)
        settle(nodes, history, stopped, soak(60.0, 120.0), record_property, f"r{round_}_")


# The checker itself --------------------------------------------------------------------
def test_the_checker_judges_lost_resurrected_and_phantom_values():
    e = Expect(must={b"a"}, must_not={b"d"}, possible={b"a", b"b", b"d"})
    assert judge("n1", "k", [b"a", b"b"], e) is None
    assert judge("n1", "k", [b"b"], e).kind == "lost"
    assert judge("n1", "k", [b"a", b"d"], e).kind == "resurrected"
    assert judge("n1", "k", [b"a", b"x"], e).kind == "phantom"
    h = History()
    h.acked_put("k", b"1")
    h.acked_put("k", b"2", supersedes=True)
    h.put_attempt("k", b"3")
    h.put_done("k", b"3", "timeout")
    assert h.expectations()["k"] == Expect({b"2"}, {b"1"}, {b"1", b"2", b"3"})
    h.acked_delete("k")
    assert h.expectations()["k"] == Expect(set(), {b"1", b"2"}, {b"1", b"2", b"3"})


@pytest.mark.timeout(120)
def test_the_checker_sees_what_a_replica_missed(cluster_factory):
    """A checker that cannot fail proves nothing: a replica that was down during a put
    and a delete (anti-entropy off, no reads) is reported, alone, as having lost the put
    and resurrected the delete, while the cluster (R=2) and the other replicas are fine."""
    a, b, c = nodes = cluster_factory(3, extra=("--anti-entropy-every", "0"))
    history = History()
    with a.client() as ca:
        ctx = ca.put("doomed", b"d", w=3)
        history.acked_put("doomed", b"d")
        kill9(c)
        wait_for_status(a, "n3", "down")
        ca.delete("doomed", ctx)
        history.acked_delete("doomed")
        ca.put("missed", b"m")
        history.acked_put("missed", b"m")
    c.start()
    wait_for_ring(nodes, 3)
    assert check_alone(a, [b, c], history) == []
    found = sorted((x.kind, x.key) for x in check_alone(c, [a, b], history))
    assert found == [("lost", "missed"), ("resurrected", "doomed")]
    result = converge(nodes, history, time.monotonic(), 3.0)
    assert result.seconds is None and {x.node for x in result.anomalies} == {"n3"}
