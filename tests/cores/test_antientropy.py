"""Anti-entropy (paper 4.7, seda_dynamo.antientropy) under a fake clock: a ``Round``
between two trees held elsewhere, and the ``Exchanges`` duty that schedules rounds over
the partitions, one at a time, and repairs what differs both ways."""

from __future__ import annotations

import random

from duties import LOG, FakeCluster, Q, Sent, settled_view
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo.antientropy import (
    EXCHANGE_DEADLINE,
    QUESTION_DEADLINE,
    Exchanges,
    Round,
    new_tree,
)
from seda_dynamo.background import BackgroundShare
from seda_dynamo.duty import Duty, Route, Timer
from seda_dynamo.merkle import HashTree, Question, answer, object_hash

EVERY = 1.0


def tree(**keys: bytes) -> HashTree:
    t = new_tree()
    for key, value in keys.items():
        t.insert(key.encode(), object_hash(value))
    return t


def test_a_round_finds_the_keys_that_differ_between_two_trees_held_elsewhere():
    mine, theirs = tree(a=b"1", b=b"2"), tree(a=b"9", c=b"3")
    r = Round(0, "n2", 0.0)
    question = r.start()
    while question is not None:
        assert r.feed("local", answer(mine, question)) is None, "waits for both sides"
        question = r.feed("remote", answer(theirs, question))
    assert r.done and r.differences == {b"a": "different", b"b": "missing_remote",
                                        b"c": "missing_local"}


class Replicas:
    """This node's and every peer's trees (the same for every partition), answering the
    questions an ``Exchanges`` puts."""

    def __init__(self, mine: HashTree, theirs: HashTree, down: frozenset[str] = frozenset(),
                 every: float = EVERY) -> None:
        self.sent, self.cluster = Sent(), FakeCluster(settled_view(), down)
        self.mine, self.theirs = mine, theirs
        self.sweeps = 0
        self.x = Exchanges(self.sent, self.cluster, BackgroundShare(0.0), Timer(),
                           random.Random(3), first_id=100, n=3, partitions=Q, every=every,
                           tick_interval=0.1, swept=self._swept, log=LOG)

    def _swept(self) -> None:
        self.sweeps += 1

    def questions(self) -> tuple[list, list]:
        """(local tree questions, calls to other nodes), taken."""
        return self.sent.to("persistence"), self.sent.calls()

    def answer_all(self, now: float) -> None:
        """Answer the tree questions of the exchange in progress until it is over; what
        else was sent stays in ``sent``."""
        current = ["ae", self.x.exchange_id]
        while True:
            local, calls = self.questions()
            asks = [e for e in local if e[0] == "tree" and e[2] == current]
            trees = [c for c in calls if c[4][0] == "tree" and c[3] == current]
            self.sent.events += [("persistence", e) for e in local if e not in asks]
            self.sent.events += [("network", c) for c in calls if c not in trees]
            if not asks:
                return
            ((_, stage, ref, p, wire),), (call,) = asks, trees
            assert stage == "gossip" and call[4] == ["tree", p, wire]
            route, question = Route.parse(ref), Question.from_wire(wire)
            self.x.local(now, route, ["tree_answer", answer(self.mine, question)])
            self.x.answer(now, call[5], route, ["tree", answer(self.theirs, question)])


