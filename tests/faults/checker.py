"""A Jepsen "set-full"-style checker for seda-dynamo.

``WriteLoad`` runs a bounded concurrent write load and records in a ``History`` what was
attempted and what was acknowledged. Each client thread sends each operation to one of
its nodes, chosen at random:

- puts of unique keys (what set-full checks: every acknowledged element is there);
- blind puts (no context) of keys every thread writes: concurrent writes, siblings;
- deletes, with the context its put returned, of a key the thread wrote earlier;
- re-creations: a blind put to a key whose delete was acknowledged a while ago (with
  tombstone reaping on, after its tombstone is gone: Riak's kv679 case of a new write
  whose version vector the store has issued before).

A failed or unanswered operation is not acknowledged: its effect is unknown, so the
checker asks nothing of it (its value may or may not be there).

After the faults are healed, ``converge`` polls until every node *on its own* (every
other node paused with SIGSTOP, reads with R=1, the paused nodes kept from answering until
the reads' deadlines passed, so neither quorum nor read repair helps it) passes, and
reports how long that took from the moment the faults stopped. Per key and per replica:

- lost: an acknowledged put's value is missing (and no delete of it was attempted);
- resurrected: a value whose delete (or superseding put) was acknowledged is there;
- phantom: a value nobody ever wrote is there;
- unreadable: the node did not answer.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from support import Node

from seda_dynamo.client import AsyncClient, Client, DynamoError, NoReply


@dataclass
class Expect:
    must: set[bytes]  # acknowledged and not since deleted or superseded (even maybe)
    must_not: set[bytes]  # deleted or superseded by an acknowledged operation
    possible: set[bytes]  # every value ever sent for the key


@dataclass
class History:
    """What the load attempted and what the store acknowledged, thread-safe."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempted: dict[str, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    acked: dict[str, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    maybe_gone: dict[str, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    gone: dict[str, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    outcomes: Counter = field(default_factory=Counter)  # "put ok", "delete timeout", ...

    def put_attempt(self, key: str, value: bytes) -> None:
        with self.lock:
            self.attempted[key].add(value)

    def put_done(self, key: str, value: bytes, error: str | None) -> None:
        with self.lock:
            self.outcomes[f"put {error or 'ok'}"] += 1
            if error is None:
                self.acked[key].add(value)

    def delete_attempt(self, key: str, covers: set[bytes]) -> None:
        """A delete (or a put with a context) that would remove ``covers``."""
        with self.lock:
            self.maybe_gone[key] |= covers

    def delete_done(self, key: str, covers: set[bytes], error: str | None,
                    op: str = "delete") -> None:
        with self.lock:
            self.outcomes[f"{op} {error or 'ok'}"] += 1
            if error is None:
                self.gone[key] |= covers

    # For hand-written scenarios: operations known to be acknowledged.
    def acked_put(self, key: str, value: bytes, supersedes: bool = False) -> None:
        """An acknowledged put; ``supersedes``: its context covered every value so far."""
        if supersedes:
            self.acked_delete(key, op="supersede")
        self.put_attempt(key, value)
        self.put_done(key, value, None)

    def acked_delete(self, key: str, op: str = "delete") -> None:
        """An acknowledged delete whose context covered every value acknowledged so far."""
        with self.lock:
            covers = set(self.acked.get(key, set()))
        self.delete_attempt(key, covers)
        self.delete_done(key, covers, None, op=op)

    def expectations(self) -> dict[str, Expect]:
        """Every key the checker has something to say about."""
        with self.lock:
            keys = set(self.acked) | set(self.gone)
            return {k: Expect(self.acked.get(k, set()) - self.maybe_gone.get(k, set()),
                              set(self.gone.get(k, set())), set(self.attempted.get(k, set())))
                    for k in keys}

    def summary(self) -> str:
        with self.lock:
            return (f"{sum(map(len, self.acked.values()))} acknowledged puts of "
                    f"{sum(map(len, self.attempted.values()))} over {len(self.attempted)} "
                    f"keys, {sum(map(len, self.gone.values()))} values deleted or "
                    "superseded (acknowledged); "
                    + ", ".join(f"{k}: {n}" for k, n in sorted(self.outcomes.items())))


@dataclass
class Worker:
    """One client thread: which nodes it talks to and what it has written."""

    name: str
    nodes: list[Node]
    deletable: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # key, ctx, v
    deleted: list[tuple[str, float]] = field(default_factory=list)  # key, when
    ops: int = 0


