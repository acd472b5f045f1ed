"""The durable little files behind actor ids (seda_dynamo.durable)."""

from __future__ import annotations

import threading
import time

import pytest

from seda_dynamo.durable import FileStore, bump_counter, write_atomically


def test_bump_counter_starts_at_one_and_never_repeats(tmp_path):
    path = tmp_path / "sub" / "epoch"
    assert [bump_counter(path) for _ in range(3)] == [1, 2, 3]
    assert path.read_text() == "3"
    assert not path.with_suffix(".tmp").exists()


def test_bump_counter_refuses_a_damaged_file_instead_of_restarting_at_one(tmp_path):
    path = tmp_path / "epoch"
    write_atomically(path, "not a number")
    with pytest.raises(ValueError, match="does not hold a counter"):
        bump_counter(path)


def test_two_bumps_at_once_never_return_the_same_value(tmp_path):
    """Item 9: two versioning workers starting together could read the counter before
    either wrote it (and shared one temporary file name) and get the same epoch. The
    interleaving is injected: the first bump waits between its read and its write until
    the second has read too, or half a second; with the lock the second cannot read
    before the first has written, so the wait times out and the values differ."""
    path = tmp_path / "epoch"
    second_read = threading.Event()
    results: list[int] = []

    def first() -> None:
        results.append(bump_counter(path, after_read=lambda _: second_read.wait(0.5)))

    def second() -> None:
        results.append(bump_counter(path, after_read=lambda _: second_read.set()))

    a = threading.Thread(target=first)
    a.start()
    time.sleep(0.05)  # the first is inside its read-modify-write
    b = threading.Thread(target=second)
    b.start()
    a.join()
    b.join()
    assert sorted(results) == [1, 2]
    assert path.read_text() == "2"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_view_file_store_gives_back_what_was_saved_and_none_before(tmp_path):
    store = FileStore(tmp_path / "cluster.state")
    assert store.load() is None
    store.save(b"one")
    store.save(b"two")
    assert store.load() == b"two" and sorted(p.name for p in tmp_path.iterdir()) == [
        "cluster.state"]
