"""Contract tests for the local persistence engines (Dynamo paper sections 4/5).

One suite runs against every engine kind through ``open_engine``; the tests
at the end cover what only the Berkeley DB engine promises: persistence
across close/reopen and recovery after the writing process is SIGKILLed.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seda_dynamo.engines import KEY_SPACE, Engine, key_hash, open_engine

REPO_ROOT = Path(__file__).resolve().parents[2]
FULL = (0, KEY_SPACE)
MakeEngine = Callable[..., Engine]


@pytest.fixture(params=["memory", "bdb"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_engine(kind: str, tmp_path: Path) -> Iterator[MakeEngine]:
    opened: list[Engine] = []

    def make(name: str = "data", durability: str = "fsync", path: Path | None = None) -> Engine:
        engine = open_engine(kind, str(path or tmp_path / "store"), name, durability)
        opened.append(engine)
        return engine

    yield make
    for engine in opened:
        engine.close()


@pytest.fixture
def engine(make_engine: MakeEngine) -> Engine:
    return make_engine()


def hash_sorted(keys: Any) -> list[bytes]:
    return sorted(keys, key=lambda k: (key_hash(k), k))


def test_is_an_engine(engine: Engine) -> None:
    assert isinstance(engine, Engine)


def test_get_missing_is_none(engine: Engine) -> None:
    assert engine.get(b"nope") is None


def test_put_get_overwrite(engine: Engine) -> None:
    engine.put(b"k", b"v1")
    assert engine.get(b"k") == b"v1"
    engine.put(b"k", b"v2")
    assert engine.get(b"k") == b"v2"
    assert engine.count() == 1


def test_delete_present_and_missing(engine: Engine) -> None:
    engine.put(b"k", b"v")
    engine.delete(b"k")
    assert engine.get(b"k") is None
    engine.delete(b"k")
    engine.delete(b"never-there")
    assert engine.count() == 0


def test_write_batch_mixed_ops_last_wins(engine: Engine) -> None:
    engine.write_batch([(b"gone", b"x"), (b"stay", b"old")])
    engine.write_batch(
        [
            (b"a", b"1"),
            (b"gone", None),
            (b"b", b"2"),
            (b"a", b"3"),
            (b"b", None),
            (b"c", None),
            (b"c", b"4"),
            (b"stay", b"new"),
            (b"missing", None),
        ]
    )
    assert engine.get_many([b"a", b"b", b"c", b"gone", b"stay"]) == [b"3", None, b"4", None, b"new"]
    assert engine.count() == 3
    engine.write_batch([])
    assert engine.count() == 3


def test_write_batch_bad_types_apply_nothing(engine: Engine) -> None:
    with pytest.raises(TypeError):
        engine.write_batch([(b"a", b"1"), ("text", b"2")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        engine.write_batch([(b"a", b"1"), (b"b", "text")])  # type: ignore[list-item]
    assert engine.get(b"a") is None
    assert engine.count() == 0


def test_get_many_order_and_nones(engine: Engine) -> None:
    engine.write_batch([(b"x", b"1"), (b"y", b"2")])
    assert engine.get_many([b"y", b"q", b"x", b"y"]) == [b"2", None, b"1", b"2"]
    assert engine.get_many([]) == []


def test_fold_full_range_in_hash_order(engine: Engine) -> None:
    keys = [b"key-%d" % i for i in range(1300)]  # spans several fold chunks
    engine.write_batch([(k, k[::-1]) for k in keys])
    folded = list(engine.fold(*FULL))
    assert [k for k, _ in folded] == hash_sorted(keys)
    assert all(v == k[::-1] for k, v in folded)
    lo, hi = key_hash(hash_sorted(keys)[100]), key_hash(hash_sorted(keys)[700])
    assert [k for k, _ in engine.fold(lo, hi)] == hash_sorted(keys)[100:700]


def test_fold_single_key_range(engine: Engine) -> None:
    engine.write_batch([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    h = key_hash(b"b")
    assert list(engine.fold(h, h + 1)) == [(b"b", b"2")]
    assert list(engine.fold(h + 1, h + 1)) == []


def test_fold_empty_ranges(engine: Engine) -> None:
    assert list(engine.fold(*FULL)) == []
    engine.write_batch([(b"k%d" % i, b"v") for i in range(50)])
    assert list(engine.fold(7, 7)) == []
    assert list(engine.fold(KEY_SPACE, KEY_SPACE)) == []
    assert list(engine.fold(10**30, 10)) == []
    assert len(list(engine.fold(-5, KEY_SPACE + 5))) == 50


_names = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(keys=st.sets(st.binary(max_size=12), max_size=40), data=st.data())
def test_fold_split_partitions_exactly(
    make_engine: MakeEngine, keys: set[bytes], data: st.DataObject
) -> None:
    engine = make_engine(name=f"split{next(_names)}", durability="nosync")
    try:
        engine.write_batch([(k, b"v" + k) for k in keys])
        choices = [st.integers(0, KEY_SPACE)]
        if keys:  # also split exactly at (or just after) a stored key's hash
            at_key = st.sampled_from(sorted(keys)).map(key_hash)
            choices.append(at_key.flatmap(lambda h: st.sampled_from([h, h + 1])))
        split = data.draw(st.one_of(choices))
        left = list(engine.fold(0, split))
        right = list(engine.fold(split, KEY_SPACE))
        assert all(key_hash(k) < split for k, _ in left)
        assert all(key_hash(k) >= split for k, _ in right)
        assert [k for k, _ in left + right] == hash_sorted(keys)
        assert all(v == b"v" + k for k, v in left + right)
    finally:
        engine.close()


def test_count(engine: Engine) -> None:
    assert engine.count() == 0
    engine.write_batch([(b"k%d" % i, b"v") for i in range(25)])
    assert engine.count() == 25
    engine.write_batch([(b"k%d" % i, None) for i in range(10)] + [(b"k20", b"again")])
    assert engine.count() == 15


def test_stats(engine: Engine, kind: str) -> None:
    engine.write_batch([(b"a", b"x" * 1000), (b"b", b"y")])
    engine.put(b"c", b"z")
    stats = engine.stats()
    assert stats["engine"] == kind
    assert stats["keys"] == 3
    assert stats["commits"] == 2
    assert isinstance(stats["bytes"], int) and stats["bytes"] >= 1000


def test_binary_keys_empty_and_large_values(engine: Engine) -> None:
    big = os.urandom(1 << 20)
    records = {
        b"": b"empty key",
        b"\x00": b"nul",
        b"\x00\x00": b"",
        b"a\x00b": b"\x00\xff",
        b"\xff" * 40: big,
        bytes(range(256)): big[:1000],
    }
    engine.write_batch(list(records.items()))
    assert engine.get_many(list(records)) == list(records.values())
    assert engine.get(b"\x00\x00") == b""
    assert engine.get(b"\x00\x00\x00") is None
    assert dict(engine.fold(*FULL)) == records
    engine.write_batch([(b"big%d" % i, big) for i in range(5)])  # > one 4 MiB fold chunk
    everything = list(records) + [b"big%d" % i for i in range(5)]
    assert [k for k, _ in engine.fold(*FULL)] == hash_sorted(everything)
    assert engine.count() == len(records) + 5


def test_close_is_idempotent(engine: Engine) -> None:
    engine.put(b"k", b"v")
    engine.close()
    engine.close()
    with pytest.raises(RuntimeError):
        engine.get(b"k")


def test_two_names_in_one_directory_are_independent(make_engine: MakeEngine) -> None:
    data = make_engine(name="data", durability="fsync")
    hints = make_engine(name="hints", durability="nosync")
    data.put(b"k", b"data")
    hints.write_batch([(b"k", b"hint"), (b"h", b"only-hint")])
    assert data.get(b"k") == b"data" and hints.get(b"k") == b"hint"
    assert data.get(b"h") is None
    assert (data.count(), hints.count()) == (1, 2)
    hints.close()
    assert data.get(b"k") == b"data"
    assert [k for k, _ in data.fold(*FULL)] == [b"k"]


def test_concurrent_writers_and_folds(engine: Engine) -> None:
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(40):
                engine.write_batch([(b"t%d-%d-%d" % (t, i, j), b"v") for j in range(5)])
                list(engine.fold(0, KEY_SPACE // 3))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert engine.count() == 4 * 40 * 5


def test_open_engine_rejects_bad_kind_and_durability(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bdb.*memory"):
        open_engine("leveldb", str(tmp_path), "data", "fsync")
    for kind in ("bdb", "memory"):
        with pytest.raises(ValueError, match="fsync"):
            open_engine(kind, str(tmp_path), "data", "sometimes")


# --- Berkeley DB only -----------------------------------------------------


def test_bdb_survives_close_and_reopen(tmp_path: Path) -> None:
    engine = open_engine("bdb", str(tmp_path / "new" / "dir"), "data", "nosync")
    engine.write_batch([(b"k%d" % i, b"v%d" % i) for i in range(100)] + [(b"k5", None)])
    engine.close()
    engine = open_engine("bdb", str(tmp_path / "new" / "dir"), "data", "fsync")
    try:
        assert engine.count() == 99
        assert engine.get(b"k7") == b"v7" and engine.get(b"k5") is None
        assert len(list(engine.fold(*FULL))) == 99
    finally:
        engine.close()


def test_bdb_failed_batch_is_aborted(tmp_path: Path) -> None:
    engine = open_engine("bdb", str(tmp_path), "data", "fsync")
    engine.put(b"old", b"1")
    real = engine._kv  # type: ignore[attr-defined]

    class FailingKV:
        puts = 0

        def __getattr__(self, attr: str) -> Any:
            return getattr(real, attr)

        def put(self, *args: Any, **kwargs: Any) -> None:
            FailingKV.puts += 1
            if FailingKV.puts == 3:
                raise OSError("disk on fire")
            real.put(*args, **kwargs)

    engine._kv = FailingKV()  # type: ignore[attr-defined]
    with pytest.raises(OSError, match="disk on fire"):
        engine.write_batch([(b"a", b"1"), (b"old", None), (b"b", b"2"), (b"c", b"3")])
    engine._kv = real  # type: ignore[attr-defined]
    try:
        assert engine.get_many([b"a", b"old", b"b", b"c"]) == [None, b"1", None, None]
        assert engine.count() == 1
        engine.put(b"after", b"ok")
        assert engine.count() == 2
    finally:
        engine.close()


CHILD = """
import os, signal, sys
from seda_dynamo.engines import open_engine
engine = open_engine("bdb", sys.argv[1], "data", sys.argv[2])
for i in range(30):
    engine.write_batch([(b"k%d-%d" % (i, j), b"v%d" % j) for j in range(20)])
