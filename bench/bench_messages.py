"""The cost of typed inter-stage events (``seda_dynamo.messages``) on the hot path.

One put at a one-replica node crosses the stage queues as eight events (network ->
coordination ``req``, ``update``, ``get``, ``got``, ``write``, ``written``, ``updated``,
``reply``). Each benchmark builds those events, packs each stage's batch as the runtime
does (``[sent_at, events]``), unpacks it and dispatches every event to its ``on_<kind>``
(handlers that do nothing, so only the messaging is measured):

- ``old``: events built as list literals (before issue 12);
- ``wire``: ``Type.wire(...)``, the type's named fields straight to the list, answers
  through ``answer_to`` (the reply envelope's check): what the stages do;
- ``new``: ``Type(...).to_wire()``, an object first;
- ``emit``: the typed object handed to ``emit``, which calls ``to_wire``.

Run with pytest-benchmark::

    PYTHONPATH=. .venv/bin/python -m pytest bench/bench_messages.py -q -p no:randomly \\
        --benchmark-enable

or ``python -m bench.bench_messages`` for the four side by side (best of 15 rounds).
"""

from __future__ import annotations

import timeit
from typing import Any

import msgpack
import pytest

from seda_dynamo.config import NodeConfig
from seda_dynamo.messages import Get, Got, Reply, Request, Update, Updated, Write, Written
from seda_dynamo.messagetable import answer_to
from seda_dynamo.stage import Stage

KEY = b"bench-key-0001"
VALUE = b"v" * 100
CLOCK = b"c" * 60
CONTEXT = b"x" * 24
HASH = b"h" * 16


class Sink(Stage):
    """Receives every event of a put, doing nothing with it."""

    name = "sink"

    def on_req(self, now: float, *_: Any) -> None: ...
    def on_update(self, now: float, *_: Any) -> None: ...
    def on_get(self, now: float, *_: Any) -> None: ...
    def on_got(self, now: float, *_: Any) -> None: ...
    def on_write(self, now: float, *_: Any) -> None: ...
    def on_written(self, now: float, *_: Any) -> None: ...
    def on_updated(self, now: float, *_: Any) -> None: ...
    def on_reply(self, now: float, *_: Any) -> None: ...


class TypedEmit(Sink):
    """``emit`` taking a typed message."""

    def emit(self, dest: str, event: Any) -> None:
        self.outbox.append((dest, event if type(event) is list else event.to_wire()))


def old_events(stage: Stage, rid: int) -> None:
    emit = stage.emit
    emit("coordination", ["req", rid, "put", KEY, VALUE, None, None, None, None, False])
    emit("versioning", ["update", "coordination", rid, KEY, VALUE, None, False, None])
    emit("persistence", ["get", "versioning", rid, [KEY], True])
    emit("versioning", ["got", rid, [None], None, "inc", [1, rid]])
    emit("persistence", ["write", "versioning", rid, [[KEY, CLOCK, b""]], []])
    emit("versioning", ["written", rid, None, []])
    emit("coordination", ["updated", rid, CONTEXT, CLOCK, None])
    emit("network", ["reply", rid, {"ok": True, "context": CONTEXT, "epoch": 1}])


def new_events(stage: Stage, rid: int) -> None:
    emit = stage.emit
    emit("coordination", Request(rid, "put", KEY, VALUE, None, None, None, None,
                                 False).to_wire())
    emit("versioning", Update("coordination", rid, KEY, VALUE, None, False, None).to_wire())
    emit("persistence", Get("versioning", rid, [KEY], True).to_wire())
    emit("versioning", Got(rid, [None], None, "inc", [1, rid]).to_wire())
    emit("persistence", Write("versioning", rid, [[KEY, CLOCK, b""]], []).to_wire())
    emit("versioning", Written(rid, None, []).to_wire())
    emit("coordination", Updated(rid, CONTEXT, CLOCK, None).to_wire())
    emit("network", Reply(rid, {"ok": True, "context": CONTEXT, "epoch": 1}).to_wire())


