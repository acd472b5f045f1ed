"""The gossip stage: membership, and the dispatcher of the node's background duties.

Dynamo paper section 4.8 (ring membership by gossip, external discovery through seeds):
about once a second this node swaps its view (``membership.View``) with a random member
(a seed while it has no ring) and tells coordination the ring and the members down when
they change (and every ``ANNOUNCE_EVERY`` s). The view is kept in a ``membership.ViewStore``
(``DATA_DIR/cluster.state``) so a restarted node rejoins its cluster. Operators' ``join``,
``leave``, ``status`` and ``transfers`` change the view, so they are answered here (what
they compute is the view's own, pure: ``View.gossip_partners``, ``announcement``,
``join_refusal``). The other duties are IO-free components (``seda_dynamo/duty.py``):

- ``failure.Watcher`` (4.8): pings, the accrual failure detector, the members down;
- ``hintedhandoff.Delivery`` (4.6): hints handed to their owners once they are up;
- ``transfer.Transfers`` (4.9): the partitions this node hands over;
- ``antientropy.Exchanges`` (4.7): Merkle exchanges, one at a time, and their repairs;
- ``reaper.Reaper`` (4.4): tombstones reaped once every replica's check agreed;
- ``strays.Strays`` (4.6, 4.9): keys held outside their preference list, handed home.

Each answer, from a node or a local stage, goes by the ``duty.Route`` its ``ref`` names to
the component ``duties`` holds for it; an answer naming no route is counted and ignored
(``unrouted_answers``). Background work uses what the foreground leaves (paper 6.5).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seda_dynamo import ids
from seda_dynamo.antientropy import Exchanges
from seda_dynamo.background import BackgroundShare
from seda_dynamo.brief import brief
from seda_dynamo.config import NodeConfig
from seda_dynamo.durable import FileStore
from seda_dynamo.duty import Component, Duty, Route, Timer
from seda_dynamo.failure import PING_EVERY, Settings, Watcher
from seda_dynamo.hintedhandoff import Delivery
from seda_dynamo.membership import VIEW_FILE, Entry, View, ViewStore
from seda_dynamo.messages import Call, Health, Reply, Respond, RingState
from seda_dynamo.reaper import Reaper
from seda_dynamo.stage import Stage
from seda_dynamo.strays import Strays
from seda_dynamo.transfer import Transfers

GOSSIP_EVERY = 1.0
ANNOUNCE_EVERY = 2.0


class _Views(Component):
    """The answers to this node's gossip rounds: each a peer's view, to merge."""

    def __init__(self, handler: Handler) -> None:
        super().__init__(handler.emit, handler.name)
        self.handler = handler

    def answer(self, now: float, node: str, route: Route, payload: list[Any]) -> None:
        if payload[0] == "view":
            self.handler._merge(payload[1], node)


class Handler(Stage):
    name = "gossip"
    tick_interval = 0.1

    def __init__(self, config: NodeConfig, rng: random.Random | None = None,
                 entropy: ids.Entropy | None = None, store: ViewStore | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(config, entropy)
        self.wall_clock = wall_clock  # the date operators see (a simulator passes its own)
        self.me = config.node_id
        self.rng = rng or random.Random()
        self.store: ViewStore = store or FileStore(Path(config.data_dir) / VIEW_FILE)
        self.seeds = [s for s in (config.join, *config.seeds) if s and s != config.peer]
        entry = Entry(config.client, config.peer, config.weight)
        self.view = self._load() or View.fresh(self.me, entry, config.partitions, config.n,
                                               founder=not self.seeds)
        self.view = self.view.with_self(entry).reclaim()
        self._peers: tuple[View | None, dict[str, str]] = (None, {})  # read-only
        self.started: float | None = None
        self.unpublished = False
        self.rounds = self.unrouted = 0
        self.last_tick = 0.0
        self.last_sweep_at: float | None = None
        # Paper 6.5: background work draws on what the foreground leaves (background.py).
        self.share = BackgroundShare(config.background_p99_ms / 1000.0)
        self.timers = {"gossip": Timer(), "ping": Timer(), "announce": Timer(),
                       "hints": Timer(), "anti_entropy": Timer()}
        self.watcher = Watcher(self.emit, Settings(threshold=config.phi_threshold,
                                                   first_interval=PING_EVERY),
                               self.peers, self._announce, self.log, self.name)
        self.hints = Delivery(self.emit, self, self.share, self.timers["hints"], self.log,
                              self.name)
        self.transfers = Transfers(
            self.emit, self, self.share, partitions=config.partitions,
            at_once=config.transfers_at_once, keys_per_sec=config.transfer_keys_per_sec,
            entropy=self.entropy, handed_over=self._handed_over, log=self.log,
            stage=self.name)
        self.exchanges = Exchanges(
            self.emit, self, self.share, self.timers["anti_entropy"], self.rng,
            first_id=self.id_base, n=config.n, partitions=config.partitions,
            every=config.anti_entropy_every, tick_interval=self.tick_interval,
            swept=self._swept, log=self.log, stage=self.name)
        self.reaper = Reaper(self.emit, self, config.tombstone_reap_after, self.id_base,
                             self.name)
        self.strays = Strays(self.emit, self, self.share, n=config.n, entropy=self.entropy,
                             keys_per_sec=config.transfer_keys_per_sec, stage=self.name,
                             busy=self.transfers.busy,  # bound methods: a copied
                             hints_delivered=self.hints.delivered_count)  # one rebinds
        #: Which component each answer goes to, by the duty of the route its ref names.
        self.duties: dict[Duty, Component] = {
            Duty.PING: self.watcher, Duty.VIEW: _Views(self), Duty.HINT: self.hints,
            Duty.TRANSFER: self.transfers, Duty.TREE: self.exchanges,
            Duty.PULL: self.exchanges, Duty.PUSH: self.exchanges,
            Duty.PUSHED: self.exchanges, Duty.CHECK: self.reaper, Duty.REAPED: self.reaper,
            Duty.STRAY: self.strays}

    # The view: kept, adopted, published ------------------------------------------------
    @property
    def down(self) -> frozenset[str]:
        """The members down for routing (the failure watcher's)."""
        return self.watcher.down

    def _load(self) -> View | None:
        data = self.store.load()
        if data is None:
            return None
        try:
            return View.decode(self.me, self.config.n, data)
        except ValueError as exc:
            self.log.error("ignoring unreadable %s: %s", self.store, exc)
            return None

    def _save(self) -> None:
        self.store.save(self.view.encode())

    def _adopt(self, view: View, lazy: bool = False) -> None:
        """Take ``view``; publish it now, or (``lazy``) at the next tick."""
        if view == self.view:
            return
        if view.ring != self.view.ring and view.ring is not None:
            self.log.info("ring epoch %d: %d members, %d moves pending", view.ring.epoch,
                          len(view.ring.members), len(view.ring.pending()))
        self.view = view
        self.watcher.learned()  # a member just learned of is down until it answers
        self.unpublished = True
        if not lazy:
            self._publish()

    def _publish(self) -> None:
        """Save the view and announce it, if it changed since it last was."""
        if self.unpublished:
            self.unpublished = False
            self._save()
            self._announce()

    def _merge(self, state: Any, node: str) -> None:
        try:
            self._adopt(self.view.merge_state(state))
        except ValueError as exc:
            self.log.warning("bad view from %s: %s", node, exc)

    def _handed_over(self, partition: int) -> None:
        self._adopt(self.view.handed_over(partition), lazy=True)

    def _swept(self) -> None:
        self.last_sweep_at = round(self.wall_clock(), 1)  # shown to operators

    def peers(self) -> dict[str, str]:  # once per view: every ping answer asks
        if self._peers[0] is not self.view:
            self._peers = (self.view, self.view.peers())
        return self._peers[1]

    # Telling coordination ------------------------------------------------------------
    def _announce(self) -> None:
        ring = self.view.announcement()
        if ring is not None:
            self.emit("coordination", RingState.wire(*ring))
        self.emit("coordination", Health.wire(sorted(self.down)))

    def on_ring_please(self, now: float) -> None:
        self._announce()

    # Timers ------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.started = now
        self.watcher.start()  # up once each has answered a ping
        self._save()
        self._announce()

    def tick(self, now: float) -> None:
        self.last_tick = now
        self._publish()
        self.transfers.tick(now)
        self.reaper.tick(now)
        self.strays.tick(now)
        if self.timers["ping"].due(now, PING_EVERY):
            self.watcher.ping(now)
        if self.timers["gossip"].due(now, GOSSIP_EVERY):
            self._gossip()
        if self.timers["announce"].due(now, ANNOUNCE_EVERY):
            self._announce()
        self.exchanges.tick(now)
        self.hints.tick(now)

    def _gossip(self) -> None:
        choices = self.view.gossip_partners(self.seeds, self.down)
        if choices:
            self.rounds += 1
            peer = self.rng.choice(choices)
            self.emit("network", Call.wire(peer, self.name, Route(Duty.VIEW).ref(),
                                           ["gossip", self.view.to_state()]))

    # Answers, routed to their component ----------------------------------------------
    def _route(self, ref: Any) -> Route | None:
        route = Route.parse(ref)
        if route is None or route.duty not in self.duties:
            self.unrouted += 1
            self.log.debug("answer for no route of ours ignored: %s", brief(ref))
            return None
        return route

    def on_resp(self, now: float, node: str, ref: list[Any], payload: list[Any]) -> None:
        route = self._route(ref)
        if route is not None:
            self.duties[route.duty].answer(now, node, route, payload)
        # Last: a view just adopted may be what makes ``node`` a member. A ping's answer
        # is the watcher's own heartbeat; any other answer shows the node is alive too.
        if route is None or route.duty is not Duty.PING:
            self.watcher.heard(now, node)

    def on_unreachable(self, now: float, peer: str, ref: list[Any]) -> None:
        """Not connected to ``peer``: the failure detector already counts the silence."""
        route = self._route(ref)
        if route is not None:
            self.duties[route.duty].unreachable(now, peer, route)

    def undeliverable(self, dest: str, events: list[Any], now: float) -> None:
        """What the runtime could not queue (SEDA's full-queue event): a call to another
        node is its duty's unreachable; a request to a local stage (``reply_to`` "gossip",
        then ``ref``) is its duty's ``lost``, so nothing waits for an answer that will not
        come. Reports, replies and requests no duty waits on are only dropped."""
        for event in events:
            call = event[0] == "call" and len(event) >= 5  # [call, peer, stage, ref, req...]
            if not call and (len(event) < 3 or event[1] != self.name):
                continue
            route = Route.parse(event[3] if call else event[2])
            if route is None or route.duty not in self.duties:
                continue
            if call:
                self.duties[route.duty].unreachable(now, event[1], route)
            else:
                self.duties[route.duty].lost(now, route)

    def _local(self, now: float, ref: Any, answer: list[Any]) -> None:
        route = self._route(ref)
        if route is not None:
            self.duties[route.duty].local(now, route, answer)

    def on_folded(self, now: float, ref: list[Any], pairs: list[list[bytes]],
                  next_cursor: str | None, total: int | None) -> None:
        self._local(now, ref, ["folded", pairs, next_cursor, total])

    def on_tree_answer(self, now: float, ref: list[Any], result: Any) -> None:
        self._local(now, ref, ["tree_answer", result])

    def on_got(self, now: float, ref: list[Any], found: list[Any] | None, error: Any,
               incarnation: str) -> None:
        self._local(now, ref, ["got", found, error, incarnation])

    def on_checked(self, now: float, ref: list[Any], raw: bytes | None, hinted: bool) -> None:
        self._local(now, ref, ["checked", raw, hinted])

    def on_hints_found(self, now: float, _ref: Any, found: list[list[Any]]) -> None:
        """Persistence's answer to the hint scan (``hintedhandoff.Delivery``)."""
        self.errors += self.hints.found(now, found)

    def on_deleted(self, now: float, key: bytes) -> None:
        self.reaper.deleted(now, key)

    def on_updated(self, now: float, *_: Any) -> None:
        """A pulled version merged locally (nothing waits for it)."""

    def on_gossip_in(self, now: float, origin: list[Any], state: dict[str, Any]) -> None:
        """A peer's view: merge it, and answer with ours (push-pull)."""
        self._merge(state, origin[0])
        self.emit("network", Respond.wire(origin, ["view", self.view.to_state()]))

    def on_foreground(self, now: float, requests: int, p99: float) -> None:
        """Coordination's latest window of answered client requests (paper 6.5)."""
        self.share.report(now, requests, p99)

    # Operators' commands --------------------------------------------------------------
    def on_admin(self, now: float, rid: int, command: str, seed: str) -> None:
        try:
            reply = self._admin(now, command, seed)
        except Exception as exc:  # noqa: BLE001 - the request fails, with one reply
            self.errors += 1
            self.log.exception("admin %s failed", command)
            reply = {"error": "internal", "message": f"admin {command} failed: {exc!r}"}
        self.emit("network", Reply.wire(rid, {"ok": "error" not in reply, **reply}))

    def _admin(self, now: float, command: str, seed: str) -> dict[str, Any]:
        if command == "leave":
            if self.view.members[self.me].status == "valid":
                self.log.warning("leaving the cluster: handing every partition over")
            self._adopt(self.view.leave())
            reply = {"status": self.view.members[self.me].status,
                     "transfers": len(self.view.transfers_out())}
        elif command == "join":
            reply = self._join(seed)
        elif command == "transfers":
            ring = self.view.ring
            reply = {"node": self.me, "active": self.transfers.progress(now),
                     "pending": [list(m) for m in ring.pending()] if ring else []}
        else:
            reply = self.view.status(self.down)
        return reply

    def _join(self, seed: str) -> dict[str, Any]:
        refusal = self.view.join_refusal(seed, self.config.peer)
        if refusal is not None:
            return {"error": "bad_request", "message": refusal}
        self.seeds = [seed]
        self.view, self.unpublished = self.view.rejoined(), True
        self._publish()
        self.log.warning("joining the cluster of %s", seed)
        return {"status": "joining", "seed": seed}

    def gauges(self) -> dict[str, Any]:
        ring, detector = self.view.ring, self.watcher.detector
        return {**self.exchanges.stats, "last_sweep_at": self.last_sweep_at,
                "transfers_active": len(self.transfers.active),
                "sweep_position": self.exchanges.sweep_position,
                "tombstones_reaped": self.reaper.reaped, "transfer_bytes": self.transfers.bytes,
                "tombstones_waiting": len(self.reaper.queue),
                "transfers_done": self.transfers.finished, "members": len(self.view.members),
                "epoch": ring.epoch if ring else 0,
                "down": sorted(self.down), "rounds": self.rounds,
                "suspicions": detector.suspicions,
                "false_suspicions": detector.false_suspicions,
                "hints_delivered": self.hints.delivered, "hints_in_flight": self.hints.in_flight,
                "background_rate": (None if math.isinf(rate := self.share.current_rate(
                    self.last_tick)) else round(rate)),
                "background_backoffs": self.share.backoffs,
                "unrouted_answers": self.unrouted, "strays_handed": self.strays.handed,
                "strays_swept": self.strays.swept}
