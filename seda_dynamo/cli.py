"""The ``seda-dynamo`` command: run a node, and talk to one from the shell.

``serve`` starts a node (the supervisor and its stage processes); ``put``, ``get``,
``delete``, ``ping``, ``ring`` and ``stats`` speak the wire protocol (docs/protocol.md)
to ``--server``; ``admin`` and ``top`` are the operator's views; ``bench`` runs the load
generator of ``bench/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Any

from seda_dynamo.client import DEFAULT_SERVER, Client, DynamoError
from seda_dynamo.config import CHOICES, FLAGS, ConfigError, NodeConfig, load
from seda_dynamo.security import KEY_ENV, SERVER_KEY_ENV


def _serve(args: argparse.Namespace) -> int:
    from seda_dynamo.hygiene import setup_logging
    from seda_dynamo.supervisor import Supervisor

    try:
        # Every NodeConfig key has a flag of the same name (--node-id: node_id ...).
        config = load(args.config, **{f.name: getattr(args, f.name, None)
                                      for f in dataclasses.fields(NodeConfig)})
    except ConfigError as exc:
        return _refuse(f"bad configuration: {exc}")
    try:
        setup_logging(config, "supervisor")
    except OSError as exc:
        return _refuse(f"bad configuration: log_file = {config.log_file!r}: cannot write "
                       f"there ({exc.strerror})")
    try:
        supervisor = Supervisor(config)
    except OSError as exc:
        logging.getLogger("seda_dynamo.supervisor").error("cannot start node %s: %s",
                                                          config.node_id, exc)
        return 1
    return supervisor.run()


def _refuse(message: str) -> int:
    """A node that cannot start says why on stderr (its log is not set up yet); exit 2."""
    logging.basicConfig(format="seda-dynamo: %(message)s", stream=sys.stderr)
    logging.getLogger("seda_dynamo.supervisor").error("%s", message)
    return 2


def _config(args: argparse.Namespace) -> int:
    """``config check FILE``: load and validate it as ``serve`` would; say what is wrong,
    naming the key, or print the resolved settings."""
    try:
        config = load(args.file)
    except ConfigError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok")
    for f in dataclasses.fields(NodeConfig):
        print(f"  {f.name} = {json.dumps(getattr(config, f.name))}")
    return 0


def _show(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()


def _context(text: str | None) -> bytes | None:
    return bytes.fromhex(text) if text else None


def _client_keys(args: argparse.Namespace) -> dict[str, Any]:
    """``Client`` keyword arguments for the CURVE flags (or their environment variables):
    both or neither."""
    from seda_dynamo.security import ClientKeys

    keys = ClientKeys.find(args.curve_key, args.curve_server_key)  # KeyFileError: exit 2
    return {"keys": keys} if keys else {}


def _add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=DEFAULT_SERVER, help="HOST:PORT of any node")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds")
    p.add_argument("--curve-key", metavar="FILE",
                   help=f"CURVE: your secret key file (default: ${KEY_ENV})")
    p.add_argument("--curve-server-key", metavar="FILE",
                   help=f"CURVE: the cluster's public server key file (default: "
                        f"${SERVER_KEY_ENV})")


def _client_command(args: argparse.Namespace) -> int:
    with Client(args.server, timeout=args.timeout, **_client_keys(args)) as client:
        if args.command == "put":
            ctx = client.put(args.key, args.value.encode("utf-8"), _context(args.context),
                             w=args.w)
            print(f"ok context={ctx.hex()}")
        elif args.command == "get":
            values, ctx = client.get(args.key, r=args.r)
            for value in values:
                print(_show(value))
            print(f"# {len(values)} value(s) context={ctx.hex() if ctx else '-'}",
                  file=sys.stderr)
            return 0 if values else 1
        elif args.command == "delete":
            client.delete(args.key, _context(args.context), w=args.w)
            print("ok")
        elif args.command == "ping":
            print(client.ping())
        else:
            reply: Any = client.stats() if args.command == "stats" else client.ring()
            print(json.dumps(reply, indent=2, default=_show))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seda-dynamo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run a node in the foreground (Ctrl-C stops it)")
    s.add_argument("--config", help="a TOML file (see conf/default.toml)")
    defaults = NodeConfig()
    for f in dataclasses.fields(NodeConfig):  # every key a flag: --node-id for node_id
        metavar, help_text = FLAGS[f.name]
        default = getattr(defaults, f.name)
        kind = {"action": "append", "metavar": metavar} if isinstance(default, tuple) else \
            {"choices": CHOICES[f.name]} if f.name in CHOICES else \
            {"type": type(default), "metavar": metavar}
        s.add_argument("--" + f.name.replace("_", "-"), help=help_text, **kind)
    s.set_defaults(func=_serve)

    f = sub.add_parser("config", help="check a configuration file (docs/configuration.md)")
    f.add_argument("action", choices=["check"])
    f.add_argument("file", help="a TOML file such as conf/default.toml")
    f.set_defaults(func=_config)

    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text)
        _add_client_flags(c)
        c.set_defaults(func=_client_command)
        return c

    c = client_parser("put", "store VALUE under KEY")
    c.add_argument("key")
    c.add_argument("value")
    c.add_argument("--context", help="hex context from an earlier get")
    c.add_argument("--w", type=int)
    c = client_parser("get", "print every sibling of KEY, one per line")
    c.add_argument("key")
    c.add_argument("--r", type=int)
    c = client_parser("delete", "delete KEY (what the context covers, or all the node holds)")
    c.add_argument("key")
    c.add_argument("--context", help="hex context from an earlier get")
    c.add_argument("--w", type=int)
    client_parser("ping", "print the node's id")
    client_parser("ring", "print the ring as JSON")
    client_parser("stats", "print per-stage counters as JSON")

    a = sub.add_parser("admin", help="status, tpstats, ring, transfers, leave, join SEED")
    a.add_argument("command",
                   choices=["status", "tpstats", "ring", "transfers", "leave", "join"])
    a.add_argument("seed", nargs="?", help="join: a member's peer HOST:PORT")
    _add_client_flags(a)
    a.add_argument("--wait", action="store_true", help="leave: return once it has left")
    a.set_defaults(func=_admin)

    g = sub.add_parser("keys", help="generate CURVE key pairs (docs/configuration.md)")
    g.add_argument("action", choices=["generate"])
    g.add_argument("names", nargs="+", metavar="NAME",
                   help="one pair each: NAME.key (public) and NAME.key_secret")
    g.add_argument("--dir", default="keys", help="where to write them (default: keys)")
    g.set_defaults(func=_keys)

    t = sub.add_parser("top", help="the stages of a node (or --cluster) live, redrawn "
                                   "every --every seconds until Ctrl-C")
    _add_client_flags(t)
    t.add_argument("--every", type=float, default=2.0, help="seconds between frames")
    t.add_argument("--frames", type=int, help="stop after this many frames")
    t.add_argument("--cluster", action="store_true", help="every member of its cluster")
    t.set_defaults(func=_top)

    k = sub.add_parser("cluster", help="start or stop a local cluster on loopback")
    k.add_argument("action", choices=["start", "stop"])
    k.add_argument("--nodes", type=int, default=3)
    k.add_argument("--data-dir", default="data/cluster")
    k.add_argument("--base-port", type=int, default=7000,
                   help="clients on BASE.., peers on BASE+100..")
    k.add_argument("--engine", choices=["bdb", "memory"], default="bdb")
    k.set_defaults(func=_cluster)

    b = sub.add_parser("bench", help="run the load generator against a node, a cluster, "
                                      "Redis or etcd")
    b.add_argument("--server", default=DEFAULT_SERVER,
                   help="HOST:PORT of a node, or several separated by commas")
    b.add_argument("--target", metavar="URL",
                   help="what to load: seda://HOST:PORT[,HOST:PORT...], "
                        "redis://127.0.0.1:PORT or etcd://127.0.0.1:PORT[,PORT...], each "
                        "optionally ending in ?connections=N (default: seda://--server)")
    b.add_argument("--cluster", action="store_true",
                   help="start a local loopback cluster (bdb, fsync, N=3 R=2 W=2) in a temp "
                        "dir, load it, then stop it; --server is ignored")
    b.add_argument("--nodes", type=int, default=3, help="nodes of the --cluster")
    b.add_argument("--routing", choices=["round-robin", "owner"],
                   help="spread requests over several servers: round-robin, or to the first "
                        "node of the key's preference list (default: owner with --cluster, "
                        "round-robin otherwise; owner needs a seda target)")
    b.add_argument("--mix", metavar="GET/PUT",
                   help="one mixed run with these percentages of gets and puts, e.g. 95/5 or "
                        "50/50 (default: a put phase, then a get phase)")
    b.add_argument("--distribution", choices=["uniform", "zipfian"], default="uniform",
                   help="how a --mix run picks keys (zipfian: YCSB's theta 0.99)")
    b.add_argument("--prefill", action="store_true",
                   help="with --mix: write every key once first (closed loop, not measured)")
    b.add_argument("--ops", type=int,
                   help="requests per phase or --mix run (default 20000; with --mix and "
                        "--seconds, 10000000, so that the time decides)")
    b.add_argument("--concurrency", type=int, default=64, help="requests in flight (total)")
    b.add_argument("--value-size", type=int, default=100, help="bytes per value")
    b.add_argument("--keys", type=int,
                   help="distinct keys (default 10000; with --cluster and no --mix, --ops: each "
                        "key is written once per phase)")
    b.add_argument("--processes", type=int, default=1, help="client processes")
    b.add_argument("--rate", type=float, help="open loop: ops/s on a fixed schedule")
    b.add_argument("--seconds", "--max-seconds", dest="max_seconds", type=float,
                   metavar="SECONDS",
                   help="wall-clock cap per phase or --mix run (default 60)")
    b.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   help="a progress bar on stderr (default: when stderr is a terminal)")
    b.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write the results as JSON to FILE (without FILE, or -: to stdout); "
                        "a --mix run is one dict, phases a list of dicts")
    b.set_defaults(func=_bench)
    return p


def _admin(args: argparse.Namespace) -> int:
    from seda_dynamo import admin

    if args.command == "join" and not args.seed:
        print("seda-dynamo: admin join needs SEED, a member's peer HOST:PORT", file=sys.stderr)
        return 2
    print(admin.run(args.server, args.command, args.seed, args.wait, args.timeout,
                    _client_keys(args)))
    return 0


def _keys(args: argparse.Namespace) -> int:
    from seda_dynamo.security import generate

    for name in args.names:
        public, secret = generate(args.dir, name)  # KeyFileError, a ValueError: exit 2
        print(f"{name}: public {public}  secret {secret}")
    return 0


def _top(args: argparse.Namespace) -> int:
    from seda_dynamo import admin

    if args.every <= 0 or (args.frames is not None and args.frames < 1):
        raise ValueError("--every must be > 0 and --frames >= 1")
    return admin.top(args.server, args.every, args.frames, args.cluster, args.timeout,
                     _client_keys(args))


def _cluster(args: argparse.Namespace) -> int:
    from seda_dynamo import localcluster

    if args.action == "stop":
        pids = localcluster.stop(args.data_dir)
        print(f"stopped {len(pids)} node(s)")
        return 0
    try:
        members = localcluster.start(args.data_dir, args.nodes, args.base_port,
                                     ["--engine", args.engine])
    except RuntimeError as exc:
        print(f"seda-dynamo: {exc}", file=sys.stderr)
        localcluster.stop(args.data_dir)
        return 1
    for m in members:
        print(f"{m['id']}: client {m['client']}  peer {m['peer']}  pid {m['pid']}  "
              f"log {m['log']}")
    print(f"stop with: seda-dynamo cluster stop --data-dir {args.data_dir}")
    return 0


def _parse_mix(text: str) -> float:
    """``"95/5"`` (percent gets / puts) as the share of gets, 0.95."""
    try:
        gets, puts = (float(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--mix wants GET/PUT percentages such as 95/5, not {text!r}") \
            from None
    if gets < 0 or puts < 0 or abs(gets + puts - 100.0) > 1e-6:
        raise ValueError(f"--mix percentages must be >= 0 and add up to 100, not {text!r}")
    return gets / 100.0


def _bench(args: argparse.Namespace) -> int:
    from seda_dynamo import loadgen

    get_ratio = _parse_mix(args.mix) if args.mix is not None else None
    if get_ratio is None and args.distribution != "uniform":
        raise ValueError("--distribution applies to a --mix run")
    if get_ratio is None and args.prefill:
        raise ValueError("--prefill applies to a --mix run")
    if args.cluster and args.target:
        raise ValueError("--cluster starts its own nodes: leave out --target")
    max_seconds = args.max_seconds if args.max_seconds is not None else 60.0
    ops = args.ops if args.ops is not None else \
        10_000_000 if get_ratio is not None and args.max_seconds is not None else 20_000
    progress = args.progress if args.progress is not None else sys.stderr.isatty()

    def run(target: str) -> list[dict[str, Any]] | dict[str, Any]:
        each_once = args.cluster and get_ratio is None  # every key written once per phase
        keys = args.keys if args.keys is not None else ops if each_once else 10_000
        routing = args.routing or ("owner" if args.cluster else "round-robin")
        if get_ratio is not None:
            return loadgen.run_mix(target, ops, args.concurrency, get_ratio, args.value_size,
                                   keys, args.distribution, args.rate, args.processes,
                                   max_seconds, progress=progress, routing=routing,
                                   prefill=args.prefill)
        return loadgen.run_phases(target, ops, args.concurrency, args.value_size, keys,
                                  processes=args.processes, max_seconds=max_seconds,
                                  rate=args.rate, routing=routing, progress=progress)

    try:
        if args.cluster:
            if not 1 <= args.nodes <= 100:
                raise ValueError("--nodes must be in 1..100")
            print(f"starting a {args.nodes}-node cluster ...", file=sys.stderr, flush=True)
            with loadgen.local_cluster(args.nodes) as members:
                print("cluster up: " + ", ".join(f"{m['id']} {m['client']} (pid {m['pid']})"
                                                 for m in members), file=sys.stderr, flush=True)
                results = run(",".join(m["client"] for m in members))
        else:
            results = run(args.target or f"seda://{args.server}")
    except RuntimeError as exc:
        print(f"seda-dynamo: {exc}", file=sys.stderr)
        return 1
    runs = results if isinstance(results, list) else [results]
    if args.json == "-":
        print(json.dumps(results, indent=2))
    else:
        for phase in runs:
            print(loadgen.format_result(phase))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
                f.write("\n")
    return 1 if any(phase["errors"] for phase in runs) else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except DynamoError as exc:
        print(f"seda-dynamo: {exc.code}: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        print(f"seda-dynamo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logging.shutdown()
        return 130


if __name__ == "__main__":
    sys.exit(main())