def test_an_exchange_repairs_what_differs_both_ways_by_merging():
    r = Replicas(tree(a=b"1", b=b"2"), tree(a=b"9", c=b"3"))
    r.x.tick(0.0)
    assert r.x.exchange is not None and r.x.exchange.peer in ("n2", "n3")
    peer = r.x.exchange.peer
    r.answer_all(0.1)
    assert r.x.stats["exchanges"] == 1 and r.x.exchange_id == 102, "the next one began"
    assert r.x.timer.at == 0.1 + EVERY * 3 / 100, "paced by the keys it repaired"
    r.sent.events = [(d, e) for d, e in r.sent.events if not (
        e[0] == "tree" or e[0] == "call" and e[4][0] == "tree")]
    pulls = r.sent.calls()
    assert sorted(c[4][1] for c in pulls) == [b"a", b"c"]  # what the peer has and we lack
    assert all(c[3] == ["pull", c[4][1]] and c[4][0] == "rget" and c[5] == peer
               for c in pulls)
    (get,) = r.sent.to("persistence")
    assert get[0] == "get" and get[2] == ["push", 101] and sorted(get[3]) == [b"a", b"b"]
    r.x.local(0.2, Route.parse(get[2]), ["got", [b"va", None], None, "inc"])
    (push,) = r.sent.calls()  # b is gone meanwhile: nothing to push for it
    assert push[3:] == [["pushed"], ["rput", get[3][0], b"va", None], peer, None]
    r.x.answer(0.3, peer, Route.parse(pulls[0][3]), ["got", b"theirs"])
    assert r.sent.take() == [("versioning", ["sync", "gossip", None, pulls[0][4][1],
                                             b"theirs", None])]
    assert (r.x.stats["keys_pushed"], r.x.stats["keys_pulled"]) == (1, 1)


def test_an_exchange_unanswered_past_its_deadline_or_whose_peer_is_gone_is_dropped():
    r = Replicas(tree(a=b"1"), tree(a=b"2"))
    r.x.tick(0.0)
    r.x.tick(EXCHANGE_DEADLINE)
    assert r.x.exchange is not None
    r.sent.take()
    r.x.tick(EXCHANGE_DEADLINE + 0.1)  # dropped, and the next partition's begins
    assert r.x.stats["aborted"] == 1 and r.x.exchange.started == EXCHANGE_DEADLINE + 0.1
    _, calls = r.questions()
    r.x.unreachable(10.2, calls[0][1], Route(Duty.TREE, (r.x.exchange_id - 1,)))
    assert r.x.exchange is not None, "an older exchange's call is no concern of this one"
    r.x.unreachable(10.2, calls[0][1], Route.parse(calls[0][3]))
    assert r.x.exchange is None and r.x.stats["aborted"] == 2


def test_a_sweep_covers_the_partitions_this_node_replicates_with_a_live_replica():
    r = Replicas(tree(a=b"1"), tree(a=b"1"))
    now, seen = 0.0, []
    while r.sweeps == 0 and now < 100:
        r.x.tick(now)
        while r.x.exchange is not None and r.sweeps == 0:
            seen.append(r.x.exchange.partition)
            r.answer_all(now)  # identical trees: straight on to the next partition
        now += 0.1
    ring = settled_view().ring
    mine = [p for p in range(Q) if "n1" in ring.preference_list(p, 3)]
    assert seen == mine and r.x.stats["exchanges"] == len(mine)
    assert r.x.stats["sweeps"] == 1
    nobody = Replicas(tree(), tree(), down=frozenset({"n2", "n3"}))
    nobody.x.tick(0.0)
    assert nobody.x.exchange is None and nobody.x.sweep_position == Q


ACTIONS = st.lists(st.tuples(st.sampled_from(["tick", "local", "remote", "stale",
                                              "unreachable", "garbage"]),
                             st.floats(0.0, 4.0)), max_size=80)


@settings(max_examples=100, deadline=None)
@given(ACTIONS)
def test_at_most_one_exchange_at_a_time_and_none_outlives_its_deadline(actions):
    """Whatever answers come, late, stale or malformed: every tree question belongs to
    the one exchange in progress, and after a tick no exchange is older than its
    deadline."""
    r = Replicas(tree(a=b"1", b=b"2"), tree(a=b"9", c=b"3"), every=0.5)
    now, asked = 0.0, []
    for action, dt in actions:
        now += dt
        if action == "tick":
            r.x.tick(now)
            assert r.x.exchange is None or now - r.x.exchange.started <= EXCHANGE_DEADLINE
        elif asked:
            route, question = asked[-1]
            if action == "local":
                r.x.local(now, route, ["tree_answer", answer(r.mine, question)])
            elif action == "remote":
                r.x.answer(now, "n2", route, ["tree", answer(r.theirs, question)])
            elif action == "stale":
                r.x.answer(now, "n2", Route(Duty.TREE, (route.ident[0] - 1,)),
                           ["tree", answer(r.theirs, question)])
            elif action == "unreachable":
                r.x.unreachable(now, "127.0.0.1:7102", route)
            else:
                r.x.local(now, route, ["tree_answer", {"no": "such"}])
        local, calls = r.questions()
        for event in local:
            if event[0] != "tree":
                continue
            assert r.x.exchange is not None and event[2] == ["ae", r.x.exchange_id]
            asked.append((Route.parse(event[2]), Question.from_wire(event[4])))
        assert all(c[3] == ["ae", r.x.exchange_id] for c in calls if c[4][0] == "tree")