def wire_events(stage: Stage, rid: int) -> None:
    emit = stage.emit
    emit("coordination", Request.wire(rid, "put", KEY, VALUE, None, None, None, None, False))
    emit("versioning", Update.wire("coordination", rid, KEY, VALUE, None, False, None))
    emit("persistence", Get.wire("versioning", rid, [KEY], True))
    emit(*answer_to("versioning", Got.wire(rid, [None], None, "inc", [1, rid])))
    emit("persistence", Write.wire("versioning", rid, [[KEY, CLOCK, b""]], []))
    emit("versioning", Written.wire(rid, None, []))
    emit(*answer_to("coordination", Updated.wire(rid, CONTEXT, CLOCK, None)))
    emit("network", Reply.wire(rid, {"ok": True, "context": CONTEXT, "epoch": 1}))


def emit_events(stage: Stage, rid: int) -> None:
    emit = stage.emit
    emit("coordination", Request(rid, "put", KEY, VALUE, None, None, None, None, False))
    emit("versioning", Update("coordination", rid, KEY, VALUE, None, False, None))
    emit("persistence", Get("versioning", rid, [KEY], True))
    emit("versioning", Got(rid, [None], None, "inc", [1, rid]))
    emit("persistence", Write("versioning", rid, [[KEY, CLOCK, b""]], []))
    emit("versioning", Written(rid, None, []))
    emit("coordination", Updated(rid, CONTEXT, CLOCK, None))
    emit("network", Reply(rid, {"ok": True, "context": CONTEXT, "epoch": 1}))


def one_put(stage: Stage, build: Any, rid: int = 7) -> None:
    """Build a put's events, carry them as the runtime does, dispatch them."""
    build(stage, rid)
    for _, event in stage.take_outbox():  # one event per hop: each is its own batch
        frame = msgpack.packb([0.0, [event]], use_bin_type=True)
        _, events = msgpack.unpackb(frame, raw=False, strict_map_key=False)
        stage.handle_events(events, 0.0)


STYLES = {"old": (Sink, old_events), "wire": (Sink, wire_events), "new": (Sink, new_events),
          "emit": (TypedEmit, emit_events)}


def _stage(style: str) -> tuple[Stage, Any]:
    cls, build = STYLES[style]
    stage = cls(NodeConfig(node_id="bench", engine="memory"))
    one_put(stage, build)
    assert not stage.errors
    return stage, build


@pytest.mark.parametrize("style", ["old", "wire", "new", "emit"])
def test_put_events(benchmark: Any, style: str) -> None:
    stage, build = _stage(style)
    benchmark.group = "a put's events"
    benchmark(one_put, stage, build)


def test_the_styles_send_the_same_bytes() -> None:
    frames = {}
    for style, (cls, build) in STYLES.items():
        stage = cls(NodeConfig(node_id="bench", engine="memory"))
        build(stage, 7)
        frames[style] = [msgpack.packb(e, use_bin_type=True) for _, e in stage.take_outbox()]
    assert frames["old"] == frames["wire"] == frames["new"] == frames["emit"]


def main(rounds: int = 15, number: int = 5_000) -> None:
    """Best per style over ``rounds`` in which the styles take turns (the machine's
    other load hits them alike)."""
    stages = {style: _stage(style) for style in STYLES}
    best = dict.fromkeys(STYLES, float("inf"))
    for _ in range(rounds):
        for style, (stage, build) in stages.items():
            took = timeit.timeit(lambda s=stage, b=build: one_put(s, b), number=number)
            best[style] = min(best[style], took / number * 1e6)
    print(f"{'style':<6} {'us/put':>8} {'vs old':>8}")
    for style, us in best.items():
        print(f"{style:<6} {us:8.2f} {us / best['old'] - 1:+8.1%}")


if __name__ == "__main__":
    main()
