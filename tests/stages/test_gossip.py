"""The gossip stage's handler (paper 4.8): membership, failure detection, admin.

Failure detection (paper 4.8) without processes: the gossip stage's handler fed recorded
series of ping answers under a simulated clock.

Issue 11, item 12: a busy node was declared down. Two causes, each with its test here:
a fixed 2 s silence was taken for a crash (a late answer under load), and a member this
node had just learned of counted as up until the next detection pass, so a client could
start while a node still had to hear from its peers.
"""

from __future__ import annotations

from collections.abc import Callable

from seda_dynamo.config import NodeConfig
from seda_dynamo.membership import Entry, View
from stages import gossip

Q, N = 8, 3


STEP = 0.1  # the gossip stage's tick_interval


def entry(i: int) -> Entry:
    return Entry(f"127.0.0.1:{7000 + i}", f"127.0.0.1:{7100 + i}")


def three_node_view(me: str) -> View:
    """n1's view once n2 and n3 joined (the ring plans their moves)."""
    view = View.fresh("n1", entry(1), Q, N, founder=True)
    for i in (2, 3):
        view = view.merge_state(View.fresh(f"n{i}", entry(i), Q, N, founder=False).to_state())
    return View.from_state(me, N, view.to_state())


def handler(tmp_path, me: str = "n1", **config) -> gossip.Handler:
    i = int(me[1:])
    cfg = NodeConfig(node_id=me, client=entry(i).client, peer=entry(i).peer,
                     data_dir=str(tmp_path), partitions=Q, n=N,
                     anti_entropy_every=0, **config)
    h = gossip.Handler(cfg)
    h.view = three_node_view(me)
    return h


Answer = Callable[[str, float], float | None]


def run(h: gossip.Handler, answer: Answer, until: float, start: float = 0.0,
        stalled: Callable[[float], bool] = lambda t: False) -> list[tuple[float, frozenset]]:
    """Tick ``h`` every STEP from ``start`` to ``until``, answering its pings per ``answer``;
    ``stalled(t)``: this stage itself does not run at t. Returns (time, down) after each tick."""
    by_peer = {e.peer: node for node, e in h.view.members.items()}
    due: list[tuple[float, str, list]] = []
    seen = []
    steps = round((until - start) / STEP)
    for k in range(steps + 1):
        now = start + k * STEP
        if stalled(now):
            continue
        for _at, node, tag in sorted((d for d in due if d[0] <= now), key=lambda d: d[0]):
            h.dispatch(["resp", node, tag, ["pong"]], now)
        due = [d for d in due if d[0] > now]
        h.tick(now)
        for dest, event in h.take_outbox():
            if dest == "network" and event[0] == "call" and event[4] == ["ping"]:
                node = by_peer[event[1]]
                at = answer(node, now)
                if at is not None:
                    due.append((at, node, event[3]))
        seen.append((now, h.down))
    return seen


def prompt(node: str, sent: float) -> float:
    return sent + 0.005


def test_a_steady_peer_with_one_answer_late_under_load_is_not_declared_down(tmp_path):
    """n2 answers every ping within 5 ms, except those sent during 3 s of load, which
    it answers all at once when the load passes: never down (a fixed 2 s was)."""
    h = handler(tmp_path)
    h.start(0.0)

    def answer(node: str, sent: float) -> float:
        if node == "n2" and 10.0 <= sent < 13.0:
            return 13.0
        return prompt(node, sent)

    seen = run(h, answer, 20.0)
    up_at = next(t for t, down in seen if not down)
    assert up_at < 1.0
    late = [(t, sorted(down)) for t, down in seen if t > up_at and down]
    assert not late, late
    assert h.gauges()["false_suspicions"] == 0


