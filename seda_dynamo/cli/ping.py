"""``seda-dynamo ping``: print the id of the node at ``--server``.

The quickest check that a node answers on its client port (docs/protocol.md); no Dynamo
paper section (the paper's own liveness checks are peer to peer, section 4.8).
"""

from __future__ import annotations

import argparse

from seda_dynamo.cli.common import Subparsers, add_client_flags, connect


def add_parser(sub: Subparsers) -> None:
    c = sub.add_parser("ping", help="print the node's id")
    add_client_flags(c)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        print(client.ping())
    return 0
