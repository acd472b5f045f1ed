"""The Merkle trees over a node's own store, one per partition, kept current with every
commit and built at start a chunk at a time while writes go on.

Dynamo paper section 4.7 (replica synchronization: a hash tree per key range, so two
replicas compare a range by its root and descend only where they differ). The build
folds the store in key-hash order between batches; a key written (or reaped) after the
build passed ``built_upto`` but before it read the key is *touched*: its entry is
already current and the build's older copy must not replace it, or compare-and-set
against the tree would refuse every later write of the key. Pure, no IO: the
persistence stage hands in what it commits and the records its build reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from seda_dynamo.antientropy import new_tree
from seda_dynamo.engines import KEY_SPACE, key_hash
from seda_dynamo.merkle import HashTree, object_hash
from seda_dynamo.ring import partition_of, partition_range


class StoreTrees:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.trees: dict[int, HashTree] = {}
        self.built_upto = 0  # every key hashing below this is in the trees
        # Keys written or reaped since the build began, above ``built_upto``.
        self.touched: set[bytes] = set()

    def index(self, pairs: Iterable[tuple[bytes, bytes | None]],
              hashes: dict[bytes, bytes | None] | None = None,
              building: bool = False) -> None:
        """Bring the trees up to ``pairs`` (value None: deleted; ``hashes``: their object
        hashes, when the caller has them already). ``building``: the build still runs,
        so keys above ``built_upto`` are noted as touched."""
        pairs = list(pairs)
        if building:
            self.touched.update(key for key, _ in pairs if key_hash(key) >= self.built_upto)
        for key, value in pairs:
            p = partition_of(key, self.partitions)
            tree = self.trees.get(p)
            if tree is None:
                tree = self.trees[p] = new_tree()
            if value is None:
                tree.delete(key)
            else:
                known = hashes.get(key) if hashes is not None else None
                tree.insert(key, known if known is not None else object_hash(value))

    def build(self, records: Iterator[tuple[bytes, bytes]], chunk: int) -> bool:
        """Index the next ``chunk`` records the build reads (in key-hash order), touched
        ones skipped. True when ``records`` ran out: the trees are built."""
        taken = []
        done = True
        for key, value in records:
            if key not in self.touched:  # else its tree entry is newer than this copy
                taken.append((key, value))
            if len(taken) >= chunk:
                self.built_upto = key_hash(key)
                done = False
                break
        if done:
            self.built_upto = KEY_SPACE
            self.touched = set()
        self.index(taken)
        return done

    def held(self, key: bytes) -> tuple[bool, bytes | None]:
        """Whether the trees know what ``key`` holds, and its object hash (None:
        nothing). Unknown only while the build has not reached the key."""
        tree = self.trees.get(partition_of(key, self.partitions))
        hashed = tree.get(key) if tree is not None else None
        return hashed is not None or key_hash(key) < self.built_upto, hashed

    def ready(self, partition: int) -> bool:
        """Whether ``partition``'s tree is built (questions about it can be answered)."""
        return partition_range(partition, self.partitions)[1] <= self.built_upto
