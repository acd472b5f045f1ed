"""A simulated node's disk: its data and hints engines (memory engines underneath) with
the durability of the real engine, so a power failure keeps only what a real one would
(Dynamo paper section 5: Berkeley DB Transactional Data Store; section 4.1: "always
writeable" only means something if an acknowledged write survives a crash).

The model, and why it is what a real crash can do:

- **One log per node.** Berkeley DB keeps the data and the hints databases in one
  environment (``engines/bdb.py``), so they share one write-ahead log: a commit's
  flush makes every earlier commit of either database durable too.
- **The durability point is the group commit.** ``write_batch`` is one transaction.
  With durability ``fsync`` (the default, and the promise "fsync group commit before
  any acknowledgement") the log is flushed before it returns, so the batch, and all
  before it, survive anything. With ``nosync`` (``DB_TXN_WRITE_NOSYNC``) the commit
  reaches the operating system only: a killed process loses nothing, but a power
  failure loses every commit since the last flush, newest first (the log is
  replayed up to where it was flushed, so what survives is always a prefix).
- **A process crash** (``Cluster.crash`` without power) keeps every commit.
- **A power failure** drops the commits after the last durability point.
- **A torn write**: power fails while a batch is being written. The log records carry
  checksums and the transaction has no commit record, so recovery detects the torn
  record and rolls the whole batch back: none of it applies, and the process (every
  stage of the node) is gone before ``write_batch`` returns, so nothing it would have
  acknowledged is sent. Raised as ``Torn`` (not an ``Exception``: no handler may
  catch a power failure); the cluster crashes the node where it lands.
- **The memory engine** (``engine = "memory"``) is "nosync" in the strongest sense: a
  real one loses everything with its process, and the node says so with a fresh
  incarnation at every start. The simulator keeps a node's memory engines across
  crashes as the disks of a durable engine; it does not model a memory-engine node.
- **Durable files** (the membership view, ``cluster.state``; the incarnation; the mint
  epoch) are written whole with write, fsync, rename, fsync of the directory
  (``durable.py``): each is at its durability point when the write returns, and a
  rename cannot be torn, so a power failure leaves each as it was last written. The
  view file is a real file in the node's temp dir; the counters are kept by ``Node``.
"""

from __future__ import annotations

from seda_dynamo.engines import Op, check_ops
from seda_dynamo.engines.memory import MemoryEngine


class Torn(BaseException):
    """Power failed in the middle of a write: the node is gone, the batch rolled back."""


class Disk:
    """One node's disk: its engines and its log's durability point."""

    def __init__(self, durability: str = "fsync") -> None:
        self.durability = durability
        #: Commits not yet flushed, oldest first: the engine and what each key held before.
        self.unsynced: list[tuple[MemoryEngine, list[tuple[bytes, bytes | None]]]] = []
        self.tearing: int | None = None  # writes still to go before power fails in one
        self.lost = 0  # commits a power failure dropped
        self.torn = 0  # batches torn

    def engine(self, name: str) -> DiskEngine:
        return DiskEngine(self, name)

    def tear_next(self, after: int = 0) -> None:
        """Power fails during a write to either engine (``Torn``): the next one, or the
        one ``after`` more writes (say, the data batch after its group's hints batch)."""
        self.tearing = after

    def tears(self) -> bool:
        """Whether power fails during this write (counts the writes let through)."""
        if self.tearing is None:
            return False
        if self.tearing:
            self.tearing -= 1
            return False
        self.tearing = None
        self.torn += 1
        return True

    def sync(self) -> None:
        """The log is flushed: every commit so far is durable."""
        self.unsynced.clear()

    def power_loss(self) -> int:
        """Drop every commit after the last durability point; how many."""
        dropped = len(self.unsynced)
        for engine, before in reversed(self.unsynced):
            MemoryEngine.write_batch(engine, before)
        self.unsynced.clear()
        self.lost += dropped
        self.tearing = None
        return dropped


class DiskEngine(MemoryEngine):
    """A memory engine whose commits follow its disk's durability (see the module)."""

    def __init__(self, disk: Disk, name: str) -> None:
        super().__init__("", name, "nosync")
        self.disk = disk

    def write_batch(self, ops: list[Op]) -> None:
        checked = check_ops(ops)
        if self.disk.tears():
            raise Torn(f"power failed while writing {len(checked)} ops to {self.name}")
        before: dict[bytes, bytes | None] = {}
        for key, _ in checked:
            if key not in before:
                before[key] = self.get(key)
        super().write_batch(checked)
        if self.disk.durability == "fsync":
            self.disk.sync()
        else:
            self.disk.unsynced.append((self, list(before.items())))
