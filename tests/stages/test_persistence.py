"""The persistence stage's handler (paper 4.1's local engine behind one stage): group
commit, compare-and-set, reaping, hints.
"""

from __future__ import annotations

from pipeline import Pipeline


def test_a_failed_group_commit_is_reported_to_every_writer():
    p = Pipeline()

    def broken(ops):
        raise OSError("disk full")

    p.engine.write_batch = broken
    for i in range(3):
        p.request({"op": "put", "key": b"k%d" % i, "value": b"v", "id": i})
    p.run()
    assert [r["error"] for r in p.replies] == ["unavailable"] * 3
