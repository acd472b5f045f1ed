"""The durable little files behind actor ids (seda_dynamo.durable)."""

from __future__ import annotations

import pytest

from seda_dynamo.durable import bump_counter, write_atomically


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