def test_a_question_or_read_that_could_not_be_queued_ends_what_waited_for_it():
    """SEDA's full-queue event: a tree question persistence's queue refused aborts the
    exchange at once (not at its deadline); a push read it refused is forgotten."""
    r = Replicas(tree(a=b"1"), tree(a=b"2"))
    r.x.tick(0.0)
    (question,) = r.sent.to("persistence")
    r.x.lost(0.1, Route(Duty.TREE, (r.x.exchange_id - 1,)))
    assert r.x.exchange is not None, "an older exchange's question is no concern of this one"
    r.x.lost(0.1, Route.parse(question[2]))
    assert r.x.exchange is None and r.x.stats["aborted"] == 1
    r.x.pushes[7] = ("n2", [b"a"])
    r.x.lost(0.2, Route(Duty.PUSH, (7,)))
    assert r.x.pushes == {}


def test_pushes_whose_read_never_came_back_do_not_pile_up():
    """Persistence's answer to a push read can be dropped on the way back (gossip's own
    queue drops when full): each exchange's push waits at most until the next repairs."""
    r = Replicas(tree(a=b"1", b=b"2"), tree(a=b"9", c=b"3"))
    for step in range(5):
        r.x.timer.at = 0.0
        r.x.tick(float(step))
        r.answer_all(step + 0.1)
    assert len(r.x.pushes) <= 1


def test_a_tree_question_left_unanswered_is_asked_again_before_the_exchange_deadline():
    """A question or its answer lost on the way (a lossy link, a persistence stage that
    crashed) used to hold the node's sweep until EXCHANGE_DEADLINE; now the question is
    asked again, of both sides, QUESTION_DEADLINE after it was asked, and what comes late
    for the earlier ask is not taken for the later one."""
    r = Replicas(tree(a=b"1", b=b"2"), tree(a=b"9", c=b"3"))
    r.x.tick(0.0)
    (first,), (first_call,) = r.questions()
    r.x.local(0.1, Route.parse(first[2]), ["tree_answer",
                                           answer(r.mine, Question.from_wire(first[4]))])
    r.x.tick(QUESTION_DEADLINE)
    assert r.questions() == ([], []), "not yet"
    r.x.tick(QUESTION_DEADLINE + 0.1)
    (again,), (again_call,) = r.questions()
    assert again[4] == first[4] and again_call[4] == first_call[4], "the same question"
    assert again[2] != first[2], "under a ref of its own"
    late = Route.parse(first[2])
    r.x.answer(2.2, "n2", late, ["tree", answer(r.theirs, Question.from_wire(first[4]))])
    r.x.local(2.2, late, ["tree_answer", answer(r.mine, Question.from_wire(first[4]))])
    assert r.questions() == ([], []), "answers to the earlier ask are not taken"
    r.sent.events += [("persistence", again), ("network", again_call)]
    r.answer_all(2.3)
    assert r.x.stats["exchanges"] == 1 and r.x.stats["aborted"] == 0


def test_a_restarted_persistence_stage_is_asked_the_question_again_at_once():
    r = Replicas(tree(a=b"1"), tree(a=b"2"))
    r.x.tick(0.0)
    (first,), _ = r.questions()
    r.x.restarted(0.5, "versioning")
    assert r.questions() == ([], []), "no question of ours was lost there"
    r.x.restarted(0.5, "persistence")
    (again,), (call,) = r.questions()
    assert again[4] == first[4] and again[2] != first[2] and call[3] == again[2]
    r.sent.events += [("persistence", again), ("network", call)]
    r.answer_all(0.6)
    assert r.x.stats["exchanges"] == 1
