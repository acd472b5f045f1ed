"""Hypothesis strategies for both ports, written once from docs/protocol.md and
docs/peer-protocol.md (their field types and limits), and the oracle of what a client
reply must carry. Dynamo paper section 4.1 (the get/put interface) and 4.8 (members
talk to each other): input from the network that no node may fail on.

Frozen: every value here comes from the documents' types and limits (or is plainly
wrong for them), never from a known bug. Addresses a fuzzed event could make a node
connect to are loopback only (docs/peer-protocol.md, "Addresses": a valid one is used).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import strategies as st

from seda_dynamo import causality

# docs/protocol.md: the defaults of the limits, and the caps of the unpacker.
MAX_KEY = 64 * 1024
MAX_VALUE = 1024 * 1024
SLACK = 64 * 1024
MAX_BODY = MAX_KEY + MAX_VALUE + SLACK
MAX_ENTRIES = 64
MAX_TIMEOUT_MS = 600_000
MAX_ACTORS = 1024
MAX_COUNTER = 2**62
OPS = ("get", "put", "delete", "ping", "ring", "stats", "admin")
ERROR_CODES = ("bad_request", "too_large", "unavailable", "overloaded", "timeout", "internal")
# docs/peer-protocol.md
PEER_REQUESTS = ("ping", "gossip", "rput", "rget", "tree", "rcheck", "rreap", "fwd")
ANSWERS = ("pong", "view", "updated", "got", "tree", "checked", "reply")
MAX_CALL_ID = 2**64 - 1
MAX_PARTITION = 65535

UNKNOWN = object()  # the oracle cannot say which id a reply carries (or whether one)


def packed(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


EXTREME_INTS = st.sampled_from([0, 1, -1, 2, 3, 2**31 - 1, 2**32, 2**62, 2**62 + 1,
                                2**63 - 1, 2**63, 2**64 - 1, -2**63, MAX_TIMEOUT_MS,
                                MAX_TIMEOUT_MS + 1, True, False])
SCALAR = st.one_of(st.none(), st.booleans(), EXTREME_INTS, st.integers(-2**63, 2**64 - 1),
                   st.floats(), st.binary(max_size=8), st.text(max_size=8))


def weighted(*choices: st.SearchStrategy, weights: tuple[int, ...]) -> st.SearchStrategy:
    """One of ``choices``, the i-th about ``weights[i]`` times in ``sum(weights)``."""
    index = st.integers(0, sum(weights) - 1).map(
        lambda n: next(i for i, edge in enumerate(itertools.accumulate(weights)) if n < edge))
    return index.flatmap(lambda i: choices[i])


def nested(depth: int, leaf: Any = None, as_map: bool = False) -> Any:
    for _ in range(depth):
        leaf = {"a": leaf} if as_map else [leaf]
    return leaf


DEEP = st.builds(nested, st.sampled_from([10, 31, 32, 33, 100, 400]),
                 st.none(), st.booleans())
ANY = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=8)
WRONG = st.one_of(SCALAR, ANY, DEEP,
                  st.builds(lambda n: list(range(n)), st.sampled_from([63, 64, 65, 200])))


def sized(n: int, as_str: bool = False) -> bytes | str:
    return "k" * n if as_str else b"k" * n


def around(limit: int) -> st.SearchStrategy[int]:
    return st.sampled_from([0, 1, limit - 1, limit, limit + 1])


KEY = st.one_of(st.binary(max_size=16), st.text(max_size=16),
                st.builds(sized, around(MAX_KEY), st.booleans()))
VALUE = st.one_of(st.binary(max_size=32), st.builds(sized, around(MAX_VALUE)))


def vector(actors: int, counter: int) -> bytes:
    items = [[f"x{i}#1.m0.1.0", counter] for i in range(actors)]
    return b"\x01" + packed(items)


CONTEXT = st.one_of(
    st.none(), st.binary(max_size=24), st.just(b""), st.just(b"\x01"),
    st.builds(lambda x: b"\x01" + packed(x), ANY),
    st.builds(lambda x: b"\x01" + packed(x), DEEP),
    st.builds(vector, st.sampled_from([0, 1, 2, MAX_ACTORS - 1, MAX_ACTORS, MAX_ACTORS + 1]),
              st.sampled_from([0, 1, MAX_COUNTER, MAX_COUNTER + 1, 2**64 - 1, -1])),
    st.builds(lambda n: b"\x01" + b"\xdd" + n.to_bytes(4, "big") + b"\x00",
              st.sampled_from([2**32 - 1, 2**31, MAX_ACTORS + 1])),
    st.builds(lambda n: b"\x01" + b"k" * n, st.sampled_from([SLACK - 1, SLACK, SLACK + 1])),
    WRONG)
ID = st.one_of(st.none(), EXTREME_INTS, st.integers(-2**63, 2**64 - 1), WRONG)
LOOPBACK_PORT = st.integers(1, 65535)
GOOD_ADDRESS = st.one_of(
    st.builds("127.0.0.1:{}".format, LOOPBACK_PORT), st.builds("[::1]:{}".format, LOOPBACK_PORT),
    st.builds("localhost:{}".format, LOOPBACK_PORT))
BAD_ADDRESS = st.one_of(st.sampled_from([
    "", ":", "host", ":7100", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
    "127.0.0.1:07100", "127.0.0.1:+7100", "127.0.0.1:-1", "256.0.0.1:7100", "1.2.3:7100",
    "::1:7100", "[::1]", "[::1]7100", "[::0001]:7100", "[fe80::1%eth0]:7100", "[x]:7100",
    "a..b:7100", "-a:7100", "a-:7100", "h\u00e9:7100", "10.0.0.1:7100 ", " 10.0.0.1:7100",
    "x" * 254 + ":7100", ("a" * 64) + ".b:7100", "a.123:7100", "\x00:7100"]),
    st.text(max_size=12), WRONG)
ADDRESS = st.one_of(GOOD_ADDRESS, BAD_ADDRESS)


def admin_command(changes: bool) -> st.SearchStrategy:
    safe = ["status", "transfers", "", "STATUS", "nope"]
    return st.one_of(st.sampled_from(safe + (["leave", "join"] if changes else [])), WRONG)


#: Each documented field: a value of its type and range (extremes included).
GOOD = {
    "id": st.one_of(EXTREME_INTS.filter(lambda i: not isinstance(i, bool)),
                    st.integers(-2**63, 2**64 - 1)),
    "key": KEY, "value": VALUE,
    "context": st.one_of(st.none(), st.builds(vector, st.integers(1, 3), st.integers(1, 9))),
    "r": st.integers(1, 3), "w": st.integers(1, 3),
    "timeout_ms": st.one_of(st.integers(1, MAX_TIMEOUT_MS), st.just(MAX_TIMEOUT_MS)),
    "seed": ADDRESS,
}
#: ... and a value for it that is not (or may not be) one.
BAD = {"id": ID, "key": st.one_of(KEY, WRONG), "value": st.one_of(VALUE, WRONG),
       "context": CONTEXT, "r": st.one_of(EXTREME_INTS, WRONG),
       "w": st.one_of(EXTREME_INTS, WRONG),
       "timeout_ms": st.one_of(EXTREME_INTS, WRONG), "seed": BAD_ADDRESS}
FIELDS = {"get": ("key", "r", "timeout_ms"), "put": ("key", "value", "context", "w",
                                                     "timeout_ms"),
          "delete": ("key", "context", "w", "timeout_ms"), "admin": ("command", "seed")}


@st.composite
def request_map(draw, changes: bool = True) -> dict:
    """A client request of any op: its documented fields, each left out, given a value
    of its type (extremes included) or a wrong one, a few at a time; unknown ops, fields
    meant for other ops, unknown fields, a padding that crosses the body limit."""
    op = draw(weighted(st.sampled_from(OPS), st.sampled_from(["nope", "GET", ""]), WRONG,
                       weights=(8, 1, 1)))
    names = ("id", *(FIELDS.get(op, ()) if isinstance(op, str) else ()))
    msg: dict = {"op": op}
    for name in names:
        if name == "command":
            msg[name] = draw(admin_command(changes))
        elif draw(st.integers(0, 3)):
            msg[name] = draw(GOOD[name])
    if not changes:
        msg.pop("seed", None)  # a well-formed join would take this node out of its ring
    for name in draw(st.lists(st.sampled_from(sorted(BAD)), max_size=2)):
        if draw(st.booleans()) and name in msg and name != "seed":
            del msg[name]
        elif changes or name != "seed":
            msg[name] = draw(BAD[name])
    if not changes and msg.get("command") == "join":
        msg["seed"] = "not an address"
    extra = draw(st.dictionaries(st.text(max_size=6).filter(lambda k: k not in GOOD), WRONG,
                                 max_size=2))
    pad = draw(st.sampled_from([0] * 12 + [SLACK - 64, SLACK, SLACK + 1]))
    if pad:
        extra["pad"] = b"p" * pad
    return {**msg, **extra}


def huge_header(head: bytes, tail: bytes) -> bytes:
    return head + b"\xff\xff\xff\xff" + tail


HOSTILE_BODY = st.one_of(
    st.builds(huge_header, st.sampled_from([b"\xdd", b"\xdf", b"\xc6", b"\xdb", b"\xc9"]),
              st.binary(max_size=8)),
    st.builds(lambda head, tail: b"\x81\xa3key" + head + b"\xff\xff\xff\xff" + tail,
              st.sampled_from([b"\xc6", b"\xdb", b"\xdd"]), st.binary(max_size=8)),
    st.builds(lambda n: b"\x91" * n + b"\xc0", st.sampled_from([100, 1000, 100_000])),
    st.builds(lambda n: b"\x81\xa1a" * n + b"\xc0", st.sampled_from([100, 1000, 10_000])),
    st.binary(max_size=64), st.just(b""),
    st.builds(lambda b, cut: b[:cut], st.builds(packed, request_map()), st.integers(0, 40)),
    st.builds(lambda b: b + b, st.builds(packed, request_map())),
    st.builds(packed, WRONG))


def client_body(changes: bool = True) -> st.SearchStrategy[bytes]:
    return weighted(st.builds(packed, request_map(changes)), HOSTILE_BODY, weights=(3, 1))


@st.composite
def client_message(draw, changes: bool = True) -> list[bytes]:
    """A body in every envelope layout: the two documented ones, and wrong ones."""
    body = draw(client_body(changes))
    layout = draw(weighted(st.just("delimited"), st.just("bare"), st.sampled_from([
        "two bodies", "two delimiters", "delimiter only", "routed", "extra frames"]),
        weights=(6, 2, 2)))
    return {"delimited": [b"", body], "bare": [body], "two bodies": [b"", body, body],
            "two delimiters": [b"", b"", body], "delimiter only": [b""],
            "routed": [b"x", b"", body], "extra frames": [b"", body, b"", b"z"]}[layout]


def expected_id(frames: list[bytes]) -> Any:
    """The id the reply must carry (None: no id), or ``UNKNOWN``. Only the documented
    envelopes and a body the documented caps surely admit are judged."""
    if frames[:1] == [b""] and len(frames) == 2:
        body = frames[1]
    elif len(frames) == 1 and frames[0]:
        body = frames[0]
    else:
        return None if frames[:1] == [b""] else UNKNOWN
    if len(body) > MAX_BODY:
        return None
    try:
        msg = msgpack.unpackb(body, raw=False, max_bin_len=MAX_VALUE, max_str_len=MAX_KEY,
                              max_array_len=MAX_ENTRIES, max_map_len=MAX_ENTRIES,
                              max_ext_len=0)
    except Exception:  # noqa: BLE001 - any failure: not for the oracle to judge
        return UNKNOWN
    if not isinstance(msg, dict):
        return None
    rid = msg.get("id")
    return rid if isinstance(rid, (int, str, bytes)) else None


def keys_of(frames: list[bytes]) -> list[bytes]:
    """The key a client message names, if a well-formed request may use it too."""
    try:
        key = msgpack.unpackb(frames[-1], raw=False)["key"]
        key = key.encode() if isinstance(key, str) else key
    except Exception:  # noqa: BLE001 - not a request with a key
        return []
    return [key] if isinstance(key, bytes) and 0 < len(key) <= MAX_KEY else []


def peer_keys_of(message: Any) -> list[bytes]:
    """The keys a peer message's requests name (``rput``, ``rget``, ``rcheck``, ``rreap``:
    ``["req", peer, call_id, [op, key, ...]]``), if a client may use them too."""
    if not isinstance(message, list):
        return []
    return [event[3][1] for event in message
            if isinstance(event, list) and len(event) == 4 and event[0] == "req"
            and isinstance(event[3], list) and len(event[3]) > 1
            and event[3][0] in ("rput", "rget", "rcheck", "rreap")
            and isinstance(event[3][1], bytes) and 0 < len(event[3][1]) <= MAX_KEY]


def check_reply(reply: Any, frames: list[bytes]) -> None:
    """What docs/protocol.md promises of any reply to ``frames``."""
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        assert reply.get("error") in ERROR_CODES, reply
        assert isinstance(reply.get("message"), str) and reply["message"], reply
        assert reply["error"] != "internal", reply
    want = expected_id(frames)
    if want is not UNKNOWN:
        assert reply.get("id") == want and ("id" in reply) == (want is not None), \
            (want, reply)


# The peer port -------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenCall:
    """Stands for the id of the ``index``-th call the node has open (resolved by the
    target): an answer with a right id, and maybe the wrong kind or node."""

    index: int


CALL_ID = st.one_of(st.sampled_from([0, 1, 2**63 - 1, 2**63, MAX_CALL_ID,
                                     -1, True, "1", None, 1.5]),
                    st.integers(0, MAX_CALL_ID), WRONG)
NODE = st.one_of(st.sampled_from(["b", "c", "a", "zz", "", "x" * 257]), WRONG)
def dvvset(value: bytes | None, actor: str, context: dict) -> bytes:
    """A clock a replica could send: a value (or a tombstone) written by ``actor``."""
    return causality.encode(causality.update(causality.new(value, context), causality.EMPTY,
                                             actor))


ACTOR = st.sampled_from(["b#1.m0.1.0", "a#1.m0.1.0", "a#999.m0.1.0", "zz#9", "x" * 256])
CLOCK = st.one_of(st.binary(max_size=16), st.builds(packed, ANY), st.builds(packed, DEEP),
                  st.builds(dvvset, st.one_of(st.none(), st.binary(max_size=8)), ACTOR,
                            st.dictionaries(ACTOR, st.sampled_from([1, 2, 2**62, 2**63]),
                                            max_size=2)))
MEMBERS = st.one_of(st.lists(NODE, max_size=5), st.builds(lambda n: ["m"] * n,
                                                           st.sampled_from([4096, 4097])))
VIEW = st.one_of(WRONG, st.fixed_dictionaries({
    "partitions": st.one_of(st.sampled_from([0, 1, 8, 65536, 65537]), WRONG),
    "members": st.dictionaries(NODE.filter(lambda x: isinstance(x, str)), st.one_of(
        st.tuples(ADDRESS, ADDRESS, EXTREME_INTS, st.sampled_from(["valid", "left", 7]),
                  EXTREME_INTS).map(list), WRONG), max_size=3),
    "ring": st.one_of(st.none(), WRONG)}))
def mostly(good: st.SearchStrategy, other: st.SearchStrategy) -> st.SearchStrategy:
    """A field of a request that is mostly right, so the fields after it are reached."""
    return weighted(good, other, weights=(3, 1))


BIN_KEY = mostly(st.binary(max_size=16), st.one_of(KEY, WRONG))
#: Each field mostly right (as the other requests' fields), so the later ones are reached.
FWD = st.builds(lambda *f: ["fwd", *f],
                mostly(st.sampled_from(["put", "delete"]), st.one_of(st.just("get"), WRONG)),
                BIN_KEY, mostly(st.binary(max_size=16), st.one_of(VALUE, WRONG)),
                mostly(st.none(), st.one_of(st.dictionaries(st.text(max_size=4), EXTREME_INTS,
                                                            max_size=3), WRONG)),
                mostly(st.one_of(st.none(), st.integers(1, 3)), st.one_of(EXTREME_INTS, WRONG)),
                mostly(st.one_of(st.none(), st.integers(1, 3)), EXTREME_INTS),
                st.one_of(st.none(), st.integers(1, 600_000), EXTREME_INTS, WRONG))
PEER_REQUEST = weighted(st.one_of(
    st.just(["ping"]), st.builds(lambda v: ["gossip", v], VIEW),
    st.builds(lambda k, c, h: ["rput", k, c, h], BIN_KEY, CLOCK,
              mostly(st.none(), NODE)),
    st.builds(lambda k: ["rget", k], BIN_KEY),
    st.builds(lambda p, q: ["tree", p, q], mostly(st.integers(0, MAX_PARTITION + 1), WRONG),
              st.one_of(st.fixed_dictionaries({"kind": st.sampled_from(["hashes", "segments",
                                                                         "x"]),
                                               "level": EXTREME_INTS,
                                               "indices": st.lists(EXTREME_INTS,
                                                                   max_size=4)}), WRONG)),
    st.builds(lambda k, m: ["rcheck", k, m], BIN_KEY, mostly(MEMBERS, WRONG)),
    st.builds(lambda k, t: ["rreap", k, t], BIN_KEY, mostly(CLOCK, WRONG)),
    FWD), st.builds(lambda op, rest: [op, *rest], st.one_of(st.sampled_from(PEER_REQUESTS),
                                                            WRONG), st.lists(ANY, max_size=9)),
    weights=(4, 1))
FORGED = b"forged"  # marks a value only a forged answer carries
PAYLOAD = st.one_of(
    st.builds(lambda k, rest: [k, *rest], st.sampled_from(ANSWERS),
              st.lists(st.one_of(st.just(FORGED), st.none(), ANY), max_size=3)),
    st.just(["got", packed([[["evil#1", 1, [FORGED]]], []]), None]),
    st.just(["updated", None]), st.just(["reply", {"ok": True, "values": [FORGED]}]),
    WRONG)
PEER_EVENT = weighted(
    st.builds(lambda who, cid, req: ["req", who, cid, req], mostly(GOOD_ADDRESS, BAD_ADDRESS),
              mostly(st.integers(0, MAX_CALL_ID), CALL_ID), PEER_REQUEST),
    st.builds(lambda who, cid, p: ["resp", who, cid, p], NODE, CALL_ID, PAYLOAD),
    # A right id, of any kind, from any node: taken when of the kind expected (the wire
    # has no authentication without CURVE), so it carries no FORGED mark.
    st.builds(lambda who, cid, p: ["resp", who, cid, p], NODE,
              st.builds(OpenCall, st.integers(0, 7)), st.one_of(
                  st.builds(lambda k, rest: [k, *rest], st.sampled_from(ANSWERS),
                            st.lists(st.one_of(st.none(), ANY), max_size=3)), WRONG)),
    st.builds(lambda kind, rest: [kind, *rest], st.one_of(st.sampled_from(["req", "resp"]),
                                                          WRONG), st.lists(ANY, max_size=5)),
    WRONG, weights=(5, 2, 2, 1, 1))
PEER_BATCH = weighted(st.lists(PEER_EVENT, min_size=1, max_size=5),
                      st.builds(lambda e: [e] * 65, PEER_EVENT.filter(
                          lambda e: len(msgpack.packb(e, default=lambda _: 0)) < 4096)),
                      WRONG, weights=(6, 1, 1))
PEER_MESSAGE = weighted(PEER_BATCH, HOSTILE_BODY, weights=(4, 1))  # events, or bytes
