"""Berkeley DB local persistence engine for seda-dynamo (the default engine).

The Dynamo paper (sections 4 and 5) gives every storage node a *pluggable local
persistence engine*, Berkeley DB Transactional Data Store by default; this is
that engine, over the ``berkeleydb`` bindings (libdb 5.3), and the only module
in the project that imports ``berkeleydb``.

On disk, ``path`` is one Berkeley DB environment home shared by every engine
name opened in it (``__db.00N`` region files, ``log.NNNNNNNNNN`` write-ahead
log files), plus one file ``<name>.db`` per name with two B-tree subdatabases:

* ``kv``   -- records stored under ``md5(key) + key`` (16-byte big-endian
  digest, then the key), so a ring hash range is one cursor range scan;
* ``meta`` -- the key count, updated in the same transaction as the records.

In a process the ``DBEnv`` of a directory is opened once and shared through a
module-level registry with reference counting; the last engine to close it
checkpoints and closes it.  It is opened with ``DB_INIT_TXN | DB_INIT_LOG |
DB_INIT_LOCK | DB_INIT_MPOOL | DB_CREATE | DB_RECOVER | DB_THREAD`` (64 MiB
cache, 2 MiB log buffer, deadlock detection, ``DB_LOG_AUTO_REMOVE``), so a
crash -- even SIGKILL -- is recovered when the directory is next opened.
Single-process use only: ``DB_RECOVER`` must not run while another process
has the environment open.

Durability (per transaction, so both kinds may share an environment):

* ``"fsync"``  -- commit with default flags: the log is flushed to disk
  before :meth:`BDBEngine.write_batch` returns;
* ``"nosync"`` -- commit with ``DB_TXN_WRITE_NOSYNC``: the log is written to
  the operating system but not fsynced, so a committed batch survives a
  process kill -9 but may be lost on power failure or an OS crash.

Log files no longer needed for recovery are removed at checkpoints: every
``CHECKPOINT_EVERY`` commits (given ``CHECKPOINT_KBYTES`` of new log) and on close.
"""

from __future__ import annotations

import os
import re
import struct
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

from berkeleydb import db

from seda_dynamo.engines import (
    KEY_SPACE,
    Op,
    WriteBatchShortcuts,
    check_durability,
    check_ops,
    clamp_range,
    hash_prefix,
)

CACHE_BYTES = 64 << 20
LOG_BUFFER_BYTES = 2 << 20
PAGE_SIZE = 8192
CHECKPOINT_EVERY = 128
CHECKPOINT_KBYTES = 8 << 10
FOLD_CHUNK_RECORDS = 512
FOLD_CHUNK_BYTES = 4 << 20
DEADLOCK_RETRIES = 5

_SUBSYSTEMS = db.DB_INIT_TXN | db.DB_INIT_LOG | db.DB_INIT_LOCK | db.DB_INIT_MPOOL
_ENV_FLAGS = _SUBSYSTEMS | db.DB_CREATE | db.DB_RECOVER | db.DB_THREAD
_DB_FLAGS = db.DB_CREATE | db.DB_AUTO_COMMIT | db.DB_THREAD
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_COUNT_KEY = b"count"
_COUNT = struct.Struct(">q")
_T = TypeVar("_T")


class _SharedEnv:
    """One open DBEnv for a directory, shared by the engines opened in it."""

    def __init__(self, home: str) -> None:
        env = db.DBEnv()
        try:
            env.set_cachesize(0, CACHE_BYTES, 1)
            env.set_lg_bsize(LOG_BUFFER_BYTES)
            env.set_lk_detect(db.DB_LOCK_DEFAULT)
            env.log_set_config(db.DB_LOG_AUTO_REMOVE, 1)
            env.open(home, _ENV_FLAGS, 0o600)
        except BaseException:
            env.close()
            raise
        self.env = env
        self.refs = 0
        self.write_locks: dict[str, threading.Lock] = {}


_ENVS: dict[str, _SharedEnv] = {}
_ENVS_LOCK = threading.Lock()


def _acquire_env(home: str, name: str) -> tuple[db.DBEnv, threading.Lock]:
    with _ENVS_LOCK:
        shared = _ENVS.get(home)
        if shared is None:
            shared = _ENVS[home] = _SharedEnv(home)
        shared.refs += 1
        return shared.env, shared.write_locks.setdefault(name, threading.Lock())


def _release_env(home: str) -> None:
    with _ENVS_LOCK:
        shared = _ENVS[home]
        shared.refs -= 1
        if shared.refs > 0:
            return
        del _ENVS[home]
        try:
            shared.env.txn_checkpoint(0, 0)
        finally:
            shared.env.close()


