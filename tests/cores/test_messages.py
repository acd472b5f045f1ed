"""The inter-stage events (``seda_dynamo.messages``) and their table
(``seda_dynamo.messagetable``): every kind round-trips through its wire form, the table
is true of the stages (handlers, senders, shard fields), every stage (and the gossip
stage's duties) emits only typed events, and docs/architecture.md shows the table the code
has.

Stage modules are imported by the module names of ``stage.STAGES`` inside the tests
(a core never imports a stage, and this file is a core's test).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo import messages, peerprotocol
from seda_dynamo.messages import MessageError
from seda_dynamo.messagetable import (
    BATCHED,
    EVERY_WORKER,
    PEER_ANSWERS,
    RELAY,
    TABLE,
    answer_to,
    failed_answer,
    markdown_table,
    shard_index,
    to_every_worker,
)
from seda_dynamo.stage import STAGES, Stage

ROOT = Path(__file__).resolve().parents[2]
#: Destinations that are sockets, not stages: the network stage's client and metrics
#: ports take frames.
PORTS = ("client", "metrics")
TYPE_NAMES = {row.type.__name__ for row in TABLE.values()}

SCALAR = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
          | st.floats(allow_nan=False) | st.text(max_size=6) | st.binary(max_size=6))
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                     max_leaves=6)


def handler_class(stage: str) -> type[Stage]:
    module = next(s.module for s in STAGES if s.name == stage)
    return importlib.import_module(module).Handler


def _wire(event: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(event, use_bin_type=True), raw=False,
                           strict_map_key=False)


# Round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", TABLE)
@given(data=st.data())
def test_every_kind_round_trips_through_its_wire_form(name, data):
    row = TABLE[name]
    fields = data.draw(st.tuples(*[VALUE] * len(row.type._fields)))
    message = row.type(*fields)
    event = message.to_wire()
    assert event[0] == row.kind == row.type.KIND
    assert event == row.type.wire(*fields), "wire() and to_wire() disagree"
    assert row.type.from_wire(event) == message
    assert row.type.from_wire(_wire(event)) == message  # as the queue carries it
    assert type(event) is list


@pytest.mark.parametrize("name", TABLE)
def test_from_wire_refuses_another_kind_and_a_wrong_number_of_fields(name):
    row = TABLE[name]
    fields = [None] * len(row.type._fields)
    with pytest.raises(MessageError):
        row.type.from_wire(["nope", *fields])
    with pytest.raises(MessageError):
        row.type.from_wire([row.kind, *fields, None])
    with pytest.raises(MessageError):
        row.type.from_wire("not an event")
    required = len(fields) - len(row.type._field_defaults)
    if required:
        with pytest.raises(MessageError):
            row.type.from_wire([row.kind, *fields[: required - 1]])


def test_optional_last_fields_stay_off_the_wire_as_the_stages_always_sent_them():
    assert messages.Get.wire("coordination", 1, [b"k"]) == ["get", "coordination", 1, [b"k"]]
    assert messages.Get.wire("versioning", 1, [b"k"], True)[-1] is True
    assert messages.Got.wire(1, [None], None, "inc") == ["got", 1, [None], None, "inc"]
    assert messages.Got.wire(1, [None], None, "inc", [2, 3])[-1] == [2, 3]
    # Arguments by name, as the type's fields are named.
    assert messages.Update.wire(reply_to="coordination", ref=4, key=b"k", value=None,
                                context=None, cover_stored=True, hint=None)[6] is True
    # A call's optional fields are always sent (nil when absent), and read back when
    # left off.
    assert messages.Call.wire("p:1", "gossip", ["view"], ["ping"]) == [
        "call", "p:1", "gossip", ["view"], ["ping"], None, None]
    assert messages.Call.from_wire(["call", "p:1", "gossip", ["view"], ["ping"]]).node is None


def test_every_kind_is_its_own_row_of_the_table():
    """One shape per kind: the table's names are the kinds (``hints_found``, the answer
    to ``hints``, is a kind of its own)."""
    assert all(name == row.kind == row.type.KIND for name, row in TABLE.items())
    assert len({row.type for row in TABLE.values()}) == len(TABLE)


# The table is true of the stages ------------------------------------------------------------
@pytest.mark.parametrize("stage", [s.name for s in STAGES])
def test_each_receiver_has_the_handler_the_table_names_and_no_other(stage):
    cls = handler_class(stage)
    rows = [row for row in TABLE.values() if stage in row.receivers]
    for row in rows:
        if row.handler == BATCHED:  # taken in handle_events itself, batched
            assert cls.handle_events is not Stage.handle_events
            assert f'"{row.kind}"' in inspect.getsource(cls.handle_events), row.kind
        else:
            assert callable(getattr(cls, row.handler, None)), f"{stage} has no {row.handler}"
    handlers = {name for name in dir(cls) if name.startswith("on_")}
    assert handlers == {row.handler for row in rows if row.handler != BATCHED}


#: Where each sender's events are built: the runtime's reports come from its accounting,
#: and the gossip stage's duties are cores of their own (``seda_dynamo.duty``).
SOURCES = {
    "runtime": ["seda_dynamo/runtime.py", "seda_dynamo/accounting.py"],
    "gossip": ["stages/gossip.py", "seda_dynamo/duty.py", "seda_dynamo/hintedhandoff.py",
               "seda_dynamo/antientropy.py", "seda_dynamo/reaper.py", "seda_dynamo/transfer.py",
               "seda_dynamo/failure.py", "seda_dynamo/strays.py"],
}


def _paths(sender: str) -> list[Path]:
    return [ROOT / rel for rel in SOURCES.get(sender, [f"stages/{sender}.py"])]


def _source(sender: str) -> str:
    return "\n".join(path.read_text() for path in _paths(sender))


@pytest.mark.parametrize("name", TABLE)
def test_each_sender_the_table_names_sends_the_kind(name):
    row = TABLE[name]
    for sender in row.senders:
        text = _source(sender)
        typed = f"{row.type.__name__}.wire(" in text
        listed = sender == "runtime" and f'["{row.kind}"' in text  # its reports: lists
        enveloped = row.kind == "respond" and "answer_to(" in text
        assert typed or listed or enveloped, f"{sender} does not send {name}"


def _emits(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == "emit"]


def _typed(node: ast.expr) -> bool:
    """``Type.wire(...)`` of a type of the table."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "wire" and isinstance(node.func.value, ast.Name)
            and node.func.value.id in TYPE_NAMES)


