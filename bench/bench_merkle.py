"""Merkle anti-entropy at scale: two replicas of N keys that differ in a few keys.

Builds two :class:`seda_dynamo.merkle.HashTree` replicas of ``--keys`` keys (default
1,000,000; values are random 100-byte "versions" hashed with ``object_hash``), times the
initial builds and an incremental update of 1,000 keys, then runs the sans-IO
``Exchange`` through msgpack (as the network would carry it) for 10 and for 1,000
differing keys, and prints markdown tables. Not a test; run by hand::

    /tmp/v/bin/python -m bench.bench_merkle [--keys 1000000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import msgpack
import psutil

from seda_dynamo.merkle import Exchange, HashTree, Question, answer, object_hash


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def wire(obj):
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False,
                           strict_map_key=False)


def build(keys: list[bytes], hashes: list[bytes]) -> tuple[HashTree, float]:
    t0 = time.perf_counter()
    tree = HashTree()
    for key, h in zip(keys, hashes, strict=True):
        tree.insert(key, h)
    tree.update()
    return tree, time.perf_counter() - t0


def diverge(remote: HashTree, keys: list[bytes], n: int, rnd: random.Random,
            local: HashTree) -> set[bytes]:
    """Make ``remote`` differ from ``local`` in ``n`` keys: changed, missing, extra."""
    chosen = rnd.sample(keys, n - n // 3)
    changed, missing = chosen[: n // 3 + n % 3], chosen[n // 3 + n % 3:]
    for key in changed:
        remote.insert(key, object_hash(rnd.randbytes(100)))
    for key in missing:
        remote.delete(key)
    extra = [b"extra-%08d" % i for i in range(n // 3)]
    for key in extra:
        remote.insert(key, object_hash(rnd.randbytes(100)))
    remote.update()
    local.update()
    return set(changed) | set(missing) | set(extra)


def exchange(local: HashTree, remote: HashTree) -> tuple[Exchange, float]:
    t0 = time.perf_counter()
    ex = Exchange(local)
    req = ex.start()
    while req is not None:
        req = ex.feed(wire(answer(remote, Question.from_wire(wire(req.to_wire())))))
    return ex, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rnd = random.Random(args.seed)
    base = rss_mb()

    t0 = time.perf_counter()
    keys = [b"key-%010d" % i for i in range(args.keys)]
    hashes = [object_hash(rnd.randbytes(100)) for _ in range(args.keys)]
    gen_s, data_mb = time.perf_counter() - t0, rss_mb() - base

    mark = rss_mb()
    local, build_a = build(keys, hashes)
    tree_mb = rss_mb() - mark
    remote, build_b = build(keys, hashes)

    batch = rnd.sample(keys, min(1000, args.keys))
    new = [object_hash(rnd.randbytes(100)) for _ in batch]
    t0 = time.perf_counter()
    for key, h in zip(batch, new, strict=True):
        local.insert(key, h)
    dirty = local.dirty
    local.update()
    incr_s = time.perf_counter() - t0
    for key, h in zip(batch, new, strict=True):  # the other replica gets the same writes
        remote.insert(key, h)
    remote.update()
    assert local.root() == remote.root()

    rows = []
    for n in (10, 1000):
        replica = build(keys, hashes)[0] if n != 10 else remote
        if n != 10:
            for key, h in zip(batch, new, strict=True):
                replica.insert(key, h)
        expected = diverge(replica, keys, n, rnd, local)
        ex, secs = exchange(local, replica)
        assert set(ex.differences) == expected, "exchange missed or invented keys"
        rows.append((n, len(ex.differences), ex.round_trips, ex.bytes_exchanged, secs))
        del replica

    print(f"\n## Merkle anti-entropy, {args.keys:,} keys, segments={local.segments}, "
          f"width={local.width}, levels={local.levels()}\n")
    print("| step | time |")
    print("|---|---:|")
    print(f"| generate keys + object hashes | {gen_s:.2f} s |")
    print(f"| build replica A (insert all + update) | {build_a:.2f} s |")
    print(f"| build replica B (insert all + update) | {build_b:.2f} s |")
    print(f"| incremental: 1,000 inserts + update ({dirty} dirty segments) "
          f"| {incr_s * 1000:.1f} ms |")
    print("\n| differing keys | keys found | round trips | bytes exchanged | time |")
    print("|---:|---:|---:|---:|---:|")
    for n, found, trips, nbytes, secs in rows:
        print(f"| {n:,} | {found:,} | {trips} | {nbytes / 1024:,.1f} KiB | "
              f"{secs * 1000:.1f} ms |")
    print("\n| memory | MiB |")
    print("|---|---:|")
    print(f"| keys + object hashes (bytes objects, shared by both trees) | {data_mb:.0f} |")
    print(f"| one tree's own structures (segment dicts + level arrays) | {tree_mb:.0f} |")
    print(f"| peak RSS of the whole run (three trees at once) | {peak_rss_mb():.0f} |")


if __name__ == "__main__":
    main()