def test_a_stopped_peer_is_declared_down_within_a_bounded_time_and_stays_down(tmp_path):
    h = handler(tmp_path)
    h.start(0.0)

    def answer(node: str, sent: float) -> float | None:
        return None if node == "n3" and sent >= 10.0 else prompt(node, sent)

    seen = run(h, answer, 25.0)
    down_at = next(t for t, down in seen if t > 10.0 and "n3" in down)
    assert down_at <= 10.0 + 5.0, down_at
    assert all(down == {"n3"} for t, down in seen if t >= down_at)
    assert h.gauges()["suspicions"] == 1
    assert h.gauges()["false_suspicions"] == 0


def test_a_peer_suspected_that_then_answers_an_earlier_ping_is_a_false_suspicion(tmp_path):
    """n2 is stalled for 10 s (a long GC pause, SIGSTOP): declared down, then it answers
    the pings it was sent before: up again, and the suspicion is counted as wrong."""
    h = handler(tmp_path)
    h.start(0.0)

    def answer(node: str, sent: float) -> float:
        if node == "n2" and 10.0 <= sent < 20.0:
            return 20.0
        return prompt(node, sent)

    seen = run(h, answer, 25.0)
    assert any("n2" in down for t, down in seen if 10.0 < t < 20.0)
    assert all(not down for t, down in seen if t >= 20.2)
    gauges = h.gauges()
    assert gauges["suspicions"] == 1 and gauges["false_suspicions"] == 1, gauges


def test_a_stall_of_this_stage_itself_is_not_blamed_on_its_peers(tmp_path):
    """The gossip stage does not run for 5 s (its process was stopped): no peer is down
    when it comes back, however silent they seemed."""
    h = handler(tmp_path)
    h.start(0.0)
    seen = run(h, prompt, 20.0, stalled=lambda t: 10.0 <= t < 15.0)
    assert all(not down for t, down in seen if t > 2.0), [x for x in seen if x[1]]
    assert h.gauges()["suspicions"] == 0


def test_a_member_learned_by_gossip_is_down_until_it_has_answered(tmp_path):
    """A joiner adopts a ring naming n1 (whose view it just got) and n3 (never heard):
    what it tells coordination must say n3 is down, so the node does not look ready
    until it has heard from every peer."""
    cfg = NodeConfig(node_id="n2", client=entry(2).client, peer=entry(2).peer,
                     data_dir=str(tmp_path), partitions=Q, n=N, join=entry(1).peer)
    h = gossip.Handler(cfg)
    h.start(0.0)
    h.take_outbox()
    h.dispatch(["resp", "n1", ["view"], ["view", three_node_view("n1").to_state()]], 0.3)
    health = [event[1] for dest, event in h.take_outbox()
              if dest == "coordination" and event[0] == "health"]
    assert health and health[-1] == ["n3"], health
    assert h.gauges()["down"] == ["n3"]


def test_the_gossip_stage_takes_a_join_seed_only_from_the_address_core(tmp_path):
    """The protocol refuses a bad seed, and so does the gossip stage itself (an event
    can reach it from elsewhere): a seed it would gossip to every second must be one the
    runtime can connect to, and not this node itself. Every admin gets one reply."""
    cfg = NodeConfig(node_id="t", engine="memory", data_dir=str(tmp_path))
    h = gossip.Handler(cfg)
    h.start(0.0)
    h.take_outbox()
    for rid, seed in enumerate(["x:y", "", "ho st:7100", cfg.peer, 7100]):
        h.handle_events([["admin", rid, "join", seed]], 0.0)
        (dest, (kind, got, reply)), = [e for e in h.take_outbox() if e[0] == "network"]
        assert (kind, got, reply["ok"], reply["error"]) == ("reply", rid, False,
                                                            "bad_request"), seed
    assert h.seeds == [] and h.view.ring is not None  # still the founder of its own ring
    h.handle_events([["admin", 9, "join", "127.0.0.1:7999"]], 0.0)
    replies = [e for _, e in h.take_outbox() if e[0] == "reply"]
    assert replies[0][2]["status"] == "joining" and h.seeds == ["127.0.0.1:7999"]
