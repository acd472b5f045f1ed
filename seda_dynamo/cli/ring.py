"""``seda-dynamo ring``: print a node's view of the ring as JSON.

Its members, the partitions, each partition's preference list and N, R, W (Dynamo paper
sections 4.2 and 4.3; the reply's fields are in docs/protocol.md).
"""

from __future__ import annotations

import argparse

from seda_dynamo.cli.common import Subparsers, add_client_flags, connect, print_json


def add_parser(sub: Subparsers) -> None:
    c = sub.add_parser("ring", help="print the ring as JSON")
    add_client_flags(c)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        print_json(client.ring())
    return 0
