"""``seda-dynamo get KEY``: print every sibling of a key, then its context on stderr.

Dynamo paper section 4.1 (``get(key)`` returns the conflicting versions with one
context, section 4.4): one value per line on stdout, ``# N value(s) context=HEX`` on
stderr for a later ``put --context``. ``--r`` is this request's R (section 4.5); the
node's own otherwise. Exit 1 when the key holds nothing.
"""

from __future__ import annotations

import argparse
import sys

from seda_dynamo.cli.common import Subparsers, add_client_flags, connect, show


def add_parser(sub: Subparsers) -> None:
    c = sub.add_parser("get", help="print every sibling of KEY, one per line")
    add_client_flags(c)
    c.set_defaults(func=run)
    c.add_argument("key", help="the key")
    c.add_argument("--r", type=int, help="replies to wait for (default: the node's r)")


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        values, ctx = client.get(args.key, r=args.r)
        for value in values:
            print(show(value))
        print(f"# {len(values)} value(s) context={ctx.hex() if ctx else '-'}",
              file=sys.stderr)
        return 0 if values else 1