class WriteLoad:
    """Bounded concurrent writes: every thread stops after ``ops`` operations or
    ``seconds``, whichever comes first."""

    def __init__(self, history: History, workers: list[Worker], seed: int, *,
                 delete_ratio: float = 0.15, shared_ratio: float = 0.1,
                 recreate_ratio: float = 0.0, recreate_after: float = 2.0,
                 w: int | None = None, op_timeout: float = 1.0, tag: str = "") -> None:
        self.history = history
        self.workers = workers
        self.seed = seed
        self.delete_ratio = delete_ratio
        self.shared_ratio = shared_ratio
        self.recreate_ratio = recreate_ratio
        self.recreate_after = recreate_after
        self.w = w
        self.op_timeout = op_timeout
        self.tag = tag
        self.errors: list[BaseException] = []
        self._shared = 0

    def run(self, ops: int, seconds: float, rate: float | None = None,
            stop: threading.Event | None = None) -> None:
        """Run every worker for at most ``ops`` operations each and ``seconds``; with
        ``rate``, each worker starts at most that many operations a second."""
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=self._work, args=(w, ops, deadline, rate, stop),
                                    name=f"load-{w.name}", daemon=True)
                   for w in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds + 30)
        assert not any(t.is_alive() for t in threads), "a load thread did not stop"
        if self.errors:
            raise AssertionError(f"the load failed: {self.errors[0]!r}") from self.errors[0]

    def _work(self, worker: Worker, ops: int, deadline: float, rate: float | None,
              stop: threading.Event | None) -> None:
        rng = random.Random(f"{self.seed}/{self.tag}/{worker.name}")
        clients: dict[str, Client] = {}
        started = time.monotonic()
        try:
            for i in range(ops):
                if rate:  # open loop: op i is due at started + i / rate
                    time.sleep(max(0.0, started + i / rate - time.monotonic()))
                if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                    break
                node = rng.choice(worker.nodes)
                client = clients.get(node.server)
                if client is None:
                    client = clients[node.server] = Client(node.server,
                                                           timeout=self.op_timeout + 1.0)
                try:
                    self._op(worker, rng, client)
                except NoReply:
                    client.close()  # no reply: start afresh rather than queue behind it
                    del clients[node.server]
                worker.ops += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised by run()
            self.errors.append(exc)
        finally:
            for client in clients.values():
                client.close()

    def _op(self, worker: Worker, rng: random.Random, client: Client) -> None:
        roll = rng.random()
        ripe = worker.deleted and worker.deleted[0][1] < time.monotonic() - self.recreate_after
        if roll < self.delete_ratio and worker.deletable:
            key, context, value = worker.deletable.pop(rng.randrange(len(worker.deletable)))
            if self._write(client, "delete", key, None, context, {value}) is not None:
                worker.deleted.append((key, time.monotonic()))
            return
        if self.delete_ratio <= roll < self.delete_ratio + self.recreate_ratio and ripe:
            key, _ = worker.deleted.pop(0)
            value = f"{worker.name}:{worker.ops}:again:{rng.getrandbits(32):08x}".encode()
            context = self._write(client, "put", key, value)
            if context is not None:
                worker.deletable.append((key, context, value))
            return
        shared = roll >= 1.0 - self.shared_ratio
        if shared:
            with self.history.lock:
                self._shared += 1
                key = f"{self.tag}shared-{self._shared // len(self.workers)}"
        else:
            key = f"{self.tag}{worker.name}-{worker.ops}"
        value = f"{worker.name}:{worker.ops}:{rng.getrandbits(32):08x}".encode()
        context = self._write(client, "put", key, value)
        if context is not None and not shared:
            worker.deletable.append((key, context, value))

    def _write(self, client: Client, op: str, key: str, value: bytes | None,
               context: bytes | None = None, covers: set[bytes] = frozenset()
               ) -> bytes | None:
        """One put or delete, recorded; the reply's context, or None if not acknowledged.
        NoReply is re-raised (the worker then drops that socket)."""
        h = self.history
        if op == "put":
            assert value is not None
            h.put_attempt(key, value)
        if covers:
            h.delete_attempt(key, covers)
        try:
            if op == "put":
                reply = client.put(key, value, context, w=self.w, timeout=self.op_timeout)
            else:
                reply = client.delete(key, context, w=self.w, timeout=self.op_timeout)
        except DynamoError as exc:
            self._record(op, key, value, covers, exc.code)
            if isinstance(exc, NoReply):
                raise
            return None
        self._record(op, key, value, covers, None)
        return reply

    def _record(self, op: str, key: str, value: bytes | None, covers: set[bytes],
                error: str | None) -> None:
        if op == "put":
            assert value is not None
            self.history.put_done(key, value, error)
        if covers or op == "delete":
            self.history.delete_done(key, covers, error, op="delete" if op == "delete"
                                     else "supersede")


# Reading one node on its own --------------------------------------------------------------
@dataclass
class Anomaly:
    node: str
    key: str
    kind: str  # lost, resurrected, phantom, unreadable
    detail: str

    def __str__(self) -> str:
        return f"{self.node} {self.kind} {self.key}: {self.detail}"


async def _read_many(server: str, keys: list[str], r: int, concurrency: int,
                     timeout: float) -> dict[str, list[bytes] | DynamoError]:
    out: dict[str, list[bytes] | DynamoError] = {}
    gate = asyncio.Semaphore(concurrency)
    client = AsyncClient(server, timeout=timeout + 1.0)

    async def one(key: str) -> None:
        async with gate:
            for attempt in range(3):
                try:
                    out[key] = (await client.get(key, r=r, timeout=timeout)).values
                    return
                except DynamoError as exc:
                    out[key] = exc
                    await asyncio.sleep(0.2 * (attempt + 1))

    try:
        await asyncio.gather(*(one(k) for k in keys))
    finally:
        client.close()
    return out


