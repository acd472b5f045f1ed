"""Node configuration: defaults, a TOML file, command-line overrides, validation.

One frozen value, ``NodeConfig``, is resolved by the supervisor and handed to every stage
as JSON, so all processes of a node agree on it. Dynamo paper section 4.9 (N, R, W).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seda_dynamo import address

ENGINES = ("bdb", "memory")
DURABILITY = ("fsync", "nosync")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str = "node1"
    client: str = "127.0.0.1:7000"
    peer: str = "127.0.0.1:7100"
    data_dir: str = "data/node1"
    run_dir: str = ""
    join: str = ""
    seeds: tuple[str, ...] = field(default_factory=tuple)
    n: int = 3
    r: int = 2
    w: int = 2
    partitions: int = 256
    weight: int = 1
    transfers_at_once: int = 2  # partitions a node streams to new owners at the same time
    transfer_keys_per_sec: int = 0  # throttle of those streams, in keys per second (0: none)
    # Seconds after a delete before its tombstone may be reaped (once every member holds
    # it and no hint names the key); 0 keeps tombstones forever.
    tombstone_reap_after: float = 60.0
    anti_entropy_every: float = 5.0  # seconds between Merkle exchanges; 0 turns them off
    # Background work (transfers, anti-entropy, hint delivery) slows down while the p99 of
    # client requests this node coordinates is above this many ms (paper 6.5); 0: never.
    background_p99_ms: float = 20.0
    # Failure detection (paper 4.8, seda_dynamo.failure): a peer is down for routing once
    # the phi of its silence (-log10 of its likelihood given the peer's recent ping
    # answers) reaches this. Higher: slower to suspect, fewer wrong suspicions.
    phi_threshold: float = 8.0
    engine: str = "bdb"
    durability: str = "fsync"
    max_key_bytes: int = 64 * 1024
    max_value_bytes: int = 1024 * 1024
    # The largest record (a key's encoded versions) a client write may leave; it sizes
    # the peer port's maximum message size (peerprotocol.max_message_bytes).
    max_record_bytes: int = 64 * 1024 * 1024
    timeout_ms: int = 3000
    batch_max: int = 512
    # Versioning worker processes at start, and the most the supervisor may add when
    # versioning is the busy stage and cores are idle (see stage.STAGES).
    versioning_workers: int = 1
    versioning_max_workers: int = 4
    queue_hwm: int = 10_000
    # Admission control: new client requests get `overloaded` while any stage's queue
    # delay is over overload_delay_ms (0: never), or max_in_flight requests are open.
    overload_delay_ms: float = 100.0
    max_in_flight: int = 1024
    # ... or, when set, the in-flight limit adapts below max_in_flight to keep the p99 of
    # admitted requests near this many ms (0: the fixed limit max_in_flight). Off by
    # default: a target below what the node gives at its peak sheds load it could carry.
    latency_target_ms: float = 0.0
    log_level: str = "info"
    log_file: str = ""  # "": stderr; else every process of the node appends its lines here
    metrics: str = ""  # HOST:PORT of the Prometheus endpoint (GET /metrics); "": off
    # CURVE (seda_dynamo.security): the cluster's shared server key (a ".key_secret"
    # file; setting it turns CURVE on for the client and peer ports), this node's own
    # key, and the directories of public keys let in on each port.
    curve_server_key: str = ""
    curve_node_key: str = ""
    curve_client_keys: str = ""
    curve_peer_keys: str = ""
    # With CURVE on, the directory of the public keys of the clients that may run
    # `admin join` and `admin leave` (each also in curve_client_keys); "": none may.
    # Without CURVE those two are taken only from loopback clients.
    curve_admin_keys: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> NodeConfig:
        raw = json.loads(text)
        raw["seeds"] = tuple(raw.get("seeds", ()))
        return cls(**raw)


def _check_endpoint(name: str, value: str) -> None:
    """An address key: the same check as every other address that enters a node."""
    try:
        address.check(value, name)
    except address.AddressError as exc:
        raise ConfigError(str(exc)) from None


#: Every key's ``serve`` flag: (metavar, one-line help). docs/configuration.md says more.
FLAGS: dict[str, tuple[str, str]] = {
    "node_id": ("NAME", "this node's unique name in the cluster"),
    "client": ("HOST:PORT", "where clients connect (default 127.0.0.1:7000)"),
    "peer": ("HOST:PORT", "where other nodes connect (default 127.0.0.1:7100)"),
    "data_dir": ("DIR", "the node's data (default data/NODE_ID)"),
    "run_dir": ("DIR", "short directory for the stages' ipc sockets"),
    "join": ("HOST:PORT", "a member's peer address: join its cluster"),
    "seeds": ("HOST:PORT", "another member to try when joining (repeat for more)"),
    "n": ("N", "replicas per key"),
    "r": ("R", "replies a get waits for"),
    "w": ("W", "acknowledgements a put or delete waits for"),
    "partitions": ("Q", "equal partitions of the ring, for the founder of a cluster"),
    "weight": ("N", "share of partitions relative to other nodes"),
    "transfers_at_once": ("N", "partitions streamed to new owners at the same time"),
    "transfer_keys_per_sec": ("KEYS", "throttle of partition hand-overs (0: none)"),
    "tombstone_reap_after": ("SECONDS", "seconds after a delete before its tombstone may "
                             "be reaped (0: keep)"),
    "anti_entropy_every": ("SECONDS", "seconds between Merkle exchanges with a replica "
                           "(0: off)"),
    "background_p99_ms": ("MS", "background work yields while client p99 is above this "
                          "(0: never)"),
    "phi_threshold": ("PHI", "failure detection: suspicion at which a silent peer is down"),
    "engine": ("ENGINE", "storage engine"),
    "durability": ("MODE", "fsync: acked writes survive power loss; nosync: kill -9"),
    "max_key_bytes": ("BYTES", "larger keys get too_large"),
    "max_value_bytes": ("BYTES", "larger values get too_large"),
    "max_record_bytes": ("N", "largest record (a key's versions) a client write may "
                         "leave; sizes the peer port's largest message"),
    "timeout_ms": ("MS", "default coordinator deadline of a request"),
    "batch_max": ("N", "most queued messages a stage takes per wake-up"),
    "versioning_workers": ("N", "versioning worker processes at start"),
    "versioning_max_workers": ("N", "most versioning workers the supervisor adds under "
                               "load"),
    "queue_hwm": ("N", "high-water mark of a stage's queue, in messages"),
    "overload_delay_ms": ("MS", "admission control: shed while a stage's queue delay is "
                          "over this (0: never)"),
    "max_in_flight": ("N", "admission control: client requests open at once (0: no "
                      "limit)"),
    "latency_target_ms": ("MS", "admission control: p99 the in-flight limit steers to "
                          "(0: fixed)"),
    "log_level": ("LEVEL", "least severe log lines written"),
    "log_file": ("PATH", "append the node's log lines here instead of stderr"),
    "metrics": ("HOST:PORT", "serve Prometheus metrics over HTTP at /metrics (default: "
                "off)"),
    "curve_server_key": ("FILE", "CURVE on: the cluster's shared server .key_secret file"),
    "curve_node_key": ("FILE", "CURVE: this node's .key_secret file"),
    "curve_client_keys": ("DIR", "CURVE: directory of the public keys of allowed clients"),
    "curve_peer_keys": ("DIR", "CURVE: directory of the public keys of allowed nodes"),
    "curve_admin_keys": ("DIR", "CURVE: directory of the public keys of clients allowed "
                         "admin join and leave"),
}
#: The keys with a fixed set of values.
CHOICES = {"engine": ENGINES, "durability": DURABILITY, "log_level": LOG_LEVELS}

#: Keys that must be >= 0, and what 0 means for each.
NON_NEGATIVE = {
    "tombstone_reap_after": "0: keep tombstones",
    "transfer_keys_per_sec": "0: no limit",
    "overload_delay_ms": "0: no shedding on queue delay",
    "latency_target_ms": "0: a fixed in-flight limit",
    "max_in_flight": "0: no limit",
    "background_p99_ms": "0: background work never yields",
    "anti_entropy_every": "0: no anti-entropy",
}


def validate(cfg: NodeConfig) -> NodeConfig:
    """Raise ``ConfigError`` naming the first bad key and what it allows."""
    if not cfg.node_id or any(c in cfg.node_id for c in " #/\\:"):
        raise ConfigError(f"node_id = {cfg.node_id!r}: a non-empty name without spaces, "
                          "'#', ':' or slashes")
    if not cfg.data_dir:
        raise ConfigError("data_dir = '': a directory for the node's data is needed")
    _check_endpoint("client", cfg.client)
    _check_endpoint("peer", cfg.peer)
    if cfg.join:
        _check_endpoint("join", cfg.join)
    if cfg.metrics:
        _check_endpoint("metrics", cfg.metrics)
    for seed in cfg.seeds:
        _check_endpoint("seeds", seed)
    if not 1 <= cfg.n <= 16:
        raise ConfigError(f"n = {cfg.n}: must be in 1..16")
    if not 1 <= cfg.r <= cfg.n:
        raise ConfigError(f"r = {cfg.r}: must be in 1..n ({cfg.n})")
    if not 1 <= cfg.w <= cfg.n:
        raise ConfigError(f"w = {cfg.w}: must be in 1..n ({cfg.n})")
    q = cfg.partitions
    if q < 1 or q & (q - 1) or q > 65536:
        raise ConfigError(f"partitions = {q}: must be a power of two in 1..65536")
    if cfg.engine not in ENGINES:
        raise ConfigError(f"engine = {cfg.engine!r}: must be one of {', '.join(ENGINES)}")
    if cfg.durability not in DURABILITY:
        raise ConfigError(f"durability = {cfg.durability!r}: must be one of "
                          f"{', '.join(DURABILITY)}")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level = {cfg.log_level!r}: must be one of "
                          f"{', '.join(LOG_LEVELS)}")
    for name, zero in NON_NEGATIVE.items():
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} = {getattr(cfg, name)}: must be >= 0 ({zero})")
    if not 1 <= cfg.versioning_workers <= cfg.versioning_max_workers <= 16:
        raise ConfigError(f"versioning_workers = {cfg.versioning_workers}, "
                          f"versioning_max_workers = {cfg.versioning_max_workers}: need "
                          "1 <= versioning_workers <= versioning_max_workers <= 16")
    if not 0 < cfg.phi_threshold <= 100:
        raise ConfigError(f"phi_threshold = {cfg.phi_threshold}: must be in (0, 100] "
                          "(8: a wrong suspicion about once in 10^8 silences)")
    if not 1 <= cfg.weight <= 64:
        raise ConfigError(f"weight = {cfg.weight}: must be in 1..64")
    if cfg.max_record_bytes < cfg.max_value_bytes + RECORD_SLACK:
        raise ConfigError(f"max_record_bytes = {cfg.max_record_bytes}: must be at least "
                          f"max_value_bytes + {RECORD_SLACK} (one value of the largest "
                          "size with the largest context)")
    for name in ("max_key_bytes", "max_value_bytes", "max_record_bytes", "timeout_ms",
                 "batch_max", "queue_hwm", "transfers_at_once"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} = {getattr(cfg, name)}: must be a positive integer")
    _check_curve(cfg)
    return cfg


#: Room in a record for its causal metadata: a context may name 1,024 actors of up to
#: 256 bytes (seda_dynamo/causality.py).
RECORD_SLACK = 512 * 1024

CURVE_KEYS = ("curve_server_key", "curve_node_key", "curve_client_keys", "curve_peer_keys")


def _check_curve(cfg: NodeConfig) -> None:
    """CURVE is all or nothing: each of its four keys, and each file they name, usable;
    the optional admin list only with CURVE, and only keys also let in as clients."""
    given = [name for name in CURVE_KEYS if getattr(cfg, name)]
    if not given:
        if cfg.curve_admin_keys:
            raise ConfigError(f"curve_admin_keys = {cfg.curve_admin_keys!r}: needs CURVE on "
                              f"({', '.join(CURVE_KEYS)}); without CURVE admin join and "
                              "leave are taken only from loopback clients")
        return
    missing = [name for name in CURVE_KEYS if not getattr(cfg, name)]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: must be set too when {given[0]} is "
                          f"(CURVE needs all of {', '.join(CURVE_KEYS)})")
    from seda_dynamo import security

    try:
        security.load(cfg.curve_server_key, True, "curve_server_key")
        own = security.load(cfg.curve_node_key, True, "curve_node_key").public
        peers = security.allowed(cfg.curve_peer_keys, "curve_peer_keys")
        clients = security.allowed(cfg.curve_client_keys, "curve_client_keys")
        admins = security.allowed(cfg.curve_admin_keys, "curve_admin_keys") \
            if cfg.curve_admin_keys else []
    except security.KeyFileError as exc:
        raise ConfigError(str(exc)) from None
    if not set(admins) <= set(clients):
        raise ConfigError(f"curve_admin_keys = {cfg.curve_admin_keys!r}: holds keys that are "
                          f"not in curve_client_keys ({cfg.curve_client_keys!r}); those "
                          "clients could never connect")
    if own not in peers:
        raise ConfigError(f"curve_peer_keys = {cfg.curve_peer_keys!r}: lacks this node's own "
                          f"public key ({cfg.curve_node_key!r} without '_secret'); its peers "
                          "would refuse it")


def load(path: str | None = None, **overrides: Any) -> NodeConfig:
    """Defaults, then the TOML file at ``path``, then non-None ``overrides``."""
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                values.update(tomllib.load(fh))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in dataclasses.fields(NodeConfig)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        default = known[key].default
        if key == "seeds":
            if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
                raise ConfigError("seeds: expected a list of HOST:PORT strings")
            values[key] = tuple(value)
        elif isinstance(default, float) and type(value) is int:
            values[key] = float(value)
        elif isinstance(default, bool) or type(value) is not type(default):
            raise ConfigError(f"{key} = {value!r}: expected {type(default).__name__}")
    if "data_dir" not in values and "node_id" in values:
        values["data_dir"] = str(Path("data") / values["node_id"])
    return validate(NodeConfig(**values))
