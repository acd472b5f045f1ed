"""Wire protocol v1 validation, without sockets."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo import contexts
from seda_dynamo.protocol import (
    ADMIN_COMMANDS,
    OPS,
    Limits,
    ProtocolError,
    admin_refusal,
    parse_request,
)

LIMITS = Limits(max_key_bytes=16, max_value_bytes=64, n=3)


def parse(obj):
    return parse_request(msgpack.packb(obj), LIMITS)


def code_of(obj_or_bytes):
    body = obj_or_bytes if isinstance(obj_or_bytes, bytes) else msgpack.packb(obj_or_bytes)
    with pytest.raises(ProtocolError) as info:
        parse_request(body, LIMITS)
    return info.value.code


def test_valid_requests():
    ctx = contexts.encode_context({"a#1": 3})
    req = parse({"op": "put", "key": "k", "value": b"v", "context": ctx, "w": 3, "id": 5,
                 "timeout_ms": 100, "extra": "ignored"})
    assert (req.op, req.key, req.value, req.context, req.w, req.id, req.timeout_ms) == \
        ("put", b"k", b"v", {"a#1": 3}, 3, 5, 100)
    assert parse({"op": "get", "key": b"k", "r": 1}).r == 1
    assert parse({"op": "delete", "key": b"k", "context": None}).context is None
    assert parse({"op": "ping"}).op == "ping"


@pytest.mark.parametrize("obj,code", [
    ({"op": "get", "key": b"x" * 17}, "too_large"),
    ({"op": "put", "key": b"x", "value": b"v" * 65}, "too_large"),
    ({"op": "get", "key": b"x", "r": 0}, "bad_request"),
    ({"op": "get", "key": b"x", "r": 4}, "bad_request"),
    ({"op": "put", "key": b"x", "value": "str"}, "bad_request"),
    ({"op": "get", "key": None}, "bad_request"),
    ({"op": "get", "key": b"x", "id": 1.5}, "bad_request"),
    ({"op": "GET", "key": b"x"}, "bad_request"),
    ([], "bad_request"),
])
def test_bad_requests(obj, code):
    assert code_of(obj) == code


def test_limits_are_inclusive():
    assert parse({"op": "put", "key": b"x" * 16, "value": b"v" * 64}).value == b"v" * 64


def test_the_request_id_is_kept_for_errors():
    with pytest.raises(ProtocolError) as info:
        parse({"op": "nope", "id": 12})
    assert info.value.request_id == 12


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_protocol_error_or_a_request(body):
    try:
        parse_request(body, LIMITS)
    except ProtocolError as exc:
        assert exc.code in ("bad_request", "too_large")


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
                    | st.binary(max_size=20)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20))
def test_arbitrary_msgpack_values_never_crash_the_parser(obj):
    try:
        parse(obj)
    except ProtocolError as exc:
        assert exc.code in ("bad_request", "too_large")


ANY_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
                         | st.floats() | st.binary(max_size=20) | st.text(max_size=20),
                         lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                         max_leaves=8)
FIELDS = ("id", "key", "value", "context", "r", "w", "timeout_ms", "command", "seed")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(OPS)),
       st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE),
       st.sampled_from(sorted(ADMIN_COMMANDS)))
def test_any_value_in_any_field_of_any_op_is_a_protocol_error_never_a_crash(op, fields,
                                                                          command):
    """Every field the parser reads, given a value of any type (lists and maps too: a
    list ``command`` once raised "unhashable" and was answered ``internal``)."""
    msg = {"op": op, "command": command, **fields}
    try:
        parse(msg)
    except ProtocolError as exc:
        assert exc.code in ("bad_request", "too_large")


@pytest.mark.parametrize("seed", ["x:y", "127.0.0.1:0", "host:", ":7100", "ho st:7100",
                                  "*:7100", "a:b:c", "127.0.0.1:7100\x00", 7100, ["h", 1],
                                  b"127.0.0.1:7100", "", None])
def test_admin_join_takes_only_a_seed_the_address_core_accepts(seed):
    """The client is one of the places a peer address enters: a seed the runtime could
    not connect to is a bad_request here, never a 'joining' (that made the node deaf)."""
    msg = {"op": "admin", "command": "join", "id": 3}
    if seed is not None:
        msg["seed"] = seed
    with pytest.raises(ProtocolError) as info:
        parse(msg)
    assert info.value.code == "bad_request" and info.value.request_id == 3
    assert "seed" in info.value.message


def test_admin_join_with_a_good_seed_and_other_commands_without_one():
    assert parse({"op": "admin", "command": "join", "seed": "[::1]:7100"}).seed == "[::1]:7100"
    assert parse({"op": "admin", "command": "join", "seed": "db-3.internal:7100"}).seed
    assert parse({"op": "admin", "command": "status"}).command == "status"


# Who may change the cluster (issue 11, item 7) ---------------------------------------
ROOT_KEY = b"r" * 40
OTHER_KEY = b"o" * 40


@dataclass
class Caller:
    address: str | None
    user_id: str | None = None


@pytest.mark.parametrize("command", ["join", "leave"])
def test_without_curve_join_and_leave_are_taken_only_from_loopback(command):
    for host in ("127.0.0.1", "127.0.0.9", "::1", "::ffff:127.0.0.1"):
        assert admin_refusal(command, Caller(host), None) is None, host
    for caller in (Caller("10.0.0.5"), Caller("::ffff:10.0.0.5"), Caller("2001:db8::1"),
                   Caller(None), Caller(""), None):
        why = admin_refusal(command, caller, None)
        assert why and "loopback" in why and command in why, caller


@pytest.mark.parametrize("command", ["join", "leave"])
def test_with_curve_join_and_leave_need_a_key_on_the_admin_list(command):
    keys = frozenset({ROOT_KEY})
    assert admin_refusal(command, Caller("10.0.0.5", ROOT_KEY.decode()), keys) is None
    for caller in (Caller("127.0.0.1", OTHER_KEY.decode()), Caller("127.0.0.1", None),
                   Caller("10.0.0.5", None), None):
        why = admin_refusal(command, caller, keys)
        assert why and "curve_admin_keys" in why, caller
    # CURVE on, no admin list configured: nobody, and the message says what to set.
    assert "curve_admin_keys" in admin_refusal(command, Caller("127.0.0.1", ROOT_KEY.decode()),
                                               frozenset())


@pytest.mark.parametrize("keys", [None, frozenset(), frozenset({ROOT_KEY})])
def test_read_only_admin_commands_stay_open(keys):
    for command in ("status", "transfers"):
        assert admin_refusal(command, Caller("10.0.0.5"), keys) is None
        assert admin_refusal(command, None, keys) is None
