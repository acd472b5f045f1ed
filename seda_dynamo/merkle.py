"""Merkle hash trees for anti-entropy: one tree per key range, compared level by level.

Dynamo paper section 4.7 (handling permanent failures: replica synchronization): each
node keeps a separate Merkle tree for every key range (partition) it hosts; two replicas
of a range compare roots, descend only into the children whose hashes differ, and end
with the exact keys that are out of sync, exchanging data proportional to the
differences rather than to the range.

Shape (learned from riak_core's hashtree): a fixed number of ``segments`` (a power of
``width``) is the leaf level; a key lands in segment
``int.from_bytes(sha1(key)[:8], "big") % segments``. Each segment holds a dict
``key -> object_hash``; each level of the tree is one flat ``bytearray`` of 16-byte node
hashes. Writes only mark their segment dirty; ``update()`` rehashes the dirty segments
and their ancestors (cost ~ dirty * levels * width), never the whole tree.

The subtle rule: a node's hash is a pure function of the *set* of (key, object hash)
pairs beneath it, never of history. So a segment is hashed over its pairs sorted by key
and length-prefixed; any node with nothing beneath it (a never-touched segment, one whose
last key was deleted, an all-empty subtree, the empty tree's root) is the fixed
``EMPTY`` hash; and the caller must pass :func:`object_hash` a *canonical* encoding of a
key's versions (siblings in a fixed order), or two replicas holding the same versions
would disagree forever. Trees compared must cover the same key range with the same
``segments`` and ``width``.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgpack

from seda_dynamo.brief import brief

DIGEST_SIZE = 16
EMPTY = bytes(DIGEST_SIZE)  # hash of any node with no keys beneath it
KINDS = ("hashes", "segments")
_PAIR = struct.Struct(">II")  # length prefixes of key and object hash in a segment


def object_hash(encoded_versions: bytes) -> bytes:
    """The 16-byte blake2b digest a replica inserts for a key's stored (encoded) versions."""
    return hashlib.blake2b(encoded_versions, digest_size=DIGEST_SIZE, person=b"seda-obj").digest()


def segment_of(key: bytes, segments: int) -> int:
    """The segment of ``key``: the first 8 bytes of sha1(key), big-endian, mod ``segments``."""
    return int.from_bytes(hashlib.sha1(key).digest()[:8], "big") % segments


def _segment_hash(pairs: dict[bytes, bytes] | None) -> bytes:
    if not pairs:
        return EMPTY
    parts: list[bytes] = []
    pack = _PAIR.pack
    for key in sorted(pairs):
        value = pairs[key]
        parts += (pack(len(key), len(value)), key, value)
    return hashlib.blake2b(b"".join(parts), digest_size=DIGEST_SIZE, person=b"seda-seg").digest()