class BDBEngine(WriteBatchShortcuts):
    """A transactional Berkeley DB B-tree engine; see the module docstring."""

    def __init__(self, path: str, name: str, durability: str) -> None:
        self.durability = check_durability(durability)
        if not _NAME_RE.match(name):
            raise ValueError(f"bad database name {name!r}: use letters, digits, '_', '.', '-'")
        os.makedirs(path, exist_ok=True)
        self.home = os.path.realpath(path)
        self.name = name
        self._commit_flags = 0 if durability == "fsync" else db.DB_TXN_WRITE_NOSYNC
        self._commits = 0
        self._closed = True
        self._dbs: list[db.DB] = []
        self._env, self._wlock = _acquire_env(self.home, name)
        try:
            self._kv = self._open_db("kv")
            self._meta = self._open_db("meta")
        except BaseException:
            self._close_dbs()
            _release_env(self.home)
            raise
        self._closed = False

    def _open_db(self, subname: str) -> db.DB:
        handle = db.DB(self._env)
        self._dbs.append(handle)
        handle.set_pagesize(PAGE_SIZE)
        handle.set_get_returns_none(2)  # missing keys / cursor ends give None
        handle.open(f"{self.name}.db", subname, db.DB_BTREE, _DB_FLAGS, 0o600)
        return handle

    def _close_dbs(self) -> None:
        while self._dbs:
            self._dbs.pop().close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"bdb engine {self.name!r} in {self.home} is closed")

    @staticmethod
    def _retry(fn: Callable[[], _T]) -> _T:
        """Run ``fn``, retrying when it is chosen as a deadlock victim."""
        for _ in range(DEADLOCK_RETRIES - 1):
            try:
                return fn()
            except db.DBLockDeadlockError:
                pass
        return fn()

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        row = hash_prefix(key) + key
        return self._retry(lambda: self._kv.get(row))

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def write_batch(self, ops: list[Op]) -> None:
        rows = [(hash_prefix(key) + key, value) for key, value in check_ops(ops)]
        self._check_open()
        if not rows:
            return
        with self._wlock:
            self._check_open()
            self._retry(lambda: self._commit(rows))
            self._commits += 1
            if self._commits % CHECKPOINT_EVERY == 0:
                self._env.txn_checkpoint(CHECKPOINT_KBYTES, 0)

    def _commit(self, rows: list[Op]) -> None:
        """Apply ``rows`` (already keyed by md5 + key) in one transaction."""
        txn = self._env.txn_begin()
        try:
            delta = 0
            for row, value in rows:
                if value is None:
                    try:
                        self._kv.delete(row, txn=txn)
                        delta -= 1
                    except db.DBNotFoundError:
                        pass
                else:
                    if not self._kv.exists(row, txn, db.DB_RMW):
                        delta += 1
                    self._kv.put(row, value, txn=txn)
            if delta:
                raw = self._meta.get(_COUNT_KEY, txn=txn, flags=db.DB_RMW)
                total = (_COUNT.unpack(raw)[0] if raw else 0) + delta
                self._meta.put(_COUNT_KEY, _COUNT.pack(total), txn=txn)
        except BaseException:
            txn.abort()
            raise
        txn.commit(self._commit_flags)  # on failure BDB aborts the txn itself

    def fold(self, lo: int, hi: int) -> Iterator[tuple[bytes, bytes]]:
        lo, hi = clamp_range(lo, hi)
        if lo >= hi:
            return
        start: bytes | None = lo.to_bytes(16, "big")
        stop = hi.to_bytes(16, "big") if hi < KEY_SPACE else None
        while start is not None:
            self._check_open()
            chunk, start = self._retry(partial(self._read_chunk, start, stop))
            yield from chunk

    def _read_chunk(
        self, start: bytes, stop: bytes | None
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        """Read a bounded chunk with a fresh non-transactional cursor, closed before
        the caller sees it (no lock is held between chunks); also the row to resume
        from, None when the range is exhausted."""
        records: list[tuple[bytes, bytes]] = []
        size = 0
        cursor = self._kv.cursor()
        try:
            rec = cursor.set_range(start)
            while rec is not None:
                row, value = rec
                if stop is not None and row >= stop:
                    break
                records.append((row[16:], value))
                size += len(row) + len(value)
                if len(records) >= FOLD_CHUNK_RECORDS or size >= FOLD_CHUNK_BYTES:
                    return records, row + b"\x00"  # the smallest row after `row`
                rec = cursor.next()
        finally:
            cursor.close()
        return records, None

    def count(self) -> int:
        self._check_open()
        raw = self._retry(lambda: self._meta.get(_COUNT_KEY))
        return _COUNT.unpack(raw)[0] if raw else 0

    def stats(self) -> dict[str, int | float | str]:
        self._check_open()
        fast = self._kv.stat(db.DB_FAST_STAT)  # pagecnt covers the whole <name>.db file
        return {
            "engine": "bdb",
            "name": self.name,
            "path": self.home,
            "durability": self.durability,
            "keys": self.count(),
            "commits": self._commits,
            "bytes": int(fast["pagecnt"]) * int(fast["pagesize"]),
            "log_syncs": int(self._env.log_stat()["scount"]),  # environment-wide
            "log_files": sum(1 for f in os.listdir(self.home) if f.startswith("log.")),
        }

    def close(self) -> None:
        with self._wlock:  # wait for an in-flight write_batch
            if self._closed:
                return
            self._closed = True
            self._close_dbs()
        _release_env(self.home)