def read_many(server: str, keys: Iterable[str], r: int = 1, concurrency: int = 32,
              timeout: float = 1.0) -> dict[str, list[bytes] | DynamoError]:
    """Get every key from ``server`` with ``r``, many requests in flight."""
    return asyncio.run(_read_many(server, list(keys), r, concurrency, timeout))


def judge(node_id: str, key: str, got: list[bytes] | DynamoError,
          expect: Expect) -> Anomaly | None:
    if isinstance(got, DynamoError):
        return Anomaly(node_id, key, "unreadable", f"{got.code}: {got}")
    values = set(got)
    if values & expect.must_not:
        return Anomaly(node_id, key, "resurrected", f"holds {sorted(values & expect.must_not)}"
                       f" whose delete was acknowledged; holds {got}")
    if not expect.must <= values:
        return Anomaly(node_id, key, "lost", f"acknowledged {sorted(expect.must - values)} "
                       f"missing; holds {got}")
    if values - expect.possible:
        return Anomaly(node_id, key, "phantom", f"holds {sorted(values - expect.possible)} "
                       "that was never written")
    return None


#: The coordinator's deadline for the checker's reads. The node also asks the paused
#: replicas; they must not answer before this deadline has passed, or their late answers
#: would read-repair the node being checked (and the check would repair what it checks).
READ_TIMEOUT = 0.5


def check_alone(node: Node, others: list[Node], history: History,
                owns: Callable[[Node, str], bool] | None = None,
                first: Iterable[str] = (), fail_fast: bool = False) -> list[Anomaly]:
    """Pause ``others``; read every key ``node`` replicates from it alone, with R=1.

    The others stay paused until every read's deadline has passed at the node, so the
    reads answer from its own disk and repair nothing."""
    expect = history.expectations()
    keys = [k for k in sorted(expect) if owns is None or owns(node, k)]
    wanted = set(keys)
    front = [k for k in first if k in wanted]
    for other in others:
        other.pause()
    anomalies: list[Anomaly] = []
    try:
        batches = [front, keys] if fail_fast and front else [keys]
        for batch in batches:
            got = read_many(node.server, batch, timeout=READ_TIMEOUT)
            for key in batch:
                anomaly = judge(node.node_id, key, got[key], expect[key])
                if anomaly is not None:
                    anomalies.append(anomaly)
            if fail_fast and anomalies:
                break
        time.sleep(READ_TIMEOUT + 0.3)  # the deadlines pass (coordination ticks: 20 ms)
    finally:
        for other in others:
            other.resume()
    return anomalies


def check_cluster(node: Node, history: History) -> list[Anomaly]:
    """What a client sees through ``node`` with the default quorum (R=2)."""
    expect = history.expectations()
    got = read_many(node.server, sorted(expect), r=2, timeout=2.0)
    return [a for k, v in got.items()
            if (a := judge(f"cluster via {node.node_id}", k, v, expect[k])) is not None]


@dataclass
class Convergence:
    seconds: float | None  # from "faults stopped" to every replica holding everything
    rounds: int
    anomalies: list[Anomaly]  # what was still wrong at the end (empty: converged)

    def describe(self, limit: int = 20) -> str:
        kinds = Counter(a.kind for a in self.anomalies)
        return (f"not converged after {self.rounds} rounds: {dict(kinds)}; first: "
                + "; ".join(map(str, self.anomalies[:limit])))


def converge(nodes: list[Node], history: History, stopped_at: float, seconds: float,
             owns: Callable[[Node, str], bool] | None = None,
             interval: float = 0.5) -> Convergence:
    """Poll (each node alone, the others paused) until no anomaly is left or ``seconds``
    have passed since ``stopped_at`` (time.monotonic() when the faults stopped).

    The time reported is when the first clean round began: every replica held everything
    by then (a round takes about a second per node, the resolution of the measure)."""
    rounds = 0
    last: dict[str, list[str]] = {}
    while True:
        rounds += 1
        began = time.monotonic()
        anomalies: list[Anomaly] = []
        for node in nodes:
            others = [n for n in nodes if n is not node]
            found = check_alone(node, others, history, owns, last.get(node.node_id, ()),
                                fail_fast=True)
            last[node.node_id] = [a.key for a in found]
            anomalies += found
            if found:
                break  # poll again later; this round is lost anyway
        if not anomalies:
            return Convergence(max(0.0, began - stopped_at), rounds, [])
        if time.monotonic() - stopped_at > seconds:
            full = [a for node in nodes for a in check_alone(
                node, [n for n in nodes if n is not node], history, owns)]
            return Convergence(None, rounds, full)
        time.sleep(interval)
