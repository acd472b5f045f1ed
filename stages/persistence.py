"""The persistence stage: the node's local engine, with group commit of every batch.

Dynamo paper section 5 (pluggable local persistence; Berkeley DB by default). Reads are
answered from the engine; all writes of a batch are committed in one transaction before
any of them is acknowledged, so one fsync covers the whole batch.

Hints (paper section 4.6) live in a second store beside the data, keyed by
``[owner, key]``: the versions themselves stay in the data store, so a fallback serves
reads of what it holds, and a hint only says which owner still needs a key. Each hint
carries a fresh token, and a delivered hint is deleted only if its token is unchanged,
so a newer write's hint is never lost to an older delivery.

Every read reply carries the data's incarnation, which the versioning stage puts in its
actor id: a wiped data directory (or a memory engine's restart) gets a new incarnation,
so the node never reissues an (actor, counter) pair it issued before (Riak's kv679).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import msgpack

from seda_dynamo.config import NodeConfig
from seda_dynamo.engines import Engine, key_hash, open_engine
from seda_dynamo.stage import Event, Stage


class Handler(Stage):
    name = "persistence"
    tick_interval = 0.5

    def __init__(self, config: NodeConfig, engine: Engine | None = None,
                 hints: Engine | None = None) -> None:
        super().__init__(config)
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
        self.incarnation = incarnation(config)

    def handle_events(self, events: list[Event], now: float) -> None:
        writes: list[tuple[bytes, bytes | None]] = []
        hints: list[tuple[bytes, bytes | None]] = []
        acks: list[tuple[str, Any]] = []
        for event in events:
            kind = event[0]
            if kind == "write":  # ["write", reply_to, tag, [[key, value|None], ...], hints]
                _, reply_to, tag, pairs, hinted = event
                writes.extend((k, v) for k, v in pairs)
                hints.extend((hint_key(owner, key), secrets.token_bytes(8))
                             for owner, key in hinted)
                acks.append((reply_to, tag))
            elif kind == "get":  # ["get", reply_to, tag, [key, ...]]
                _, reply_to, tag, keys = event
                try:
                    found = self.engine.get_many(keys)
                except Exception as exc:  # noqa: BLE001 - answered as an error, not a crash
                    self.errors += 1
                    self.log.exception("read of %d keys failed", len(keys))
                    self.emit(reply_to, ["got", tag, None, f"read failed: {exc}",
                                          self.incarnation])
                else:
                    self.emit(reply_to, ["got", tag, found, None, self.incarnation])
            else:
                self.dispatch(event, now)
        if acks:
            error = None
            try:
                if hints:
                    self.hints.write_batch(hints)
                self.engine.write_batch(writes)
                self.commits += 1
            except Exception as exc:  # noqa: BLE001 - every writer hears of it
                self.errors += 1
                self.log.exception("group commit of %d writes failed", len(writes))
                error = f"write failed: {exc}"
            for reply_to, tag in acks:
                self.emit(reply_to, ["written", tag, error])

    # Hinted handoff -------------------------------------------------------------------
    def on_hints(self, now: float, reply_to: str, tag: Any, owners: list[str],
                 limit: int) -> None:
        """Up to ``limit`` hints for ``owners``, with the versions to hand them."""
        wanted = set(owners)
        found: list[list[Any]] = []
        scanned = 0
        for hkey, token in self.hints.fold(self.hint_cursor, 1 << 128):
            scanned += 1
            owner, key = msgpack.unpackb(hkey, raw=False)
            if owner in wanted:
                found.append([owner, key, token, self.engine.get(key)])
            self.hint_cursor = key_hash(hkey) + 1
            if len(found) >= limit or scanned >= 20 * limit:
                break
        else:
            self.hint_cursor = 0  # wrapped: start from the beginning next time
        self.emit(reply_to, ["hints", tag, found])

    def on_hint_done(self, now: float, delivered: list[list[Any]]) -> None:
        """Forget delivered hints whose token is unchanged (no newer write since)."""
        stale = []
        for owner, key, token in delivered:
            hkey = hint_key(owner, key)
            if self.hints.get(hkey) == token:
                stale.append((hkey, None))
        if stale:
            self.hints.write_batch(stale)

    def gauges(self) -> dict[str, Any]:
        return {"commits": self.commits, "keys": self.engine.count(),
                "hints": self.hints.count()}

    def close(self) -> None:
        self.hints.close()
        self.engine.close()


def hint_key(owner: str, key: bytes) -> bytes:
    return msgpack.packb([owner, key], use_bin_type=True)


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
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write(token)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(config.data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return token
