"""``seda-dynamo put KEY VALUE``: store a value, printing the context of the new version.

Dynamo paper section 4.1 (``put(key, context, object)``): without ``--context`` the
value becomes a sibling of what the key holds; with the context ``get`` printed, it
replaces the versions that context covers (section 4.4). ``--w`` is this request's W
(section 4.5); the node's own otherwise.
"""

from __future__ import annotations

import argparse

from seda_dynamo.cli.common import Subparsers, add_client_flags, connect, context


def add_parser(sub: Subparsers) -> None:
    c = sub.add_parser("put", help="store VALUE under KEY")
    add_client_flags(c)
    c.set_defaults(func=run)
    c.add_argument("key", help="the key")
    c.add_argument("value", help="the value, stored as its UTF-8 bytes")
    c.add_argument("--context", help="hex context from an earlier get")
    c.add_argument("--w", type=int,
                   help="acknowledgements to wait for (default: the node's w)")


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        ctx = client.put(args.key, args.value.encode("utf-8"), context(args.context),
                         w=args.w)
        print(f"ok context={ctx.hex()}")
    return 0