class HashTree:
    """The hash tree of one partition's keys on one replica.

    Level 0 is the root (one node); level ``levels() - 1`` holds one node per segment.
    The children of node ``i`` at level ``L`` are ``i*width .. i*width+width-1`` at ``L+1``.
    ``root()`` and ``hashes()`` call ``update()`` first, so they never serve stale hashes.
    """

    def __init__(self, segments: int = 1024 * 64, width: int = 16) -> None:
        if width < 2:
            raise ValueError(f"width must be >= 2, got {width}")
        depth, size = 0, 1
        while size < segments:
            size, depth = size * width, depth + 1
        if size != segments:
            raise ValueError(f"segments ({segments}) must be a power of width ({width})")
        self.segments = segments
        self.width = width
        self._nodes = [bytearray(DIGEST_SIZE * width**level) for level in range(depth + 1)]
        self._keys: list[dict[bytes, bytes] | None] = [None] * segments
        self._dirty: set[int] = set()
        self._count = 0
        self._empty_group = bytes(DIGEST_SIZE * width)

    @classmethod
    def from_items(cls, items: Any, segments: int = 1024 * 64, width: int = 16) -> HashTree:
        """A tree built from ``(key, object_hash)`` pairs, e.g. a fold over a partition."""
        tree = cls(segments, width)
        for key, value_hash in items:
            tree.insert(key, value_hash)
        tree.update()
        return tree

    def segment_of(self, key: bytes) -> int:
        return segment_of(key, self.segments)

    def insert(self, key: bytes, object_hash: bytes) -> None:
        """Set or replace ``key``'s object hash; marks its segment dirty if it changed."""
        if not isinstance(key, bytes) or not isinstance(object_hash, bytes):
            raise TypeError("key and object_hash must be bytes")
        seg = segment_of(key, self.segments)
        pairs = self._keys[seg]
        if pairs is None:
            pairs = self._keys[seg] = {}
        old = pairs.get(key)
        if old == object_hash:
            return
        if old is None:
            self._count += 1
        pairs[key] = object_hash
        self._dirty.add(seg)

    def get(self, key: bytes) -> bytes | None:
        """``key``'s object hash, or None if the tree does not hold it."""
        pairs = self._keys[segment_of(key, self.segments)]
        return pairs.get(key) if pairs is not None else None

    def delete(self, key: bytes) -> None:
        """Forget ``key``; marks its segment dirty. No error if it is absent."""
        seg = segment_of(key, self.segments)
        pairs = self._keys[seg]
        if pairs is None or key not in pairs:
            return
        del pairs[key]
        self._count -= 1
        if not pairs:
            self._keys[seg] = None
        self._dirty.add(seg)

    @property
    def dirty(self) -> int:
        """How many segments wait for ``update()``."""
        return len(self._dirty)

    def update(self) -> None:
        """Rehash the dirty segments and their ancestors only."""
        if not self._dirty:
            return
        d, width, empty_group = DIGEST_SIZE, self.width, self._empty_group
        leaves = self._nodes[-1]
        for seg in self._dirty:
            leaves[seg * d:seg * d + d] = _segment_hash(self._keys[seg])
        changed: set[int] = self._dirty
        self._dirty = set()
        blake2b, span = hashlib.blake2b, width * d
        for level in range(len(self._nodes) - 2, -1, -1):
            children, mine = self._nodes[level + 1], self._nodes[level]
            changed = {i // width for i in changed}
            for i in changed:
                group = children[i * span:i * span + span]
                mine[i * d:i * d + d] = (
                    EMPTY if group == empty_group
                    else blake2b(group, digest_size=d, person=b"seda-node").digest())

    def root(self) -> bytes:
        return self.hashes(0, [0])[0]

    def levels(self) -> int:
        """How many levels ``hashes()`` accepts: 0 (the root) .. ``levels() - 1`` (segments)."""
        return len(self._nodes)

    def hashes(self, level: int, indices: list[int]) -> list[bytes]:
        """The hashes of nodes ``indices`` at ``level``; ValueError if out of range."""
        if not isinstance(level, int) or not 0 <= level < len(self._nodes):
            raise ValueError(f"no level {level!r} (levels 0..{len(self._nodes) - 1})")
        self.update()
        nodes, d, count = self._nodes[level], DIGEST_SIZE, self.width**level
        for i in indices:
            if not isinstance(i, int) or not 0 <= i < count:
                raise ValueError(f"no node {i!r} at level {level} ({count} nodes)")
        return [bytes(nodes[i * d:i * d + d]) for i in indices]

    def segment_keys(self, segment: int) -> dict[bytes, bytes]:
        """A copy of ``key -> object_hash`` for the keys in ``segment``."""
        if not isinstance(segment, int) or not 0 <= segment < self.segments:
            raise ValueError(f"no segment {segment!r} ({self.segments} segments)")
        return dict(self._keys[segment] or {})

    def __len__(self) -> int:
        return self._count


@dataclass(frozen=True, slots=True)
class Question:
    """One question to the remote tree: node hashes at a level, or whole segments."""

    kind: str  # "hashes" | "segments"
    level: int
    indices: tuple[int, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "level": self.level, "indices": list(self.indices)}

    @classmethod
    def from_wire(cls, body: Any) -> Question:
        """Parse and shape-check a request that came off the network (ValueError if bad)."""
        if not isinstance(body, dict):
            raise ValueError("request must be a map")
        kind, level, indices = body.get("kind"), body.get("level"), body.get("indices")
        if kind not in KINDS or type(level) is not int or not isinstance(indices, list | tuple):
            raise ValueError(f"malformed request {brief(body, 200)}")
        if not all(type(i) is int for i in indices):
            raise ValueError("indices must be integers")
        return cls(kind, level, tuple(indices))


def answer(tree: HashTree, request: Question) -> list[bytes] | dict[int, dict[bytes, bytes]]:
    """What the remote side computes for ``request`` (ValueError if it does not fit the tree).

    ``hashes`` -> the list of node hashes; ``segments`` -> ``{segment: {key: hash}}``. Its
    integer map keys need ``msgpack.unpackb(..., strict_map_key=False)`` on the other side.
    """
    if request.kind == "hashes":
        return tree.hashes(request.level, list(request.indices))
    if request.kind == "segments":
        return {seg: tree.segment_keys(seg) for seg in request.indices}
    raise ValueError(f"unknown request kind {request.kind!r}")


def _packed_size(obj: Any) -> int:
    return len(msgpack.packb(obj, use_bin_type=True))


class Exchange:
    """Compare a local tree with a remote one, level by level, without IO.

    Start: exchange = Exchange(local_tree); req = exchange.start()  # the first Question
    Loop: send req over the network, the remote answers with ``answer(remote_tree, req)``;
          feed the answer: req = exchange.feed(answer) until req is None; then
          exchange.differences -> sorted keys whose hash differs or that one side lacks,
          and exchange.kinds[key] -> "missing_local" | "missing_remote" | "different".

    Only the children of differing nodes are asked for; at the segment level only the
    differing segments' key maps. A level with more than ``batch`` nodes (or
    ``segment_batch`` segments) to ask for is split into several requests, one per round
    trip. ``bytes_exchanged`` is the msgpack size of every request and answer.
    ``local`` is duck-typed: only its ``levels()``, ``width``, ``hashes()`` and
    ``segment_keys()`` are used, looked up afresh on each ``feed``.
    Writes landing on either tree during an exchange may cause a spurious or a missed
    difference; both are harmless (repairs are idempotent, the next exchange catches up).
    """

    def __init__(self, local: HashTree, batch: int = 4096, segment_batch: int = 256) -> None:
        if batch < 1 or segment_batch < 1:
            raise ValueError("batch sizes must be >= 1")
        self.local = local
        self.batch = batch
        self.segment_batch = segment_batch
        self.kinds: dict[bytes, str] = {}
        self.bytes_exchanged = 0
        self.round_trips = 0
        self._queue: deque[Question] = deque()
        self._differing: list[int] = []
        self._outstanding: Question | None = None
        self._started = False

    @property
    def differences(self) -> list[bytes]:
        return sorted(self.kinds)

    @property
    def done(self) -> bool:
        return self._started and self._outstanding is None

    def start(self) -> Question:
        if self._started:
            raise RuntimeError("exchange already started")
        self._started = True
        return self._send(Question("hashes", 0, (0,)))

    def feed(self, reply: Any) -> Question | None:
        """Take the remote's answer to the outstanding request; the next one, or None."""
        request = self._outstanding
        if request is None:
            raise RuntimeError("no outstanding request (call start() first)")
        self.bytes_exchanged += _packed_size(reply)
        if request.kind == "hashes":
            if not isinstance(reply, list | tuple) or len(reply) != len(request.indices):
                raise ValueError("hashes answer does not match its request")
            local = self.local.hashes(request.level, list(request.indices))
            self._differing += [i for i, mine, theirs in zip(request.indices, local, reply,
                                                             strict=True) if mine != theirs]
        else:
            self._compare_segments(request.indices, reply)
        self._outstanding = None
        if not self._queue:
            self._plan_next_level(request)
        return self._send(self._queue.popleft()) if self._queue else None

    def _send(self, request: Question) -> Question:
        self._outstanding = request
        self.round_trips += 1
        self.bytes_exchanged += _packed_size(request.to_wire())
        return request

    def _plan_next_level(self, done: Question) -> None:
        differing, self._differing = self._differing, []
        if done.kind == "segments" or not differing:
            return
        if done.level == self.local.levels() - 1:
            kind, level, indices, batch = "segments", done.level, differing, self.segment_batch
        else:
            w = self.local.width
            kind, level, batch = "hashes", done.level + 1, self.batch
            indices = [c for i in differing for c in range(i * w, i * w + w)]
        for start in range(0, len(indices), batch):
            self._queue.append(Question(kind, level, tuple(indices[start:start + batch])))

    def _compare_segments(self, segments: tuple[int, ...], reply: Any) -> None:
        if not isinstance(reply, dict):
            raise ValueError("segments answer must be a map")
        for seg in segments:
            theirs = reply.get(seg) or {}
            if not isinstance(theirs, dict) or not all(
                    isinstance(k, bytes) and isinstance(v, bytes) for k, v in theirs.items()):
                raise ValueError(f"segment {seg} answer must map bytes to bytes")
            mine = self.local.segment_keys(seg)
            for key in mine.keys() | theirs.keys():
                a, b = mine.get(key), theirs.get(key)
                if a != b:
                    self.kinds[key] = ("missing_local" if a is None
                                       else "missing_remote" if b is None else "different")