engine.write_batch([(b"k0-0", None), (b"k1-1", b"last")])
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("durability", ["fsync", "nosync"])
def test_bdb_recovers_after_sigkill(tmp_path: Path, durability: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), durability],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    engine = open_engine("bdb", str(tmp_path), "data", "fsync")
    try:
        assert engine.count() == 30 * 20 - 1
        assert engine.get(b"k0-0") is None and engine.get(b"k1-1") == b"last"
        assert engine.get(b"k29-19") == b"v19"
        assert len(list(engine.fold(*FULL))) == 30 * 20 - 1
        engine.put(b"more", b"ok")
    finally:
        engine.close()


@pytest.mark.parametrize("durability", ["fsync", "nosync"])
def test_bdb_commit_flushes_log_only_with_fsync(tmp_path: Path, durability: str) -> None:
    engine = open_engine("bdb", str(tmp_path), "data", durability)
    try:
        before = int(engine.stats()["log_syncs"])
        for i in range(5):
            engine.put(b"k%d" % i, b"v")
        synced = int(engine.stats()["log_syncs"]) - before
        assert synced >= 5 if durability == "fsync" else synced == 0
    finally:
        engine.close()


def test_bdb_log_files_are_removed(tmp_path: Path) -> None:
    engine = open_engine("bdb", str(tmp_path), "data", "nosync")
    try:
        value = os.urandom(300 << 10)
        for i in range(130):  # ~39 MiB of log; a checkpoint runs at commit 128
            engine.put(b"k%d" % (i % 8), value)
        assert int(engine.stats()["log_files"]) <= 2
    finally:
        engine.close()