@pytest.mark.parametrize("stage", [s.name for s in STAGES])
def test_every_stage_and_duty_emits_only_typed_events(stage):
    """Each emit of a stage (for gossip: of its duties too) is ``Type.wire(...)`` of a
    type of the table, or goes to a peer or a port, which are not the queues."""
    bad = []
    calls = [(path, call) for path in _paths(stage) for call in _emits(path)]
    assert calls, f"{stage} emits nothing?"
    for path, call in calls:
        args = call.args
        if len(args) == 1 and isinstance(args[0], ast.Starred):  # *answer_to(reply_to, ...)
            inner = args[0].value
            ok = (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name)
                  and inner.func.id == "answer_to" and _typed(inner.args[1]))
        elif len(args) == 2:
            dest, event = args
            to_peer = isinstance(dest, ast.BinOp) and isinstance(dest.left, ast.Name) \
                and dest.left.id == "PEER_PREFIX"  # the peer wire: peerprotocol's table
            to_port = isinstance(dest, ast.Constant) and dest.value in PORTS
            ok = to_peer or to_port or _typed(event)
        else:
            ok = False
        if not ok:
            bad.append(f"{path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(call)}")
    assert bad == []


def test_the_typed_emit_check_reads_each_of_the_gossip_duties():
    """Every duty module of the gossip stage (not only the stage) is read by the check
    above, and each that emits builds typed events."""
    duties = [p for p in _paths("gossip") if p.parent.name == "seda_dynamo"]
    assert len(duties) == 7
    for path in duties:
        if path.name != "failure.py":  # the watcher only calls, through duty.Component
            assert [c for c in _emits(path) if _typed(c.args[1])], path.name


