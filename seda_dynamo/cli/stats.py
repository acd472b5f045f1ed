"""``seda-dynamo stats``: print a node's per-stage counters as JSON.

Every stage worker's last report (queue, batches, latencies), the figures behind
``admin tpstats`` and ``top`` (Dynamo paper section 6, watching the request path;
docs/operating.md).
"""

from __future__ import annotations

import argparse

from seda_dynamo.cli.common import Subparsers, add_client_flags, connect, print_json


def add_parser(sub: Subparsers) -> None:
    c = sub.add_parser("stats", help="print per-stage counters as JSON")
    add_client_flags(c)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        print_json(client.stats())
    return 0
