"""The gossip stage: membership, failure detection and hint delivery.

Dynamo paper sections 4.8 (ring membership by gossip, external discovery through
seeds, local failure detection) and 4.6 (hinted handoff). About once a second this
node swaps its view (``membership.View``) with a random member, or with a seed while it
has no ring. Every member is pinged twice a second; its answers feed an accrual failure
detector (``failure.Detector``): a member is down for routing once its silence is too
unlikely for the intervals it has shown (``phi_threshold``), and up again when it
answers. A member is down until it has answered at all. Hints for
members that are up are read from persistence and handed over; a hint is forgotten only
once its owner acknowledged it. The view is kept in ``DATA_DIR/cluster.state`` so a
restarted node rejoins the cluster it was in.

Anti-entropy (section 4.7): every ``anti_entropy_every`` seconds, one partition this node
replicates is compared with one other live replica, both Merkle trees being questioned
level by level (``antientropy.Round``) and only differing keys repaired, both ways, by
merging versions (never overwriting). One exchange at a time, a bounded number of keys
per exchange, so the background work yields to the foreground.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from seda_dynamo import address, ids
from seda_dynamo.antientropy import Round
from seda_dynamo.background import BackgroundShare
from seda_dynamo.config import NodeConfig
from seda_dynamo.failure import Detector, Settings
from seda_dynamo.membership import VIEW_FILE, Entry, View
from seda_dynamo.merkle import Question
from seda_dynamo.reaper import CHECK_DEADLINE, MAX_ATTEMPTS, Check, verdict, worth_retrying
from seda_dynamo.ring import partition_range
from seda_dynamo.stage import Stage
from seda_dynamo.transfer import Transfer

GOSSIP_EVERY = 1.0
PING_EVERY = 0.5
OWN_STALL = 2 * PING_EVERY  # this stage not running for longer: the silence was ours
ANNOUNCE_EVERY = 2.0
HINTS_EVERY = 1.0
HINT_BATCH = 128
HINT_WAIT = 5.0
EXCHANGE_DEADLINE = 10.0
REAPS_PER_TICK = 64
REPAIRS_PER_EXCHANGE = 1000
REPAIR_PACE = 100  # keys repaired per anti_entropy_every of pause


class Handler(Stage):
    name = "gossip"
    tick_interval = 0.1

    def __init__(self, config: NodeConfig, rng: random.Random | None = None,
                 entropy: ids.Entropy | None = None) -> None:
        super().__init__(config, entropy)
        self.me = config.node_id
        self.rng = rng or random.Random()
        self.path = Path(config.data_dir) / VIEW_FILE
        self.seeds = [s for s in (config.join, *config.seeds) if s and s != config.peer]
        entry = Entry(config.client, config.peer, config.weight)
        self.view = self._load() or View.fresh(self.me, entry, config.partitions, config.n,
                                               founder=not self.seeds)
        self.view = self.view.with_self(entry).reclaim()
        self.started: float | None = None
        self.detector = Detector(Settings(threshold=config.phi_threshold,
                                          first_interval=PING_EVERY))
        self.last_detect = 0.0
        self.down: frozenset[str] = frozenset()
        self.timers = {"gossip": 0.0, "ping": 0.0, "announce": 0.0, "hints": 0.0,
                       "anti_entropy": 0.0}
        self.exchange: Round | None = None
        self.exchange_id = self.id_base  # ids never repeat across restarts (ids.py)
        self.next_partition = 0
        self.pushes: dict[int, tuple[str, list[bytes]]] = {}
        self.ae: dict[str, Any] = {"exchanges": 0, "aborted": 0, "keys_pushed": 0,
                                   "keys_pulled": 0, "sweeps": 0, "last_sweep_at": None}
        self.hints_in_flight = 0
        self.delivered = 0
        self.unsaved = False
        self.transfers: dict[int, Transfer] = {}
        self.transfers_done = 0
        self.transfer_tokens = 0.0
        self.transfer_bytes = 0
        self.reap_queue: dict[bytes, tuple[float, int]] = {}  # key -> (when, attempts)
        self.checks: dict[int, Check] = {}
        self.check_id = self.id_base
        self.tombstones_reaped = 0
        self.tokens_at = 0.0
        self.rounds = 0
        # Paper 6.5: background work draws on what the foreground leaves (background.py).
        self.share = BackgroundShare(config.background_p99_ms / 1000.0)
        self.last_tick = 0.0

    # Persistence of the view ---------------------------------------------------------
    def _load(self) -> View | None:
        try:
            return View.decode(self.me, self.config.n, self.path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            self.log.error("ignoring unreadable %s: %s", self.path, exc)
            return None

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(self.view.encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def _adopt(self, view: View, lazy: bool = False) -> None:
        """Take ``view``; save and announce it now, or (``lazy``) at the next tick."""
        if view == self.view:
            return
        if view.ring != self.view.ring and view.ring is not None:
            self.log.info("ring epoch %d: %d members, %d moves pending", view.ring.epoch,
                          len(view.ring.members), len(view.ring.pending()))
        self.view = view
        # A member just learned of is down until it answers (never up by default).
        self.down = frozenset(node for node in self.peers()
                              if node in self.down or not self.detector.heard(node))
        self.unsaved = True
        if not lazy:
            self._flush()

    def _flush(self) -> None:
        if self.unsaved:
            self.unsaved = False
            self._save()
            self._announce()

    # Telling coordination ------------------------------------------------------------
    def _announce(self) -> None:
        ring = self.view.effective_ring()
        if ring is not None:
            in_ring = {m.id for m in ring.members}
            others = [[node, e.client, e.peer, "joining" if e.status == "valid" else e.status]
                      for node, e in sorted(self.view.members.items()) if node not in in_ring]
            pending = len(self.view.ring.pending()) if self.view.ring else 0
            moves_left = pending - sum(a != b for a, b in zip(
                self.view.ring.owners, ring.owners, strict=True)) if self.view.ring else 0
            self.emit("coordination", ["ring", ring.to_state(), others, moves_left])
        self.emit("coordination", ["health", sorted(self.down)])

    def on_ring_please(self, now: float) -> None:
        self._announce()

    # Timers ------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.started = now
        self.down = frozenset(self.peers())  # up once each has answered a ping
        self._save()
        self._announce()

    def _due(self, name: str, now: float, every: float) -> bool:
        if now < self.timers[name]:
            return False
        self.timers[name] = now + every
        return True

    def peers(self) -> dict[str, str]:
        return {node: e.peer for node, e in self.view.members.items()
                if node != self.me and e.status != "left"}

    def tick(self, now: float) -> None:
        self.last_tick = now
        self._flush()
        self._transfer(now)
        self._reap(now)
        peers = self.peers()
        if self._due("ping", now, PING_EVERY):
            for node, peer in peers.items():
                self.emit("network", ["call", peer, self.name, ["ping", now], ["ping"], node])
            self._detect(now, peers)
        if self._due("gossip", now, GOSSIP_EVERY):
            self._gossip(peers)
        if self._due("announce", now, ANNOUNCE_EVERY):
            self._announce()
        every = self.config.anti_entropy_every
        if self.exchange is not None and now - self.exchange.started > EXCHANGE_DEADLINE:
            self._abort("it took too long")
        if every and self.exchange is None and self.share.allows(now) \
                and self._due("anti_entropy", now, every):
            self._start_exchange(now)
        if self.share.allows(now) and self._due("hints", now, HINTS_EVERY):
            self.hints_in_flight = 0  # unanswered deliveries are retried by this scan
            up = [node for node in peers if node not in self.down]
            if up:
                self.emit("persistence", ["hints", self.name, "scan", up, HINT_BATCH])

    def _detect(self, now: float, peers: dict[str, str]) -> None:
        if now - self.last_detect > OWN_STALL:
            # This stage itself was busy or stopped: the silence was ours, not theirs.
            self.detector.excuse(now, PING_EVERY)
        self.last_detect = now
        # A peer counts as up only once it has answered: until then neither its
        # connection nor its process is known to work (a node that just started would
        # otherwise route writes to peers it cannot reach yet).
        self._set_down(self.detector.check(now, peers), now)

    def _set_down(self, down: frozenset[str], now: float) -> None:
        if down != self.down:
            for node in down - self.down:
                if self.detector.heard(node):
                    self.log.warning("%s is down (phi %.1f)", node, self.detector.phi(node, now))
            for node in self.down - down:
                self.log.info("%s is up", node)
            self.down = down
            self._announce()

    def _gossip(self, peers: dict[str, str]) -> None:
        up = [peer for node, peer in peers.items() if node not in self.down]
        if self.view.ring is None or not peers:
            choices = self.seeds or up
        else:
            choices = up or list(peers.values())
        if choices:
            self.rounds += 1
            peer = self.rng.choice(choices)
            self.emit("network", ["call", peer, self.name, ["view"],
                                  ["gossip", self.view.to_state()]])

    # From peers ----------------------------------------------------------------------
    def on_gossip_in(self, now: float, origin: list[Any], state: dict[str, Any]) -> None:
        """A peer's view: merge it, and answer with ours (push-pull)."""
        try:
            self._adopt(self.view.merge_state(state))
        except ValueError as exc:
            self.log.warning("bad view from %s: %s", origin[0], exc)
        self.emit("network", ["respond", origin, ["view", self.view.to_state()]])

    def on_resp(self, now: float, node: str, tag: list[Any], payload: list[Any]) -> None:
        kind = payload[0]
        if kind == "view":
            try:
                self._adopt(self.view.merge_state(payload[1]))
            except ValueError as exc:
                self.log.warning("bad view from %s: %s", node, exc)
        elif kind == "tree" and tag[0] == "ae":
            self._exchange_answer("remote", tag[1], payload[1], now)
        elif kind == "got" and tag[0] == "pull" and payload[1] is not None:
            self.ae["keys_pulled"] += 1
            self.emit("versioning", ["sync", self.name, None, tag[1], payload[1], None])
        elif kind == "checked" and tag[0] == "reap":
            self._check_answer(tag[1], node, payload[1], bool(payload[2]), now)
        elif kind == "updated" and tag[0] == "xfer":
            self._transfer_ack(tag, payload[1] is None, now)
        elif kind == "updated" and tag[0] == "hint":
            self.hints_in_flight = max(0, self.hints_in_flight - 1)
            if payload[1] is None:
                self.delivered += 1
                self.emit("persistence", ["hint_done", [tag[1:]]])
            if not self.hints_in_flight:
                self.timers["hints"] = now  # this batch is done: look for more at once
        # Last: a view just adopted may be what makes ``node`` a member.
        if node in self.peers():
            sent = tag[1] if tag[0] == "ping" and len(tag) == 2 else None
            self.detector.heartbeat(node, now, sent if isinstance(sent, float) else None)
            if node in self.down:
                self._detect(now, self.peers())

    def on_unreachable(self, now: float, peer: str, tag: list[Any]) -> None:
        """Not connected to ``peer``: the failure detector already counts the silence."""
        if tag[0] == "hint":
            self.hints_in_flight = max(0, self.hints_in_flight - 1)
        elif tag[0] == "xfer":
            self._transfer_ack(tag, False, now)
        elif tag[0] == "ae" and self.exchange is not None and tag[1] == self.exchange_id:
            self._abort(f"{peer} is not connected")

    # Background vs. foreground ---------------------------------------------------------
    def on_foreground(self, now: float, requests: int, p99: float) -> None:
        """Coordination's latest window of answered client requests."""
        self.share.report(now, requests, p99)

    # Hinted handoff ------------------------------------------------------------------
    def on_hints(self, now: float, _tag: Any, found: list[list[Any]]) -> None:
        done = []
        self.share.spend(len(found))
        peers = self.peers()
        for hint in found:
            if not _well_formed_hint(hint):  # skipped: never stops the hints after it
                self.errors += 1
                self.log.warning("malformed hint skipped: %.120r", hint)
                continue
            owner, key, token, clock = hint
            peer = peers.get(owner)
            if clock is None or peer is None:
                done.append([owner, key, token])  # nothing to hand over, or owner left
                continue
            self.hints_in_flight += 1
            self.emit("network", ["call", peer, self.name, ["hint", owner, key, token],
                                  ["rput", key, clock, None], owner])
        if done:
            self.emit("persistence", ["hint_done", done])
        if self.hints_in_flight:
            self.timers["hints"] = now + HINT_WAIT

    # Reaping tombstones ----------------------------------------------------------------
    def on_deleted(self, now: float, key: bytes) -> None:
        if self.config.tombstone_reap_after > 0:
            self.reap_queue[key] = (now + self.config.tombstone_reap_after, 0)

    def _reap(self, now: float) -> None:
        for check_id, check in list(self.checks.items()):
            if now - check.started > CHECK_DEADLINE:
                del self.checks[check_id]
                self._reap_later(check.key, now)
        ring = self.view.ring
        due = [k for k, (at, _) in self.reap_queue.items() if at <= now][:REAPS_PER_TICK]
        members = tuple(node for node, e in self.view.members.items() if e.status != "left")
        for key in due:
            if ring is None or self.down or ring.pending():
                self._reap_later(key, now)  # everyone must be up and the ring settled
                continue
            self.check_id += 1
            self.checks[self.check_id] = Check(key, members, now)
            attempts = self.reap_queue[key][1]
            self.reap_queue[key] = (now + 2 * CHECK_DEADLINE, attempts)  # not while asking
            tag = ["reap", self.check_id]
            for node in members:
                if node == self.me:
                    self.emit("persistence", ["check", self.name, tag, key, list(members)])
                else:
                    self.emit("network", ["call", self.view.members[node].peer, self.name,
                                          tag, ["rcheck", key, list(members)], node])

    def _reap_later(self, key: bytes, now: float) -> None:
        _, attempts = self.reap_queue.get(key, (0.0, 0))
        if attempts + 1 >= MAX_ATTEMPTS:
            self.reap_queue.pop(key, None)  # kept: a tombstone is never wrong, only big
            return
        delay = self.config.tombstone_reap_after * (2 ** (attempts + 1))
        self.reap_queue[key] = (now + delay, attempts + 1)

    def on_checked(self, now: float, tag: list[Any], raw: bytes | None, hinted: bool) -> None:
        self._check_answer(tag[1], self.me, raw, hinted, now)

    def _check_answer(self, check_id: int, node: str, raw: bytes | None, hinted: bool,
                      now: float) -> None:
        check = self.checks.get(check_id)
        if check is None or node not in check.members:
            return
        check.answers[node] = (raw, hinted)
        if not check.complete:
            return
        del self.checks[check_id]
        tombstone = verdict(check.answers)
        if tombstone is None:
            if worth_retrying(check.answers):
                self._reap_later(check.key, now)
            else:
                self.reap_queue.pop(check.key, None)
            return
        self.reap_queue.pop(check.key, None)
        self.tombstones_reaped += 1
        for holder, (raw, _) in check.answers.items():
            if raw is None:
                continue
            if holder == self.me:
                self.emit("persistence", ["reap", check.key, tombstone])
            else:
                self.emit("network", ["call", self.view.members[holder].peer, self.name,
                                      ["reaped"], ["rreap", check.key, tombstone], holder])

    # Operators' commands --------------------------------------------------------------
    def on_admin(self, now: float, rid: int, command: str, seed: str) -> None:
        try:
            reply = self._admin(now, command, seed)
        except Exception as exc:  # noqa: BLE001 - the request fails, with one reply
            self.errors += 1
            self.log.exception("admin %s failed", command)
            reply = {"error": "internal", "message": f"admin {command} failed: {exc!r}"}
        self.emit("network", ["reply", rid, {"ok": "error" not in reply, **reply}])

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
            reply = {"node": self.me, "active": [t.progress(now) for t in
                                                 self.transfers.values()],
                     "pending": [list(m) for m in ring.pending()] if ring else []}
        else:
            reply = self.view.status(self.down)
        return reply

    def _join(self, seed: str) -> dict[str, Any]:
        try:  # gossiped to every second: it must be an address the runtime can use
            address.check(seed, "seed")
        except address.AddressError as exc:
            return {"error": "bad_request", "message": f"admin join: {exc}"}
        if seed == self.config.peer:
            return {"error": "bad_request", "message": f"admin join: seed {seed!r} is this "
                    "node's own peer address; name a member of the cluster to join"}
        ring = self.view.ring
        if ring is not None and any(m.id != self.me for m in ring.members):
            return {"error": "bad_request",
                    "message": f"{self.me} is already in a cluster of {len(ring.members)}"}
        self.seeds = [seed]
        entry = self.view.members[self.me]
        fresh = View.fresh(self.me, replace(entry, version=entry.version + 1),
                           self.config.partitions, self.config.n, founder=False)
        self.view = fresh
        self.unsaved = True
        self._flush()
        self.log.warning("joining the cluster of %s", seed)
        return {"status": "joining", "seed": seed}

    # Hand-over of partitions (joins and leaves) --------------------------------------
    def _transfer(self, now: float) -> None:
        """Start planned hand-overs up to the limit; resend chunks that stalled."""
        while self._transfer_round(now):
            pass  # hand-overs with nothing to stream finish at once: fill their places

    def _transfer_round(self, now: float) -> bool:
        planned = dict(self.view.transfers_out())
        for p in [p for p, t in self.transfers.items() if planned.get(p) != t.next_owner]:
            del self.transfers[p]  # the plan changed under us
        peers = self.peers()
        q = self.config.partitions
        for p, next_owner in planned.items():
            if len(self.transfers) >= self.config.transfers_at_once:
                break
            if p in self.transfers:
                continue
            items = [(pp, node, *partition_range(pp, q)) for pp, node in self.view.transfer_plan(p)]
            if all(node in peers and node not in self.down for _, node, _, _ in items):
                # Chunks numbered from a random start: a late ack meant for an earlier
                # hand-over (or this stage's previous process) matches none of this one.
                self.transfers[p] = Transfer(p, next_owner, items, now,
                                             seq=ids.call_id(self.entropy))
        finished = False
        for transfer in list(self.transfers.values()):
            finished |= self._step(transfer, now)
        return finished

    def _step(self, transfer: Transfer, now: float) -> bool:
        """Move one hand-over on; True when it has just finished."""
        if transfer.done:
            # Other moves may have taken effect while this one streamed: what this one
            # brings into preference lists is judged again, and any new range sent too.
            q = self.config.partitions
            sent = {(pp, node) for pp, node, _, _ in transfer.items}
            more = [(pp, node, *partition_range(pp, q))
                    for pp, node in self.view.transfer_plan(transfer.partition)
                    if (pp, node) not in sent]
            if more:
                transfer.extend(more)
                return self._step(transfer, now)
            del self.transfers[transfer.partition]
            self.transfers_done += 1
            self.log.info("partition %d handed over to %s (%d keys to %d ranges)",
                          transfer.partition, transfer.next_owner, transfer.keys_sent,
                          len(transfer.items))
            self._adopt(self.view.handed_over(transfer.partition), lazy=True)
            return True
        if transfer.due(now) and self._may_read(now):
            seq, lo, hi, keys = transfer.read(now)
            self.emit("persistence", ["fold", self.name, ["xfer", transfer.partition, seq],
                                      f"{lo:x}", f"{hi:x}", keys])  # 128 bits: as hex
        return False

    def _may_read(self, now: float) -> bool:
        """The throttles: what the foreground leaves, and ``transfer_keys_per_sec``
        across all hand-overs (0: none)."""
        if not self.share.allows(now):
            return False
        rate = self.config.transfer_keys_per_sec
        if not rate:
            return True
        self.transfer_tokens = min(float(rate), self.transfer_tokens
                                   + rate * (now - self.tokens_at))
        self.tokens_at = now
        return self.transfer_tokens > 0

    def on_folded(self, now: float, tag: list[Any], pairs: list[list[bytes]],
                  next_cursor: str | None, total: int | None) -> None:
        transfer = self.transfers.get(tag[1])
        if transfer is None:
            return
        self.transfer_tokens -= len(pairs)  # the throttles count keys actually sent
        self.share.spend(len(pairs))
        self.transfer_bytes += sum(len(k) + len(v) for k, v in pairs)
        cursor = int(next_cursor, 16) if next_cursor is not None else None
        if transfer.chunk(tag[2], [len(k) + len(v) for k, v in pairs], cursor, total):
            peer = self.peers()[transfer.target]
            for key, value in pairs:
                self.emit("network", ["call", peer, self.name, tag, ["rput", key, value, None],
                                      transfer.target])
        if self._step(transfer, now):
            self._transfer(now)

    def _transfer_ack(self, tag: list[Any], ok: bool, now: float) -> None:
        transfer = self.transfers.get(tag[1])
        if transfer is not None:
            transfer.ack(tag[2], ok)
            if self._step(transfer, now):
                self._transfer(now)

    # Anti-entropy ----------------------------------------------------------------------
    def _start_exchange(self, now: float) -> None:
        ring = self.view.effective_ring()
        if ring is None:
            return
        n = min(self.config.n, len(ring.members))
        q = ring.partitions
        if self.next_partition >= q:
            if self.next_partition != 0:
                self.ae["sweeps"] += 1
                self.ae["last_sweep_at"] = round(time.time(), 1)
            self.next_partition = 0  # a new sweep
        for step in range(q - self.next_partition):
            p = self.next_partition + step
            replicas = ring.preference_list(p, n)
            others = [x for x in replicas if x != self.me and x not in self.down]
            if self.me in replicas and others:
                self.next_partition = p + 1
                self.exchange_id += 1
                self.exchange = Round(p, self.rng.choice(others), now)
                self._ask_trees(self.exchange.start())
                return
        self.next_partition = q  # nothing more to compare in this sweep
        self.timers["anti_entropy"] = now + self.config.anti_entropy_every

    def _ask_trees(self, request: Question) -> None:
        assert self.exchange is not None
        wire, p = request.to_wire(), self.exchange.partition
        tag = ["ae", self.exchange_id]
        self.emit("persistence", ["tree", self.name, tag, p, wire])
        self.emit("network", ["call", self.view.members[self.exchange.peer].peer, self.name,
                              tag, ["tree", p, wire], self.exchange.peer])

    def on_tree_answer(self, now: float, tag: list[Any], result: Any) -> None:
        self._exchange_answer("local", tag[1], result, now)

    def _exchange_answer(self, side: str, exchange_id: int, result: Any, now: float) -> None:
        if self.exchange is None or exchange_id != self.exchange_id:
            return
        if result is None:
            self._abort(f"the {side} tree is not built yet")
            return
        try:
            request = self.exchange.feed(side, result)
        except (ValueError, TypeError, AssertionError) as exc:
            self._abort(f"bad tree answer: {exc}")
            return
        if request is not None:
            self._ask_trees(request)
        elif self.exchange.done:
            repaired = self._repair(self.exchange)
            self.exchange = None
            # The pause after an exchange grows with the keys it repaired (a full batch
            # waits anti_entropy_every), so repairs yield to clients in proportion.
            every = self.config.anti_entropy_every
            if self.next_partition >= self.config.partitions:
                self.timers["anti_entropy"] = now + every  # the sweep is over
                return
            pause = every * min(1.0, repaired / REPAIR_PACE)
            self.timers["anti_entropy"] = now + pause
            if pause < self.tick_interval and self.share.allows(now):
                self._start_exchange(now)  # straight on to the next partition

    def _repair(self, done: Round) -> int:
        """Pull what the peer has that we lack, push what we have that it lacks; the
        number of keys repaired."""
        self.ae["exchanges"] += 1
        diffs = list(done.differences.items())[:REPAIRS_PER_EXCHANGE]
        if not diffs:
            return 0
        peer = self.view.members[done.peer].peer
        self.log.info("anti-entropy: partition %d differs from %s in %d keys",
                      done.partition, done.peer, len(diffs))
        self.share.spend(len(diffs))
        push = [key for key, kind in diffs if kind != "missing_local"]
        for key, kind in diffs:
            if kind != "missing_remote":
                self.emit("network", ["call", peer, self.name, ["pull", key], ["rget", key],
                                      done.peer])
        if push:
            self.pushes[self.exchange_id] = (done.peer, push)
            self.emit("persistence", ["get", self.name, ["push", self.exchange_id], push])
        return len(diffs)

    def on_got(self, now: float, tag: list[Any], found: list[Any] | None, _error: Any,
               _incarnation: str) -> None:
        """Our versions of the keys the peer lacks: send each to it, to be merged."""
        pending = self.pushes.pop(tag[1], None) if tag[0] == "push" else None
        if pending is None or found is None:
            return
        node, keys = pending
        member = self.view.members.get(node)
        if member is None:
            return
        for key, raw in zip(keys, found, strict=True):
            if raw is not None:
                self.ae["keys_pushed"] += 1
                self.emit("network", ["call", member.peer, self.name, ["pushed"],
                                      ["rput", key, raw, None], node])

    def _abort(self, why: str) -> None:
        assert self.exchange is not None
        self.log.debug("anti-entropy with %s on partition %d stopped: %s",
                       self.exchange.peer, self.exchange.partition, why)
        self.ae["aborted"] += 1
        self.exchange = None

    def on_updated(self, now: float, *_: Any) -> None:
        """A pulled version merged locally (nothing waits for it)."""

    def gauges(self) -> dict[str, Any]:
        ring = self.view.ring
        return {**self.ae, "transfers_active": len(self.transfers),
                "sweep_position": min(self.next_partition, self.config.partitions),
                "tombstones_reaped": self.tombstones_reaped,
                "transfer_bytes": self.transfer_bytes,
                "tombstones_waiting": len(self.reap_queue),
                "transfers_done": self.transfers_done, "members": len(self.view.members),
                "epoch": ring.epoch if ring else 0,
                "down": sorted(self.down), "rounds": self.rounds,
                "suspicions": self.detector.suspicions,
                "false_suspicions": self.detector.false_suspicions,
                "hints_delivered": self.delivered, "hints_in_flight": self.hints_in_flight,
                "background_rate": (None if math.isinf(rate := self.share.current_rate(
                    self.last_tick)) else round(rate)),
                "background_backoffs": self.share.backoffs}


def _well_formed_hint(hint: Any) -> bool:
    """``[owner, key, token, versions or nil]``, as persistence's hint scan gives them."""
    return (isinstance(hint, list) and len(hint) == 4 and isinstance(hint[0], str)
            and isinstance(hint[1], bytes) and isinstance(hint[2], bytes)
            and (hint[3] is None or isinstance(hint[3], bytes)))