# Shards ------------------------------------------------------------------------------------
def test_the_shard_field_of_each_sharded_kind_is_a_field_of_its_type():
    sharded = {row.kind: row for row in TABLE.values()
               if row.shard not in (None, EVERY_WORKER)}
    assert set(sharded) == {"update", "sync"}
    # An announcement goes to each worker: each waits on the stage announced.
    assert {row.kind for row in TABLE.values() if row.shard == EVERY_WORKER} == {"started"}
    assert to_every_worker("started") and not to_every_worker("update")
    assert shard_index("started") is None
    for kind, row in sharded.items():
        assert row.receivers == ("versioning",)
        assert row.shard in row.type._fields
        assert shard_index(kind) == row.type._fields.index(row.shard) + 1 == 3
    assert shard_index("got") is None and shard_index("written") is None
    assert shard_index("no such kind") is None
    # Every kind versioning's workers receive from other stages' requests is sharded
    # (its answers come back to the worker that asked, by name).
    asked = {row.kind for row in TABLE.values()
             if "versioning" in row.receivers and row.handler == BATCHED}
    assert asked == set(sharded)


@given(key=st.binary(max_size=20), ref=VALUE)
def test_a_shard_field_is_found_where_the_event_holds_it(key, ref):
    for event in (messages.Update.wire("coordination", ref, key, None, None, False, None),
                  messages.Sync.wire("network", ref, key, b"c", None)):
        assert event[shard_index(event[0])] == key


# The reply envelope -------------------------------------------------------------------------
ANSWERS = {
    "updated": messages.Updated.wire(["p:1", 9], b"ctx", b"clock", None),
    "checked": messages.Checked.wire(["p:1", 9], b"versions", True),
    "tree_answer": messages.TreeAnswer.wire(["p:1", 9], {"0": [b"h"]}),
    "got": messages.Got.wire(["p:1", 9], [b"versions"], None, "inc"),
}


@pytest.mark.parametrize("kind", PEER_ANSWERS)
def test_an_answer_for_a_peer_leaves_in_the_envelope_as_the_peer_answer(kind):
    event = ANSWERS[kind]
    assert answer_to("coordination", event) == ("coordination", event)
    dest, envelope = answer_to(RELAY, event)
    respond = messages.Respond.from_wire(envelope)
    assert dest == "network" and respond.origin == ["p:1", 9]
    # What the peer receives is an answer the peer protocol takes, of the kind its
    # request expects.
    peerprotocol.ANSWERS[respond.payload[0]](_wire(respond.payload))
    expects = {"updated": "rput", "checked": "rcheck", "tree_answer": "tree", "got": "rget"}
    assert peerprotocol.answer_kind([expects[kind]]) == respond.payload[0]


def test_a_failed_read_for_a_peer_answers_nil_and_the_error():
    _, envelope = answer_to(RELAY, messages.Got.wire(["p:1", 3], None, "read failed", "i"))
    assert envelope == ["respond", ["p:1", 3], ["got", None, "read failed"]]


@pytest.mark.parametrize("request_event", [
    messages.Sync.wire("network", ["p:1", 9], b"k", b"clock", None),
    messages.Get.wire("network", ["p:1", 9], [b"k"]),
    messages.Tree.wire("network", ["p:1", 9], 3, {"kind": "level"}),
], ids=lambda e: e[0])
def test_a_peer_s_request_failed_whole_gets_the_answer_its_serving_stage_would_give(
        request_event):
    """A request a stage could not even queue: its caller hears at once, in the shape
    the peer protocol expects, through the same envelope as a served one."""
    dest, envelope = answer_to(RELAY, failed_answer(request_event, "overloaded: full"))
    respond = messages.Respond.from_wire(envelope)
    assert dest == "network" and respond.origin == ["p:1", 9]
    peerprotocol.ANSWERS[respond.payload[0]](_wire(respond.payload))
    assert respond.payload[-1] in ("overloaded: full", None)
    with pytest.raises(ValueError):
        failed_answer(messages.Reap.wire(b"k", b"t"), "overloaded: full")


# Docs ---------------------------------------------------------------------------------------
BEGIN = "<!-- messages table: made by seda_dynamo.messagetable.markdown_table() -->"
END = "<!-- end of messages table -->"


def test_the_architecture_doc_shows_the_table_the_code_has():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert BEGIN in text and END in text
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert shown == markdown_table(), "regenerate with markdown_table()"
    assert len(markdown_table().splitlines()) == len(TABLE) + 2
