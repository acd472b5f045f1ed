"""``seda-dynamo cluster start|stop``: a local cluster on loopback, for people and examples.

``start`` runs ``--nodes`` nodes, the first founding the ring and the others joining it
by gossip (Dynamo paper section 4.8), and prints their addresses; ``stop`` stops exactly
those processes. The work is ``seda_dynamo.localcluster``, loaded only when this
command runs.
"""

from __future__ import annotations

import argparse
import sys

from seda_dynamo.cli.common import Subparsers


def add_parser(sub: Subparsers) -> None:
    k = sub.add_parser("cluster", help="start or stop a local cluster on loopback")
    k.add_argument("action", choices=["start", "stop"],
                   help="start: run the nodes in the background and print their "
                        "addresses; stop: stop the nodes started from --data-dir")
    k.add_argument("--nodes", type=int, default=3, help="how many nodes start runs")
    k.add_argument("--data-dir", default="data/cluster",
                   help="one directory and log per node, and cluster.json naming them")
    k.add_argument("--base-port", type=int, default=7000,
                   help="clients on BASE.., peers on BASE+100..")
    k.add_argument("--engine", choices=["bdb", "memory"], default="bdb",
                   help="the nodes' storage engine")
    k.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
