"""The gossip stage's handler (paper 4.8): membership, failure detection, admin, the
dispatch of answers to its duties by route, and the store its view is kept in.

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
from seda_dynamo.durable import FileStore
from seda_dynamo.duty import Component, Duty, Route
from seda_dynamo.membership import VIEW_FILE, Entry, MemoryStore, View
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
        for _at, node, ref in sorted((d for d in due if d[0] <= now), key=lambda d: d[0]):
            h.dispatch(["resp", node, ref, ["pong"]], now)
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


# Dispatch: answers reach their component by route ----------------------------------------
class Recorder(Component):
    """Stands in for a component: records what reaches it."""

    def __init__(self) -> None:
        super().__init__(lambda dest, event: None)
        self.got: list[tuple[str, Route]] = []

    def answer(self, now, node, route, payload) -> None:
        self.got.append(("answer", route))

    def local(self, now, route, answer) -> None:
        self.got.append(("local", route))

    def unreachable(self, now, peer, route) -> None:
        self.got.append(("unreachable", route))


ROUTES = {Duty.PING: ["ping", 0.5], Duty.VIEW: ["view"], Duty.HINT: ["hint", "n2", b"k", b"t"],
          Duty.TRANSFER: ["xfer", 3, 7], Duty.TREE: ["ae", 11], Duty.PULL: ["pull", b"k"],
          Duty.PUSH: ["push", 11], Duty.PUSHED: ["pushed"], Duty.CHECK: ["reap", 12],
          Duty.REAPED: ["reaped"], Duty.STRAY: ["stray", 5, b"k"], Duty.DEPART: ["depart", 6]}


def test_the_table_names_each_duty_s_component(tmp_path):
    h = handler(tmp_path)
    assert set(h.duties) == set(Duty) == set(ROUTES)
    owner = {Duty.PING: h.watcher, Duty.HINT: h.hints, Duty.TRANSFER: h.transfers,
             Duty.TREE: h.exchanges, Duty.PULL: h.exchanges, Duty.PUSH: h.exchanges,
             Duty.PUSHED: h.exchanges, Duty.CHECK: h.reaper, Duty.REAPED: h.reaper,
             Duty.STRAY: h.strays, Duty.DEPART: h.departure}
    assert all(h.duties[duty] is component for duty, component in owner.items())


def test_each_component_s_answer_reaches_only_it(tmp_path):
    h = handler(tmp_path)
    h.duties = {duty: Recorder() for duty in Duty}
    events = {Duty.TRANSFER: ["folded", ROUTES[Duty.TRANSFER], [], None, 0],
              Duty.TREE: ["tree_answer", ROUTES[Duty.TREE], None],
              Duty.PUSH: ["got", ROUTES[Duty.PUSH], [], None, "i"],
              Duty.CHECK: ["checked", ROUTES[Duty.CHECK], None, False],
              Duty.STRAY: ["folded", ROUTES[Duty.STRAY], [], None, 0],
              Duty.DEPART: ["folded", ROUTES[Duty.DEPART], [], None, 0]}
    for duty, ref in ROUTES.items():
        h.handle_events([["resp", "n2", ref, ["x"]], ["unreachable", "127.0.0.1:7102", ref]],
                        1.0)
        if duty in events:
            h.handle_events([events[duty]], 1.0)
        for other, recorder in h.duties.items():
            got = recorder.got
            recorder.got = []
            if other is not duty:
                assert got == [], (duty, other, got)
            else:
                kinds = ["answer", "unreachable"] + (["local"] if duty in events else [])
                assert got == [(k, Route.parse(ref)) for k in kinds], (duty, got)
    assert h.errors == 0 and h.unrouted == 0


def test_an_answer_for_no_route_of_ours_is_ignored_and_counted_not_raised(tmp_path):
    h = handler(tmp_path)
    h.start(0.0)
    h.take_outbox()
    before = (h.hints.delivered, dict(h.exchanges.stats), h.reaper.reaped, h.transfers.finished)
    bad = [["resp", "n2", ["nope", 1], ["updated", None]],
           ["resp", "n2", ["xfer", "3", 7], ["updated", None]],
           ["resp", "n2", "scan", ["view", {}]],
           ["unreachable", "127.0.0.1:7102", ["ae"]],
           ["unreachable", "127.0.0.1:7102", None],
           ["folded", ["hint", "n2", b"k", b"t"], [], None, 0],  # a route, not a fold's
           ["tree_answer", ["ae", "11"], None],
           ["got", 5, [], None, "i"],
           ["checked", [], None, False]]
    h.handle_events(bad, 1.0)
    assert h.errors == 0
    assert h.unrouted == 8 and h.gauges()["unrouted_answers"] == 8
    assert (h.hints.delivered, h.exchanges.stats, h.reaper.reaped,
            h.transfers.finished) == before
    # Only what hearing from n2 says (it is up): no duty sent anything.
    assert [d for d, _ in h.take_outbox() if d != "coordination"] == []


def test_a_hint_acknowledged_changes_hint_delivery_and_no_other_duty(tmp_path):
    h = handler(tmp_path)
    h.start(0.0)
    h.handle_events([["hints_found", "scan", [["n2", b"k", b"t", b"v"]]]], 0.0)
    h.take_outbox()
    other = (dict(h.exchanges.stats), dict(h.transfers.active), dict(h.reaper.queue))
    h.handle_events([["resp", "n2", ["hint", "n2", b"k", b"t"], ["updated", None]]], 0.1)
    assert h.hints.delivered == 1 and h.hints.in_flight == 0
    assert [(d, e) for d, e in h.take_outbox() if d != "coordination"] == [
        ("persistence", ["hint_done", [["n2", b"k", b"t"]]])]
    assert (h.exchanges.stats, h.transfers.active, h.reaper.queue) == other


# The view's store ---------------------------------------------------------------------------
def test_the_view_is_kept_in_the_store_it_is_given(tmp_path):
    """A simulator's node keeps its view in memory: nothing is written to the data
    directory, and a handler restarted on the same store resumes the cluster it left."""
    store = MemoryStore()
    cfg = NodeConfig(node_id="n2", client=entry(2).client, peer=entry(2).peer,
                     data_dir=str(tmp_path), partitions=Q, n=N, join=entry(1).peer)
    h = gossip.Handler(cfg, store=store)
    h.start(0.0)
    assert store.data is not None and list(tmp_path.iterdir()) == []
    h.dispatch(["resp", "n1", ["view"], ["view", three_node_view("n1").to_state()]], 0.3)
    again = gossip.Handler(cfg, store=store)
    assert again.view == h.view and again.view.ring is not None
    store.data = b"\xc1 not a view"
    fresh = gossip.Handler(cfg, store=store)
    assert fresh.view.ring is None, "an unreadable view is ignored"


def test_by_default_the_view_is_kept_in_the_data_directory(tmp_path):
    cfg = NodeConfig(node_id="t", engine="memory", data_dir=str(tmp_path))
    h = gossip.Handler(cfg)
    assert isinstance(h.store, FileStore)
    h.start(0.0)
    assert (tmp_path / VIEW_FILE).read_bytes() == h.view.encode()
    assert gossip.Handler(cfg).view == h.view


def test_what_a_stage_could_not_queue_reaches_the_duty_that_asked(tmp_path):
    """SEDA's full-queue event (``undeliverable``): a call network could not take is the
    asking duty's unreachable; a request a local stage could not take is its ``lost``;
    events no duty waits on are dropped without error."""

    class Lost(Recorder):
        def lost(self, now, route) -> None:
            self.got.append(("lost", route))

    h = handler(tmp_path)
    h.duties = {duty: Lost() for duty in Duty}
    for duty, ref in ROUTES.items():
        h.undeliverable("network", [["call", "127.0.0.1:7102", "gossip", ref, ["ping"]]], 1.0)
        h.undeliverable("persistence", [["check", "gossip", ref, b"k", ["n1"]]], 1.0)
        for other, recorder in h.duties.items():
            got, recorder.got = recorder.got, []
            want = [("unreachable", Route.parse(ref)), ("lost", Route.parse(ref))]
            assert got == (want if other is duty else []), (duty, other, got)
    h.undeliverable("persistence", [["hints", "gossip", "scan", ["n2"], 128],
                                    ["hint_done", [["n2", b"k", b"t"]]],
                                    ["reap", b"k", b"t"], ["get", "gossip", None, [b"k"]]],
                    1.0)
    h.undeliverable("coordination", [["ring", {}, [], 0], ["health", []]], 1.0)
    h.undeliverable("network", [["respond", ["127.0.0.1:7102", 5], ["view", {}]],
                                ["reply", 3, {"ok": True}], ["call"]], 1.0)
    assert h.errors == 0 and all(r.got == [] for r in h.duties.values())


def pinging_two_hundred(tmp_path):
    """Node n1 of a 200-member view, started: the handler, the members, its first pings."""
    h = handler(tmp_path)
    members = {f"n{i}": entry(i) for i in range(1, 201)}
    h.view = View("n1", Q, N, members, h.view.ring)
    h.start(0.0)
    h.tick(0.0)
    return h, members, [e for d, e in h.take_outbox() if d == "network" and e[4] == ["ping"]]


def answer_every_ping(h, members, pings) -> None:
    by_peer = {e.peer: node for node, e in members.items()}
    h.handle_events([["resp", by_peer[e[1]], e[3], ["pong"]] for e in pings], 0.01)


def test_a_round_of_ping_answers_reads_the_member_list_once_not_once_per_answer(
        tmp_path, monkeypatch):
    """At scale (seda_dynamo/sim/scale.py, issue 13): each ping answer asked the view for
    its peers, a dict of every member built anew, so a round of n answers cost O(n^2)
    on every node. The peers are the view's: computed once per view."""
    h, members, pings = pinging_two_hundred(tmp_path)
    assert len(pings) == 199
    scans = []
    real = View.peers
    monkeypatch.setattr(View, "peers", lambda self: scans.append(1) or real(self))
    answer_every_ping(h, members, pings)
    assert not h.down
    assert len(scans) <= 2, len(scans)


def test_a_round_of_answers_from_members_down_judges_each_once_not_all_each_time(
        tmp_path, monkeypatch):
    """At start every member is down until it answers; each answer from a member down
    judged every member again (``Watcher.detect``), so a node starting in a cluster of
    n ran n^2 phi evaluations (issue 13: most of a 500-node simulation's time). An
    answer re-judges the member that answered."""
    h, members, pings = pinging_two_hundred(tmp_path)
    assert len(h.down) == 199
    judged = []
    real = gossip.Watcher.detect
    monkeypatch.setattr(gossip.Watcher, "detect",
                        lambda self, now: judged.append(now) or real(self, now))
    answer_every_ping(h, members, pings)
    assert not h.down
    assert len(judged) <= 2, len(judged)
