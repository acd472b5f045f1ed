"""The persistence stage: the node's local engine, with group commit of every batch.

Dynamo paper section 5 (pluggable local persistence; Berkeley DB by default). Reads are
answered from the engine; all writes of a batch are committed in one transaction before
any of them is acknowledged, so one fsync covers the whole batch. A write may name the
object hash of what its writer read (compare-and-set): if the key has changed since, that
write is refused and reported as a conflict, so several versioning workers can never
overwrite each other's merges (the writer reads again and merges again).

Hints (paper section 4.6) live in a second store beside the data, keyed by
``[owner, key]``: the versions themselves stay in the data store, so a fallback serves
reads of what it holds, and a hint only says which owner still needs a key. Each hint
carries a fresh token, and a delivered hint is deleted only if its token is unchanged,
so a newer write's hint is never lost to an older delivery.

The stage also keeps a Merkle tree per partition (paper section 4.7) over what it stores,
updated with every group commit and built at start by folding the store in small chunks
between batches, and answers tree questions for anti-entropy.

Every read reply carries the data's incarnation, which the versioning stage puts in its
actor id: a wiped data directory (or a memory engine's restart) gets a new incarnation,
so the node never reissues an (actor, counter) pair it issued before (Riak's kv679).
A read for versioning also carries a mint order for each key, ``(epoch, sequence)``:
the epoch is a durable counter bumped at every start of this stage and the sequence
grows with every key read, so this one process orders every fresh actor the node's
versioning workers mint (``actors.own_actor`` picks the newest).

A leaving node departs only once its store holds no key (``departure.py``): that last
question is a ``fold`` with ``seal``, and a store found empty is sealed before the answer
goes (``DATA_DIR/sealed``, written whole): from then on every write is refused, after a
restart too. The reaper asks no node that has left, so a copy stored there later (a
stale view's replica write or read repair) would outlive the tombstone it was covered by.

The tree build folds the store while writes go on: a key written (or reaped) after the
build read its record keeps the entry its write gave it, never the older one the build
read, or compare-and-set against the tree would refuse every later write of the key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from seda_dynamo import ids
from seda_dynamo.antientropy import new_tree
from seda_dynamo.brief import brief
from seda_dynamo.config import NodeConfig
from seda_dynamo.durable import bump_counter, write_atomically
from seda_dynamo.engines import KEY_SPACE, Engine, key_hash, open_engine
from seda_dynamo.groupcommit import GroupCommit, get_event, hint_key, hint_record, write_event
from seda_dynamo.merkle import Question, answer, object_hash
from seda_dynamo.messages import Checked, Folded, Got, HintsFound, Started, TreeAnswer, Written
from seda_dynamo.messagetable import answer_to
from seda_dynamo.reaper import only_tombstones
from seda_dynamo.ring import partition_of_hash
from seda_dynamo.stage import Event, Stage
from seda_dynamo.storetrees import StoreTrees

#: Keys indexed per tick while the trees are built at start (background work yields).
BUILD_CHUNK = 1000
FOLD_BYTES = 4 * 1024 * 1024
BUILD_TICK = 0.02
IDLE_TICK = 0.5
SEALED = "this node has left the cluster: it stores no copy of any key"


class Handler(Stage):
    name = "persistence"
    tick_interval = BUILD_TICK

    def __init__(self, config: NodeConfig, engine: Engine | None = None,
                 hints: Engine | None = None, incarnation_id: str | None = None,
                 mint_epoch: int | None = None, entropy: ids.Entropy | None = None) -> None:
        super().__init__(config, entropy)
        if engine is None or hints is None:
            os.makedirs(config.data_dir, exist_ok=True)
        if engine is None:
            engine = open_engine(config.engine, config.data_dir, "data", config.durability)
        if hints is None:
            hints = open_engine(config.engine, config.data_dir, "hints", config.durability)
        self.engine = engine
        self.hints = hints
        self.hint_cursor = 0
        self.commits = 0
        self.reaped = 0
        self.forgotten = 0  # stray keys forgotten once every replica held them
        self.conflicts = 0  # writes refused because the key changed since it was read
        self.incarnation = incarnation_id or incarnation(config)
        self.mint_epoch = mint_epoch if mint_epoch is not None else _mint_epoch(config)
        self.mint_seq = 0  # grows with every key read for versioning
        self.merkle = StoreTrees(config.partitions)  # a Merkle tree per partition
        self.trees = self.merkle.trees
        self.building: Any = iter(self.engine.fold(0, KEY_SPACE))  # None: built
        self.sealed = _seal_path(config).exists()  # the node left: no write is taken

    def start(self, now: float) -> None:
        """Announce this process: what was asked of the last one is lost with it, so the
        stages waiting on it ask again or fail now (``messages.Started``)."""
        for stage in ("versioning", "gossip"):
            self.emit(stage, Started.wire(self.name, self.id_base))

    @property
    def built_upto(self) -> int:
        return self.merkle.built_upto

    def handle_events(self, events: list[Event], now: float) -> None:
        commit = GroupCommit()
        for event in events:
            kind = event[0] if isinstance(event, list) and event else None
            if kind not in ("write", "get"):
                self.dispatch(event, now)
                continue
            try:  # the whole event is checked before any of it is taken
                parsed = write_event(event) if kind == "write" else get_event(event)
            except ValueError as exc:
                self.errors += 1
                self.log.error("%s event refused: %s: %s", kind, exc, brief(event, 200))
                continue
            if kind == "write" and self.sealed:
                self.emit(parsed[0], Written.wire(parsed[1], SEALED, []))
            elif kind == "write":  # messages.Write, checked
                commit.take(*parsed, lambda key: self._current(key, commit.hashes),
                            self._token)
            else:
                self._get(*parsed)
        if commit.acks:
            self._commit(commit)

    def _get(self, reply_to: str, ref: Any, keys: list[bytes], wants_mint: bool) -> None:
        """Answer a checked ``messages.Get`` from the engine."""
        mint = None
        if wants_mint:  # versioning: a mint order per key
            mint = [self.mint_epoch, self.mint_seq]
            self.mint_seq += len(keys)
        try:
            found = self.engine.get_many(keys)
        except Exception as exc:  # noqa: BLE001 - answered as an error, not a crash
            self.errors += 1
            self.log.exception("read of %d keys failed", len(keys))
            self.emit(*answer_to(reply_to, Got.wire(ref, None, f"read failed: {exc}",
                                                 self.incarnation, mint)))
        else:
            self.emit(*answer_to(reply_to, Got.wire(ref, found, None, self.incarnation,
                                                 mint)))

    def _commit(self, commit: GroupCommit) -> None:
        """One transaction for the batch's writes and hints, then every writer's answer."""
        error = None
        try:
            if commit.hints:
                self.hints.write_batch(commit.hints)
            self.engine.write_batch(commit.writes)
            self.commits += 1
        except Exception as exc:  # noqa: BLE001 - every writer hears of it
            self.errors += 1
            self.log.exception("group commit of %d writes failed", len(commit.writes))
            error = f"write failed: {exc}"
        if error is None:
            self._index(commit.writes, commit.hashes)
        for reply_to, ref, conflicts in commit.acks:
            self.conflicts += len(conflicts)
            self.emit(reply_to, Written.wire(ref, error, conflicts))

    def _current(self, key: bytes, batch: dict[bytes, bytes | None]) -> bytes | None:
        """The object hash of what ``key`` holds now (None: nothing), for compare-and-set:
        from this batch, else the Merkle tree, else (trees still building) the engine."""
        if key in batch:
            return batch[key]
        known, held = self.merkle.held(key)
        if known:
            return held
        raw = self.engine.get(key)
        return object_hash(raw) if raw is not None else None

    # Merkle trees ----------------------------------------------------------------------
    def _index(self, pairs: list[tuple[bytes, bytes | None]],
               hashes: dict[bytes, bytes | None] | None = None) -> None:
        """Bring the Merkle trees up to what was just committed (``hashes``: the object
        hashes, when the caller has them already)."""
        self.merkle.index(pairs, hashes, building=self.building is not None)

    def tick(self, now: float) -> None:
        if self.building is not None and self.merkle.build(self.building, BUILD_CHUNK):
            self.building = None
            self.tick_interval = IDLE_TICK

    def on_fold(self, now: float, reply_to: str, ref: Any, lo_hex: str, hi_hex: str,
                max_keys: int, seal: bool = False) -> None:
        """One chunk of a hash range for a hand-over: the records and where to go on.
        With ``seal`` (a leaving node's last question), a range found empty seals the
        store first; a seal that could not be made durable is no answer (asked again).

        Hashes are 128-bit, beyond msgpack's integers, so they travel as hex strings.
        """
        lo, hi = int(lo_hex, 16), int(hi_hex, 16)
        pairs: list[list[bytes]] = []
        size, next_lo = 0, None
        for key, value in self.engine.fold(lo, hi):
            if len(pairs) >= max_keys or size >= FOLD_BYTES:
                next_lo = f"{key_hash(key):x}"
                break
            pairs.append([key, value])
            size += len(key) + len(value)
        if seal is True and not pairs and next_lo is None and not self._seal():
            return
        tree = self.trees.get(partition_of_hash(lo, self.config.partitions))
        self.emit(reply_to, Folded.wire(ref, pairs, next_lo, len(tree) if tree is not None
                                        and self.building is None else None))

    def on_tree(self, now: float, reply_to: str, ref: Any, partition: int,
                request: Any) -> None:
        """A question about one partition's tree; nil while that tree is being built."""
        result = None
        if self.merkle.ready(partition):
            tree = self.trees.get(partition) or new_tree()
            try:
                result = answer(tree, Question.from_wire(request))
            except ValueError as exc:
                self.log.warning("bad tree request %r: %s", request, exc)
        self.emit(*answer_to(reply_to, TreeAnswer.wire(ref, result)))

    # Hinted handoff -------------------------------------------------------------------
    def on_hints(self, now: float, reply_to: str, ref: Any, owners: list[str],
                 limit: int) -> None:
        """Up to ``limit`` hints for ``owners``, with the versions to hand them."""
        wanted = set(owners)
        found: list[list[Any]] = []
        scanned = 0
        for hkey, token in self.hints.fold(self.hint_cursor, 1 << 128):
            scanned += 1
            owner, key = hint_record(hkey)
            if owner in wanted:
                found.append([owner, key, token, self.engine.get(key)])
            self.hint_cursor = key_hash(hkey) + 1
            if len(found) >= limit or scanned >= 20 * limit:
                break
        else:
            self.hint_cursor = 0  # wrapped: start from the beginning next time
        self.emit(reply_to, HintsFound.wire(ref, found))

    def on_hint_done(self, now: float, delivered: list[list[Any]]) -> None:
        """Forget delivered hints whose token is unchanged (no newer write since)."""
        stale = []
        for owner, key, token in delivered:
            hkey = hint_key(owner, key)
            if self.hints.get(hkey) == token:
                stale.append((hkey, None))
        if stale:
            self.hints.write_batch(stale)

    # Tombstones ------------------------------------------------------------------------
    def on_check(self, now: float, reply_to: str, ref: Any, key: bytes,
                 owners: list[str]) -> None:
        """For reaping: the versions held for ``key`` and whether a hint names it."""
        hinted = any(self.hints.get(hint_key(owner, key)) is not None for owner in owners)
        self.emit(*answer_to(reply_to, Checked.wire(ref, self.engine.get(key), hinted)))

    def on_reap(self, now: float, key: bytes, tombstone: bytes) -> None:
        """Forget ``key`` if what is stored is exactly that tombstone (compare-and-delete)
        and every sibling it holds is a tombstone: a peer's bytes alone never delete a
        live value (it may have just read them with ``rget``)."""
        if not isinstance(key, bytes) or not isinstance(tombstone, bytes):
            return
        if self.engine.get(key) == tombstone and only_tombstones(tombstone):
            self.engine.write_batch([(key, None)])
            self._index([(key, None)])
            self.reaped += 1

    def on_forget(self, now: float, key: bytes, held: bytes) -> None:
        """Forget a stray ``key`` (``strays.Strays``: every replica merged ``held``) if it
        still holds exactly ``held``: a write that landed since keeps it (compare-and-
        delete). Only gossip sends it; no peer request becomes one."""
        if isinstance(key, bytes) and isinstance(held, bytes) and self.engine.get(key) == held:
            self.engine.write_batch([(key, None)])
            self._index([(key, None)])
            self.forgotten += 1

    def _seal(self) -> bool:
        """Seal the store for good (the node has left); whether it is sealed."""
        if not self.sealed:
            try:
                write_atomically(_seal_path(self.config), "left\n")
            except OSError:
                self.errors += 1
                self.log.exception("could not seal the store")
                return False
            self.sealed = True
        return True

    def _token(self) -> bytes:
        """A fresh hint token (from the handler's entropy: seeded in a simulator)."""
        return self.entropy(64).to_bytes(8, "big")

    def gauges(self) -> dict[str, Any]:
        return {"commits": self.commits, "keys": self.engine.count(), "reaped": self.reaped,
                "forgotten": self.forgotten,
                "conflicts": self.conflicts,
                "hints": self.hints.count(), "trees_built": self.building is None,
                "sealed": self.sealed}

    def close(self) -> None:
        self.hints.close()
        self.engine.close()


def _seal_path(config: NodeConfig) -> Path:
    return Path(config.data_dir) / "sealed"


def _mint_epoch(config: NodeConfig) -> int:
    """This start's mint epoch: one more than any before it on this data (1 for a memory
    engine, whose incarnation is new at every start anyway)."""
    if config.engine == "memory":
        return 1
    return bump_counter(Path(config.data_dir) / "mint-epoch")


def incarnation(config: NodeConfig) -> str:
    """This data's incarnation: stored beside the data, or new for a memory engine."""
    if config.engine == "memory":
        return secrets.token_hex(4)
    path = Path(config.data_dir) / "incarnation"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_hex(4)
    write_atomically(path, token)
    return token
