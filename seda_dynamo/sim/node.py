"""One simulated node: its config, its disks, and its stage handlers, built from the
stage table (``seda_dynamo.stage.STAGES``) by importing each row's module, as the
supervisor's stage processes do; crashed and restarted whole or one stage at a time.

The disks outlive crashes: the engines keep what was committed (all of it after a
process crash; after a power failure, only what reached a durability point: the model is
in ``sim/disk.py``), and the node's data directory (a temp dir the run owns) keeps the
durable files (the membership view).
The data's incarnation is kept as a durable engine keeps it, and each start of
persistence takes the next mint epoch (paper section 4.4: a restarted node never issues
a version it issued before). Every handler gets its own seeded source of randomness.
"""

from __future__ import annotations

import importlib
import inspect
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seda_dynamo import causality
from seda_dynamo.config import NodeConfig
from seda_dynamo.engines import Engine
from seda_dynamo.sim.disk import Disk
from seda_dynamo.stage import STAGES, Stage


def client_address(i: int) -> str:
    return f"127.0.0.1:{17000 + i}"


def peer_address(i: int) -> str:
    return f"127.0.0.1:{17100 + i}"


class Entropy:
    """Random bits from a seeded source, called as ``secrets.randbits`` is: an object,
    not the bound builtin ``Random.getrandbits``, which a deep copy would share with the
    original (``Cluster.copy``)."""

    __slots__ = ("rng",)

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self, bits: int) -> int:
        return self.rng.getrandbits(bits)


class Node:
    """Node ``n<i>``: handlers by stage name (absent while crashed), and its disks."""

    def __init__(self, i: int, data_dir: Path, rng: random.Random,
                 wall_clock: Callable[[], float] = lambda: 0.0, **config: Any) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.id = f"n{i}"
        self.rng = rng
        self.wall_clock = wall_clock  # the simulated clock: no handler reads the real one
        durability = config.pop("durability", "fsync")
        self.config = NodeConfig(node_id=self.id, client=client_address(i),
                                 peer=peer_address(i), data_dir=str(data_dir),
                                 engine="memory", durability=durability, **config)
        self.disk = Disk(durability)
        self.engine: Engine = self.disk.engine("data")
        self.hints: Engine = self.disk.engine("hints")
        self.incarnation = f"{rng.getrandbits(32):08x}"  # kept beside the data
        self.mint_epoch = 0
        self.stages: dict[str, Stage] = {}
        self.generation: dict[str, int] = {spec.name: 0 for spec in STAGES}
        self.modules = {spec.name: importlib.import_module(spec.module) for spec in STAGES}

    @property
    def up(self) -> bool:
        return bool(self.stages)

    def build(self, name: str) -> Stage:
        """A fresh handler for stage ``name`` on this node's disks (not yet started)."""
        cls = self.modules[name].Handler
        offered: dict[str, Any] = {
            "entropy": Entropy(random.Random(self.rng.getrandbits(64))),
            "rng": random.Random(self.rng.getrandbits(64)),
            "engine": self.engine, "hints": self.hints,
            "incarnation_id": self.incarnation, "wall_clock": self.wall_clock,
        }
        if name == "persistence":
            self.mint_epoch += 1
            offered["mint_epoch"] = self.mint_epoch
        accepted = inspect.signature(cls).parameters
        handler: Stage = cls(self.config, **{k: v for k, v in offered.items()
                                             if k in accepted})
        self.generation[name] += 1
        self.stages[name] = handler
        return handler

    def crash(self, name: str | None = None) -> None:
        """Lose one stage's handler (or all of them): no ``close``, as a killed process."""
        for stage in [name] if name else list(self.stages):
            self.stages.pop(stage, None)
            self.generation[stage] += 1

    @property
    def gossip(self) -> Any:
        return self.stages["gossip"]

    @property
    def coordination(self) -> Any:
        return self.stages["coordination"]

    @property
    def network(self) -> Any:
        return self.stages["network"]

    def values(self, key: bytes) -> list[bytes] | None:
        """The sibling values this node's engine holds for ``key`` (None: nothing)."""
        raw = self.engine.get(key)
        return None if raw is None else causality.values(causality.decode(raw))

    def stored(self) -> dict[bytes, causality.DVVSet]:
        """Every key this node's engine holds, decoded."""
        return {key: causality.decode(raw) for key, raw in self.engine.fold(0, 1 << 128)}
