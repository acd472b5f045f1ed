"""``seda-dynamo delete KEY``: delete what a context covers, or all the node holds.

A delete is a write of a tombstone (Dynamo paper sections 4.1 and 4.4): with
``--context`` it covers the versions that context saw, without it whatever the
coordinator holds. ``--w`` is this request's W (section 4.5).
"""

from __future__ import annotations

import argparse

from seda_dynamo.cli.common import Subparsers, add_client_flags, connect, context


def add_parser(sub: Subparsers) -> None:
    c = sub.add_parser("delete",
                       help="delete KEY (what the context covers, or all the node holds)")
    add_client_flags(c)
    c.set_defaults(func=run)
    c.add_argument("key", help="the key")
    c.add_argument("--context", help="hex context from an earlier get")
    c.add_argument("--w", type=int,
                   help="acknowledgements to wait for (default: the node's w)")


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.delete(args.key, context(args.context), w=args.w)
        print("ok")
    return 0
